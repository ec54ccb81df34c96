"""Task of the `synthesize` stage: one shard (the stage itself is qa/pipeline.py's run_synthesize_stage)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.qa.pipeline import QAShard, synthesize_shard


@task(name="synthesize-shard", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def synthesize_shard_task(cfg: SpatialBoostConfig, shard: QAShard) -> dict[str, Any]:
    """Conversations of one shard (skipped when complete), depth from the extraction's stored maps;
    scenes that give none go to the shard's quarantine file. Returns its counts."""
    return synthesize_shard(shard, cfg.synthesize, cfg.data.uri)
