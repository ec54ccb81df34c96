"""DVC stage `evaluate`: baseline (train.init) vs boosted (train.output/vlm) VLM: linear probes
on frozen encoder features (depth, segmentation, classification) over the world's held-out
split, and spatial VQA on BLINK- and SpatialRGPT-format benchmarks made from the same scenes."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.evaluate import evaluate_task
from tasks.metrics import write_metrics


@flow(name="evaluate")
def evaluate_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write evaluate.output (report.md + PNGs), evaluate.bench_dir and metrics/evaluate.json."""
    cfg = load_config(params, overrides)
    result = evaluate_task(cfg)
    write_metrics(cfg.orchestration.metrics_dir, "evaluate", result["metrics"])
    return result["metrics"]


if __name__ == "__main__":
    run_stage(evaluate_flow, __doc__)
