"""Tasks of the ablation runner: one `dvc exp run` per variant, and the workspace put back after."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from spatialboost.io import write_bytes_atomic
from tasks.dvc import _run

Snapshot = dict[str, bytes | None]


def snapshot_files(repo: str | Path, paths: list[str]) -> Snapshot:
    """The bytes of `paths` (None for a missing file), relative to `repo`."""
    root = Path(repo)
    return {p: (root / p).read_bytes() if (root / p).is_file() else None for p in paths}


def restore_files(repo: str | Path, snapshot: Snapshot) -> None:
    root = Path(repo)
    for path, data in snapshot.items():
        if data is None:
            (root / path).unlink(missing_ok=True)
        else:
            write_bytes_atomic(root / path, data)


@task(name="dvc-exp-run", retries=0, cache_policy=NO_CACHE)
def exp_run(repo: str, overrides: list[str], name: str, metrics_dir: str) -> dict[str, Any]:
    """`dvc exp run -n NAME -S k=v ...` in the workspace; returns its metrics/evaluate.json and
    metrics/train.json. Stages whose params and deps did not change are not rerun."""
    cmd = ["dvc", "exp", "run", "-n", name, *[arg for item in overrides for arg in ("-S", item)]]
    _run(cmd, Path(repo))
    metrics = Path(repo) / metrics_dir
    return {stage: json.loads((metrics / f"{stage}.json").read_text()) for stage in ("evaluate", "train")}


@task(name="restore-workspace", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def restore_workspace(repo: str, snapshot: Snapshot) -> None:
    """Put params.yaml, dvc.lock and the metrics files back, then `dvc checkout` the outputs they
    name from the DVC cache: the workspace is what it was before the set ran."""
    restore_files(repo, snapshot)
    get_run_logger().info("restored %s; dvc checkout", ", ".join(snapshot))
    subprocess.run(["dvc", "checkout", "--force"], cwd=repo, check=True, capture_output=True, text=True)


def finished_experiments(repo: str | Path) -> list[dict[str, Any]]:
    """The DVC experiments of the repository that finished: [{"name", "params", "metrics"}], where
    params is params.yaml as DVC read it and metrics maps a stage to its metrics file's content."""
    out = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], cwd=repo, check=True, capture_output=True, text=True)
    found = []
    for commit in json.loads(out.stdout or "[]"):
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if rev.get("error") or not rev.get("name") or not data:
                    continue
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                metrics = {Path(path).stem: (entry or {}).get("data") for path, entry in (data.get("metrics") or {}).items()}
                found.append({"name": rev["name"], "params": params, "metrics": metrics})
    return found
