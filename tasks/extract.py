"""Tasks of the `extract` stage: plan, extract one shard, finalize, measure against ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.extract.accuracy import evaluate_dataset
from spatialboost.extract.factory import build_observer
from spatialboost.extract.pipeline import (
    ShardReport,
    extract_shard,
    extraction_params,
    finalize,
    plan_shards,
    prepare_output,
    shard_is_complete,
    write_sample_overlays,
)
from spatialboost.extract.protocols import ObservationSource
from spatialboost.runtime import BuildOnce

worker_observer: BuildOnce[ObservationSource] = BuildOnce(build_observer, maxsize=2)
"""worker_observer(extract, data, device): the observer of this worker process. Models load once
per worker, not once per shard, and under one lock: threads of a worker never build two at once
(a concurrent bf16 `from_pretrained` gave mixed-dtype models) nor use a half-built one."""


@task(name="plan-extraction", retries=2, retry_delay_seconds=1)
def plan_extraction(cfg: SpatialBoostConfig, ids: list[str]) -> list[list[str]]:
    """Shards of `ids`; stale shards (other params, past the end) are removed before the run."""
    shards = plan_shards(ids, cfg.extract.shard_size)
    prepare_output(cfg.extract.output, len(shards), extraction_params(cfg, cfg.extract.backend))
    return shards


@task(name="extract-shard", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def extract_shard_task(cfg: SpatialBoostConfig, index: int, ids: list[str]) -> ShardReport | None:
    """Extract one shard unless it is already complete (resume); None when skipped."""
    if shard_is_complete(cfg.extract.output, index, ids):
        return None
    observer = worker_observer(cfg.extract, cfg.data, cfg.device)
    return extract_shard(observer, ids, index, cfg.extract, cfg.extract.output, seed=cfg.seed)


@task(name="finalize-extraction", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def finalize_extraction(cfg: SpatialBoostConfig, ids: list[str], n_shards: int) -> dict[str, Any]:
    """Write the shard manifest and the sample overlays; returns the run's totals."""
    manifest = finalize(cfg.extract.output, n_shards)
    observer = worker_observer(cfg.extract, cfg.data, cfg.device)
    n_overlays = write_sample_overlays(observer, Path(cfg.extract.output), ids, n_shards, cfg.extract.n_overlays)
    return {**manifest["totals"], "quarantine_by_reason": manifest["quarantine_by_reason"], "n_overlays": n_overlays}


@task(name="extraction-accuracy", retries=1, cache_policy=NO_CACHE)
def extraction_accuracy(cfg: SpatialBoostConfig, split: str = "test") -> dict[str, Any]:
    """Pair distances, relations and ground-plane angles against the world's own truth."""
    from spatialboost.data import RGBDDataset

    ids = RGBDDataset(cfg.data.uri).ids(split)
    return evaluate_dataset(cfg.data.uri, ids, cfg.extract.geometry, seed=cfg.seed, min_objects=cfg.extract.min_objects)
