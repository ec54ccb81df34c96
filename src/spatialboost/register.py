"""The `register` stage: one MLflow run of the pipeline and the boosted encoder as a registry version.

    record = register_pipeline(cfg)    # {"model", "version", "champion", "run_id", "tracking_uri"}

The run "pipeline" holds the config as params, the evaluate and train metrics, the report as
artifacts and the DVC hash of the QA data as a tag; the boosted encoder becomes a new version of
`spatialboost-<encoder>` (`candidate`), and `champion` if it beats the current one
(tracking.py: the only module that imports MLflow).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from spatialboost.config import SpatialBoostConfig
from spatialboost.models.card import CardInputs, base_model_of, model_card
from spatialboost.models.export import read_spec
from spatialboost.tracking import Tracker, git_commit


def numeric_metrics(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics flattened to dotted keys ("boosted.depth_rmse.mean"); None, text and bools skipped."""
    out: dict[str, float] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_metrics(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def qa_hash(lock_path: str | Path, qa_output: str) -> str | None:
    """md5 of the `synthesize` stage's QA output in dvc.lock, or None when it is not locked."""
    path = Path(lock_path)
    if not path.is_file():
        return None
    outs = (yaml.safe_load(path.read_text()) or {}).get("stages", {}).get("synthesize", {}).get("outs", [])
    return next((o.get("md5") for o in outs if o.get("path") == qa_output), None)


def base_checkpoint(cfg: SpatialBoostConfig) -> str:
    """The checkpoint the boosted encoder started from: the chosen lvlm.encoder's (the DINOv2 or
    OpenCLIP repository, or LLaVA-1.5 for its own CLIP), else train.init."""
    choice = cfg.lvlm.chosen()
    return choice.path if choice is not None else cfg.train.init


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def register_pipeline(cfg: SpatialBoostConfig, lock_path: str | Path = "dvc.lock") -> dict[str, Any]:
    """The `register` stage, what `spatialboost register` and flows/register.py both run: log the
    run "pipeline" (params, evaluate + train metrics, report), register train.output/encoder with
    its model card (README.md) and promote it to champion if it beats the current one; returns the
    metrics/register.json record."""
    metrics_dir = Path(cfg.orchestration.metrics_dir)
    evaluation = _read_json(metrics_dir / "evaluate.json")
    metrics = numeric_metrics(evaluation)
    metrics |= numeric_metrics(_read_json(metrics_dir / "train.json"), "train.")
    tags = {"dvc.qa_hash": qa_hash(lock_path, cfg.synthesize.output) or "unknown"}
    tracker = Tracker(cfg.tracking, cfg.profile)
    encoder_name = cfg.registered_encoder_name()  # registry.encoder_name, or the chosen lvlm.encoder's real name
    name, version, champion = tracker.model_name(encoder_name), None, False
    with tracker.run("pipeline", config=cfg, tags=tags) as run_id:
        tracker.log_metrics(metrics)  # before registering: the champion rule reads the run's metrics
        if Path(cfg.evaluate.output).is_dir():
            tracker.log_artifacts(cfg.evaluate.output, "report")
        if cfg.registry.enabled:
            export = Path(cfg.train.output) / "encoder"
            card = model_card(CardInputs(
                model_name=name, spec=read_spec(export), base_model=base_model_of(base_checkpoint(cfg), cfg.hub),
                data_version=tags["dvc.qa_hash"], recipe=cfg.train.model_dump(mode="json"), metrics=evaluation,
                git_commit=git_commit(), profile=cfg.profile, run_id=run_id,
            ))
            version = tracker.register_encoder(export, encoder_name, model_card=card)
            champion = tracker.promote_if_better(name, version)
    return {"model": name, "version": version, "champion": champion, "run_id": run_id, "tracking_uri": tracker.uri}
