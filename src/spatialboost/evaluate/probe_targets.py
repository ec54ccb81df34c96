"""Probe targets on the patch grid: a patch's depth target is the mean (log-)depth of its valid
pixels, its class the majority class of its labelled pixels, each with the share of its pixels
that have one (patches below `ProbeOptions.min_valid_fraction` do not train).

    targets = depth_targets(depths, grid=(16, 16), depth_range=(1e-3, 80.0))   # PatchTargets
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

TargetKind = Literal["log_depth", "depth", "class"]
"""What a probe regresses or classifies: log-depth, depth (metres) or a class id."""


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
