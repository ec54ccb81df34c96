"""Extraction backends on tiny random models of the real classes, and the pure functions behind them.

Pure parts first (mask filtering, validity, crops), then each backend loaded from a folder saved by
tiny_models.py exactly like a real checkpoint. Random weights give nonsense values: the backend
tests check shapes, dtypes, keys, batching and the handling of nonsense, not the values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import OFFICIAL_SAM2_CONFIG, OPENCLIP_NAME, TinyModels, official_sam2_overrides, save_all

from spatialboost.extract import DepthEstimator, DepthResult, Labeler, Mask, Segmenter, validate_depth
from spatialboost.extract.crops import mask_bbox, mask_crop
from spatialboost.extract.masks import (
    MaskFilter,
    finalize_masks,
    masks_to_boxes,
    point_grid,
    remove_duplicates,
    remove_duplicates_reference,
    select_candidates,
    stability_scores,
)

# Everything passes the quality filters, so random-weight models still produce masks to check.
PERMISSIVE = MaskFilter(pred_iou_thresh=0.0, stability_thresh=0.0, duplicate_iou_thresh=0.7, nested_thresh=0.9)
VOCAB = ("cube", "sphere", "cone", "table", "chair")


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same tensors up to key names (transformers renames some keys on load)."""

    def fingerprint(d: dict[str, torch.Tensor]) -> list[tuple]:
        return sorted((tuple(v.shape), float(v.double().sum()), float(v.double().abs().sum())) for v in d.values())

    return fingerprint(a) == fingerprint(b)


def _rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return save_all(tmp_path_factory.mktemp("tiny_models"), seed=0)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Two RGB images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), rng.integers(0, 256, (90, 50, 3), dtype=np.uint8)]


# ---------------------------------------------------------------- masks.py


def test_point_grid_matches_sam2_package() -> None:
    from sam2.utils.amg import build_point_grid

    for n in (1, 4, 32):
        np.testing.assert_allclose(point_grid(n), build_point_grid(n), atol=1e-7)


def test_stability_on_hand_made_logits() -> None:
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]], [[-3.0, -3.0, -3.0, -3.0]], [[5.0, 5.0, 5.0, 5.0]]])
    # mask 0: > +1 keeps 1 pixel, > -1 keeps 3 -> 1/3; mask 1 empty -> 0; mask 2 solid -> 1
    np.testing.assert_allclose(stability_scores(logits, 0.0, 1.0).numpy(), [1 / 3, 0.0, 1.0], atol=1e-6)


def test_stability_matches_sam2_package() -> None:
    from sam2.utils.amg import calculate_stability_score

    logits = torch.randn(6, 20, 30, generator=torch.Generator().manual_seed(0)) * 3
    ours = stability_scores(logits, 0.0, 1.0)
    np.testing.assert_allclose(ours.numpy(), calculate_stability_score(logits, 0.0, 1.0).numpy(), atol=1e-6)


def test_boxes_are_exclusive_and_empty_is_zero() -> None:
    masks = torch.from_numpy(
        np.stack([_rect(10, 12, 2, 3, 5, 9), np.zeros((10, 12), bool), _rect(10, 12, 9, 11, 10, 12)])
    )
    assert masks_to_boxes(masks).tolist() == [[3, 2, 9, 5], [0, 0, 0, 0], [11, 9, 12, 10]]
    assert mask_bbox(masks[0].numpy()) == (3, 2, 9, 5) and mask_bbox(masks[1].numpy()) is None


def test_select_candidates_applies_each_quality_filter() -> None:
    h, w = 20, 20
    good = np.where(_rect(h, w, 2, 2, 12, 12), 8.0, -8.0)  # confident and stable
    unstable = np.where(_rect(h, w, 2, 2, 12, 12), 0.5, -0.5)  # empty above +1 -> stability 0
    tiny = np.where(_rect(h, w, 0, 0, 2, 2), 8.0, -8.0)  # 4 pixels
    logits = torch.tensor(np.stack([good, good, unstable, tiny]), dtype=torch.float32)
    pred_iou = torch.tensor([0.9, 0.5, 0.9, 0.9])  # the second fails the IoU filter
    filt = MaskFilter(pred_iou_thresh=0.8, stability_thresh=0.9, min_area_px=5)
    masks, scores, stability = select_candidates(logits, pred_iou, filt)
    assert masks.shape == (1, h, w) and masks.dtype == torch.bool
    assert masks[0].sum() == 100 and scores.tolist() == pytest.approx([0.9]) and stability.tolist() == [1.0]


