"""Tasks of the `synthesize` stage: plan, synthesise one shard, finalize, check against the world."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.qa.checker import check_output
from spatialboost.qa.pipeline import (
    QAShard,
    finalize_and_summarize,
    plan,
    prepare_output,
    synthesize_shard,
)


@task(name="plan-synthesis", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def plan_synthesis(cfg: SpatialBoostConfig) -> list[QAShard]:
    """One QA shard per scene shard; stale QA shards are removed before the run."""
    shards = plan(cfg.extract.output, cfg.synthesize)
    prepare_output(cfg.synthesize, shards, cfg.data.uri)
    return shards


@task(name="synthesize-shard", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def synthesize_shard_task(cfg: SpatialBoostConfig, shard: QAShard) -> dict[str, Any]:
    """Conversations of one shard (skipped when complete), depth from the extraction's stored maps;
    scenes that give none go to the shard's quarantine file. Returns its counts."""
    return synthesize_shard(shard, cfg.synthesize, cfg.data.uri)


@task(name="finalize-synthesis", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def finalize_synthesis(cfg: SpatialBoostConfig, shards: list[QAShard], reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Merged conversations, statistics report, sample renderings; returns the summary."""
    return finalize_and_summarize(cfg.synthesize, shards, cfg.data.uri, reports)


@task(name="check-answers", retries=1, cache_policy=NO_CACHE)
def check_answers(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Recompute every typed answer from the world's own truth (not from the scene records)."""
    return check_output(cfg.synthesize.output, cfg.data.uri, max_examples=5)
