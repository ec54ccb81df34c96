"""Automatic-mask filtering: SAM's quality filters plus duplicate and nested-mask removal.

Pure functions on torch tensors (any device), shared by both SAM 2 backends so their outputs mean
the same thing:

1. `select_candidates`: predicted IoU > `pred_iou_thresh`, stability >= `stability_thresh`
   (SAM's comparisons), binarise at `mask_threshold`, area >= `min_area_px` (never empty).
2. `remove_duplicates`: greedy by score; a mask is dropped when its mask IoU with a kept mask
   exceeds `duplicate_iou_thresh`, or when one of the two lies inside the other (intersection
   over the smaller area above `nested_thresh`: a part of a kept object, or a whole whose part
   scored higher). `remove_duplicates_reference` is the naive version the tests compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spatialboost.extract.protocols import Mask


@dataclass(frozen=True)
class MaskFilter:
    """Thresholds of automatic mask generation (defaults: SAM 2's, nesting ours)."""

    pred_iou_thresh: float = 0.8  # keep masks whose predicted IoU is above this
    stability_thresh: float = 0.95  # keep masks whose stability score is at least this
    stability_offset: float = 1.0  # logit offset of the stability score (SAM's)
    mask_threshold: float = 0.0  # logit threshold that binarises a mask
    min_area_px: int = 0  # smaller masks are dropped, pixels; empty masks always are
    duplicate_iou_thresh: float = 0.7  # mask IoU above which the lower-scoring mask is a duplicate
    nested_thresh: float | None = 0.9  # intersection / smaller area above which masks nest; None keeps nested masks
    max_masks: int | None = None  # most masks kept per image (best first); None = all

    def __post_init__(self) -> None:
        for name in ("pred_iou_thresh", "stability_thresh", "duplicate_iou_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.nested_thresh is not None and not 0.0 < self.nested_thresh <= 1.0:
            raise ValueError(f"nested_thresh must lie in (0, 1] or be None, got {self.nested_thresh}")
        if self.stability_offset < 0 or self.min_area_px < 0:
            raise ValueError("stability_offset and min_area_px must be >= 0")
        if self.max_masks is not None and self.max_masks < 1:
            raise ValueError(f"max_masks must be >= 1 or None, got {self.max_masks}")


def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) float32 (x, y) prompt points in (0, 1), cell centres, x fastest (SAM's grid)."""
    if n_per_side < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side}")
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side, dtype=np.float64)
    xs, ys = np.meshgrid(side, side)  # (n, n) each, row = y
    return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float32)


def stability_scores(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """SAM's stability: IoU of the mask at threshold + offset and at threshold - offset.

    logits: (N, H, W) float mask logits. Returns (N,) float32 in [0, 1]; 0 for a mask empty at
    the lower threshold (SAM gives NaN there, which its filter drops too).
    """
    # The high-threshold mask lies inside the low-threshold one, so IoU = |high| / |low|.
    high = (logits > mask_threshold + offset).flatten(1).sum(-1)
    low = (logits > mask_threshold - offset).flatten(1).sum(-1)
    return torch.where(low > 0, high / low.clamp(min=1), torch.zeros_like(high, dtype=torch.float32)).float()


def mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N,) int64 pixel counts."""
    return masks.flatten(1).sum(-1)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 boxes (x0, y0, x1, y1), x1/y1 exclusive; zeros when empty."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ys, h).amin(-1)
    y1 = torch.where(rows, ys + 1, 0).amax(-1)
    x0 = torch.where(cols, xs, w).amin(-1)
    x1 = torch.where(cols, xs + 1, 0).amax(-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return torch.where(masks.flatten(1).any(-1, keepdim=True), boxes, torch.zeros_like(boxes))


def passes_pred_iou(pred_iou: torch.Tensor, filt: MaskFilter) -> torch.Tensor:
    """(N,) predicted IoU -> (N,) bool keep; cheap, so backends apply it before upsampling."""
    return pred_iou > filt.pred_iou_thresh


def select_candidates(
    logits: torch.Tensor, pred_iou: torch.Tensor, filt: MaskFilter
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quality filters on mask logits at image resolution.

    logits: (N, H, W) float; pred_iou: (N,). Returns (masks (K, H, W) bool, scores (K,) float32
    predicted IoU, stability (K,) float32) for the K masks that pass every filter.
    """
    keep = passes_pred_iou(pred_iou, filt)
    logits, pred_iou = logits[keep].float(), pred_iou[keep].float()
    stability = stability_scores(logits, filt.mask_threshold, filt.stability_offset)
    keep = stability >= filt.stability_thresh
    masks = logits[keep] > filt.mask_threshold
    pred_iou, stability = pred_iou[keep], stability[keep]
    keep = mask_areas(masks) >= max(filt.min_area_px, 1)
    return masks[keep], pred_iou[keep], stability[keep]


