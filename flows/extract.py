"""DVC stage `extract`: every accepted image -> a canonical 3D scene record (shards in parallel)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import as_completed
from tqdm import tqdm

from flows._stage import run_stage, task_resources
from spatialboost.config import SpatialBoostConfig, load_config
from spatialboost.data.sources import source_problem
from spatialboost.extract.pipeline import manifest_ids
from tasks.extract import extract_shard_task, extraction_accuracy, finalize_extraction, plan_extraction
from tasks.metrics import write_metrics


@flow(name="extract")
def extract_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Extract the images of data.manifest into extract.output; resumes at the first missing shard.

    With ground truth at hand (data.source = world) the test split is also measured against it.
    """
    cfg = load_config(params, overrides)
    start = time.perf_counter()
    ids = manifest_ids(cfg.data.manifest)
    shards = plan_extraction(cfg, ids)
    with task_resources(cfg.orchestration, cfg.device):  # Ray: one GPU per shard task
        futures = [extract_shard_task.submit(cfg, index, shard) for index, shard in enumerate(shards)]
    reports = [f.result() for f in tqdm(as_completed(futures), total=len(futures), desc="extract shards", unit="shard")]
    totals = finalize_extraction(cfg, ids, len(shards))
    metrics: dict[str, Any] = {
        "backend": cfg.extract.backend,
        **totals,
        "n_shards": len(shards),
        "n_shards_skipped": sum(report is None for report in reports),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if cfg.data.source == "world" and cfg.extract.backend == "ground_truth":
        metrics["accuracy"] = extraction_accuracy(cfg)
    write_metrics(cfg.orchestration.metrics_dir, "extract", metrics)
    return metrics


def _preflight(cfg: SpatialBoostConfig) -> str | None:
    """The user's mistakes, as one line, before a task starts: a source or manifest that is not there."""
    problem = cfg.data.watch_problem()
    if problem is None and not Path(cfg.data.manifest).is_file():
        problem = f"data.manifest: {cfg.data.manifest} does not exist (run the manifest stage first: dvc repro manifest)"
    return problem or source_problem(cfg.data)


if __name__ == "__main__":
    run_stage(extract_flow, __doc__, fan_out=True, uses_gpu=True, check=_preflight)
