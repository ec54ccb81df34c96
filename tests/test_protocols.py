"""The published protocols' pieces against hand-computed values: crops, caps, windows, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialboost.evaluate.benchmarks import EncoderGeometry, _Truth, _window_targets
from spatialboost.evaluate.protocols import (
    PROTOCOLS,
    WindowPlan,
    confusion_matrix,
    depth_eval_metrics,
    eigen_crop_mask,
    garg_crop_mask,
    kb_crop_box,
    nyu_train_crop_box,
    protocol_scale,
    segmentation_scores,
    stitch_windows,
    window_origins,
    window_plan,
)
from spatialboost.evaluate.readers import IGNORE_INDEX


def test_eigen_crop_is_bts_rows_45_to_470_and_columns_41_to_600() -> None:
    mask = eigen_crop_mask((480, 640))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (45, 470, 41, 600)
    assert mask.sum() == 426 * 560
    half = eigen_crop_mask((240, 320))  # other sizes: the same fractions
    assert np.flatnonzero(half.any(1))[0] == 22 and np.flatnonzero(half.any(0))[-1] == 299


def test_garg_and_kb_crops_on_a_kitti_frame() -> None:
    mask = garg_crop_mask((375, 1242))
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    # int(0.40810811 * 375) = 153, int(0.99189189 * 375) = 371, int(0.03594771 * 1242) = 44, int(0.96405229 * 1242) = 1197
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert kb_crop_box(375, 1242) == (23, 13, 375, 1229)  # bottom 352 rows, centred 1216 columns
    assert kb_crop_box(376, 1241) == (24, 12, 376, 1228)
    with pytest.raises(ValueError, match="352x1216"):
        kb_crop_box(350, 1242)
    assert nyu_train_crop_box(480, 640) == (45, 43, 472, 608)


def test_protocol_table_names_splits_caps_and_sources() -> None:
    nyu, kitti, ade, voc = (PROTOCOLS[k] for k in ("nyu", "kitti", "ade20k", "voc"))
    assert (nyu.depth_range, nyu.expected_test_images) == ((1e-3, 10.0), 654)
    assert (kitti.depth_range, kitti.expected_test_images) == ((1e-3, 80.0), 652)
    assert (ade.num_classes, voc.num_classes, ade.short_side_px) == (150, 21, 512)
    assert PROTOCOLS["imagenet"].num_classes == 1000 and PROTOCOLS["cifar100"].num_classes == 100
    assert all("/" in p.source for p in PROTOCOLS.values())  # repo + file


def test_window_origins_follow_mmseg_slide_inference() -> None:
    assert window_origins(480, 336, 224) == [0, 144]  # last window moved back to the border
    assert window_origins(640, 336, 224) == [0, 224, 304]
    assert window_origins(336, 336, 224) == [0]
    assert window_origins(300, 336, 224) == [0]  # shorter than a window: one, padded
    with pytest.raises(ValueError):
        window_origins(10, 0, 1)


def test_window_plan_keeps_the_reference_pixels_per_patch() -> None:
    nyu = window_plan(PROTOCOLS["nyu"], (480, 640), (336, 336), patch_px=14)  # ViT-L/14-336: native size
    assert nyu.resized == (480, 640) and len(nyu) == 6
    assert nyu.boxes()[-1] == (144, 304, 480, 640)
    ade = window_plan(PROTOCOLS["ade20k"], (256, 341), (336, 336), patch_px=14)  # short side -> 512
    assert ade.resized == (512, 682) and ade.origins == ((0, 0), (0, 224), (0, 346), (176, 0), (176, 224), (176, 346))
    assert protocol_scale(PROTOCOLS["ade20k"], (100, 1000), 14) == pytest.approx(2.048)  # long side capped at 2048
    assert protocol_scale(PROTOCOLS["nyu"], (480, 640), 7) == 0.5  # half the patch: half the pixels
    small = window_plan(PROTOCOLS["nyu"], (480, 640), (32, 32), patch_px=8)
    assert small.resized == (274, 366) and small.boxes()[0] == (0, 0, 56, 56)
    crops = small.crops(np.zeros((480, 640, 3), np.uint8))
    assert len(crops) == len(small) and crops[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="plan"):
        small.crops(np.zeros((48, 64, 3), np.uint8))


def test_crops_pad_past_the_border_with_the_fill_colour() -> None:
    plan = WindowPlan((3, 5), (3, 5), (4, 4), ((0, 0), (0, 1)))
    crops = plan.crops(np.full((3, 5, 3), 9, np.uint8), fill=(1, 2, 3))
    assert (crops[0][:3, :4] == 9).all() and (crops[0][3] == [1, 2, 3]).all()


def test_stitch_windows_averages_overlaps() -> None:
    plan = WindowPlan((4, 6), (4, 6), (4, 4), ((0, 0), (0, 2)))  # boxes (0,0,4,4) and (0,2,4,6)
    out = stitch_windows([np.full((2, 2, 1), 1.0), np.full((2, 2, 1), 3.0)], plan)
    np.testing.assert_allclose(out[0, :, 0], [1, 1, 2, 2, 3, 3])
    assert out.shape == (4, 6, 1)
    with pytest.raises(ValueError, match="cover"):
        stitch_windows([np.ones((2, 2, 1))], WindowPlan((4, 6), (4, 6), (4, 4), ((0, 0),)))


def test_window_targets_stitched_back_recover_the_depth_map() -> None:
    """Window boxes, patch targets and stitching agree on geometry: smooth depth round-trips."""
    y, x = np.mgrid[0:480, 0:640]
    depth = (1.0 + 8.0 * y / 480 + 0.5 * x / 640).astype(np.float32)
    protocol, geometry = PROTOCOLS["nyu"], EncoderGeometry((32, 32), (4, 4), 8)
    plan = window_plan(protocol, depth.shape, geometry.window, geometry.patch_px)
    targets = _window_targets(_Truth({"a": plan}, [depth]), ["a"], protocol, geometry.grid, log=True)
    assert targets.values.shape == (len(plan), 4, 4) and targets.fraction.min() == 1.0
    pred = np.exp(stitch_windows(list(targets.values[..., None]), plan)[..., 0])
    assert depth_eval_metrics(pred, depth, protocol.depth_range)["depth_absrel"] < 0.01


def test_depth_eval_metrics_match_bts_by_hand() -> None:
    gt = np.array([[1.0, 4.0], [0.0, 5.0], [10.0, 12.0]])  # 0 = none, 10 and 12 are not < 10 m
    pred = np.array([[1.0, 2.0], [3.0, np.inf], [10.0, np.nan]])  # inf -> 10 (the cap)
    m = depth_eval_metrics(pred, gt, (1e-3, 10.0))
    # valid: (1, 1), (4, 2), (5, 10): errors 0, 2, 5
    assert m["depth_rmse"] == pytest.approx(math.sqrt(29 / 3))
    assert m["depth_absrel"] == pytest.approx((0 + 0.5 + 1.0) / 3)
    assert m["depth_delta1"] == pytest.approx(1 / 3)
    assert depth_eval_metrics(pred, np.zeros_like(gt), (1e-3, 10.0)) is None


def test_segmentation_scores_match_mmseg_by_hand() -> None:
    gt = np.array([[0, 0, 0, 1], [1, 1, IGNORE_INDEX, 2]])
    pred = np.array([[0, 0, 1, 1], [1, 1, 2, 0]])
    confusion = confusion_matrix(pred, gt, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 3, 0], [1, 0, 0]]
    scores = segmentation_scores(np.array([[2, 1, 0], [0, 3, 0], [0, 0, 0]]))
    assert scores["seg_miou"] == pytest.approx((2 / 3 + 3 / 4) / 2)  # class 2 absent everywhere: skipped
    assert scores["seg_pixel_acc"] == pytest.approx(5 / 6)
