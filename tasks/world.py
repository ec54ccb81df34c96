"""Tasks of the `world` stage: render shards of the procedural world, then index them."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from spatialboost.config import WorldConfig
from spatialboost.world.dataset import ImageKey, prepare_root, render_shard, write_index


@task(name="prepare-world-root", retries=2, retry_delay_seconds=1)
def prepare_world_root(cfg: WorldConfig) -> None:
    """Create the dataset folders; refuse a root rendered with other params."""
    prepare_root(cfg, Path(cfg.root))


@task(name="render-world-shard", retries=2, retry_delay_seconds=1)
def render_world_shard(cfg: WorldConfig, keys: list[ImageKey]) -> int:
    """Render the not-yet-complete images of one shard; returns how many were rendered."""
    return render_shard(cfg, Path(cfg.root), keys)


@task(name="index-world", retries=2, retry_delay_seconds=1)
def index_world(cfg: WorldConfig) -> dict[str, int]:
    """Write index.parquet and dataset.json once every image is complete; returns the counts."""
    return write_index(cfg, Path(cfg.root))
