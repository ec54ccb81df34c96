"""DVC stage `bootstrap` (demo profile): pre-train a small encoder (semantic objective only) and a
small LLM with its own tokenizer, then LLaVA's align and instruct stages: the baseline to boost.
With bootstrap.enabled false (the paper profile: released weights) it writes a SKIPPED.json marker
and metrics saying why, and succeeds. With bootstrap.release set it installs that released
bootstrap (verified against the configured recipe) instead of training."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.bootstrap import bootstrap_task
from tasks.metrics import write_metrics


@flow(name="bootstrap")
def bootstrap_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write bootstrap.output (encoder/, vlm/) and metrics/bootstrap.json (run_bootstrap_stage)."""
    cfg = load_config(params, overrides)
    metrics = bootstrap_task(cfg)
    write_metrics(cfg.orchestration.metrics_dir, "bootstrap", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(bootstrap_flow, __doc__)
