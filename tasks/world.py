"""Task of the `world` stage: one shard of images (the stage itself is world/dataset.py's run_world_stage)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from spatialboost.config import WorldConfig
from spatialboost.world.dataset import ImageKey, render_shard


@task(name="render-world-shard", retries=2, retry_delay_seconds=1)
def render_world_shard(cfg: WorldConfig, keys: list[ImageKey]) -> int:
    """Render the not-yet-complete images of one shard; returns how many were rendered."""
    return render_shard(cfg, Path(cfg.root), keys)
