"""Extraction accuracy against the world's own ground truth, and that the measure can fail.

The targets (accuracy.TARGETS) are asserted on 40 held-out scenes at 96x96 through the
ground-truth backend; corrupted observers (depth scaled, image mirrored, focal length wrong)
must break the measure each one is about, and only that one where the geometry says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from spatialboost.config import ObjectGeometryConfig, WorldConfig
from spatialboost.data import RGBDDataset
from spatialboost.extract.accuracy import TARGETS, evaluate_extraction
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.protocols import Observation, ObservationFailure

WORLD = WorldConfig(n_train=0, n_test=40, width=96, height=96, seed=0)
GEOMETRY = ObjectGeometryConfig()
N_CORRUPTED = 20  # scenes per corrupted run: enough to see a broken measure, cheap


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> RGBDDataset:
    from spatialboost.world import render_dataset

    root = tmp_path_factory.mktemp("world")
    render_dataset(WORLD, root, progress=False)
    return RGBDDataset(root)


class Corrupted(GroundTruthObserver):
    """Ground truth passed through `corrupt(observation) -> observation`."""

    def __init__(self, dataset: RGBDDataset, corrupt) -> None:
        super().__init__(dataset)
        self.corrupt = corrupt

    def observe_one(self, image_id: str) -> Observation | ObservationFailure:
        result = super().observe_one(image_id)
        return result if isinstance(result, ObservationFailure) else self.corrupt(result)


def _scale_depth(obs: Observation) -> Observation:
    return dataclasses.replace(obs, depth=obs.depth * 1.25)


def _mirror(obs: Observation) -> Observation:
    """The mirror image of the scene: x -> -x in the camera frame (gravity too)."""
    masks = tuple(dataclasses.replace(m, mask=m.mask[:, ::-1].copy()) for m in obs.masks)
    gravity = None if obs.gravity_cam is None else obs.gravity_cam * np.array([-1.0, 1.0, 1.0])
    return dataclasses.replace(
        obs, image=obs.image[:, ::-1].copy(), depth=obs.depth[:, ::-1].copy(), masks=masks,
        cx=obs.width - obs.cx, gravity_cam=gravity,
    )  # fmt: skip


def _wrong_focal(obs: Observation) -> Observation:
    return dataclasses.replace(obs, fx=obs.fx * 1.5, fy=obs.fy * 1.5)


def _evaluate(dataset: RGBDDataset, observer: GroundTruthObserver, n: int | None = None) -> dict:
    return evaluate_extraction(observer, dataset.ids()[:n], GEOMETRY, seed=0)


@pytest.fixture(scope="module")
def clean(dataset: RGBDDataset) -> dict:
    return _evaluate(dataset, GroundTruthObserver(dataset))


def test_ground_truth_extraction_meets_the_targets(clean: dict) -> None:
    assert clean["n_scenes"] == 40 and clean["n_quarantined"] == 0
    assert clean["pair_distance"]["n_pairs"] >= 150
    assert clean["relations"]["left_right"]["n_pairs"] >= 100 and clean["relations"]["closer_farther"]["n_pairs"] >= 100
    assert clean["pair_distance"]["median_relative_error"] <= TARGETS["pair_distance_median_relative_error_max"]
    assert clean["relations"]["agreement"] >= TARGETS["relation_agreement_min"]
    assert clean["ground_plane"]["within_share"] >= TARGETS["ground_plane_within_1deg_min"]
    assert clean["ground_plane"]["frame_sources"] == {"ransac_plane": 40}  # gravity withheld for (c)
    assert clean["pair_distance"]["passed"] and clean["relations"]["passed"] and clean["ground_plane"]["passed"]
    assert clean["objects"]["recall"] > 0.8


def test_scaled_depth_breaks_pair_distances_only(dataset: RGBDDataset) -> None:
    report = _evaluate(dataset, Corrupted(dataset, _scale_depth), N_CORRUPTED)
    assert report["pair_distance"]["median_relative_error"] > 0.15 and not report["pair_distance"]["passed"]
    assert report["relations"]["passed"]  # a uniform scale keeps every sign
    assert report["ground_plane"]["passed"]  # and every plane orientation


def test_a_mirrored_scene_swaps_left_and_right_but_keeps_distances(dataset: RGBDDataset, clean: dict) -> None:
    report = _evaluate(dataset, Corrupted(dataset, _mirror), N_CORRUPTED)
    assert report["relations"]["left_right"]["agreement"] < 0.05
    assert report["relations"]["closer_farther"]["agreement"] >= TARGETS["relation_agreement_min"]
    assert report["pair_distance"]["median_relative_error"] <= TARGETS["pair_distance_median_relative_error_max"]
    assert not report["relations"]["passed"]


def test_a_wrong_focal_length_tilts_the_ground_plane(dataset: RGBDDataset) -> None:
    report = _evaluate(dataset, Corrupted(dataset, _wrong_focal), N_CORRUPTED)
    assert report["ground_plane"]["within_share"] < 0.5 and not report["ground_plane"]["passed"]
    assert report["ground_plane"]["median_pitch_error_deg"] > 1.0


def test_the_report_is_json_ready(clean: dict, tmp_path: Path) -> None:
    import json

    (tmp_path / "extract.json").write_text(json.dumps(clean))
    assert json.loads((tmp_path / "extract.json").read_text()) == clean
