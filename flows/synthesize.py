"""DVC stage `synthesize`: each 3D scene record -> one multi-turn spatial CoT conversation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import as_completed
from tqdm import tqdm

from flows._stage import run_stage
from spatialboost.config import SpatialBoostConfig, load_config
from tasks.metrics import write_metrics
from tasks.synthesize import check_answers, finalize_synthesis, plan_synthesis, synthesize_shard_task


@flow(name="synthesize")
def synthesize_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write the conversations into synthesize.output (resumable); with ground truth at hand
    (data.source = world) every answer is also checked against it."""
    cfg = load_config(params, overrides)
    start = time.perf_counter()
    shards = plan_synthesis(cfg)
    futures = [synthesize_shard_task.submit(cfg, shard) for shard in shards]
    reports = [
        f.result() for f in tqdm(as_completed(futures), total=len(futures), desc="synthesize shards", unit="shard")
    ]
    metrics = finalize_synthesis(cfg, shards, sorted(reports, key=lambda r: r.get("index", 0)))
    if cfg.data.source == "world" and cfg.extract.backend == "ground_truth":
        checked = check_answers(cfg)
        metrics["checker"] = {key: value for key, value in checked.items() if key != "examples"}
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    write_metrics(cfg.orchestration.metrics_dir, "synthesize", metrics)
    return metrics


def _preflight(cfg: SpatialBoostConfig) -> str | None:
    """A missing extraction output, as one line, before a task starts."""
    if not Path(cfg.extract.output).is_dir():
        return f"extract.output: {cfg.extract.output} does not exist (run the extract stage first: dvc repro extract)"
    return None


if __name__ == "__main__":
    run_stage(synthesize_flow, __doc__, fan_out=True, check=_preflight)
