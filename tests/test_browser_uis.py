"""The Prefect and MLflow UIs in a real headless Chromium, against real servers on 127.0.0.1.

Prefect: the `spatialboost-pipeline/scheduled` deployment is listed with its schedule and
parameters; a run started with the UI's Run button completes through `dvc repro` (a tiny DVC
repository), and its page shows the stage's logs. MLflow: the register stage's versions of
`spatialboost-<encoder>` with the `candidate` / `champion` aliases, the model card, the run's
metrics and the report artefact. Every assertion is on text the page shows; screenshots go to
reports/screenshots/ (tests/browser.py). Both UIs are single-page apps: every wait is an explicit
wait for text, with a timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import UNAVAILABLE_NOTE, chromium_page, chromium_path, missing_browser, save_screenshot
from tests.servers import free_port, start_prefect_server, stop_process, wait_http

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = "spatialboost-pipeline/scheduled"
# MLflow 3.17's UI opens an assistant panel over the page on first load; start with it closed.
MLFLOW_INIT = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
               "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")  # fmt: skip


@pytest.fixture
def needs_chromium() -> None:
    """Skip (or fail) before any server starts when there is no browser."""
    if chromium_path() is None:
        missing_browser()


@pytest.fixture
def page(needs_chromium: None) -> Iterator[Any]:
    with chromium_page() as page:
        yield page


def _wait_for_deployment(api: str, serving: subprocess.Popen, timeout_s: float = 180) -> dict[str, Any]:
    """The deployment as the API has it, once `flows.pipeline --serve` has created it."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert serving.poll() is None, f"flows.pipeline --serve exited with {serving.returncode}"
        try:
            with urllib.request.urlopen(f"{api}/deployments/name/{DEPLOYMENT}", timeout=5) as reply:
                return json.loads(reply.read())
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"deployment {DEPLOYMENT} not created within {timeout_s} s")


