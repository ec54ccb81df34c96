"""DVC stage `bootstrap` (demo profile): pre-train a small encoder (semantic objective only) and a
small LLM with its own tokenizer, then LLaVA's align and instruct stages: the baseline to boost."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.metrics import write_metrics
from tasks.train import bootstrap_task


@flow(name="bootstrap")
def bootstrap_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write bootstrap.output (encoder/, vlm/) and metrics/bootstrap.json."""
    cfg = load_config(params, overrides)
    metrics = bootstrap_task(cfg)
    write_metrics(cfg.orchestration.metrics_dir, "bootstrap", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(bootstrap_flow, __doc__)
