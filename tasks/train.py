"""Tasks of the `bootstrap` and `train` stages: each calls one library entry point."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.train.bootstrap import run_bootstrap
from spatialboost.train.launch import launch_train_processes
from spatialboost.train.release import install_release
from spatialboost.train.stage import run_train_stage, train_metrics


@task(name="bootstrap", retries=0, cache_policy=NO_CACHE)
def bootstrap_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Pre-train the demo's encoder and LLM, then align + instruct; returns the phase metrics."""
    return run_bootstrap(cfg, cfg.bootstrap.output, progress=True)


@task(name="install-bootstrap-release", retries=1, cache_policy=NO_CACHE)
def install_release_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Verify bootstrap.release against the configured recipe and copy it to bootstrap.output."""
    return install_release(cfg, cfg.bootstrap.release, cfg.bootstrap.output)


@task(name="train", retries=0, cache_policy=NO_CACHE)
def train_task(cfg: SpatialBoostConfig, params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Run cfg.train (the boost stage by default): a resumable run, so a retry by hand continues.

    orchestration.train_nproc_per_node > 1: under torchrun (params + overrides are handed on),
    and the metrics are rank 0's.
    """
    if cfg.orchestration.train_nproc_per_node > 1:
        return launch_train_processes(params, list(overrides or []), cfg)
    return train_metrics(cfg, run_train_stage(cfg, progress=True))
