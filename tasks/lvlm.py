"""Tasks of the `align` and `instruct` stages (LLaVA-1.5's two stages for a new encoder): each
calls one library entry point, under torchrun itself when the stage trains on several processes."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.train.launch import launch_train_processes
from spatialboost.train.lvlm_stage import lvlm_skip_reason, run_lvlm_stage


@task(name="lvlm-stage", retries=0, cache_policy=NO_CACHE)
def lvlm_stage_task(
    cfg: SpatialBoostConfig, phase: str, params: str = "params.yaml", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Train (or skip, or reuse) `phase` for cfg.lvlm.encoder; a resumable run, so a retry by hand
    continues. orchestration.train_nproc_per_node > 1: under torchrun, rank 0's metrics."""
    if cfg.orchestration.train_nproc_per_node > 1 and lvlm_skip_reason(cfg, phase) is None:  # type: ignore[arg-type]
        return launch_train_processes(params, list(overrides or []), cfg, stage=phase)
    return run_lvlm_stage(cfg, phase, progress=True)  # type: ignore[arg-type]
