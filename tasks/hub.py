"""Tasks of the `hub` stage."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.hub import run_hub_stage


@task(name="hub-fetch", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def hub_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Fetch every pinned role (resuming a partial download on retry), check, summarise."""
    return run_hub_stage(cfg)
