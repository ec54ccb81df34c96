"""DVC stage `world`: render the procedural world (the demo's RGB-D dataset), shards in parallel."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage, submit_shards
from spatialboost.config import load_config
from spatialboost.world.dataset import ImageKey, run_world_stage
from tasks.metrics import write_metrics
from tasks.world import render_world_shard


@flow(name="world")
def world_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Render world.root (train + test splits; run_world_stage), one Prefect task per shard;
    resumes where an interrupted run stopped."""
    cfg = load_config(params, overrides)

    def run_shards(shards: list[list[ImageKey]]) -> list[int]:
        return submit_shards(render_world_shard, cfg.world, [(keys,) for keys in shards], desc="world shards")

    metrics = run_world_stage(cfg.world, run_shards=run_shards)
    write_metrics(cfg.orchestration.metrics_dir, "world", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(world_flow, __doc__)
