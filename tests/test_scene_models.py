"""The hand-set tiny Depth Pro and SAM 2 of tests/tiny_scene_models.py, through the pipeline's own
backends (`DepthProEstimator`, `HFSam2Segmenter`), on world renders saved as JPEG: what the
paper-profile end-to-end test relies on, checked against the world's ground truth."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from spatialboost.data import RGBDDataset
from spatialboost.extract.masks import MaskFilter, mask_iou
from spatialboost.runtime import torch_threads
from tests.tiny_scene_models import (
    HUE_DEG,
    GroundCamera,
    distinct_hue_scene,
    save_colour_sam2,
    save_ground_plane_depth_pro,
    scene_jpegs,
)

CAMERA = GroundCamera()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[RGBDDataset, dict[str, np.ndarray]]:
    """Six admitted renders (their ground truth) and their JPEG-decoded pixels."""
    root = tmp_path_factory.mktemp("renders")
    jpegs = scene_jpegs(CAMERA, root, 6)
    return RGBDDataset(root), {Path(name).stem: np.asarray(Image.open(io.BytesIO(data))) for name, data in jpegs.items()}


def test_depth_pro_gives_the_ground_plane_of_its_camera(scenes, tmp_path: Path) -> None:  # noqa: ANN001
    from spatialboost.extract.depth_pro import DepthProEstimator

    world, images = scenes
    estimator = DepthProEstimator(str(save_ground_plane_depth_pro(tmp_path / "depth", CAMERA)))
    ids = list(images)
    with torch_threads(1):
        results = estimator.estimate([images[i] for i in ids], [world.row(i).fx for i in ids], ["dataset"] * len(ids))
    for image_id, result in zip(ids, results, strict=True):
        truth, instances = world.depth(image_id), world.instances(image_id)
        ground = (instances == 0) & (truth > 0)
        assert ground.mean() > 0.7 and not result.reasons  # the ground fills the view; a valid map
        np.testing.assert_allclose(result.depth[ground], truth[ground], rtol=1e-3)
        objects = instances > 0
        assert (result.depth[objects] >= truth[objects] * 0.999).all()  # objects are seen as the ground behind them
        assert result.model_focal_px == pytest.approx(world.row(image_id).fx, rel=1e-4)  # the FOV head: the camera's


def test_sam2_masks_are_the_coloured_objects(scenes, tmp_path: Path) -> None:  # noqa: ANN001
    from spatialboost.extract.sam2_hf import HFSam2Segmenter

    world, images = scenes
    segmenter = HFSam2Segmenter(str(save_colour_sam2(tmp_path / "sam2")), points_per_side=16, points_per_batch=64,
                                mask_filter=MaskFilter(stability_thresh=0.9, min_area_px=64))  # the paper profile's filters
    ids = list(images)
    with torch_threads(1):
        found = segmenter.segment([images[i] for i in ids])
    n_matched = 0
    for image_id, masks in zip(ids, found, strict=True):
        instances = world.instances(image_id)
        assert distinct_hue_scene(world.annotation(image_id), instances)
        assert masks, image_id
        for mask in masks:  # every mask lies on one object (its edges blurred by 1-2 px), never out on the ground
            under = np.bincount(instances[mask.mask], minlength=2)
            near = ndimage.binary_dilation(instances == under[1:].argmax() + 1, iterations=2)
            assert (mask.mask & ~near).sum() <= 0.05 * mask.mask.sum(), image_id
            assert mask.score > 0.8 and mask.stability > 0.9, image_id
        for obj in world.annotation(image_id)["objects"]:
            truth = instances == obj["instance_id"]
            best = max(mask_iou(m.mask, truth) for m in masks)
            if obj["colour"] not in HUE_DEG:
                assert best < 0.1, (image_id, obj["colour"])  # black and white objects are not found
            elif truth.sum() >= 100:
                assert best > 0.6, (image_id, obj["colour"], best)
                n_matched += 1
    assert n_matched >= 2 * len(ids)

    ground = np.broadcast_to(np.array([120, 110, 96], np.uint8), (128, 128, 3)).copy()  # the ground's brownish grey
    with torch_threads(1):
        assert segmenter.segment([ground]) == [[]]


def test_two_objects_of_one_hue_family_make_one_mask_so_such_scenes_are_not_admitted() -> None:
    red, orange, blue = ({"instance_id": k, "colour": c} for k, c in ((1, "red"), (2, "orange"), (3, "blue")))
    instances = np.zeros((64, 64), np.uint16)
    instances[10:30, 10:30], instances[10:30, 35:55], instances[40:60, 20:40] = 1, 2, 3
    assert not distinct_hue_scene({"objects": [red, orange, blue]}, instances)  # red and orange: 27 degrees apart
    assert distinct_hue_scene({"objects": [red, blue]}, instances)
    assert not distinct_hue_scene({"objects": [red, {"instance_id": 4, "colour": "black"}]}, instances)  # one coloured
    instances[0, :] = 1  # the red object touches the border: only one clear object left
    assert not distinct_hue_scene({"objects": [red, blue]}, instances)