def _greedy_order(scores: torch.Tensor) -> torch.Tensor:
    # Stable, so equal scores keep their input order in both implementations.
    return torch.sort(scores.float().cpu(), descending=True, stable=True).indices


def remove_duplicates(
    masks: torch.Tensor,
    scores: torch.Tensor,
    duplicate_iou_thresh: float,
    nested_thresh: float | None,
) -> torch.Tensor:
    """Greedy duplicate and nested-mask removal.

    masks: (N, H, W) bool; scores: (N,). Returns (K,) int64 indices of the kept masks, best score
    first. Compares each candidate only with kept masks whose boxes meet its box, inside its box.
    """
    if masks.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    boxes = masks_to_boxes(masks).tolist()
    areas = mask_areas(masks).double().cpu()
    kept: list[int] = []
    for j in _greedy_order(scores).tolist():
        x0, y0, x1, y1 = boxes[j]
        near = [k for k in kept if _boxes_meet(boxes[k], boxes[j])]
        if near:
            inter = (masks[near, y0:y1, x0:x1] & masks[j, y0:y1, x0:x1]).flatten(1).sum(-1).double().cpu()
            if _overlaps_too_much(inter, areas[j], areas[near], duplicate_iou_thresh, nested_thresh):
                continue
        kept.append(j)
    return torch.tensor(kept, dtype=torch.int64)


def _boxes_meet(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _overlaps_too_much(
    inter: torch.Tensor,
    area: torch.Tensor,
    kept_areas: torch.Tensor,
    duplicate_iou_thresh: float,
    nested_thresh: float | None,
) -> bool:
    iou = inter / (area + kept_areas - inter).clamp(min=1)
    if bool((iou > duplicate_iou_thresh).any()):
        return True
    if nested_thresh is None:
        return False
    nested = inter / torch.minimum(kept_areas, area).clamp(min=1)
    return bool((nested > nested_thresh).any())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / min(|a|, |b|) of two (H, W) bool masks; 0 when either is empty."""
    smaller = min(a.sum(), b.sum())
    return float(np.logical_and(a, b).sum() / smaller) if smaller else 0.0


def remove_duplicates_reference(
    masks: np.ndarray,
    scores: np.ndarray,
    duplicate_iou_thresh: float,
    nested_thresh: float | None,
) -> list[int]:
    """Naive `remove_duplicates`: full-image pairwise comparisons, numpy, no box shortcut."""
    kept: list[int] = []
    for j in _greedy_order(torch.as_tensor(np.asarray(scores))).tolist():
        duplicate = any(mask_iou(masks[j], masks[k]) > duplicate_iou_thresh for k in kept)
        nested = nested_thresh is not None and any(
            intersection_over_smaller(masks[j], masks[k]) > nested_thresh for k in kept
        )
        if not (duplicate or nested):
            kept.append(j)
    return kept


def finalize_masks(masks: torch.Tensor, scores: torch.Tensor, stability: torch.Tensor, filt: MaskFilter) -> list[Mask]:
    """Min-area filter, duplicate/nested removal and the `max_masks` cap, as Mask records.

    masks: (N, H, W) bool; scores, stability: (N,). Returns records best score first, on CPU.
    """
    keep = mask_areas(masks) >= max(filt.min_area_px, 1)
    masks, scores, stability = masks[keep], scores[keep], stability[keep]
    order = remove_duplicates(masks, scores, filt.duplicate_iou_thresh, filt.nested_thresh)
    if filt.max_masks is not None:
        order = order[: filt.max_masks]
    order = order.to(masks.device)
    masks, boxes = masks[order], masks_to_boxes(masks[order])
    scores, stability = scores[order].float().cpu(), stability[order].float().cpu()
    masks_np, boxes_np = masks.cpu().numpy(), boxes.cpu().tolist()
    return [
        Mask(mask=masks_np[i], score=float(scores[i]), stability=float(stability[i]), bbox=tuple(boxes_np[i]))
        for i in range(len(order))
    ]
