"""Task of the `extract` stage: one shard (the stage itself is extract/pipeline.py's run_extract_stage)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.extract.pipeline import ShardReport, extract_planned_shard


@task(name="extract-shard", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def extract_shard_task(cfg: SpatialBoostConfig, index: int, ids: list[str]) -> ShardReport | None:
    """Extract one shard unless it is already complete (resume); None when skipped. The observer
    is the worker process's own (extract/factory.py's shared_observer)."""
    return extract_planned_shard(cfg, index, ids)
