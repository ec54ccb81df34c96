"""Linear probes over frozen features: depth, semantic segmentation, classification.

The shape of dinov2's eval/linear.py: one `LinearHeadGrid` holds a linear head for every
(feature variant, learning rate) pair; all heads see the same batches in one training run, each
in its own optimizer parameter group; the head with the best validation score is the probe.
Each figure is reported as mean and sample std (ddof=1) over seeds; a seed sets the heads'
initialisation and the data order, never the train/validation split (`split_seed`).

    result = depth_probe(train_feats, train_targets, test_feats, test_depths, ProbeOptions())
    result.summary["depth_rmse"]        # {"mean": ..., "std": ...}, metres

Targets live on the patch grid: a patch's depth target is the mean (log-)depth of its valid
pixels, its class the majority class of its labelled pixels; patches with less than
`min_valid_fraction` of their pixels labelled do not train. Test metrics are pixel level:
the patch predictions are upsampled bilinearly to the ground truth's resolution.

Inputs are standardised per feature part (patch, cls, mean) with training-set statistics, so
one learning-rate grid fits every encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialboost.evaluate.closed_form import DEFAULT_PENALTIES, RidgeHead, fit_ridge, one_hot
from spatialboost.evaluate.features import FeatureSet, cached_features, crop_to_view, encoder_fingerprint, view_box
from spatialboost.evaluate.readers import IGNORE_INDEX, Sample, SampleSet
from spatialboost.models.encoders import VisionEncoder
from spatialboost.runtime import torch_threads

TargetKind = Literal["log_depth", "depth", "class"]
DENSE_VARIANTS = {"patch": ("patch",), "patch+cls": ("patch", "cls")}
GLOBAL_VARIANTS = {"cls": ("cls",), "mean": ("mean",), "cls+mean": ("cls", "mean")}


@dataclass(frozen=True)
class ProbeOptions:
    """Hyperparameters of every probe; one learning rate per head of the grid."""

    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    epochs: int = 20
    batch_size: int = 1024  # rows per step: patches (dense probes) or images (classification)
    weight_decay: float = 0.0
    val_fraction: float = 0.2  # of the training images, held out to pick the best head
    split_seed: int = 0  # the train/val split: fixed across seeds so seeds compare like for like
    seeds: tuple[int, ...] = (0, 1, 2)
    dense_variants: tuple[str, ...] = ("patch", "patch+cls")
    global_variants: tuple[str, ...] = ("cls", "mean", "cls+mean")
    depth_target: Literal["log", "linear"] = "log"  # log: scale errors weigh the same near and far
    min_valid_fraction: float = 0.5
    threads: int | None = None  # torch intra-op threads while heads train (restored after); 1 suits tiny heads
    # sgd: the learning-rate grid above, one run per seed; ridge: closed-form heads (evaluate/closed_form.py),
    # exact and seed-free, so the probe adds no noise of its own (seeds then has no effect)
    solver: Literal["sgd", "ridge"] = "sgd"
    ridge_penalties: tuple[float, ...] = DEFAULT_PENALTIES
    near_depth_m: float | None = None  # also score depth on pixels closer than this (depth_*_near); None = not

    def __post_init__(self) -> None:
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise ValueError(f"learning_rates must be positive, got {self.learning_rates}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        unknown = set(self.dense_variants) - set(DENSE_VARIANTS) | set(self.global_variants) - set(GLOBAL_VARIANTS)
        if unknown:
            raise ValueError(f"unknown feature variants {sorted(unknown)}")
        if self.depth_target not in ("log", "linear"):
            raise ValueError(f"depth_target must be 'log' or 'linear', got {self.depth_target!r}")
        if not 0 < self.min_valid_fraction <= 1:
            raise ValueError(f"min_valid_fraction must be in (0, 1], got {self.min_valid_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.solver not in ("sgd", "ridge"):
            raise ValueError(f"solver must be 'sgd' or 'ridge', got {self.solver!r}")
        if not self.ridge_penalties or min(self.ridge_penalties) <= 0:
            raise ValueError(f"ridge_penalties must be positive, got {self.ridge_penalties}")
        if self.near_depth_m is not None and self.near_depth_m <= 0:
            raise ValueError(f"near_depth_m must be positive or None, got {self.near_depth_m}")


# --- patch targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchTargets:
    """Targets of B images on an (h, w) patch grid."""

    kind: TargetKind
    values: np.ndarray  # (B, h, w): depth in metres or its log (float32), or class id (int64)
    fraction: np.ndarray  # (B, h, w) float32: share of the patch's pixels that have a target


def _patch_index(shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(H, W) int64: the flat index of the patch each pixel falls in (an even split of the image)."""
    (height, width), (h, w) = shape, grid
    rows, cols = (np.arange(height) * h) // height, (np.arange(width) * w) // width
    return rows[:, None] * w + cols[None, :]


