"""Tasks of the `robot` stage: the protocol's independent pieces, run by the flow's task runner."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.evaluate.robot.protocol import Unit, prepare_demonstrations, run_unit


@task(name="robot-demonstrations", retries=0, cache_policy=NO_CACHE)
def demonstrations_task(cfg: SpatialBoostConfig, task_name: str) -> int:
    """The scripted expert's demonstrations of one MetaWorld task, generated once into robot.demo_dir."""
    return prepare_demonstrations(cfg, task_name)


@task(name="robot-bc", retries=0, cache_policy=NO_CACHE, task_run_name="bc-{unit.task}-{unit.run}-{unit.seed}")
def behaviour_cloning_task(cfg: SpatialBoostConfig, unit: Unit) -> dict[str, Any]:
    """One policy trained on one encoder's frozen features and rolled out."""
    return run_unit(cfg, unit)
