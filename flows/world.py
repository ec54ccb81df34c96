"""DVC stage `world`: render the procedural world (the demo's RGB-D dataset), shards in parallel."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.futures import as_completed
from tqdm import tqdm

from flows._stage import run_stage
from spatialboost.config import load_config
from spatialboost.world.dataset import shards
from tasks.metrics import write_metrics
from tasks.world import index_world, prepare_world_root, render_world_shard


@flow(name="world")
def world_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Render world.root (train + test splits); resumes where an interrupted run stopped."""
    cfg = load_config(params, overrides)
    start = time.perf_counter()
    prepare_world_root(cfg.world)
    plan = shards(cfg.world)
    futures = [render_world_shard.submit(cfg.world, keys) for keys in plan]
    rendered = sum(f.result() for f in tqdm(as_completed(futures), total=len(plan), desc="world shards", unit="shard"))
    counts = index_world(cfg.world)
    seconds = time.perf_counter() - start
    metrics = {**counts, "rendered": rendered, "seconds": round(seconds, 2)}
    write_metrics(cfg.orchestration.metrics_dir, "world", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(world_flow, __doc__)
