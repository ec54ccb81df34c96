"""DVC stage `extract`: every accepted image -> a canonical 3D scene record (shards in parallel)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage, submit_shards, task_resources
from spatialboost.config import load_config
from spatialboost.extract.pipeline import extract_preflight, run_extract_stage
from tasks.extract import extract_shard_task
from tasks.metrics import write_metrics


@flow(name="extract")
def extract_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Extract the images of data.manifest into extract.output (run_extract_stage), one Prefect task
    per shard on the configured runner; resumes at the missing shards."""
    cfg = load_config(params, overrides)

    def run_shards(shards: list[list[str]]) -> list[Any]:
        jobs = [(index, shard) for index, shard in enumerate(shards)]
        with task_resources(cfg.orchestration, cfg.device):  # Ray: one GPU per shard task
            return submit_shards(extract_shard_task, cfg, jobs, desc="extract shards")

    metrics = run_extract_stage(cfg, run_shards=run_shards)
    write_metrics(cfg.orchestration.metrics_dir, "extract", metrics)
    return metrics


if __name__ == "__main__":
    run_stage(extract_flow, __doc__, fan_out=True, uses_gpu=True, check=extract_preflight)
