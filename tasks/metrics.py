"""Write a stage's DVC metrics file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from spatialboost.io import write_stage_metrics


@task(name="write-metrics", retries=2, retry_delay_seconds=1)
def write_metrics(metrics_dir: str, stage: str, metrics: dict[str, Any]) -> Path:
    """Write `metrics` to `<metrics_dir>/<stage>.json` (atomically; DVC reads it as metrics)."""
    return write_stage_metrics(metrics_dir, stage, metrics)
