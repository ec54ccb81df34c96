"""Stages that do not apply to a profile succeed and say why, instead of failing.

`dvc repro` runs every stage of dvc.yaml in every profile. The paper profile loads LLaVA-1.5's
released weights, so the demo's `bootstrap` stage has nothing to do there: it writes a marker
into its output folder and metrics that say it was skipped, and DVC caches that like any output.

    reason = skip_reason(cfg, "bootstrap")       # None when the stage applies
    metrics = mark_skipped(cfg.bootstrap.output, "bootstrap", reason)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spatialboost.config import SpatialBoostConfig
from spatialboost.io import write_json_atomic

SKIP_FILE = "SKIPPED.json"


def skip_reason(cfg: SpatialBoostConfig, stage: str) -> str | None:
    """Why `stage` does not apply to `cfg` (one line), or None when it does."""
    if stage == "bootstrap" and not cfg.bootstrap.enabled:
        return f"bootstrap.enabled is false: the boost stage starts from released weights (train.init = {cfg.train.init})"
    return None


def mark_skipped(output: str | Path, stage: str, reason: str) -> dict[str, Any]:
    """Write `<output>/SKIPPED.json` (the stage's output, so DVC has one to cache); return its metrics."""
    record = {"stage": stage, "skipped": True, "reason": reason}
    Path(output).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(output) / SKIP_FILE, record)
    return {"skipped": True, "reason": reason}
