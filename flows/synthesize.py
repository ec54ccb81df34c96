"""DVC stage `synthesize`: each 3D scene record -> one multi-turn spatial CoT conversation."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage, submit_shards
from spatialboost.config import load_config
from spatialboost.qa.pipeline import QAShard, run_synthesize_stage, synthesize_preflight
from tasks.metrics import write_metrics
from tasks.synthesize import synthesize_shard_task


@flow(name="synthesize")
def synthesize_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write the conversations into synthesize.output (run_synthesize_stage, resumable), one
    Prefect task per shard; with ground truth at hand every answer is also checked against it."""
    cfg = load_config(params, overrides)

    def run_shards(shards: list[QAShard]) -> list[dict[str, Any]]:
        return submit_shards(synthesize_shard_task, cfg, [(shard,) for shard in shards], desc="synthesize shards")

    metrics = run_synthesize_stage(cfg, run_shards=run_shards)
    write_metrics(cfg.orchestration.metrics_dir, "synthesize", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(synthesize_flow, __doc__, fan_out=True, check=synthesize_preflight)
