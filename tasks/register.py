"""Task of the `register` stage: one library entry point (spatialboost/register.py)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.register import register_pipeline


@task(name="register", retries=0, cache_policy=NO_CACHE)
def register_task(cfg: SpatialBoostConfig, lock_path: str = "dvc.lock") -> dict[str, Any]:
    """Log the run "pipeline", register the boosted encoder; the metrics/register.json record."""
    return register_pipeline(cfg, lock_path)
