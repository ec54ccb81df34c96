"""Orchestration: the configurable task runner of the fan-out stages (threads, Dask, Ray), the one
Prefect server of `python -m flows.pipeline`, and `dvc exp run -S` variants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from flows._stage import RunnerUnavailable, run_stage, task_runner
from flows.synthesize import synthesize_flow
from spatialboost.config import ConfigError, OrchestrationConfig, load_config
from tests.servers import wait_session_empty

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # dvc and python of this venv, for the subprocesses


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["orchestration.task_runner=dask"],
        ["orchestration.task_runner=dask", "orchestration.address=tcp://10.0.0.5:8786"],
        ["orchestration.task_runner=ray", "orchestration.address=auto"],
        ["orchestration.task_runner=ray", "orchestration.address=ray://head:10001"],
        ["orchestration.task_runner=ray", "orchestration.address=10.0.0.5:6379"],
    ],
)
def test_valid_orchestration_settings_load(overrides: list[str]) -> None:
    load_config(ROOT / "params.yaml", overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["orchestration.task_runner=spark"], "orchestration.task_runner: Input should be 'threads', 'dask' or 'ray'"),
        (
            ["orchestration.address=tcp://10.0.0.5:8786"],
            "orchestration.address: an address needs task_runner dask or ray",
        ),
        (["orchestration.task_runner=dask", "orchestration.address=10.0.0.5:8786"], "not a Dask scheduler address"),
        (["orchestration.task_runner=ray", "orchestration.address=http://head:8265"], "not a Ray address"),
        (["orchestration.max_workers=0"], "orchestration.max_workers"),
    ],
)
def test_invalid_orchestration_settings_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(ROOT / "params.yaml", overrides)


def test_task_runner_builds_what_the_config_asks_for() -> None:
    from prefect_dask import DaskTaskRunner

    threads = task_runner(OrchestrationConfig(max_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3

    local = task_runner(OrchestrationConfig(task_runner="dask", max_workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {
        "n_workers": 3,
        "processes": True,
        "threads_per_worker": 1,
        "dashboard_address": None,
    }

    remote = task_runner(OrchestrationConfig(task_runner="dask", address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    assert remote.cluster_kwargs == {}


def test_ray_runner_without_the_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # as on CI, where the `ray` extra is not installed
    with pytest.raises(RunnerUnavailable, match=r"needs the `ray` extra .*pip install -e '\.\[ray\]'"):
        task_runner(OrchestrationConfig(task_runner="ray"))


def test_dask_stage_refuses_the_ephemeral_api(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(SystemExit) as exited:
        run_stage(synthesize_flow, "synthesize", ["-S", "orchestration.task_runner=dask"], fan_out=True)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "need a running Prefect server" in err
    assert "python -m flows.pipeline" in err and "PREFECT_API_URL" in err


# --- the Dask runner against a real server -------------------------------------------------


@pytest.fixture
def scenes_params(tmp_path: Path) -> Path:
    """A tiny world, its manifest and 3 shards of scene records (library calls, no flows)."""
    from spatialboost.data import build_manifest_for
    from spatialboost.extract.factory import build_observer
    from spatialboost.extract.pipeline import extract_images, manifest_ids
    from spatialboost.world import render_dataset

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["world"].update(root=str(tmp_path / "world"), n_train=10, n_test=2, width=48, height=40, shard_size=4)
    params["data"].update(
        uri=str(tmp_path / "world"), manifest=str(tmp_path / "m.jsonl"), quarantine=str(tmp_path / "q.jsonl")
    )
    params["extract"].update(output=str(tmp_path / "scenes"), shard_size=4, n_overlays=0)
    params["synthesize"].update(shard_size=4, n_renderings=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    cfg = load_config(path)
    render_dataset(cfg.world, Path(cfg.world.root), progress=False)
    build_manifest_for(cfg.data, progress=False)
    extract_images(
        cfg, manifest_ids(cfg.data.manifest), build_observer(cfg.extract, cfg.data, cfg.device), progress=False
    )
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_dask_runner_writes_byte_identical_shards(
    prefect_server_env: dict[str, str], scenes_params: Path, tmp_path: Path
) -> None:
    env = {**prefect_server_env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    outputs = {}
    for runner in ("threads", "dask"):
        out, metrics = tmp_path / f"qa-{runner}", tmp_path / f"metrics-{runner}"
        cmd = [sys.executable, "-m", "flows.synthesize", "--params", str(scenes_params),
               "-S", f"synthesize.output={out}", "-S", f"orchestration.metrics_dir={metrics}",
               "-S", f"orchestration.task_runner={runner}", "-S", "orchestration.max_workers=2"]  # fmt: skip
        flow = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # fmt: skip
        try:
            log, _ = flow.communicate(timeout=240)
        finally:
            if flow.poll() is None:
                os.killpg(flow.pid, signal.SIGKILL)
            leftovers = wait_session_empty(flow.pid)
        assert flow.returncode == 0, log[-3000:]
        assert not leftovers, f"{runner}: processes left behind: {[psutil.Process(p).cmdline() for p in leftovers]}"
        summary = json.loads((metrics / "synthesize.json").read_text())
        assert summary["n_shards"] >= 2
        outputs[runner] = _tree(out)
    assert sorted(outputs["dask"]) == sorted(outputs["threads"])
    assert any(name.endswith(".parquet") for name in outputs["dask"])
    different = [name for name in outputs["threads"] if outputs["threads"][name] != outputs["dask"][name]]
    assert not different, f"dask and threads outputs differ: {different}"


# --- one Prefect server for the whole pipeline ---------------------------------------------


def _api_repo(tmp_path: Path, sleep_s: float) -> Path:
    """A DVC repo whose one stage records the PREFECT_API_URL it sees, then sleeps."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("probe:\n  n: 1\n")
    script = (
        "import os, time; open('api.txt', 'w').write(os.environ.get('PREFECT_API_URL', 'none'));"
        f" time.sleep({sleep_s}); open('out.txt', 'w').write('done')"
    )
    stage = {"cmd": f'python -c "{script}"', "params": ["probe"], "outs": ["out.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"probe": stage}}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
        [*git, "commit", "-qm", "init"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return repo


def _pipeline(repo: Path, tmp_path: Path) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    # INFO, as scripts/demo.sh runs it: the flow's own log records go to the API up to the end.
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", PYTHONPATH=str(ROOT), PATH=f"{BIN}{os.pathsep}{env['PATH']}")  # fmt: skip
    cmd = [sys.executable, "-m", "flows.pipeline", "--no-push", "--repo", str(repo)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def _servers_on(api_url: str) -> list[int]:
    port = api_url.rstrip("/").removesuffix("/api").rsplit(":", 1)[1]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "server" in cmdline and "start" in cmdline and port in cmdline:
            found.append(proc.pid)
    return found


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_pipeline_runs_stages_against_its_own_server_and_stops_it(tmp_path: Path) -> None:
    repo = _api_repo(tmp_path, sleep_s=0)
    pipeline = _pipeline(repo, tmp_path)
    try:
        log, _ = pipeline.communicate(timeout=240)
    finally:
        if pipeline.poll() is None:
            os.killpg(pipeline.pid, signal.SIGKILL)
    assert pipeline.returncode == 0, log[-3000:]
    api_url = (repo / "api.txt").read_text()
    assert api_url.startswith("http://127.0.0.1:") and api_url.endswith("/api")  # the stage saw the shared server
    assert (repo / "out.txt").read_text() == "done" and (repo / "dvc.lock").exists()
    assert "Error logging to API" not in log  # queued logs were sent before the server stopped
    assert not wait_session_empty(pipeline.pid)
    assert not _servers_on(api_url)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_pipeline_stopped_by_sigterm_leaves_no_process_behind(tmp_path: Path) -> None:
    repo = _api_repo(tmp_path, sleep_s=600)
    pipeline = _pipeline(repo, tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (repo / "api.txt").exists():  # the server is up and `dvc repro` runs the stage
            assert pipeline.poll() is None and time.monotonic() < deadline, pipeline.communicate()[0][-3000:]
            time.sleep(0.5)
        api_url = (repo / "api.txt").read_text()
        assert _servers_on(api_url)
        pipeline.send_signal(signal.SIGTERM)
        pipeline.communicate(timeout=60)
        assert pipeline.returncode != 0
        assert not wait_session_empty(pipeline.pid), "the stage or `dvc repro` outlived the pipeline"
        assert not _servers_on(api_url), "the Prefect server outlived the pipeline"
    finally:
        if pipeline.poll() is None:
            os.killpg(pipeline.pid, signal.SIGKILL)
        for pid in wait_session_empty(pipeline.pid, timeout=0):
            psutil.Process(pid).kill()


# --- `dvc exp run -S` variants -------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_dvc_exp_run_set_param_runs_the_variant(tiny_dvc_repo: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> str:
        return subprocess.run([str(BIN / "dvc"), *args], cwd=tiny_dvc_repo, env=env, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    dvc("repro")
    assert (tiny_dvc_repo / "out.txt").read_text() == "hello world"
    dvc("exp", "run", "-S", "greet.name=spatial", "--name", "spatial-variant")

    # The variant ran with the overridden value, and (as DVC documents for a workspace run) its
    # params and outputs stay in the workspace; the committed baseline is untouched.
    assert (tiny_dvc_repo / "out.txt").read_text() == "hello spatial"
    assert yaml.safe_load((tiny_dvc_repo / "params.yaml").read_text()) == {"greet": {"name": "spatial"}}
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=tiny_dvc_repo, capture_output=True, text=True)
    assert yaml.safe_load(committed.stdout) == {"greet": {"name": "world"}}

    shown = json.loads(dvc("exp", "show", "--json"))
    variants = {exp["name"]: exp for row in shown for exp in (row.get("experiments") or []) if exp.get("name")}
    assert "spatial-variant" in variants
    revs = variants["spatial-variant"]["revs"][0]
    assert revs["data"]["params"]["params.yaml"]["data"] == {"greet": {"name": "spatial"}}
