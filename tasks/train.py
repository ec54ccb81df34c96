"""Tasks of the `bootstrap` and `train` stages: each calls one library entry point."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.train.bootstrap import run_bootstrap
from spatialboost.train.stage import run_train_stage


@task(name="bootstrap", retries=0, cache_policy=NO_CACHE)
def bootstrap_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Pre-train the demo's encoder and LLM, then align + instruct; returns the phase metrics."""
    return run_bootstrap(cfg, cfg.bootstrap.output, progress=True)


@task(name="train", retries=0, cache_policy=NO_CACHE)
def train_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Run cfg.train (the boost stage by default): a resumable run, so a retry by hand continues."""
    result = run_train_stage(cfg, progress=True)
    return {
        "stage": cfg.train.stage,
        "adapter": cfg.train.adapter,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.final_loss,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "wall_s": round(result.wall_s, 1),
        "resumed_from": result.resumed_from,
        "trainable": result.trainable,
    }
