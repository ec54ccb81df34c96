"""DVC stage `train`: the boost stage (dual-channel attention, LLM frozen) on the synthesized
conversations, from the bootstrap VLM (demo) or LLaVA-1.5 (paper). With
orchestration.train_nproc_per_node N > 1 the stage runs the same code under torchrun itself
(`torchrun --standalone --nproc_per_node N -m spatialboost.train`) and keeps rank 0's metrics."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.metrics import write_metrics
from tasks.train import train_task


@flow(name="train")
def train_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write train.output (vlm/, encoder/, checkpoints/) and metrics/train.json."""
    cfg = load_config(params, overrides)
    metrics = train_task(cfg, params, list(overrides or []))
    write_metrics(cfg.orchestration.metrics_dir, "train", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(train_flow, __doc__)
