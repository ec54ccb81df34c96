"""Linear probes and the feature cache: synthetic features whose answer is known, then a tiny
encoder over a few world images end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from spatialboost.config import WorldConfig
from spatialboost.evaluate.features import (
    FeatureSet,
    cached_features,
    compute_features,
    crop_to_view,
    load_features,
    view_box,
)
from spatialboost.evaluate.head_grid import ProbeOptions
from spatialboost.evaluate.probe_metrics import depth_metrics, upsample_bilinear
from spatialboost.evaluate.probe_targets import (
    PatchTargets,
    depth_patch_target,
    depth_targets,
    seg_patch_target,
    seg_targets,
)
from spatialboost.evaluate.probes import (
    ProbeResult,
    classification_probe,
    depth_probe,
    probe_encoder,
    segmentation_probe,
)
from spatialboost.evaluate.readers import IGNORE_INDEX, read_world
from spatialboost.evaluate.report import depth_examples, plot_depth_examples
from spatialboost.models.preprocess import ImagePreprocess
from tests.tiny_vlm import random_images, tiny_encoder

GRID = (4, 4)
PX = 32  # synthetic images are 32 x 32: 8 x 8 pixels per patch
# one thread: tiny matmuls on a shared 2-core machine only spin with two (~10x slower)
FAST = ProbeOptions(learning_rates=(1e-3, 1e-2, 1e-1), epochs=30, batch_size=64, seeds=(0, 1, 2), threads=1)


def _features(tokens: np.ndarray, cls: np.ndarray | None = None) -> FeatureSet:
    return FeatureSet(tuple(f"img{i}" for i in range(len(tokens))), tokens.astype(np.float32), cls)


def _plane_depths(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Smooth (PX, PX) depth maps in metres: random planes between ~1 and ~8 m, a few holes (0)."""
    y, x = np.mgrid[0:PX, 0:PX] / PX
    depths = []
    for _ in range(n):
        a, b, c = rng.uniform(1.0, 3.0), rng.uniform(0.0, 4.0), rng.uniform(-1.0, 1.0)
        d = (a + b * y + c * x).clip(0.5).astype(np.float32)
        d[rng.random(d.shape) < 0.05] = 0.0  # missing depth
        depths.append(d)
    return depths


def _linear_code(targets: np.ndarray, dim: int, rng: np.random.Generator, noise: float = 0.0) -> np.ndarray:
    """(B, h, w, dim) features = a random linear map of the (B, h, w, k) targets (+ noise)."""
    k = targets.shape[-1]
    mix = rng.normal(size=(k + 2, dim))
    distractor = rng.normal(size=(*targets.shape[:-1], 2))
    return np.concatenate([targets, distractor], -1) @ mix + noise * rng.normal(size=(*targets.shape[:-1], dim))


# --- patch targets and metrics ------------------------------------------------------------------


