"""DVC stage `robot` (robot/dvc.yaml, apart from the main pipeline so that `dvc repro` skips it):
CortexBench behaviour cloning on frozen features. MetaWorld rolled out for the blind floor, the
baseline encoder and every boost seed's encoder, one task run per (task, encoder, seed) on the
configured task runner (orchestration: threads, Dask or Ray); CortexBench's released Adroit /
DMControl / TriFinger demonstrations read when `robot.released` names them. Run it with
`dvc repro robot/dvc.yaml` (or `python -m flows.robot --params params.yaml`)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._stage import run_stage, submit_shards
from spatialboost.config import load_config
from spatialboost.evaluate.robot.protocol import Unit, robot_learning
from tasks.metrics import write_metrics
from tasks.robot import behaviour_cloning_task, demonstrations_task


@flow(name="robot")
def robot_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write robot.output (report.md, success.png, results.json) and metrics/robot.json."""
    cfg = load_config(params, overrides)

    def run_demos(tasks: list[str]) -> list[int]:
        return submit_shards(demonstrations_task, cfg, [(task,) for task in tasks], desc="demonstrations")

    def run_units(units: list[Unit]) -> list[dict[str, Any]]:
        return submit_shards(behaviour_cloning_task, cfg, [(unit,) for unit in units], desc="behaviour cloning")

    result = robot_learning(cfg, run_demos=run_demos, run_units=run_units)
    write_metrics(cfg.orchestration.metrics_dir, "robot", result["metrics"])
    return result["metrics"]


if __name__ == "__main__":
    run_stage(robot_flow, __doc__, fan_out=True, uses_gpu=True)
