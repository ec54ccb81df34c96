"""DVC stage `hub` (first in the graph): the pinned checkpoints of hub.models into hub.cache_dir,
from the Hugging Face Hub or, offline, from the mirror folder hub.mirror. The only stage that
downloads; in the demo (nothing pinned) it writes its summary and nothing else."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import SpatialBoostConfig, load_config
from spatialboost.hub import active_roles, preflight
from tasks.hub import hub_task
from tasks.metrics import write_metrics


@flow(name="hub")
def hub_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write hub.cache_dir/<role> for every role the config loads, hub.cache_dir/hub.json and metrics/hub.json."""
    cfg = load_config(params, overrides)
    metrics = hub_task(cfg)
    write_metrics(cfg.orchestration.metrics_dir, "hub", metrics)
    return metrics


def _preflight(cfg: SpatialBoostConfig) -> str | None:
    return preflight(cfg.hub, roles=active_roles(cfg))  # the encoders not chosen need no pin


if __name__ == "__main__":
    run_stage(hub_flow, __doc__, check=_preflight)