def test_remove_duplicates_known_answers() -> None:
    h, w = 40, 40
    whole = _rect(h, w, 0, 0, 20, 20)  # 400 px
    shifted = _rect(h, w, 1, 1, 21, 21)  # IoU with whole 361/439 = 0.82: a duplicate
    part = _rect(h, w, 5, 5, 10, 10)  # inside whole
    apart = _rect(h, w, 30, 30, 40, 40)  # disjoint
    partly = _rect(h, w, 14, 14, 26, 26)  # overlaps whole by 36 of 144 px: neither
    masks = torch.from_numpy(np.stack([whole, shifted, part, apart, partly]))
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    assert remove_duplicates(masks, scores, 0.7, 0.9).tolist() == [0, 3, 4]
    assert remove_duplicates(masks, scores, 0.7, None).tolist() == [0, 2, 3, 4]  # nested kept
    assert remove_duplicates(masks, scores, 0.9, None).tolist() == [0, 1, 2, 3, 4]  # looser dup threshold
    # a part that scores higher removes every whole it lies in (nesting is symmetric)
    scores = torch.tensor([0.7, 0.6, 0.9, 0.5, 0.4])
    assert remove_duplicates(masks, scores, 0.7, 0.9).tolist() == [2, 3, 4]


def test_remove_duplicates_matches_naive_reference() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        n, h, w = 30, 24, 32
        masks = np.zeros((n, h, w), dtype=bool)
        for i in range(n):
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[i, y0 : y0 + rng.integers(2, h), x0 : x0 + rng.integers(2, w)] = True
        masks[3] = masks[1]  # an exact duplicate
        scores = rng.random(n).round(1)  # ties on purpose
        for dup, nested in [(0.7, 0.9), (0.5, None), (0.9, 0.6)]:
            fast = remove_duplicates(torch.from_numpy(masks), torch.from_numpy(scores), dup, nested).tolist()
            assert fast == remove_duplicates_reference(masks, scores, dup, nested)


def test_finalize_masks_records_min_area_and_cap() -> None:
    h, w = 30, 30
    masks = torch.from_numpy(
        np.stack(
            [_rect(h, w, 0, 0, 3, 3), _rect(h, w, 10, 10, 20, 25), _rect(h, w, 0, 20, 5, 30), np.zeros((h, w), bool)]
        )
    )
    scores, stability = torch.tensor([0.99, 0.6, 0.8, 1.0]), torch.tensor([1.0, 0.9, 0.95, 1.0])
    records = finalize_masks(masks, scores, stability, MaskFilter(min_area_px=10))
    assert [r.bbox for r in records] == [(20, 0, 30, 5), (10, 10, 25, 20)]  # small + empty dropped, best first
    assert [r.area for r in records] == [50, 150] and records[0].stability == pytest.approx(0.95)
    assert all(isinstance(r.mask, np.ndarray) and r.mask.dtype == bool and r.mask.shape == (h, w) for r in records)
    assert len(finalize_masks(masks, scores, stability, MaskFilter(max_masks=1))) == 1
    assert finalize_masks(masks[:0], scores[:0], stability[:0], MaskFilter()) == []


