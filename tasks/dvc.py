"""Tasks that drive DVC: the scheduled pipeline runs through `dvc repro` / `dvc exp run`, so a
scheduled run gets the same caching and lineage as a user's `dvc repro`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import get_run_logger, task


def dvc_command(overrides: list[str]) -> list[str]:
    """`dvc repro`, or `dvc exp run -S k=v ...` when params are overridden (DESIGN.md section 2)."""
    if not overrides:
        return ["dvc", "repro"]
    return ["dvc", "exp", "run", *[arg for item in overrides for arg in ("-S", item)]]


def _run(cmd: list[str], cwd: Path) -> str:
    """Run a command, streaming its output into the Prefect log; raise with its tail on failure."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        logger.info(line.rstrip())
    if proc.wait() != 0:
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    return "\n".join(lines)


@task(name="dvc-repro", retries=1, retry_delay_seconds=10)
def dvc_repro(repo: str, overrides: list[str]) -> str:
    """Reproduce the pipeline (only what changed reruns); returns DVC's output."""
    return _run(dvc_command(overrides), Path(repo))


@task(name="dvc-push", retries=3, retry_delay_seconds=10)
def dvc_push(repo: str) -> bool:
    """Push outputs to the default DVC remote when one is configured; returns whether it pushed."""
    remotes = subprocess.run(["dvc", "remote", "list"], cwd=repo, capture_output=True, text=True, check=True).stdout
    if not remotes.strip():
        get_run_logger().info("no DVC remote configured: nothing to push")
        return False
    _run(["dvc", "push"], Path(repo))
    return True
