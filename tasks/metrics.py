"""Write a stage's DVC metrics file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from spatialboost.io import write_json_atomic


@task(name="write-metrics", retries=2, retry_delay_seconds=1)
def write_metrics(metrics_dir: str, stage: str, metrics: dict[str, Any]) -> Path:
    """Write `metrics` to `<metrics_dir>/<stage>.json` (atomically; DVC reads it as metrics)."""
    path = Path(metrics_dir) / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, metrics)
    return path