@pytest.mark.parametrize(
    "kwargs", [dict(pred_iou_thresh=1.5), dict(nested_thresh=0.0), dict(min_area_px=-1), dict(max_masks=0)]
)
def test_mask_filter_rejects_bad_thresholds(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MaskFilter(**kwargs)


# ---------------------------------------------------------------- validity.py

LIMITS = dict(min_m=0.05, max_m=100.0, min_focal_px=10.0, max_focal_px=1e4)


def _depth(values: np.ndarray, focal: float = 500.0) -> DepthResult:
    return DepthResult(depth=values.astype(np.float32), focal_px=focal, focal_source="model")


def test_validate_depth_accepts_a_sane_result() -> None:
    depth = np.full((8, 8), 3.0)
    depth[0, :3] = 500.0  # a little far sky is allowed
    assert validate_depth(_depth(depth), **LIMITS) == []


@pytest.mark.parametrize(
    ("depth", "focal", "expected"),
    [
        (np.full((4, 4), np.nan), 500.0, ["depth: 16 of 16 pixels are NaN or inf", "outside"]),
        (np.where(np.eye(4) > 0, -1.0, 2.0), 500.0, ["depth: 4 pixels are <= 0 m"]),
        (np.full((4, 4), 1e4), 500.0, ["depth: 100% of pixels outside [0.05, 100] m"]),
        (np.full((4, 4), 2.0), -2851.7, ["focal: -2852 px from model outside"]),
        (np.full((4, 4), 2.0), math.inf, ["focal: inf px from model is not finite"]),
        (np.full((4, 4), 2.0), float("nan"), ["focal: nan px"]),
        (np.zeros((0, 4)), 500.0, ["depth: expected a non-empty (H, W) array"]),
    ],
)
def test_validate_depth_flags_nonsense(depth: np.ndarray, focal: float, expected: list[str]) -> None:
    reasons = validate_depth(_depth(depth, focal), **LIMITS)
    assert reasons and all(any(e in r for r in reasons) for e in expected), reasons


# ---------------------------------------------------------------- crops.py


def test_mask_crop_greys_background_and_squares() -> None:
    image = np.full((20, 30, 3), 200, dtype=np.uint8)
    mask = _rect(20, 30, 5, 10, 9, 20)  # 4 x 10 box
    mask[5, 10] = False
    crop = mask_crop(image, mask, margin=0.0, fill=128)
    assert crop.shape == (10, 10, 3) and crop.dtype == np.uint8
    assert (crop[3:7] == 200).sum() == (mask.sum()) * 3  # object rows, centred
    assert (crop[:3] == 128).all() and (crop[7:] == 128).all() and (crop[3, 0] == 128).all()
    assert mask_crop(image, mask, margin=0.2).shape == (14, 14, 3)
    assert mask_crop(image, np.zeros((20, 30), bool)) is None


# ---------------------------------------------------------------- Depth Pro


@pytest.fixture(scope="module")
def depth_estimator(tiny: TinyModels):
    from spatialboost.extract.depth_pro import DepthProEstimator

    return DepthProEstimator(str(tiny.depth_pro), batch_size=2)


def test_depth_pro_loads_saved_weights_and_batches(depth_estimator, tiny: TinyModels, images) -> None:
    assert _same_tensors(load_file(tiny.depth_pro / "model.safetensors"), depth_estimator.model.state_dict())
    assert isinstance(depth_estimator, DepthEstimator)
    results = depth_estimator.estimate(images, [None, None])
    assert len(results) == 2
    for result, image in zip(results, images, strict=True):
        assert result.depth.shape == image.shape[:2] and result.depth.dtype == np.float32
        assert result.focal_source == "model" and result.focal_px == result.model_focal_px
    # one image at a time gives the same depth as the batch
    single = depth_estimator.estimate(images[1:], [None])[0]
    np.testing.assert_allclose(single.depth, results[1].depth, rtol=1e-4)


def test_depth_pro_random_weights_are_flagged_not_raised(depth_estimator, images) -> None:
    result = depth_estimator.estimate(images[:1], [None])[0]
    assert not result.is_valid  # negative FOV -> depth clamped at 1e4 m
    assert any(r.startswith("depth:") for r in result.reasons) and any(r.startswith("focal:") for r in result.reasons)


def test_known_focal_wins_and_sets_the_metric_scale(depth_estimator, images) -> None:
    results = depth_estimator.estimate(images, [500.0, None], ["exif", "dataset"])
    assert (results[0].focal_px, results[0].focal_source) == (500.0, "exif")
    assert results[1].focal_source == "model"  # no focal given: the model's, whatever the source list says
    assert results[0].model_focal_px == pytest.approx(depth_estimator.estimate(images[:1], [None])[0].focal_px)
    doubled = depth_estimator.estimate(images[:1], [1000.0])[0]
    assert doubled.focal_source == "dataset"
    unclamped = (results[0].depth < 9e3) & (doubled.depth < 9e3)  # away from the 1e4 m clamp
    assert unclamped.mean() > 0.5
    np.testing.assert_allclose(doubled.depth[unclamped] / results[0].depth[unclamped], 2.0, rtol=1e-3)


def test_depth_pro_without_fov_head_needs_a_focal(tiny: TinyModels, images) -> None:
    from spatialboost.extract.depth_pro import DepthProEstimator

    estimator = DepthProEstimator(str(tiny.depth_pro_no_fov), dtype="bf16")
    unknown, known = estimator.estimate(images, [None, 400.0])
    assert math.isnan(unknown.model_focal_px) and any("not finite" in r for r in unknown.reasons)
    assert known.focal_px == 400.0 and known.depth.dtype == np.float32 and known.depth.shape == (90, 50)


def test_depth_pro_rejects_mismatched_arguments(depth_estimator, images) -> None:
    with pytest.raises(ValueError, match="focal lengths"):
        depth_estimator.estimate(images, [None])
    with pytest.raises(ValueError, match="'dataset' or 'exif'"):
        depth_estimator.estimate(images, [500.0, None], ["model", "dataset"])
    with pytest.raises(ValueError, match="uint8"):
        depth_estimator.estimate([images[0].astype(np.float32)], [None])


@pytest.mark.parametrize("backend", ["depth_pro", "sam2_hf"])
def test_backends_load_local_files_only(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading never downloads: every from_pretrained of a backend asks for local files only."""
    import transformers

    names = {"depth_pro": ("DepthProImageProcessor", "DepthProForDepthEstimation"), "sam2_hf": ("Sam2Processor", "Sam2Model")}
    asked: list[dict] = []

    class Refused(Exception):
        pass

    def record(cls: type, path: str, **kwargs: object) -> None:
        asked.append(kwargs)
        if len(asked) == 2:
            raise Refused
        return None

    for name in names[backend]:
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", classmethod(record))
    if backend == "depth_pro":
        from spatialboost.extract.depth_pro import DepthProEstimator as Backend
    else:
        from spatialboost.extract.sam2_hf import HFSam2Segmenter as Backend
    with pytest.raises(Refused):
        Backend("org/not-a-local-folder")
    assert len(asked) == 2 and all(kwargs.get("local_files_only") is True for kwargs in asked)


# ---------------------------------------------------------------- SAM 2 (transformers)


def _check_masks(per_image: list[list[Mask]], images: list[np.ndarray]) -> None:
    assert len(per_image) == len(images)
    for masks, image in zip(per_image, images, strict=True):
        scores = [m.score for m in masks]
        assert scores == sorted(scores, reverse=True)
        for m in masks:
            assert m.mask.shape == image.shape[:2] and m.mask.dtype == bool and m.area > 0
            assert m.bbox == mask_bbox(m.mask) and 0.0 <= m.stability <= 1.0


def test_hf_sam2_batches_images_and_reuses_embeddings(tiny: TinyModels, images) -> None:
    from spatialboost.extract.sam2_hf import HFSam2Segmenter

    segmenter = HFSam2Segmenter(
        str(tiny.sam2_hf), batch_size=2, points_per_side=6, points_per_batch=12, mask_filter=PERMISSIVE
    )
    assert isinstance(segmenter, Segmenter)
    assert _same_tensors(load_file(tiny.sam2_hf / "model.safetensors"), segmenter.model.state_dict())
    calls = []
    segmenter.model.vision_encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    batched = segmenter.segment(images)
    assert calls == [2]  # one encoder forward for both images, reused over 3 point batches
    _check_masks(batched, images)
    assert all(batched)
    segmenter.batch_size = 1
    one_by_one = segmenter.segment(images)
    assert [len(m) for m in one_by_one] == [len(m) for m in batched]
    for a, b in zip(sum(one_by_one, []), sum(batched, []), strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5) and (a.mask == b.mask).mean() > 0.99


def test_hf_sam2_default_filter_on_random_weights_returns_empty(tiny: TinyModels, images) -> None:
    from spatialboost.extract.sam2_hf import HFSam2Segmenter

    segmenter = HFSam2Segmenter(str(tiny.sam2_hf), points_per_side=4, dtype=torch.bfloat16)
    assert segmenter.segment(images) == [[], []]  # predicted IoU ~0.5 < 0.8: nothing kept, nothing raised


# ---------------------------------------------------------------- SAM 2 (official package)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_official_sam2_segments_with_the_shared_filters(tiny: TinyModels, images) -> None:
    from spatialboost.extract.sam2_official import OfficialSam2Segmenter

    segmenter = OfficialSam2Segmenter(
        OFFICIAL_SAM2_CONFIG,
        str(tiny.sam2_official_ckpt),
        hydra_overrides=official_sam2_overrides(),
        points_per_side=6,
        points_per_batch=16,
        mask_filter=PERMISSIVE,
    )
    assert isinstance(segmenter, Segmenter)
    saved = torch.load(tiny.sam2_official_ckpt, weights_only=True)["model"]
    assert _same_tensors(saved, segmenter.generator.predictor.model.state_dict())
    per_image = segmenter.segment(images)
    _check_masks(per_image, images)
    assert all(per_image)


# ---------------------------------------------------------------- OpenCLIP labeler


@pytest.fixture(scope="module")
def labeler(tiny: TinyModels):
    import open_clip

    from spatialboost.extract.openclip_labeler import OpenCLIPLabeler

    open_clip.add_model_config(tiny.openclip_dir / f"{OPENCLIP_NAME}.json")
    return OpenCLIPLabeler(OPENCLIP_NAME, str(tiny.openclip_ckpt), batch_size=2, top_k=3)


def test_labeler_labels_from_the_vocabulary(labeler, tiny: TinyModels, images) -> None:
    assert _same_tensors(load_file(tiny.openclip_ckpt), labeler.model.state_dict())
    assert isinstance(labeler, Labeler)
    image = images[0]
    masks = [_rect(60, 80, 0, 0, 30, 40), _rect(60, 80, 20, 30, 60, 80), _rect(60, 80, 5, 5, 6, 6)]
    records = [Mask(mask=masks[0], score=1.0, stability=1.0, bbox=(0, 0, 40, 30))] + masks[1:]
    probs = labeler.probabilities(image, records + [np.zeros((60, 80), bool)], VOCAB)
    assert probs.shape == (4, len(VOCAB)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[:3].sum(1), 1.0, atol=1e-5)
    assert np.isnan(probs[3]).all()  # empty mask
    labels = labeler.label(image, records + [np.zeros((60, 80), bool)], VOCAB)
    for label, row in zip(labels[:3], probs[:3], strict=True):
        assert label.name in VOCAB and label.score == pytest.approx(row.max())
        assert len(label.top_k) == 3 and label.top_k[0] == (label.name, label.score)
        assert [p for _, p in label.top_k] == sorted((p for _, p in label.top_k), reverse=True)
    assert labels[3].name is None and math.isnan(labels[3].score)


def test_labeler_caches_text_and_loads_from_local_dir(labeler, tiny: TinyModels, images) -> None:
    from spatialboost.extract.openclip_labeler import OpenCLIPLabeler

    assert labeler.text_embeddings(VOCAB) is labeler.text_embeddings(list(VOCAB))
    emb = labeler.text_embeddings(VOCAB)
    assert emb.shape == (len(VOCAB), 16) and torch.allclose(emb.norm(dim=-1), torch.ones(len(VOCAB)), atol=1e-5)
    other = OpenCLIPLabeler(f"local-dir:{tiny.openclip_dir}", templates=("a photo of a {}.",))
    masks = [_rect(60, 80, 0, 0, 30, 40)]
    np.testing.assert_allclose(
        other.probabilities(images[0], masks, VOCAB), labeler.probabilities(images[0], masks, VOCAB), atol=1e-6
    )
    with pytest.raises(ValueError, match="duplicates"):
        labeler.label(images[0], masks, ["cube", "cube"])
    with pytest.raises(ValueError, match="empty"):
        labeler.label(images[0], masks, [])


def test_a_local_dir_labeler_needs_its_config_and_weights(tiny: TinyModels, tmp_path) -> None:  # noqa: ANN001
    """open_clip itself only warns when a local-dir: folder has no weights, and keeps random ones."""
    import shutil

    from spatialboost.extract.openclip_labeler import OpenCLIPLabeler

    folder = tmp_path / "labeler"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="no open_clip_config.json in"):
        OpenCLIPLabeler(f"local-dir:{folder}")
    shutil.copy(tiny.openclip_dir / "open_clip_config.json", folder)
    with pytest.raises(FileNotFoundError, match="no weights .* open_clip would run with random weights"):
        OpenCLIPLabeler(f"local-dir:{folder}")
    shutil.copy(tiny.openclip_ckpt, folder / "open_clip_pytorch_model.safetensors")  # the laion repository's name
    OpenCLIPLabeler(f"local-dir:{folder}")
    with pytest.raises(ValueError, match="pretrained='x.safetensors' would be ignored"):
        OpenCLIPLabeler(f"local-dir:{folder}", "x.safetensors")
