"""Helpers for integration tests that start real servers on 127.0.0.1 and always stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll `url` until it answers, failing early if the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a server started with start_new_session=True, its children included."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def start_prefect_server(
    home: str, timeout: float = 120, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, dict[str, str]]:
    """`prefect server start` on a free port with its own PREFECT_HOME; returns it and the env that
    points a client (or a subprocess) at it. Stop it with stop_process. The UI at
    http://127.0.0.1:<port> calls this API (PREFECT_UI_API_URL; by default it would call :4200)."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"{env['PREFECT_API_URL']}/health", server, timeout)
    except BaseException:
        stop_process(server)
        raise
    return server, env


def session_processes(session_id: int) -> list[int]:
    """PIDs still alive in a session (a process started with start_new_session=True and all it spawned)."""
    import psutil

    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == session_id and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return alive


def wait_session_empty(session_id: int, timeout: float = 30) -> list[int]:
    """Wait until no process of the session is left; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (alive := session_processes(session_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive
