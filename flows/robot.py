"""DVC stage `robot` (robot/dvc.yaml, apart from the main pipeline so that `dvc repro` skips it):
CortexBench behaviour cloning on frozen features. MetaWorld rolled out for the blind floor, the
baseline encoder and every boost seed's encoder, one task run per (task, encoder, seed) on the
configured task runner (orchestration: threads, Dask or Ray); CortexBench's released Adroit /
DMControl / TriFinger demonstrations read when `robot.released` names them. Run it with
`dvc repro robot/dvc.yaml` (or `python -m flows.robot --params params.yaml`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import flow
from prefect.futures import wait
from tqdm import tqdm

from flows._stage import run_stage
from spatialboost.config import SpatialBoostConfig, load_config
from spatialboost.evaluate.robot.protocol import robot_learning
from tasks.metrics import write_metrics
from tasks.robot import TASKS


def submit_all(cfg: SpatialBoostConfig) -> Callable[[Callable[..., Any], Sequence[Any]], list[Any]]:
    """robot_learning's `execute`: every item as a Prefect task run on the flow's runner, results in order."""

    def execute(fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [TASKS[fn].submit(cfg, item) for item in items]
        with tqdm(total=len(futures), desc=fn.__name__, unit="run") as bar:
            done = 0
            while done < len(futures):
                finished = wait(futures, timeout=5).done
                bar.update(len(finished) - done)
                done = len(finished)
        return [future.result() for future in futures]

    return execute


@flow(name="robot")
def robot_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Write robot.output (report.md, success.png, results.json) and metrics/robot.json."""
    cfg = load_config(params, overrides)
    result = robot_learning(cfg, execute=submit_all(cfg))
    write_metrics(cfg.orchestration.metrics_dir, "robot", result["metrics"])
    return result["metrics"]


if __name__ == "__main__":
    run_stage(robot_flow, __doc__, fan_out=True, uses_gpu=True)
