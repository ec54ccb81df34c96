"""DVC stage `manifest`: read every image of `data.source` once; bad files go to quarantine."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from spatialboost.data.manifest import manifest_preflight
from tasks.data import build_manifest_task
from tasks.metrics import write_metrics


@flow(name="manifest")
def manifest_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write data.manifest and data.quarantine; the counts become metrics/manifest.json."""
    cfg = load_config(params, overrides)
    counts = build_manifest_task(cfg.data)
    write_metrics(cfg.orchestration.metrics_dir, "manifest", counts)
    return counts


if __name__ == "__main__":
    run_stage(manifest_flow, __doc__, check=lambda cfg: manifest_preflight(cfg.data))
