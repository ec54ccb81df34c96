"""dvc.yaml lists what each stage really reads: every project module its entry point imports (its
code deps) and every params value its code reaches (its params), derived from the code by
tests/lineage.py. A stage that reads more than it lists is not rerun when that changes: its
outputs and metrics would silently be stale."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import yaml

from tests.lineage import StageLineage, missing_code, missing_params, stage_lineage, unread_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    **yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"],
    # the robot stage lives apart (robot/dvc.yaml, wdir: ..) so that `dvc repro` skips it; same rules
    **yaml.safe_load((ROOT / "robot" / "dvc.yaml").read_text())["stages"],
}

WHOLE_CONFIG_RECORDS = {
    "register": "the MLflow run records the whole config as its params: a record of the run that made the "
    "registered encoder, rerun whenever that encoder or its metrics change"
}
"""Stages that may read the whole config, and why that is no input of their outputs."""


@functools.cache
def lineage(name: str) -> StageLineage:
    return stage_lineage(STAGES[name])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_lists_the_code_it_imports(name: str) -> None:
    missing = missing_code(STAGES[name], lineage(name))
    assert not missing, f"dvc.yaml stage {name} imports code its deps do not list: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_lists_the_params_it_reads(name: str) -> None:
    missing = missing_params(STAGES[name], lineage(name), whole_config_ok=name in WHOLE_CONFIG_RECORDS)
    assert not missing, f"dvc.yaml stage {name} reads params it does not list: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_listed_param_is_read(name: str) -> None:
    unread = unread_params(STAGES[name], lineage(name))
    assert not unread, f"dvc.yaml stage {name} lists params its code never reads (reruns for nothing): {unread}"


def test_a_removed_dep_or_param_is_caught() -> None:
    """The check itself: drop one code dep and one param of a stage and it reports both."""
    stage = copy.deepcopy(STAGES["extract"])
    stage["deps"].remove("src/spatialboost/geometry")
    stage["params"].remove("seed")
    assert any(f.startswith("src/spatialboost/geometry/") for f in missing_code(stage, lineage("extract")))
    assert any(m.startswith("seed ") for m in missing_params(stage, lineage("extract")))


def test_what_evaluate_runs_is_in_its_lineage() -> None:
    """The hole this test was written for: evaluate generates answers (SpatialVLM.generate) and
    loads the models it compares (train/stage.py), so a change to either must rerun it."""
    assert {"src/spatialboost/models/vlm.py", "src/spatialboost/train/stage.py"} <= lineage("evaluate").files


def test_the_bootstrap_reads_no_boost_setting() -> None:
    """Each bootstrap phase has its own loop settings: the boost's `train` section is not read
    (a boost change must not retrain, or reinstall, the bootstrap), beside the skip message's
    train.init."""
    reads = lineage("bootstrap").reads
    assert {path for path in reads if path[:1] == ("train",)} <= {("train", "init")}
