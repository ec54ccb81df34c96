"""Task of the `evaluate` stage: one library entry point."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.evaluate.run import evaluate_pipeline


@task(name="evaluate", retries=0, cache_policy=NO_CACHE)
def evaluate_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Baseline vs boosted: probes, spatial VQA, report; returns {"metrics", "detail", "report"}."""
    return evaluate_pipeline(cfg)
