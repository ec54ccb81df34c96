"""Linear probes over frozen features, the protocol entry points: depth, semantic segmentation,
classification, and an encoder probed over a benchmark's splits.

Each probe builds its targets (probe_targets.py), trains the head grid or fits closed-form heads
(head_grid.py, closed_form.py) and scores the chosen head on the test split at pixel level
(probe_metrics.py). Each figure is reported as mean and sample std (ddof=1) over seeds; a seed
sets the heads' initialisation and the data order, never the train/validation split
(`split_seed`).

    result = depth_probe(train_feats, train_targets, test=test_feats, test_depths=test_depths, options=ProbeOptions())
    result.summary["depth_rmse"]        # {"mean": ..., "std": ...}, metres
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from spatialboost.evaluate.closed_form import RidgeHead, fit_ridge, one_hot
from spatialboost.evaluate.features import FeatureSet, cached_features, crop_to_view, encoder_fingerprint, view_box
from spatialboost.evaluate.head_grid import (
    DENSE_VARIANTS,
    GLOBAL_VARIANTS,
    FeatureRows,
    FittedHead,
    HeadSpec,
    ProbeOptions,
    dense_rows,
    fitted_head,
    global_rows,
    selection_score,
    split_images,
    train_head_grid,
)
from spatialboost.evaluate.probe_metrics import (
    dense_depth_scores,
    dense_seg_scores,
    depth_map_scores,
    depth_regions,
    upsampled_depth,
)
from spatialboost.evaluate.probe_targets import PatchTargets, TargetKind, depth_patch_target, seg_patch_target
from spatialboost.evaluate.readers import IGNORE_INDEX, Sample, SampleSet
from spatialboost.models.encoders import VisionEncoder

# --- the three probes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """Test metrics per seed, their summary, and the chosen head of the first seed."""

    task: str
    seeds: tuple[int, ...]
    per_seed: tuple[dict[str, float], ...]
    chosen: tuple[str, ...]  # the chosen head's name per seed
    head: FittedHead | None  # None for the position-only floor, which has no head
    summary: dict[str, dict[str, float]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", summarize(self.per_seed))


def summarize(per_seed: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std"}}: std is the sample std (ddof=1), 0 for a single seed."""
    out = {}
    for key in per_seed[0]:
        values = np.asarray([m[key] for m in per_seed], dtype=np.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return out


def _specs(variants: Sequence[str], table: dict[str, tuple[str, ...]], available: set[str], lrs) -> list[HeadSpec]:
    specs = [HeadSpec(table[v], lr) for v in variants if set(table[v]) <= available for lr in lrs]
    if not specs:
        raise ValueError(f"no feature variant of {list(variants)} is available (parts: {sorted(available)})")
    return specs


def _dense_probe(
    task: str,
    train: FeatureSet,
    targets: PatchTargets,
    *,
    options: ProbeOptions,
    out_dim: int,
    score: Callable[[FittedHead], dict[str, float]],
    depth_range: tuple[float, float] | None = None,
) -> ProbeResult:
    if targets.values.shape[:3] != (len(train), *train.grid):
        raise ValueError(
            f"targets {targets.values.shape} do not match features (B, h, w) = {(len(train), *train.grid)}"
        )
    fit_idx, val_idx = split_images(len(train), options.val_fraction, options.split_seed)
    keep = targets.fraction >= options.min_valid_fraction
    tensors = []
    for idx in (fit_idx, val_idx):
        kept = keep[idx]
        tensors.append((dense_rows(train.subset(idx), kept), torch.from_numpy(targets.values[idx][kept])))
    if min(len(rows) for rows, _ in tensors) == 0:
        raise ValueError(f"{task}: no patch has enough labelled pixels in the train or validation images")
    specs = _specs(options.dense_variants, DENSE_VARIANTS, set(tensors[0][0].parts), options.learning_rates)
    return _run_seeds(
        task,
        tensors,
        specs=specs,
        kind=targets.kind,
        out_dim=out_dim,
        options=options,
        score=score,
        dense=True,
        depth_range=depth_range,
    )


def _run_seeds(
    task: str,
    tensors: list[tuple[FeatureRows, torch.Tensor]],
    *,
    specs: Sequence[HeadSpec],
    kind: TargetKind,
    out_dim: int,
    options: ProbeOptions,
    score: Callable[[FittedHead], dict[str, float]],
    dense: bool,
    depth_range: tuple[float, float] | None = None,
) -> ProbeResult:
    """Train the grid once per seed, score each seed's best head on the test split (ridge: one
    exact fit per feature variant, the seeds do not enter)."""
    if options.solver == "ridge":
        head = _ridge_head(
            tensors, specs, kind=kind, out_dim=out_dim, options=options, dense=dense, depth_range=depth_range
        )
        return ProbeResult(task, (options.seeds[0],), (score(head),), (head.spec.name,), head)
    (rows, target), (val_rows, val_target) = tensors
    per_seed, chosen, heads = [], [], []
    for seed in options.seeds:
        grid, best, _ = train_head_grid(
            rows,
            target,
            val_rows=val_rows,
            val_target=val_target,
            specs=specs,
            kind=kind,
            out_dim=out_dim,
            options=options,
            seed=seed,
            dense=dense,
        )
        head = fitted_head(grid, best, kind, depth_range)
        per_seed.append(score(head))
        chosen.append(head.spec.name)
        heads.append(head)
    return ProbeResult(task, tuple(options.seeds), tuple(per_seed), tuple(chosen), heads[0])


def _ridge_head(
    tensors: list[tuple[FeatureRows, torch.Tensor]],
    specs: Sequence[HeadSpec],
    *,
    kind: TargetKind,
    out_dim: int,
    options: ProbeOptions,
    dense: bool,
    depth_range: tuple[float, float] | None,
) -> FittedHead:
    """The closed-form head (closed_form.fit_ridge) of the best feature variant on validation."""
    (rows, target), (val_rows, val_target) = tensors
    parts_all, val_all = rows.get(torch.arange(len(rows))), val_rows.get(torch.arange(len(val_rows)))
    y = one_hot(target.numpy(), out_dim) if kind == "class" else target.numpy().astype(np.float64)

    def val_score(out: np.ndarray) -> float:
        return selection_score(kind, torch.from_numpy(np.asarray(out, np.float32)), val_target, out_dim, dense)

    best: tuple[float, RidgeHead, tuple[str, ...]] | None = None
    for parts in dict.fromkeys(spec.parts for spec in specs):
        x = torch.cat([parts_all[p] for p in parts], dim=1).numpy()
        x_val = torch.cat([val_all[p] for p in parts], dim=1).numpy()
        head = fit_ridge(x, y, None, x_val, val_score, options.ridge_penalties)
        score = max(head.val_scores)
        if best is None or score > best[0]:
            best = (score, head, parts)
    assert best is not None  # _specs never returns an empty list
    _, head, parts = best
    widths = np.cumsum([0] + [int(parts_all[p].shape[1]) for p in parts])
    return FittedHead(
        spec=HeadSpec(parts, 0.0, ridge=head.penalty),
        kind=kind,
        mean={p: head.mean[a:b].astype(np.float32) for p, a, b in zip(parts, widths[:-1], widths[1:], strict=True)},
        std={p: head.std[a:b].astype(np.float32) for p, a, b in zip(parts, widths[:-1], widths[1:], strict=True)},
        weight=head.weight.astype(np.float32),
        bias=head.bias.astype(np.float32),
        depth_range=depth_range,
    )


def depth_probe(
    train: FeatureSet,
    train_targets: PatchTargets,
    *,
    test: FeatureSet,
    test_depths: Sequence[np.ndarray],
    options: ProbeOptions = ProbeOptions(),
    depth_range: tuple[float, float] = (1e-3, float("inf")),
    test_objects: Sequence[np.ndarray | None] | None = None,
) -> ProbeResult:
    """Per-patch linear regression of (log-)depth; metrics: depth_rmse (m), depth_absrel, depth_delta1,
    and the same on object pixels (`_objects`, when test_objects are given) and on pixels closer
    than options.near_depth_m (`_near`).

    train_targets: `depth_targets(...)` on the training images' grid. test_depths: (H, W) metres
    per test image, cut to the encoder's view (`crop_to_view`), 0 = no ground truth.
    test_objects: (H, W) bool object masks cut the same way, or None.
    """
    if train_targets.kind == "class":
        raise ValueError("depth_probe needs depth targets, got class targets")
    regions = depth_regions(test_depths, test_objects, options.near_depth_m)
    return _dense_probe(
        "depth",
        train,
        train_targets,
        options=options,
        out_dim=1,
        score=lambda head: dense_depth_scores(head, test, test_depths, depth_range, regions),
        depth_range=depth_range,
    )


def position_only_depth(
    train_targets: PatchTargets,
    test_depths: Sequence[np.ndarray],
    depth_range: tuple[float, float],
    test_objects: Sequence[np.ndarray | None] | None = None,
    near_depth_m: float | None = None,
) -> dict[str, float]:
    """The floor of every depth probe: predict each patch's mean training (log-)depth, whatever
    the image (what the patch position alone tells). Same metrics and regions as `depth_probe`."""
    values, weight = train_targets.values, train_targets.fraction
    mean = (values * weight).sum(0) / np.maximum(weight.sum(0), 1e-9)  # (h, w)
    maps = [upsampled_depth(mean, d.shape, train_targets.kind, depth_range) for d in test_depths]
    return depth_map_scores(maps, depth_regions(test_depths, test_objects, near_depth_m), depth_range)


def segmentation_probe(
    train: FeatureSet,
    train_targets: PatchTargets,
    test: FeatureSet,
    test_segs: Sequence[np.ndarray],
    num_classes: int,
    options: ProbeOptions = ProbeOptions(),
) -> ProbeResult:
    """Per-patch linear classifier; metrics: seg_miou and seg_pixel_acc at pixel level.

    test_segs: (H, W) int class ids per test image (IGNORE_INDEX = not scored), cut to the view.
    """
    if train_targets.kind != "class":
        raise ValueError(f"segmentation_probe needs class targets, got {train_targets.kind}")
    return _dense_probe(
        "seg",
        train,
        train_targets,
        options=options,
        out_dim=num_classes,
        score=lambda head: dense_seg_scores(head, test, test_segs, num_classes),
    )


def classification_probe(
    train: FeatureSet,
    train_labels: Sequence[int | None],
    test: FeatureSet,
    test_labels: Sequence[int | None],
    num_classes: int,
    options: ProbeOptions = ProbeOptions(),
) -> ProbeResult:
    """Linear classifier on the CLS token and/or the mean patch token; metrics: cls_top1, and
    cls_majority: the top-1 of always answering the training split's most common label (the
    rate a probe must beat before it measures anything).

    Images whose label is None are skipped (train and test).
    """
    labels = np.asarray([-1 if y is None else int(y) for y in train_labels], dtype=np.int64)
    fit_idx, val_idx = split_images(len(train), options.val_fraction, options.split_seed)
    tensors = []
    for idx in (fit_idx, val_idx):
        idx = idx[labels[idx] >= 0]
        tensors.append((global_rows(train, idx), torch.from_numpy(labels[idx])))
    test_y = np.asarray([-1 if y is None else int(y) for y in test_labels], dtype=np.int64)
    test_rows = np.flatnonzero(test_y >= 0)
    if min(len(t[0]) for t in tensors) == 0 or len(test_rows) == 0:
        raise ValueError("classification_probe: no labelled image in the train, validation or test split")
    test_parts = {k: v.numpy() for k, v in global_rows(test, test_rows).get(torch.arange(len(test_rows))).items()}

    majority = np.bincount(labels[labels >= 0], minlength=num_classes).argmax()  # the training split's

    def score(head: FittedHead) -> dict[str, float]:
        pred = head.apply(test_parts).argmax(1)
        return {"cls_top1": float(np.mean(pred == test_y[test_rows])),
                "cls_majority": float(np.mean(test_y[test_rows] == majority))}  # fmt: skip

    specs = _specs(options.global_variants, GLOBAL_VARIANTS, set(tensors[0][0].parts), options.learning_rates)
    return _run_seeds(
        "cls", tensors, specs=specs, kind="class", out_dim=num_classes, options=options, score=score, dense=False
    )


# --- an encoder over benchmark splits --------------------------------------------------------------


def probe_encoder(
    encoder: VisionEncoder,
    *,
    train: SampleSet,
    test: SampleSet,
    tasks: Sequence[str] = ("depth", "seg", "cls"),
    options: ProbeOptions = ProbeOptions(),
    cache_dir: str | None = None,
    fingerprint: str | None = None,
    batch_size: int = 32,
) -> dict[str, ProbeResult]:
    """Features of both splits (cached), targets cut to the encoder's view, then the asked probes.

    Train samples are read once and reduced to patch targets; test ground truth is kept at the
    view's full resolution for pixel-level metrics. Returns {task: ProbeResult}; with the depth
    task also "floor": the position-only depth floor (`position_only_depth`) on the same grid.
    """
    unknown = set(tasks) - {"depth", "seg", "cls"}
    if unknown:
        raise ValueError(f"unknown probe tasks {sorted(unknown)}")
    if cache_dir is not None and fingerprint is None:
        fingerprint = encoder_fingerprint(encoder)  # hash the weights once for both splits
    ftrain, ftest = (
        cached_features(
            encoder,
            s.ids,
            s.image,
            cache_dir=cache_dir,
            dataset=f"{s.name}/{s.split}",
            batch_size=batch_size,
            fingerprint=fingerprint,
        )
        for s in (train, test)
    )
    grid, depth_range, log = ftrain.grid, train.depth_range or (1e-3, float("inf")), options.depth_target == "log"
    train_depth, train_seg, train_labels = [], [], []
    for sample in train:
        depth, seg = _view_truth(sample, encoder, tasks, train.name)
        if depth is not None:
            train_depth.append(depth_patch_target(depth, grid, depth_range, log))
        if seg is not None:
            train_seg.append(seg_patch_target(seg, grid, train.num_classes))
        train_labels.append(sample.label)
    test_depth, test_seg, test_labels, test_objects = [], [], [], []
    for sample in test:
        depth, seg = _view_truth(sample, encoder, tasks, test.name)
        test_depth.append(depth)
        test_seg.append(seg)
        test_labels.append(sample.label)
        box = view_box(encoder.preprocess, *sample.image.shape[:2])
        test_objects.append(None if sample.objects is None else crop_to_view(sample.objects, box, False))
    results = {}
    if "depth" in tasks:
        targets = PatchTargets("log_depth" if log else "depth", *map(np.stack, zip(*train_depth, strict=True)))
        test_range = test.depth_range or depth_range
        results["depth"] = depth_probe(
            ftrain,
            targets,
            test=ftest,
            test_depths=test_depth,
            options=options,
            depth_range=test_range,
            test_objects=test_objects,
        )
        floor = position_only_depth(targets, test_depth, test_range, test_objects, options.near_depth_m)
        results["floor"] = ProbeResult("floor", (options.seeds[0],), (floor,), ("position-only",), None)
    if "seg" in tasks:
        targets = PatchTargets("class", *map(np.stack, zip(*train_seg, strict=True)))
        results["seg"] = segmentation_probe(ftrain, targets, ftest, test_seg, train.num_classes, options)
    if "cls" in tasks:
        n_labels = len(train.label_names) if train.label_names else train.num_classes
        results["cls"] = classification_probe(ftrain, train_labels, ftest, test_labels, n_labels, options)
    return results


def _view_truth(
    sample: Sample, encoder: VisionEncoder, tasks: Sequence[str], name: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(depth, seg) of the asked tasks, cut to the part of the image the encoder sees."""
    box = view_box(encoder.preprocess, *sample.image.shape[:2])
    out = []
    for task, truth, fill in (("depth", sample.depth, 0.0), ("seg", sample.seg, IGNORE_INDEX)):
        if task in tasks and truth is None:
            raise ValueError(f"{name} sample {sample.id} has no {task} ground truth for the {task} probe")
        out.append(crop_to_view(truth, box, fill) if task in tasks else None)
    return out[0], out[1]


def dense_probe(
    task: str,
    train: FeatureSet,
    targets: PatchTargets,
    *,
    options: ProbeOptions,
    out_dim: int,
    score: Callable[[FittedHead], dict[str, float]],
    depth_range: tuple[float, float] | None = None,
) -> ProbeResult:
    """The dense probes' head grid, seeds and validation choice, scored by the caller's `score`.

    For test protocols the per-image helpers above do not cover (evaluate/benchmarks.py: sliding
    windows stitched back into whole images, published eval crops).
    """
    return _dense_probe(task, train, targets, options=options, out_dim=out_dim, score=score, depth_range=depth_range)
