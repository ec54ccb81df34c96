"""The scheduled deployment against a real `prefect server` on 127.0.0.1: created with its cron
schedule, triggered like the UI does, and the run completes by driving `dvc repro`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, stop_process, wait_http

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
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
        wait_http(f"{env['PREFECT_API_URL']}/health", server, timeout=120)
        yield env
    finally:
        stop_process(server)


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
        stop_process(serving)
