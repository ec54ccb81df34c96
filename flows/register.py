"""DVC stage `register`: one MLflow run "pipeline" with the config as params, the evaluate and
train metrics, the report as artifacts and the DVC hash of the QA data as a tag; the boosted
encoder becomes a new registry version (`candidate`), and `champion` if it beats the current one."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage
from spatialboost.config import load_config
from tasks.metrics import write_metrics
from tasks.register import register_task


@flow(name="register")
def register_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write metrics/register.json: {"model", "version", "champion", "run_id", "tracking_uri"}."""
    cfg = load_config(params, overrides)
    record = register_task(cfg)
    write_metrics(cfg.orchestration.metrics_dir, "register", record)
    return record


if __name__ == "__main__":
    run_stage(register_flow, __doc__)
