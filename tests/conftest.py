"""Shared fixtures. Prefect's test harness is started once per session, and only for tests that ask."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for flow tests (one server for the whole session: startup is ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def tiny_dvc_repo(tmp_path):
    """A git + DVC repository with one stage that writes out.txt from a param."""
    import os
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (repo / "params.yaml").write_text("greet:\n  name: world\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  greet:\n    cmd: python -c \"import yaml; n = yaml.safe_load(open('params.yaml'))['greet']['name'];"
        " open('out.txt', 'w').write('hello ' + n)\"\n    params: [greet]\n    outs: [out.txt]\n"
    )
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    return repo


@pytest.fixture(scope="session")
def prefect_server_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real `prefect server` for the session (Dask / Ray workers need one): the environment that
    points subprocesses at it. Stopped, its process group included, at the end of the session."""
    from tests.servers import start_prefect_server, stop_process

    server, env = start_prefect_server(str(tmp_path_factory.mktemp("prefect-home")))
    try:
        yield env
    finally:
        stop_process(server)
