"""Task of the `manifest` stage: one library entry point (data/manifest.py)."""

from __future__ import annotations

from typing import Any

from prefect import task

from spatialboost.config import DataConfig
from spatialboost.data.manifest import run_manifest_stage


@task(name="build-manifest", retries=1, retry_delay_seconds=2)
def build_manifest_task(cfg: DataConfig, progress: bool = True) -> dict[str, Any]:
    """Inspect every image of the configured source; write manifest + quarantine; return counts."""
    return run_manifest_stage(cfg, progress)
