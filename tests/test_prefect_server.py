"""The scheduled deployment against a real `prefect server` on 127.0.0.1: created with its cron
schedule, triggered like the UI does, and the run completes by driving `dvc repro`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_healthy(env["PREFECT_API_URL"], server, timeout=120)
        yield env
    finally:
        _stop(server)


@pytest.fixture
def tiny_dvc_repo(tmp_path: Path) -> Path:
    """A git + DVC repository with one stage that writes a file from a param."""
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


def test_deployment_is_scheduled_and_a_triggered_run_completes(prefect_server: dict[str, str], tiny_dvc_repo: Path) -> None:
    env = {**prefect_server, "PYTHONPATH": str(ROOT)}
    serving = subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", "--serve", "--cron", "0 3 * * *"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        check = (
            "import asyncio, json, sys\n"
            "from prefect.client.orchestration import get_client\n"
            "from prefect.deployments import run_deployment\n"
            "async def deployment():\n"
            "    async with get_client() as client:\n"
            "        for _ in range(120):\n"
            "            try:\n"
            "                return await client.read_deployment_by_name('spatialboost-pipeline/scheduled')\n"
            "            except Exception:\n"
            "                await asyncio.sleep(1)\n"
            "d = asyncio.run(deployment())\n"
            "crons = [s.schedule.cron for s in d.schedules]\n"
            "run = run_deployment('spatialboost-pipeline/scheduled', parameters={'repo': sys.argv[1], 'push': False},"
            " timeout=240)\n"
            "print(json.dumps({'crons': crons, 'state': run.state.type.value}))\n"
        )
        result = subprocess.run([sys.executable, "-c", check, str(tiny_dvc_repo)], env=env, capture_output=True,
                                text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        shown = result.stdout.strip().splitlines()[-1]
        assert '"crons": ["0 3 * * *"]' in shown
        assert '"state": "COMPLETED"' in shown
        assert (tiny_dvc_repo / "out.txt").read_text() == "hello world"  # the run went through dvc repro
        assert (tiny_dvc_repo / "dvc.lock").exists()
    finally:
        _stop(serving)