def test_prefect_ui_lists_the_deployment_and_runs_it_through_dvc(page: Any, tiny_dvc_repo: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    server, env = start_prefect_server(str(tmp_path / "prefect-home"), extra_env={"PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    serving = None
    try:
        serving = subprocess.Popen(
            [sys.executable, "-m", "flows.pipeline", "--serve", "--cron", "0 3 * * *", "--repo", str(tiny_dvc_repo),
             "--no-push"],
            cwd=ROOT, env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")])},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deployment = _wait_for_deployment(env["PREFECT_API_URL"], serving)
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
        ui = env["PREFECT_API_URL"].removesuffix("/api")

        # The deployments list: name, flow, status, and the cron schedule as the UI words it.
        page.goto(f"{ui}/deployments")
        row = page.get_by_role("row").filter(has_text="spatialboost-pipeline")
        expect(row).to_contain_text("scheduled", timeout=60_000)
        expect(row).to_contain_text("Ready")
        expect(row).to_contain_text("At 03:00 AM every day")  # = "0 3 * * *"
        save_screenshot(page, "prefect-deployments")

        # Its page: the parameters the UI's "Quick run" uses, the tiny repository among them.
        row.get_by_role("link", name="scheduled", exact=True).click()
        page.get_by_text("Parameters", exact=True).first.click()
        params = page.get_by_role("row").filter(has_text="repo")
        expect(params).to_contain_text(str(tiny_dvc_repo), timeout=30_000)
        expect(page.get_by_role("row").filter(has_text="push")).to_contain_text("false")
        expect(page.get_by_role("row").filter(has_text="overrides")).to_contain_text("[]")
        expect(page.get_by_text("At 03:00 AM every day").first).to_be_visible()
        save_screenshot(page, "prefect-deployment")

        # Run -> Quick run, then follow the toast to the flow run's page.
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Quick run", exact=True).click()
        toast = page.locator("#prefect-design-toast-app").get_by_role("button", name="View run").first
        expect(toast).to_be_visible(timeout=30_000)
        toast.dispatch_event("click")  # the toast's own animation layer intercepts a pointer click
        page.wait_for_url("**/runs/flow-run/**", timeout=30_000)
        state = page.locator(".page-heading-flow-run__meta .state-badge")
        expect(state).to_have_text("Completed", timeout=240_000)
        logs = page.get_by_role("tabpanel", name="Logs")
        expect(logs).to_contain_text("$ dvc repro", timeout=60_000)  # the stage logs, streamed by tasks/dvc.py
        expect(logs).to_contain_text("Running stage 'greet'")
        expect(logs).to_contain_text("Finished in state Completed()")
        save_screenshot(page, "prefect-flow-run")
        assert (tiny_dvc_repo / "out.txt").read_text() == "hello world"  # the run went through dvc repro
        assert (tiny_dvc_repo / "dvc.lock").is_file()
    finally:
        if serving is not None:
            stop_process(serving)
        stop_process(server)


@pytest.fixture
def mlflow_server(tmp_path: Path, needs_chromium: None) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "mlflow-artifacts"), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", server, timeout=180)
        yield uri
    finally:
        stop_process(server)


def _register_three_versions(tmp_path: Path, uri: str) -> list[dict[str, Any]]:
    """The real register stage, three times: VQA accuracy 0.55, 0.70, 0.60 -> champion is version 2."""
    from spatialboost.config import SpatialBoostConfig
    from spatialboost.models.dual_channel import add_dual_channel
    from spatialboost.models.export import export_encoder
    from tasks.register import register_task
    from tests.tiny_vlm import tiny_encoder

    encoder = tiny_encoder("dinov2", seed=0)
    add_dual_channel(encoder)
    export_encoder(encoder, tmp_path / "boosted" / "encoder")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# SpatialBoost evaluation report\n\nBaseline vs boosted encoder.\n")
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    cfg = SpatialBoostConfig.model_validate({
        "train": {"output": str(tmp_path / "boosted")},
        "evaluate": {"output": str(report)},
        "orchestration": {"metrics_dir": str(metrics)},
        "tracking": {"tracking_uri": uri},
        "registry": {"encoder_name": "dinov2-tiny"},
    })  # fmt: skip
    lock = tmp_path / "dvc.lock"
    lock.write_text(f"stages:\n  synthesize:\n    outs:\n    - path: {cfg.synthesize.output}\n      md5: 5ca1ab1e.dir\n")
    records = []
    for accuracy in (0.55, 0.70, 0.60):
        evaluate = {"baseline": {"vqa_relative_depth_acc": {"mean": 0.5, "std": 0.06}, "depth_rmse": {"mean": 4.97, "std": 0.02}},
                    "boosted": {"vqa_relative_depth_acc": {"mean": accuracy, "std": 0.05}, "depth_rmse": {"mean": 4.8, "std": 0.03}}}  # fmt: skip
        (metrics / "evaluate.json").write_text(json.dumps(evaluate))
        records.append(register_task.fn(cfg, str(lock)))
    assert [r["version"] for r in records] == [1, 2, 3] and [r["champion"] for r in records] == [True, True, False]
    return records


def test_mlflow_ui_shows_versions_aliases_card_metrics_and_report(mlflow_server: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from spatialboost.config import TrackingConfig
    from spatialboost.tracking import Tracker

    records = _register_three_versions(tmp_path, mlflow_server)
    name = records[0]["model"]
    experiment = Tracker(TrackingConfig(tracking_uri=mlflow_server), profile="demo").experiment_id()
    champion_run = records[1]["run_id"]
    with chromium_page(init_script=MLFLOW_INIT) as page:
        # The registered model: its three versions and where the aliases point.
        page.goto(f"{mlflow_server}/#/models/{name}")
        expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)
        versions = page.get_by_role("row")
        expect(versions.filter(has_text="Version 3")).to_contain_text("@ candidate", timeout=30_000)
        expect(versions.filter(has_text="Version 2")).to_contain_text("@ champion")
        expect(versions.filter(has_text="Version 1")).not_to_contain_text("@")
        expect(versions.filter(has_text="Version 2")).to_contain_text("A dinov2 vision encoder made")  # truncated by the table
        save_screenshot(page, "mlflow-registry")

        # The champion version: its aliases and the model card as its description.
        page.goto(f"{mlflow_server}/#/models/{name}/versions/2")
        expect(page.get_by_text("@ champion").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Base encoder: models/bootstrap/vlm")).to_be_visible()
        expect(page.get_by_text("Git commit:")).to_be_visible()
        expect(page.get_by_role("row").filter(has_text="vqa_relative_depth_acc")).to_contain_text("0.7 ± 0.05")
        save_screenshot(page, "mlflow-version", full_page=True)

        # The run that produced it: its metrics ...
        page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs/{champion_run}")
        metric = page.get_by_role("row", name=re.compile(r"^boosted\.vqa_relative_depth_acc\.mean "))
        expect(metric).to_contain_text("0.7", timeout=60_000)
        expect(page.get_by_role("row", name=re.compile(r"^baseline\.depth_rmse\.mean "))).to_contain_text("4.97")
        param = page.get_by_role("row", name=re.compile(r"^tracking\.champion_metric "))  # params: the validated config
        expect(param).to_contain_text("boosted.vqa_relative_depth_acc.mean")
        save_screenshot(page, "mlflow-run")

        # ... and the report artefact, rendered.
        page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs/{champion_run}/artifacts/report/report.md")
        expect(page.get_by_role("heading", name="SpatialBoost evaluation report")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Baseline vs boosted encoder.")).to_be_visible()
        save_screenshot(page, "mlflow-report")


def test_a_missing_browser_skips_only_where_it_cannot_be_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    with pytest.raises(pytest.fail.Exception, match="could be installed.*scripts/setup.sh"):
        missing_browser(tmp_path)  # root with apt-get: setup should have installed it
    (tmp_path / UNAVAILABLE_NOTE).write_text("apt-get install chromium failed (no package or no mirror)\n")
    with pytest.raises(pytest.skip.Exception, match="could not be installed: apt-get install chromium failed"):
        missing_browser(tmp_path)
    (tmp_path / UNAVAILABLE_NOTE).unlink()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="cannot be installed here"):
        missing_browser(tmp_path)
