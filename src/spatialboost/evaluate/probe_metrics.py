"""Pixel-level test metrics of a probe: the patch predictions upsampled bilinearly to the ground
truth's resolution, depth RMSE / AbsRel / delta1 per region, segmentation mIoU and pixel accuracy.

    scores = dense_depth_scores(head, test_features, test_depths, depth_range, regions)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.evaluate.features import FeatureSet
from spatialboost.evaluate.probe_targets import TargetKind

if TYPE_CHECKING:
    from spatialboost.evaluate.head_grid import FittedHead


def confusion_counts(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = ground truth, over pixels with a label in [0, C)."""
    keep = (gt >= 0) & (gt < num_classes)
    return np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


def class_iou(confusion: np.ndarray) -> np.ndarray:
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


def upsampled_depth(
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
        confusion += confusion_counts(upsample_bilinear(logit, seg.shape).argmax(-1), seg.astype(np.int64), num_classes)
    return {
        "seg_miou": float(np.nanmean(class_iou(confusion))),
        "seg_pixel_acc": float(np.diag(confusion).sum() / max(1, confusion.sum())),
    }