def depth_patch_target(
    depth: np.ndarray, grid: tuple[int, int], depth_range: tuple[float, float], log: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(value (h, w), fraction (h, w)): mean (log-)depth of the valid pixels of each patch.

    depth: (H, W) metres; valid where depth_range[0] < depth <= depth_range[1] (0 = missing).
    Patches without a valid pixel get value 0 and fraction 0.
    """
    valid = np.isfinite(depth) & (depth > depth_range[0]) & (depth <= depth_range[1])
    value = np.where(valid, np.log(np.where(valid, depth, 1.0)) if log else depth, 0.0)
    index, n = _patch_index(depth.shape, grid), grid[0] * grid[1]
    total = np.bincount(index.ravel(), weights=value.ravel(), minlength=n)
    count = np.bincount(index.ravel(), weights=valid.ravel().astype(np.float64), minlength=n)
    pixels = np.bincount(index.ravel(), minlength=n)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return mean.reshape(grid).astype(np.float32), (count / pixels).reshape(grid).astype(np.float32)


def seg_patch_target(seg: np.ndarray, grid: tuple[int, int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(label (h, w) int64, fraction (h, w)): majority class of each patch's labelled pixels."""
    index, n = _patch_index(seg.shape, grid), grid[0] * grid[1]
    labelled = (seg >= 0) & (seg < num_classes)
    counts = np.bincount(
        index[labelled] * num_classes + seg[labelled].astype(np.int64), minlength=n * num_classes
    ).reshape(n, num_classes)
    pixels = np.bincount(index.ravel(), minlength=n)
    label = counts.argmax(axis=1)  # ties: the lowest class id
    return label.reshape(grid).astype(np.int64), (counts.sum(1) / pixels).reshape(grid).astype(np.float32)


def depth_targets(
    depths: Sequence[np.ndarray], grid: tuple[int, int], depth_range: tuple[float, float], log: bool = True
) -> PatchTargets:
    """`depth_patch_target` of every (H, W) depth map (sizes may differ)."""
    pairs = [depth_patch_target(d, grid, depth_range, log) for d in depths]
    return PatchTargets(
        "log_depth" if log else "depth", np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    )


def seg_targets(segs: Sequence[np.ndarray], grid: tuple[int, int], num_classes: int) -> PatchTargets:
    """`seg_patch_target` of every (H, W) class map (IGNORE_INDEX = unlabelled)."""
    pairs = [seg_patch_target(s, grid, num_classes) for s in segs]
    return PatchTargets("class", np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


# --- rows of features ----------------------------------------------------------------------------


class _Rows:
    """Training rows: each feature part is a tensor indexed through its own row -> source map."""

    def __init__(self, parts: dict[str, torch.Tensor], index: dict[str, torch.Tensor]) -> None:
        self.parts, self.index = parts, index

    def __len__(self) -> int:
        return len(next(iter(self.index.values())))

    def get(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """{part: (len(rows), D_part)} float32."""
        return {name: tensor[self.index[name][rows]] for name, tensor in self.parts.items()}

    def stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{part: (mean (D,), std (D,))} over the rows (at most 65536 of them, evenly spaced)."""
        step = max(1, len(self) // 65536)
        sample = self.get(torch.arange(0, len(self), step))
        return {name: (x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)) for name, x in sample.items()}


def _dense_rows(features: FeatureSet, keep: np.ndarray | None = None) -> _Rows:
    """One row per patch (flat (B * h * w) order), `keep` a bool mask over those patches."""
    b, h, w, d = features.patch_tokens.shape
    rows = torch.arange(b * h * w) if keep is None else torch.from_numpy(np.flatnonzero(keep.ravel()))
    parts = {"patch": torch.from_numpy(features.patch_tokens.reshape(-1, d)).float()}
    index = {"patch": rows}
    if features.cls_token is not None:
        parts["cls"], index["cls"] = torch.from_numpy(features.cls_token).float(), rows // (h * w)
    return _Rows(parts, index)


def _global_rows(features: FeatureSet, rows: np.ndarray) -> _Rows:
    """One row per image in `rows`."""
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    parts = {"mean": torch.from_numpy(features.mean_token).float()}
    if features.cls_token is not None:
        parts["cls"] = torch.from_numpy(features.cls_token).float()
    return _Rows(parts, dict.fromkeys(parts, index))


# --- the head grid -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """One head of the grid: the feature parts it reads (concatenated) and its learning rate."""

    parts: tuple[str, ...]
    lr: float
    ridge: float | None = None  # the relative penalty of a closed-form head (lr unused then)

    @property
    def name(self) -> str:
        if self.ridge is not None:
            return f"{'+'.join(self.parts)}@ridge={self.ridge:g}"
        return f"{'+'.join(self.parts)}@lr={self.lr:g}"


class LinearHeadGrid(nn.Module):
    """A linear head per HeadSpec, all fed the same standardised batch.

    Heads that read the same parts run as one batched matmul (one op per variant, not per head:
    tiny ops are what a CPU probe spends its time on); each keeps its own parameters, so each
    can sit in its own optimizer parameter group with its own learning rate.
    """

    def __init__(
        self,
        specs: Sequence[HeadSpec],
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
        out_dim: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.specs = tuple(sorted(specs, key=lambda s: s.parts))  # heads of one variant side by side
        self.stats = stats
        self.heads = nn.ModuleList()
        for spec in self.specs:
            head = nn.Linear(sum(int(stats[p][0].numel()) for p in spec.parts), out_dim)
            with torch.no_grad():  # dinov2's init, drawn from our generator (no global RNG)
                head.weight.normal_(0.0, 0.01, generator=generator)
                head.bias.zero_()
            self.heads.append(head)
        self.groups: list[tuple[tuple[str, ...], list[int]]] = []
        for i, spec in enumerate(self.specs):
            if not self.groups or self.groups[-1][0] != spec.parts:
                self.groups.append((spec.parts, []))
            self.groups[-1][1].append(i)

    def inputs(self, parts: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
        """(n, D_in) standardised concatenation of the named parts."""
        return torch.cat([(parts[p] - self.stats[p][0]) / self.stats[p][1] for p in names], dim=1)

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """(num_heads, n, out_dim): every head's output, in `self.specs` order."""
        outs = []
        for names, members in self.groups:
            x = self.inputs(parts, names)  # (n, D_in)
            weight = torch.stack([self.heads[i].weight for i in members])  # (G, out, D_in)
            bias = torch.stack([self.heads[i].bias for i in members])  # (G, out)
            outs.append(torch.einsum("nd,god->gno", x, weight) + bias[:, None, :])
        return torch.cat(outs)


@dataclass(frozen=True)
class FittedHead:
    """The chosen head, detached from training: y = standardise(x) @ weight + bias."""

    spec: HeadSpec
    kind: TargetKind
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    weight: np.ndarray  # (D_in, out_dim)
    bias: np.ndarray  # (out_dim,)
    depth_range: tuple[float, float] | None = None

    def apply(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """(n, out_dim) from {part: (n, D_part)}."""
        x = np.concatenate([(parts[p] - self.mean[p]) / self.std[p] for p in self.spec.parts], axis=1)
        return x @ self.weight + self.bias

    def predict_dense(self, features: FeatureSet) -> np.ndarray:
        """(B, h, w, out_dim) raw outputs on every patch."""
        b, h, w, d = features.patch_tokens.shape
        parts = {"patch": features.patch_tokens.reshape(-1, d)}
        if features.cls_token is not None:
            parts["cls"] = np.repeat(features.cls_token, h * w, axis=0)
        return self.apply(parts).reshape(b, h, w, -1)

    def depth_maps(self, features: FeatureSet, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Predicted (H, W) depth in metres per image, upsampled to `sizes`."""
        raw = self.predict_dense(features)[..., 0]
        return [_upsampled_depth(r, size, self.kind, self.depth_range) for r, size in zip(raw, sizes, strict=True)]


def _fitted_head(
    grid: LinearHeadGrid, index: int, kind: TargetKind, depth_range: tuple[float, float] | None
) -> FittedHead:
    spec, head = grid.specs[index], grid.heads[index]
    return FittedHead(
        spec=spec,
        kind=kind,
        mean={p: grid.stats[p][0].numpy() for p in spec.parts},
        std={p: grid.stats[p][1].numpy() for p in spec.parts},
        weight=head.weight.detach().numpy().T.copy(),
        bias=head.bias.detach().numpy().copy(),
        depth_range=depth_range,
    )


# --- training ------------------------------------------------------------------------------------


def _loss(kind: TargetKind, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's mean loss; out (H, n, out_dim), target (n,)."""
    heads, n = out.shape[:2]
    if kind != "class":
        return ((out[..., 0] - target) ** 2).mean(1).sum()
    return F.cross_entropy(out.reshape(heads * n, -1), target.repeat(heads)) * heads


def selection_score(kind: TargetKind, out: torch.Tensor, target: torch.Tensor, num_classes: int, dense: bool) -> float:
    """Higher is better: -RMSE in metres (depth), patch-level mIoU (segmentation), top-1 (images)."""
    if kind == "log_depth":
        return -float(((out[:, 0].exp() - target.exp()) ** 2).mean().sqrt())
    if kind == "depth":
        return -float(((out[:, 0] - target) ** 2).mean().sqrt())
    pred = out.argmax(1)
    if not dense:
        return float((pred == target).float().mean())
    return float(np.nanmean(_iou(_confusion(pred.numpy(), target.numpy(), num_classes))))


def train_head_grid(
    rows: _Rows,
    target: torch.Tensor,
    *,
    val_rows: _Rows,
    val_target: torch.Tensor,
    specs: Sequence[HeadSpec],
    kind: TargetKind,
    out_dim: int,
    options: ProbeOptions,
    seed: int,
    dense: bool = True,
) -> tuple[LinearHeadGrid, int, list[float]]:
    """Train every head in one pass; returns (grid, index of the best head, validation scores)."""
    generator = torch.Generator().manual_seed(seed)
    grid = LinearHeadGrid(specs, rows.stats(), out_dim, generator)
    with torch_threads(options.threads):
        _fit(grid, rows, target, kind, options, generator)
        with torch.no_grad():
            outs = _batched_outputs(grid, val_rows, options.batch_size * 4)
    scores = [selection_score(kind, out, val_target, out_dim, dense) for out in outs]
    best = int(np.nanargmax(np.nan_to_num(np.asarray(scores), nan=-np.inf)))
    return grid, best, scores


def _fit(
    grid: LinearHeadGrid,
    rows: _Rows,
    target: torch.Tensor,
    kind: TargetKind,
    options: ProbeOptions,
    generator: torch.Generator,
) -> None:
    """AdamW, one parameter group (own learning rate) per head, cosine decay over all steps."""
    groups = [{"params": head.parameters(), "lr": spec.lr} for spec, head in zip(grid.specs, grid.heads, strict=True)]
    optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay, foreach=True)
    steps = options.epochs * math.ceil(len(rows) / options.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    for _ in range(options.epochs):
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(rows), options.batch_size):
            batch = order[start : start + options.batch_size]
            loss = _loss(kind, grid(rows.get(batch)), target[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def _batched_outputs(grid: LinearHeadGrid, rows: _Rows, batch_size: int) -> torch.Tensor:
    """(num_heads, len(rows), out_dim)."""
    chunks = [grid(rows.get(torch.arange(s, min(s + batch_size, len(rows))))) for s in range(0, len(rows), batch_size)]
    return torch.cat(chunks, dim=1)


def _split(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train image indices, val image indices), both sorted and non-empty."""
    if n < 2:
        raise ValueError(f"a probe needs at least 2 training images (train + validation), got {n}")
    order = np.random.default_rng(split_seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --- metrics ---------------------------------------------------------------------------------------


def _confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = ground truth, over pixels with a label in [0, C)."""
    keep = (gt >= 0) & (gt < num_classes)
    return np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


def _iou(confusion: np.ndarray) -> np.ndarray:
    """(C,) IoU per class; NaN for a class absent from both ground truth and prediction."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def depth_metrics(pred: np.ndarray, gt: np.ndarray, depth_range: tuple[float, float]) -> dict[str, float] | None:
    """RMSE (m), AbsRel and delta1 (max(pred/gt, gt/pred) < 1.25) over valid-depth pixels; None without any.

    pred is clipped to depth_range first (the usual protocol).
    """
    valid = np.isfinite(gt) & (gt > depth_range[0]) & (gt <= depth_range[1])
    if not valid.any():
        return None
    p, g = np.clip(pred[valid], depth_range[0], depth_range[1]).astype(np.float64), gt[valid].astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    return {
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "absrel": float(np.mean(np.abs(p - g) / g)),
        "delta1": float(np.mean(ratio < 1.25)),
    }


def upsample_bilinear(patch_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) or (h, w, C) -> (H, W) or (H, W, C), bilinear, align_corners=False."""
    x = torch.from_numpy(np.ascontiguousarray(patch_map, dtype=np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)[0]
    return (y[0] if patch_map.ndim == 2 else y.permute(1, 2, 0)).numpy()


def _upsampled_depth(
    raw: np.ndarray, size: tuple[int, int], kind: TargetKind, depth_range: tuple[float, float] | None
) -> np.ndarray:
    up = upsample_bilinear(raw, size)
    depth = np.exp(up) if kind == "log_depth" else up
    return depth if depth_range is None else np.clip(depth, depth_range[0], depth_range[1])


def depth_regions(
    depths: Sequence[np.ndarray], objects: Sequence[np.ndarray | None] | None = None, near_m: float | None = None
) -> dict[str, list[np.ndarray]]:
    """The depth maps scored per region, everything outside a region set to 0 (= no ground truth).

    "" = every pixel with ground truth; "objects" = pixels of the (H, W) bool object masks (when
    every test image has one); "near" = pixels closer than near_m metres.
    """
    out = {"": list(depths)}
    if objects is not None and len(objects) == len(depths) and all(m is not None for m in objects):
        out["objects"] = [np.where(m, d, 0.0) for d, m in zip(depths, objects, strict=True)]
    if near_m is not None:
        out["near"] = [np.where(d < near_m, d, 0.0) for d in depths]
    return out


def dense_depth_scores(
    head: FittedHead,
    features: FeatureSet,
    depths: Sequence[np.ndarray],
    depth_range: tuple[float, float],
    regions: dict[str, Sequence[np.ndarray]] | None = None,
) -> dict[str, float]:
    """Pixel-level depth metrics, averaged over images that have valid ground truth.

    regions: {suffix: depth maps restricted to a region} (depth_regions); region "" gives
    depth_rmse, ..., region "objects" depth_rmse_objects, ... Default: every pixel only.
    """
    maps = head.depth_maps(features, [d.shape for d in depths])
    return depth_map_scores(maps, regions or {"": depths}, depth_range)


def depth_map_scores(
    maps: Sequence[np.ndarray], regions: dict[str, Sequence[np.ndarray]], depth_range: tuple[float, float]
) -> dict[str, float]:
    """depth_{rmse, absrel, delta1}[_region] of predicted (H, W) maps against each region's truth."""
    out = {}
    for region, truth in regions.items():
        per_image = [m for m in (depth_metrics(p, g, depth_range) for p, g in zip(maps, truth, strict=True)) if m]
        if not per_image:
            if not region:
                raise ValueError("no test image has valid ground-truth depth")
            continue
        suffix = f"_{region}" if region else ""
        out |= {f"depth_{k}{suffix}": float(np.mean([m[k] for m in per_image])) for k in per_image[0]}
    return out


def dense_seg_scores(
    head: FittedHead, features: FeatureSet, segs: Sequence[np.ndarray], num_classes: int
) -> dict[str, float]:
    """Pixel-level mIoU and pixel accuracy, confusion accumulated over the whole test set."""
    logits = head.predict_dense(features)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for logit, seg in zip(logits, segs, strict=True):
        confusion += _confusion(upsample_bilinear(logit, seg.shape).argmax(-1), seg.astype(np.int64), num_classes)
    return {
        "seg_miou": float(np.nanmean(_iou(confusion))),
        "seg_pixel_acc": float(np.diag(confusion).sum() / max(1, confusion.sum())),
    }


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
    fit_idx, val_idx = _split(len(train), options.val_fraction, options.split_seed)
    keep = targets.fraction >= options.min_valid_fraction
    tensors = []
    for idx in (fit_idx, val_idx):
        kept = keep[idx]
        tensors.append((_dense_rows(train.subset(idx), kept), torch.from_numpy(targets.values[idx][kept])))
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
    tensors: list[tuple[_Rows, torch.Tensor]],
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
        head = _fitted_head(grid, best, kind, depth_range)
        per_seed.append(score(head))
        chosen.append(head.spec.name)
        heads.append(head)
    return ProbeResult(task, tuple(options.seeds), tuple(per_seed), tuple(chosen), heads[0])


def _ridge_head(
    tensors: list[tuple[_Rows, torch.Tensor]],
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
    maps = [_upsampled_depth(mean, d.shape, train_targets.kind, depth_range) for d in test_depths]
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
    fit_idx, val_idx = _split(len(train), options.val_fraction, options.split_seed)
    tensors = []
    for idx in (fit_idx, val_idx):
        idx = idx[labels[idx] >= 0]
        tensors.append((_global_rows(train, idx), torch.from_numpy(labels[idx])))
    test_y = np.asarray([-1 if y is None else int(y) for y in test_labels], dtype=np.int64)
    test_rows = np.flatnonzero(test_y >= 0)
    if min(len(t[0]) for t in tensors) == 0 or len(test_rows) == 0:
        raise ValueError("classification_probe: no labelled image in the train, validation or test split")
    test_parts = {k: v.numpy() for k, v in _global_rows(test, test_rows).get(torch.arange(len(test_rows))).items()}

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
