"""DVC stage `align` (paper profile, a new encoder): LLaVA-1.5's feature alignment, the projector
alone trained on LCS-558K captions, encoder and LLM frozen. With LLaVA's own CLIP (released weights)
or no lvlm.encoder it writes SKIPPED.json and metrics saying why, and succeeds."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.lvlm import lvlm_stage_task
from tasks.metrics import write_metrics


@flow(name="align")
def align_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write lvlm.align.output/<encoder>/ (projector, align.json) and metrics/align.json."""
    cfg = load_config(params, overrides)
    metrics = lvlm_stage_task(cfg, "align", params, list(overrides or []))
    write_metrics(cfg.orchestration.metrics_dir, "align", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(align_flow, __doc__)
