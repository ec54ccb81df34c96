"""Acceptance: typed answers of >= 200 held-out world scenes, recomputed from the world itself.

Scenes go through the real path: the world's test split (WorldConfig defaults, 128x128), the
ground-truth extractor (storing the depth maps beside the records), the synthesis pipeline
(reading them back, 16-bit log-quantised). The checker
(qa/checker.py) then recomputes every answer from the dataset's annotations and depth maps only,
with its own implementation of every relation. Objects are subsampled to 1000 points (the
default is 4000) so that extraction fits the test budget; `benchmarks/qa_synthesis.py
--acceptance` runs the default settings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from spatialboost.config import ExtractConfig, ObjectGeometryConfig, SynthesizeConfig, WorldConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.pipeline import extract_shard
from spatialboost.qa import synthesize
from spatialboost.qa.checker import check_output, check_sidecar
from spatialboost.qa.formats import read_jsonl
from spatialboost.qa.pipeline import plan, shard_paths
from spatialboost.world import render_dataset

N_SCENES = 256  # about a fifth end in quarantine (extraction: no usable object; synthesis: no turn of a
# required level, e.g. fewer than two comparable objects): >= 200 remain


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory: pytest.TempPathFactory) -> tuple[RGBDDataset, list[dict], Path]:
    root = tmp_path_factory.mktemp("world")
    render_dataset(WorldConfig(n_train=0, n_test=N_SCENES), root, progress=False)
    dataset = RGBDDataset(root)
    observer = GroundTruthObserver(dataset)
    geometry = ObjectGeometryConfig(max_points_per_object=1000)
    scenes = tmp_path_factory.mktemp("scenes")
    extract_shard(observer, dataset.ids("test"), 0, ExtractConfig(geometry=geometry), scenes, seed=0)
    cfg = SynthesizeConfig(output=str(tmp_path_factory.mktemp("qa")), caption_turns=2, n_renderings=0)
    summary = synthesize(scenes, cfg, image_root=root, progress=False)
    print(json.dumps({"quarantine_by_reason": summary["quarantine_by_reason"]}))
    sidecar = [r for shard in plan(scenes, cfg) for r in read_jsonl(shard_paths(cfg.output, shard.index)["sidecar"])]
    return dataset, sidecar, Path(cfg.output)


def test_typed_answers_agree_with_the_world(synthesised) -> None:
    dataset, sidecar, out = synthesised
    rates = check_sidecar(sidecar, dataset)
    assert check_output(out, dataset.root) == rates
    print(json.dumps({k: v for k, v in rates.items() if k != "disagreements"}, indent=1))
    assert rates["images"] >= 200
    assert rates["choice_bool"]["n"] >= 600 and rates["numeric"]["n"] >= 800
    assert rates["choice_bool"]["rate"] >= 0.99, rates["disagreements"]
    assert rates["numeric"]["rate"] >= 0.95, rates["disagreements"]
    assert set(rates["by_qtype"]) >= {
        "point_depth", "point_closer", "object_distance", "object_box", "left_right", "front_behind",
        "distance_between", "closest_to_camera",
    }  # fmt: skip
    assert rates["unchecked_text_turns"] == 2 * rates["images"]


def test_the_checker_catches_wrong_answers(synthesised) -> None:
    """Flip every bool and choice and push every number three tolerances away: nothing agrees."""
    dataset, sidecar, _ = synthesised
    wrong = copy.deepcopy(sidecar[:40])
    for record in wrong:
        for turn in record["turns"]:
            if turn["answer_type"] == "bool":
                turn["value"] = not turn["value"]
            elif turn["answer_type"] == "choice":
                others = [c for c in turn["choices"] if c != turn["value"]]
                turn["value"] = others[0]
            elif turn["answer_type"] == "number":
                turn["value"] += 3 * turn["tolerance"]
            elif turn["answer_type"] == "box":
                turn["value"] = [v + 3 * t for v, t in zip(turn["value"], turn["tolerance"], strict=True)]
    rates = check_sidecar(wrong, dataset)
    assert rates["choice_bool"]["agree"] <= 0.02 * rates["choice_bool"]["n"]
    assert rates["numeric"]["agree"] == 0


def test_sidecar_lists_every_scene_once(synthesised) -> None:
    _, sidecar, _ = synthesised
    ids = [r["image_id"] for r in sidecar]
    assert len(ids) == len(set(ids)) >= 200
    assert all(Path(r["image"]).parts[0] == "rgb" for r in sidecar)
