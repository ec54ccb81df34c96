"""DVC stage `instruct` (paper profile, a new encoder): LLaVA-1.5's visual instruction tuning, the
projector and the LLM trained on the 665K mix, the encoder frozen; its folder (train.init) is the
LVLM the boost starts from. With LLaVA's own CLIP its lvlm.json points at the released checkpoint."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.lvlm import lvlm_stage_task
from tasks.metrics import write_metrics


@flow(name="instruct")
def instruct_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write lvlm.instruct.output (lvlm.json, <encoder>/vlm/) and metrics/instruct.json."""
    cfg = load_config(params, overrides)
    metrics = lvlm_stage_task(cfg, "instruct", params, list(overrides or []))
    write_metrics(cfg.orchestration.metrics_dir, "instruct", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(instruct_flow, __doc__)
