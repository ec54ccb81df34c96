"""Write a stage's DVC metrics file; mark a stage that does not apply as skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from spatialboost.io import write_json_atomic
from spatialboost.skipping import mark_skipped


@task(name="write-metrics", retries=2, retry_delay_seconds=1)
def write_metrics(metrics_dir: str, stage: str, metrics: dict[str, Any]) -> Path:
    """Write `metrics` to `<metrics_dir>/<stage>.json` (atomically; DVC reads it as metrics)."""
    path = Path(metrics_dir) / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, metrics)
    return path


@task(name="mark-skipped", retries=2, retry_delay_seconds=1)
def mark_skipped_task(output: str, stage: str, reason: str) -> dict[str, Any]:
    """Write the stage's SKIPPED.json marker into `output`; returns the metrics saying why."""
    return mark_skipped(output, stage, reason)