def test_depth_patch_target_averages_valid_pixels_only() -> None:
    depth = np.zeros((4, 4), np.float32)
    depth[:2, :2] = [[1.0, 3.0], [0.0, 0.0]]  # top-left patch: half valid
    depth[2:, 2:] = 2.0
    value, fraction = depth_patch_target(depth, (2, 2), (1e-3, 10.0), log=False)
    np.testing.assert_allclose(value, [[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(fraction, [[0.5, 0.0], [0.0, 1.0]])
    log_value, _ = depth_patch_target(depth, (2, 2), (1e-3, 10.0), log=True)
    assert log_value[0, 0] == pytest.approx(np.log(3.0) / 2)  # mean of log(1), log(3)
    capped, _ = depth_patch_target(depth, (2, 2), (1e-3, 2.5), log=False)  # 3 m is out of range
    assert capped[0, 0] == pytest.approx(1.0)


def test_seg_patch_target_majority_and_ignore() -> None:
    seg = np.array([[1, 1, 0, 0], [1, 2, 0, IGNORE_INDEX], [3, 3, IGNORE_INDEX, IGNORE_INDEX], [3, 2, -1, -1]])
    label, fraction = seg_patch_target(seg, (2, 2), num_classes=4)
    np.testing.assert_array_equal(label, [[1, 0], [3, 0]])
    np.testing.assert_allclose(fraction, [[1.0, 0.75], [1.0, 0.0]])


def test_depth_metrics_known_values() -> None:
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = np.array([[1.0, 2.0], [2.0, 7.0]])  # last pixel has no ground truth
    m = depth_metrics(pred, gt, (1e-3, 10.0))
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["absrel"] == pytest.approx(0.5 / 3)
    assert m["delta1"] == pytest.approx(2 / 3)
    assert depth_metrics(pred, np.zeros_like(gt), (1e-3, 10.0)) is None


# --- synthetic features with a known answer --------------------------------------------------------


def test_depth_probe_recovers_linearly_encoded_depth() -> None:
    rng = np.random.default_rng(0)
    depths = _plane_depths(40, rng)
    targets = depth_targets(depths, GRID, (1e-3, 10.0), log=True)
    coded = _features(_linear_code(targets.values[..., None], 16, rng))
    train, test = coded.subset(range(30)), coded.subset(range(30, 40))
    train_targets = PatchTargets("log_depth", targets.values[:30], targets.fraction[:30])
    result = depth_probe(
        train, train_targets, test=test, test_depths=depths[30:], options=FAST, depth_range=(1e-3, 10.0)
    )

    # the best any patch-level predictor can do: the true patch means, upsampled
    oracle = [
        depth_metrics(np.exp(upsample_bilinear(t, (PX, PX))), d, (1e-3, 10.0))
        for t, d in zip(targets.values[30:], depths[30:], strict=True)
    ]
    oracle_rmse = float(np.mean([m["rmse"] for m in oracle]))
    mean_rmse = float(np.mean([np.sqrt(np.mean((d[d > 0] - np.mean(d[d > 0])) ** 2)) for d in depths[30:]]))
    rmse = result.summary["depth_rmse"]["mean"]
    assert rmse <= oracle_rmse * 1.15 + 0.01, (rmse, oracle_rmse)
    assert rmse < 0.25 * mean_rmse
    assert result.summary["depth_delta1"]["mean"] > 0.95

    noise = _features(rng.normal(size=coded.patch_tokens.shape))
    random = depth_probe(
        noise.subset(range(30)), train_targets, test=noise.subset(range(30, 40)), test_depths=depths[30:], options=FAST
    )
    assert random.summary["depth_rmse"]["mean"] > 3 * rmse


def _block_segs(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """(n, PX, PX) class maps constant on each 8 x 8 patch."""
    blocks = rng.integers(0, classes, size=(n, *GRID))
    return np.kron(blocks, np.ones((PX // GRID[0], PX // GRID[1]), dtype=np.int64)).astype(np.int32)


def test_segmentation_probe_informative_vs_random_features() -> None:
    rng = np.random.default_rng(1)
    segs = _block_segs(40, 4, rng)
    segs[:, :2, :] = IGNORE_INDEX  # an unlabelled band is never scored
    targets = seg_targets(list(segs), GRID, 4)
    onehot = np.eye(4)[targets.values]  # (B, h, w, 4)
    coded = _features(_linear_code(onehot, 12, rng, noise=0.05))
    train_t = PatchTargets("class", targets.values[:30], targets.fraction[:30])
    good = segmentation_probe(coded.subset(range(30)), train_t, coded.subset(range(30, 40)), list(segs[30:]), 4, FAST)
    noise = _features(rng.normal(size=coded.patch_tokens.shape))
    bad = segmentation_probe(noise.subset(range(30)), train_t, noise.subset(range(30, 40)), list(segs[30:]), 4, FAST)
    patch_acc = (good.head.predict_dense(coded.subset(range(30, 40))).argmax(-1) == targets.values[30:]).mean()
    assert patch_acc > 0.95
    # pixel level, even perfect patch logits lose the pixels near patch borders to the upsampling
    oracle = np.zeros((4, 4), np.int64)
    for value, seg in zip(targets.values[30:], segs[30:], strict=True):
        pred = upsample_bilinear(np.eye(4)[value], (PX, PX)).argmax(-1)
        oracle += np.bincount((seg * 4 + pred)[seg >= 0], minlength=16).reshape(4, 4)
    oracle_miou = np.mean(np.diag(oracle) / (oracle.sum(0) + oracle.sum(1) - np.diag(oracle)))
    assert good.summary["seg_miou"]["mean"] > oracle_miou - 0.12
    assert bad.summary["seg_miou"]["mean"] < 0.45
    assert set(good.summary) == {"seg_miou", "seg_pixel_acc"}


def test_classification_probe_uses_cls_and_skips_unlabelled() -> None:
    rng = np.random.default_rng(2)
    n, dim, classes = 90, 16, 3
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)) * 2
    cls = centres[labels] + rng.normal(size=(n, dim))
    patches = rng.normal(size=(n, *GRID, dim))  # the mean token carries nothing
    feats = _features(patches, cls.astype(np.float32))
    labels_opt = [None if i % 15 == 0 else int(y) for i, y in enumerate(labels)]
    result = classification_probe(feats.subset(range(60)), labels_opt[:60], feats.subset(range(60, n)),
                                  labels_opt[60:], classes, FAST)  # fmt: skip
    assert result.summary["cls_top1"]["mean"] > 0.85
    assert all("cls" in name for name in result.chosen)

    no_cls = _features(patches)  # only the uninformative mean token is left
    chance = classification_probe(no_cls.subset(range(60)), labels_opt[:60], no_cls.subset(range(60, n)),
                                  labels_opt[60:], classes, FAST)  # fmt: skip
    assert chance.summary["cls_top1"]["mean"] < 0.6
    assert all(name.startswith("mean@") for name in chance.chosen)


def test_probe_is_deterministic_per_seed_and_seeds_differ() -> None:
    rng = np.random.default_rng(3)
    depths = _plane_depths(12, rng)
    targets = depth_targets(depths, GRID, (1e-3, 10.0))
    feats = _features(_linear_code(targets.values[..., None], 8, rng, noise=0.5))
    opts = dataclasses.replace(FAST, epochs=3)
    train_t = PatchTargets(targets.kind, targets.values[:8], targets.fraction[:8])
    def run(o: ProbeOptions) -> ProbeResult:
        return depth_probe(feats.subset(range(8)), train_t, test=feats.subset(range(8, 12)), test_depths=depths[8:], options=o)

    a, b = run(opts), run(opts)
    assert a.per_seed == b.per_seed and a.chosen == b.chosen
    rmses = [m["depth_rmse"] for m in a.per_seed]
    assert len(set(rmses)) == 3  # the seed changes init and order
    assert a.summary["depth_rmse"]["std"] == pytest.approx(np.std(rmses, ddof=1))
    other = run(dataclasses.replace(opts, seeds=(5, 6, 7)))
    assert other.per_seed != a.per_seed


def test_grid_never_picks_a_learning_rate_that_cannot_learn() -> None:
    rng = np.random.default_rng(4)
    depths = _plane_depths(20, rng)
    targets = depth_targets(depths, GRID, (1e-3, 10.0))
    feats = _features(_linear_code(targets.values[..., None], 8, rng))
    opts = dataclasses.replace(FAST, learning_rates=(1e-7, 3e-2), epochs=10)
    train_t = PatchTargets(targets.kind, targets.values[:15], targets.fraction[:15])
    result = depth_probe(
        feats.subset(range(15)), train_t, test=feats.subset(range(15, 20)), test_depths=depths[15:], options=opts
    )
    assert all(name.endswith("lr=0.03") for name in result.chosen), result.chosen


def test_probe_options_validate() -> None:
    with pytest.raises(ValueError, match="variants"):
        ProbeOptions(dense_variants=("patch", "nope"))
    with pytest.raises(ValueError, match="seeds"):
        ProbeOptions(seeds=(1, 1))
    with pytest.raises(ValueError, match="val_fraction"):
        ProbeOptions(val_fraction=1.0)


# --- view geometry ---------------------------------------------------------------------------------


def test_view_box_matches_each_preprocess_mode() -> None:
    mean, std = (0.5,) * 3, (0.5,) * 3
    shortest = ImagePreprocess((32, 32), mean, std, "shortest", resize_shortest=40)
    assert view_box(shortest, 40, 48) == (4, 8, 36, 40)  # 40x48 -> crop 32 at (4, 8)
    assert view_box(ImagePreprocess((32, 32), mean, std, "squash"), 40, 48) == (0, 0, 40, 48)
    longest = ImagePreprocess((32, 32), mean, std, "longest")
    assert view_box(longest, 24, 48) == (-12, 0, 36, 48)  # pads 8 rows (= 12 original) above and below
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(crop_to_view(depth, (-1, 1, 2, 3), fill=-5), [[-5, -5], [1, 2], [5, 6]])


def test_view_box_agrees_with_the_pixels_the_encoder_sees() -> None:
    """A bright square placed inside the view box lands where the box predicts in the encoder input."""
    pre = ImagePreprocess((32, 32), (0.0,) * 3, (1.0,) * 3, "shortest", resize_shortest=40, interpolation="bilinear")
    image = np.zeros((80, 96, 3), np.uint8)
    top, left, bottom, right = view_box(pre, 80, 96)  # (8, 16, 72, 80): a 64 x 64 window
    image[top : top + 16, left : left + 16] = 255  # the window's top-left quarter of a quarter
    seen = pre(image)[0, 0].numpy()  # (32, 32) in [0, 1]
    assert seen[1:7, 1:7].min() > 0.9 and seen[10:, 10:].max() < 0.1 and seen[0, 0] > 0.5


# --- features and cache ------------------------------------------------------------------------------


def test_cached_features_shapes_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = random_images(5, seed=1)
    encoder = tiny_encoder("dinov2", seed=0)
    ids = [f"im{i}" for i in range(5)]
    feats = cached_features(
        encoder, ids, lambda i: images[int(i[2:])], cache_dir=tmp_path, dataset="rand/test", batch_size=2
    )
    assert feats.patch_tokens.shape == (5, 4, 4, 32) and feats.cls_token.shape == (5, 32)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    stored, fingerprint = load_features(files[0])
    np.testing.assert_array_equal(stored.patch_tokens, feats.patch_tokens)
    direct = encoder.encode(images[:2]).patch_tokens.numpy().reshape(2, 4, 4, 32)
    np.testing.assert_allclose(feats.patch_tokens[:2], direct, atol=1e-5)

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr("spatialboost.evaluate.features.compute_features", refuse)
    again = cached_features(encoder, ids, lambda i: images[int(i[2:])], cache_dir=tmp_path, dataset="rand/test")
    np.testing.assert_array_equal(again.patch_tokens, feats.patch_tokens)
    monkeypatch.undo()
    other = cached_features(
        tiny_encoder("dinov2", seed=1), ids, lambda i: images[int(i[2:])], cache_dir=tmp_path, dataset="rand/test"
    )
    assert len(list(tmp_path.glob("*.npz"))) == 2  # other weights -> other key
    assert not np.allclose(other.patch_tokens, feats.patch_tokens)


def test_siglip_features_have_no_cls_and_mean_variant_is_used() -> None:
    images = random_images(3, seed=2)
    feats = compute_features(tiny_encoder("siglip"), ["a", "b", "c"], lambda i: images["abc".index(i)])
    assert feats.cls_token is None and feats.mean_token.shape == (3, 32)


# --- end to end: a tiny encoder over world images ------------------------------------------------


def test_probe_encoder_on_world_images(tmp_path: Path) -> None:
    from spatialboost.world import render_dataset

    world = WorldConfig(n_train=12, n_test=6, width=40, height=32, objects_per_scene=(2, 4),
                        object_distance_m=(2.0, 8.0), seed=3)  # fmt: skip
    render_dataset(world, tmp_path / "world", progress=False)
    train, test = read_world(tmp_path / "world", "train"), read_world(tmp_path / "world", "test")
    assert train.num_classes == 1 + len(world.classes)
    sample = train[0]
    assert sample.seg.shape == sample.depth.shape and sample.seg.max() < train.num_classes
    assert (sample.seg[sample.depth == 0] == IGNORE_INDEX).all()

    opts = ProbeOptions(learning_rates=(1e-2, 1e-1), epochs=2, batch_size=64, seeds=(0, 1, 2), threads=1)
    encoder = tiny_encoder("dinov2", seed=0)
    results = probe_encoder(encoder, train=train, test=test, options=opts, cache_dir=str(tmp_path / "cache"))
    assert set(results) == {"depth", "seg", "cls", "floor"}  # floor: the position-only depth control
    assert {"depth_rmse", "depth_rmse_objects"} <= set(results["floor"].summary) and results["floor"].head is None
    rmse = results["depth"].summary["depth_rmse"]
    assert 0 < rmse["mean"] < 100 and rmse["std"] >= 0
    assert 0 <= results["seg"].summary["seg_miou"]["mean"] <= 1
    assert 0 <= results["cls"].summary["cls_top1"]["mean"] <= 1
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # one file per split
    feats = cached_features(encoder, test.ids, test.image, cache_dir=tmp_path / "cache", dataset="world/test")
    head = results["depth"].head
    examples = depth_examples([test[1], test[0]], encoder.preprocess, (head, feats), (head, feats.subset([1, 0])))
    box = view_box(encoder.preprocess, 32, 40)
    assert examples[0].gt.shape == examples[0].baseline.shape == (box[2] - box[0], box[3] - box[1])
    np.testing.assert_array_equal(examples[0].baseline, examples[0].boosted)  # looked up by id, not position
    assert np.isfinite(examples[0].baseline).all() and examples[0].image.shape[:2] == examples[0].gt.shape
    assert plot_depth_examples(examples, tmp_path / "depth.png").is_file()


# --- closed-form heads, the position-only floor, regions --------------------------------------------

RIDGE = dataclasses.replace(FAST, solver="ridge")


def test_fit_ridge_matches_least_squares_and_picks_the_penalty_on_validation() -> None:
    from spatialboost.evaluate.closed_form import fit_ridge

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6)) * [1, 10, 0.1, 1, 1, 1] + 5
    coef = np.array([1.0, -0.2, 3.0, 0.0, 0.5, 0.0])
    y = x @ coef + 2.0 + rng.normal(scale=0.01, size=400)
    x_val = rng.normal(size=(100, 6)) * [1, 10, 0.1, 1, 1, 1] + 5
    y_val = x_val @ coef + 2.0

    head = fit_ridge(x, y, None, x_val, lambda out: -float(np.mean((out[:, 0] - y_val) ** 2)), (1e-6, 1.0, 100.0))
    assert head.penalty == 1e-6  # clean linear data: the smallest penalty validates best
    lstsq = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    np.testing.assert_allclose(head.predict(x_val)[:, 0], np.c_[x_val, np.ones(100)] @ lstsq, atol=1e-3)
    assert head.val_scores[0] > head.val_scores[2]  # a heavy penalty under-fits
    with pytest.raises(ValueError, match="positive"):
        fit_ridge(x, y, None, x_val, lambda out: 0.0, (0.0,))


def test_ridge_depth_probe_recovers_linear_depth_and_needs_no_seeds() -> None:
    rng = np.random.default_rng(0)
    depths = _plane_depths(40, rng)
    targets = depth_targets(depths, GRID, (1e-3, 10.0), log=True)
    coded = _features(_linear_code(targets.values[..., None], 16, rng))
    train_targets = PatchTargets("log_depth", targets.values[:30], targets.fraction[:30])
    result = depth_probe(
        coded.subset(range(30)),
        train_targets,
        test=coded.subset(range(30, 40)),
        test_depths=depths[30:],
        options=RIDGE,
        depth_range=(1e-3, 10.0),
    )
    sgd = depth_probe(
        coded.subset(range(30)),
        train_targets,
        test=coded.subset(range(30, 40)),
        test_depths=depths[30:],
        options=FAST,
        depth_range=(1e-3, 10.0),
    )
    assert result.seeds == (0,) and result.summary["depth_rmse"]["std"] == 0.0
    assert "@ridge=" in result.chosen[0]
    # exact least squares is at least as good as the SGD grid on linearly coded depth
    assert result.summary["depth_rmse"]["mean"] <= sgd.summary["depth_rmse"]["mean"] + 1e-3


def test_position_only_floor_and_object_region() -> None:
    from spatialboost.evaluate.probe_metrics import depth_regions
    from spatialboost.evaluate.probes import position_only_depth

    rng = np.random.default_rng(1)
    # depth grows down the image the same way in every image (layout), plus a per-image offset
    rows = np.linspace(2.0, 6.0, PX)[:, None] * np.ones((1, PX))
    depths = [(rows + rng.uniform(-1, 1)).astype(np.float32) for _ in range(40)]
    objects = [np.zeros((PX, PX), bool) for _ in range(40)]
    for m in objects:
        m[8:16, 8:16] = True
    targets = depth_targets(depths[:30], GRID, (1e-3, 10.0), log=True)
    floor = position_only_depth(targets, depths[30:], (1e-3, 10.0), objects[30:], near_depth_m=4.0)
    assert set(floor) >= {"depth_rmse", "depth_rmse_objects", "depth_rmse_near"}
    # the floor knows the layout but not the offset: its error is about the offsets' spread (~0.58)
    assert 0.3 < floor["depth_rmse"] < 0.9
    # features that carry the per-image offset beat the floor
    offsets = np.array([d[0, 0] - 2.0 for d in depths])
    tokens = np.broadcast_to(offsets[:, None, None, None], (40, *GRID, 1)) + rng.normal(scale=0.01, size=(40, *GRID, 1))
    pos = np.broadcast_to(np.arange(GRID[0])[None, :, None, None], (40, *GRID, 1)).astype(float)
    coded = _features(np.concatenate([tokens, pos, pos**2], axis=-1))
    result = depth_probe(
        coded.subset(range(30)),
        targets,
        test=coded.subset(range(30, 40)),
        test_depths=depths[30:],
        options=dataclasses.replace(RIDGE, near_depth_m=4.0),
        depth_range=(1e-3, 10.0),
        test_objects=objects[30:],
    )
    assert result.summary["depth_rmse_objects"]["mean"] < 0.5 * floor["depth_rmse_objects"]
    regions = depth_regions(depths[30:], objects[30:], 4.0)
    assert (regions["objects"][0][~objects[30]] == 0).all() and (regions["near"][0] < 4.0).all()


def test_world_colour_label_and_majority_rate(tmp_path: Path) -> None:
    from spatialboost.world import render_dataset

    cfg = WorldConfig(root=str(tmp_path / "w"), n_train=6, n_test=2, width=32, height=32, seed=5)
    render_dataset(cfg, tmp_path / "w", progress=False)
    shapes, colours = read_world(cfg.root, "train"), read_world(cfg.root, "train", label="colour")
    sample = colours[0]
    assert colours.label_names[sample.label] in {"red", "green", "blue", "yellow", "orange", "purple", "white", "black"}
    assert shapes.label_names == shapes.class_names[1:]
    assert sample.objects is not None and sample.objects.dtype == bool and sample.objects.any()
