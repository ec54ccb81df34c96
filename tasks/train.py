"""Task of the `train` stage (the boost): one library entry point, under torchrun when asked."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.train.launch import run_boost_stage


@task(name="train", retries=0, cache_policy=NO_CACHE)
def train_task(cfg: SpatialBoostConfig, params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Run cfg.train (the boost stage by default): a resumable run, so a retry by hand continues.

    orchestration.train_nproc_per_node > 1: under torchrun (params + overrides are handed on),
    and the metrics are rank 0's.
    """
    return run_boost_stage(cfg, params, list(overrides or []), progress=True)
