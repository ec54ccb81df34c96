"""Task of the `bootstrap` stage (demo): one library entry point (train/bootstrap.py)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.train.bootstrap import run_bootstrap_stage


@task(name="bootstrap", retries=0, cache_policy=NO_CACHE)
def bootstrap_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Skip (bootstrap.enabled false), install bootstrap.release (verified), or train the recipe."""
    return run_bootstrap_stage(cfg)
