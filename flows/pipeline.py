"""The scheduled pipeline: `dvc repro` (or `dvc exp run -S ...`) in the repository, then
`dvc push` when a remote is configured. Each DVC stage runs its own flow, which shows up in
Prefect as its own run.

    python -m flows.pipeline                       # run once, now
    python -m flows.pipeline --serve               # create the deployment and serve it (cron)

Run once, every stage reports to ONE Prefect API: PREFECT_API_URL when it is set, else a
`prefect server` started for the run and stopped at its end (errors and Ctrl-C included).
Without it each stage would start Prefect's ephemeral API (13-21 s a stage); the Dask and
Ray task runners need a real server anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # a dependency of dvc, which this pipeline drives
from prefect import flow
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from spatialboost.config import load_config
from tasks.dvc import dvc_push, dvc_repro

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "scheduled"
SERVER_STARTUP_TIMEOUT_S = 120.0  # healthy after ~17-20 s on 2 idle cores; much longer beside training jobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"prefect server at {url} was not healthy within {timeout:.0f} s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group (it runs in its own session)."""
    if server.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _interrupt_handler(keep: int) -> Callable[[int, FrameType | None], None]:
    """A SIGTERM/SIGHUP handler that acts like Ctrl-C: a terminal's Ctrl-C reaches the whole
    process group, a SIGTERM only this process, so it is passed on to `dvc repro` and the stage
    under it (every descendant but `keep`, the server, which the caller stops) before unwinding."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for child in psutil.Process().children(recursive=True):
            if child.pid != keep:
                with contextlib.suppress(psutil.Error):
                    child.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt(f"signal {signum}")

    return interrupt


def _drain_to_api(timeout: float = 10.0) -> None:
    """Send the logs and events still queued in this process before the server goes away (else
    Prefect's background workers print "Error logging to API" at exit)."""
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout)


@contextlib.contextmanager
def prefect_api(timeout: float = SERVER_STARTUP_TIMEOUT_S) -> Iterator[str]:
    """The URL of the Prefect API this run reports to, exported as PREFECT_API_URL to subprocesses.

    Reuses PREFECT_API_URL when set; otherwise starts `prefect server` on a free local port
    (its log in $PREFECT_HOME/server.log) and stops it on the way out. SIGTERM and SIGHUP are
    turned into KeyboardInterrupt meanwhile, so that a killed run does not leave the server behind.
    """
    configured = get_current_settings().api.url
    if configured:
        yield configured
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    home = Path(get_current_settings().home)
    home.mkdir(parents=True, exist_ok=True)
    previous_env = os.environ.get("PREFECT_API_URL")
    with open(home / "server.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    handlers = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        interrupt = _interrupt_handler(keep=server.pid)
        handlers = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        _wait_healthy(url, server, timeout)
        os.environ["PREFECT_API_URL"] = url  # the `dvc repro` subprocess and every stage flow under it
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        _drain_to_api()
        _stop(server)
        if previous_env is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous_env
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@flow(name="spatialboost-pipeline")
def pipeline_flow(overrides: list[str] | None = None, push: bool = True, repo: str = str(REPO)) -> dict[str, Any]:
    """Reproduce the pipeline with params overrides (`section.key=value`), then push outputs."""
    output = dvc_repro(repo, list(overrides or []))
    pushed = dvc_push(repo) if push else False
    return {"pushed": pushed, "reproduced": "up to date" not in output.lower(), "overrides": list(overrides or [])}


def serve(cron: str, overrides: list[str] | None = None, push: bool = True, repo: str | None = None) -> None:
    """Create (or update) the `spatialboost-pipeline/scheduled` deployment and run its schedule.
    Its default parameters (what the UI's "Quick run" uses) are `overrides`, `push` and `repo`."""
    # A scheduled run's logs (dvc's stage output) are what its page in the UI shows: keep the run
    # loggers at INFO even where PREFECT_LOGGING_LEVEL quiets the console (scripts/env.sh: WARNING).
    # The flow runs start in subprocesses of this one, which read these from the environment.
    for logger in ("FLOW_RUNS", "TASK_RUNS"):
        os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_PREFECT_{logger}_LEVEL", "INFO")
    parameters: dict[str, Any] = {"overrides": list(overrides or []), "push": push}
    if repo is not None:
        parameters["repo"] = repo
    pipeline_flow.serve(
        name=DEPLOYMENT,
        cron=cron,
        parameters=parameters,
        description="SpatialBoost end to end through DVC; trigger from the Prefect UI with overrides.",
        tags=["spatialboost"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="serve the scheduled deployment instead of running once")
    parser.add_argument("--params", default="params.yaml", help="params file whose orchestration.schedule_cron is used")
    parser.add_argument(
        "--cron", default=None, help="schedule of the deployment (default: orchestration.schedule_cron)"
    )
    parser.add_argument(
        "--set",
        "-S",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="params override passed to `dvc exp run -S` (repeatable)",
    )
    parser.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    parser.add_argument("--repo", default=str(REPO), help="the DVC repository to reproduce (default: this one)")
    args = parser.parse_args(argv)
    if args.serve:
        repo = str(Path(args.repo).resolve()) if args.repo != str(REPO) else None
        serve(args.cron or load_config(args.params).orchestration.schedule_cron, args.overrides, not args.no_push, repo)
        return
    with prefect_api():
        pipeline_flow(overrides=args.overrides, push=not args.no_push, repo=str(Path(args.repo).resolve()))


if __name__ == "__main__":
    main()
