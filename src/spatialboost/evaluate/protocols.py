"""The published evaluation protocols the paper's Table 3 (and its classification ablation) use,
as data plus the pure functions they need: crops, depth caps, sliding windows, metrics.

    protocol = PROTOCOLS["nyu"]                         # DINOv2's linear depth probe on NYUd v2
    plan = window_plan(protocol, (480, 640), window=(336, 336), patch_px=14)
    crops = plan.crops(image)                          # encoder-sized windows of the resized image
    depth_eval_metrics(pred, gt, protocol.depth_range)  # BTS's rmse / abs_rel / d1 on valid pixels

Why DINOv2's protocol: the paper's DINOv2 ViT-L/14 baselines in Table 3 (NYUd 0.38, KITTI 2.78,
ADE20k 47.7, VOC 82.1) are DINOv2's own published linear-probe numbers for that model, and FiT3D
(ywyue/FiT3D) reuses DINOv2's configs for the same four benchmarks. Sources, read for this file:

    facebookresearch/dinov2  dinov2/eval/linear.py (classification: CLS of the last block
        [+ average-pooled patch tokens], a grid of linear heads over learning rates, best on val),
        dinov2/data/transforms.py (eval transform: resize 256, centre crop 224),
        dinov2/eval/depth/models/decode_heads/{linear_head,decode_head}.py (BNHead: patch tokens
        concatenated with the CLS token, upsampled x4, 256 uniform depth bins).
    ywyue/FiT3D  evaluation/baseline_configs/vit{s,b}_{nyu,kitti}_depth_linear_config.py
        (NYU: train NYUCrop [45:472, 43:608], test the whole 480 x 640 image, Eigen crop, 1e-3 <
        gt < 10 m; KITTI: KB crop 352 x 1216, Garg crop, gt < 80 m; AdamW, SigLoss + gradient
        loss, 38.4k iterations), evaluation/depth/datasets/{nyu,kitti}.py (eval masks),
        evaluation/depth/core/evaluation/metrics.py (per-image metrics, averaged over images),
        vit{s,b}_{ade20k,voc2012}_sem_linear_config.py (last-layer patch tokens, BatchNorm +
        linear, resize short side 512 (img_scale (2048, 512)), slide 512 x 512 windows with
        stride 341, 40k iterations; ADE20K reduce_zero_label, VOC 21 classes on val).
    cleinc/bts  pytorch/bts_eval.py (prediction clipped to [min, max]; valid = min < gt < max;
        Eigen crop [45:471, 41:601]; Garg crop fractions 0.40810811 / 0.99189189 / 0.03594771 /
        0.96405229), train_test_inputs/ (nyudepthv2_test_files_with_gt.txt: 654 images;
        eigen_test_files_with_gt.txt: 697 frames, 45 with gt "None", so 652 scored).

Resolution policy (one rule, every protocol): the reference protocols run a ViT with 14-pixel
patches; we keep their pixels per patch by scaling images by `patch_px / 14`, then tile the
(scaled) image with windows of the encoder's fixed input size, stride 2/3 of the window (the
ratio of DINOv2's 341 / 512 slide setting), and average overlapping outputs (mmseg's
`slide_inference`). For a ViT-L/14 at 336 px (LLaVA-1.5's CLIP) the scale is 1: NYU is seen at
its native 480 x 640 in 336-px windows, ADE20K at a 512-px short side.

Deviations from the references, all forced by caching frozen features once per encoder:
    - no training augmentation (random scale / crop / flip / rotation / colour): each training
      image is tiled into windows exactly as at test time;
    - heads train on patch-level targets (mean valid log-depth / majority class of the pixels a
      patch covers, probe_targets.py) with the probes' head grid, not DINOv2's pixel-level losses; the
      depth head regresses log depth instead of classifying over 256 bins (no SigLoss / gradient
      loss); no test-time flip;
    - windows instead of one whole-image forward for depth (a fixed-size encoder cannot take
      480 x 640), with interpolated position embeddings replaced by overlap averaging;
    - the learning rate / feature variant is chosen on a held-out 20% of the training windows,
      not on the test split (DINOv2's linear.py picks on its val = test set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spatialboost.evaluate.features import Box
from spatialboost.evaluate.readers import IGNORE_INDEX, garg_crop

REFERENCE_PATCH_PX = 14
"""Patch side of the ViT-/14 models the reference protocols were written for (DINOv2, CLIP-L/14)."""
WINDOW_STRIDE = 2 / 3
"""Sliding-window stride as a fraction of the window: DINOv2's segmentation configs, 341 / 512."""

EIGEN_CROP = (45, 41, 471, 601)
"""(top, left, bottom, right) of the Eigen et al. evaluation crop on 480 x 640 NYU depth (BTS)."""
NYU_TRAIN_CROP = (45, 43, 472, 608)
"""DINOv2 / FiT3D `NYUCrop` of training images and depth (the white border of NYU frames)."""
KB_CROP_SIZE = (352, 1216)
"""KITTI benchmark crop (`KBCrop`): bottom 352 rows, centred 1216 columns."""
NYU_SIZE = (480, 640)


@dataclass(frozen=True)
class DenseProtocol:
    """A dense linear-probe protocol of one benchmark: what is seen, scored and capped."""

    name: str
    task: Literal["depth", "seg"]
    source: str  # repo + file the settings come from
    short_side_px: int | None  # seg: resize the short side to this (at 14-px patches); None = native size
    max_long_side_px: int | None = None  # mmseg keep_ratio img_scale (2048, 512): long side at most this
    depth_range: tuple[float, float] | None = None  # (min, max) metres: valid = min < gt < max
    num_classes: int | None = None
    expected_test_images: int | None = None  # the full protocol's test split size
    min_valid_fraction: float | None = None  # share of labelled pixels a training patch needs; None = probes' default
    notes: str = ""


@dataclass(frozen=True)
class ClassificationProtocol:
    """DINOv2's linear classification probe on one benchmark."""

    name: str
    source: str
    num_classes: int
    expected_test_images: int | None = None
    notes: str = ""


_DINOV2_DEPTH = "ywyue/FiT3D evaluation/baseline_configs/vitb_{}_depth_linear_config.py; cleinc/bts pytorch/bts_eval.py"
_DINOV2_SEG = "ywyue/FiT3D evaluation/baseline_configs/vitb_{}_sem_linear_config.py (DINOv2 linear)"
PROTOCOLS: dict[str, DenseProtocol | ClassificationProtocol] = {
    "nyu": DenseProtocol(
        "dinov2-linear-depth/nyu-eigen", "depth", _DINOV2_DEPTH.format("nyu"), None,
        depth_range=(1e-3, 10.0), expected_test_images=654,
        notes="Eigen split (BTS lists); train images NYU-cropped, test whole 480x640, scored in the Eigen crop",
    ),
    "kitti": DenseProtocol(
        "dinov2-linear-depth/kitti-eigen-garg", "depth", _DINOV2_DEPTH.format("kitti"), None,
        depth_range=(1e-3, 80.0), expected_test_images=652, min_valid_fraction=1e-6,  # sparse LiDAR: any point
        notes="Eigen split: 697 frames listed, 652 with annotated depth; KB crop 352x1216, scored in the Garg crop",
    ),
    "ade20k": DenseProtocol(
        "dinov2-linear-seg/ade20k", "seg", _DINOV2_SEG.format("ade20k"), 512, 2048, num_classes=150,
        expected_test_images=2000, notes="150 classes (label 0 ignored), mIoU on validation",
    ),
    "voc": DenseProtocol(
        "dinov2-linear-seg/voc2012", "seg", _DINOV2_SEG.format("voc2012"), 512, 2048, num_classes=21,
        expected_test_images=1449, notes="21 classes incl. background (255 ignored), train 1464 / val 1449",
    ),
    "imagenet": ClassificationProtocol(
        "dinov2-linear-cls/imagenet-1k", "facebookresearch/dinov2 dinov2/eval/linear.py", 1000, 50000,
        notes="CLS of the last block and/or mean patch token, the encoder's own eval transform",
    ),
    "cifar100": ClassificationProtocol(
        "dinov2-linear-cls/cifar-100", "facebookresearch/dinov2 dinov2/eval/linear.py", 100, 10000,
        notes="32x32 images resized by the encoder's own eval transform",
    ),
}  # fmt: skip


# --- crops ---------------------------------------------------------------------------------------


def eigen_crop_mask(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the Eigen crop [45:471, 41:601] of a 480 x 640 NYU depth map.

    Other sizes (fixtures, resized data) get the same crop as fractions of the image.
    """
    height, width = shape
    top, left, bottom, right = EIGEN_CROP
    if (height, width) != NYU_SIZE:
        sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
        top, bottom, left, right = int(top * sy), int(bottom * sy), int(left * sx), int(right * sx)
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def garg_crop_mask(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the Garg et al. crop of a KITTI depth map (fractions of its size, BTS)."""
    top, left, bottom, right = garg_crop(*shape)
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def kb_crop_box(height: int, width: int) -> Box:
    """(top, left, bottom, right) of the KITTI benchmark crop: bottom 352 rows, centred 1216 columns."""
    crop_h, crop_w = KB_CROP_SIZE
    if height < crop_h or width < crop_w:
        raise ValueError(f"KITTI frames are at least {crop_h}x{crop_w} for the KB crop, got {height}x{width}")
    top, left = height - crop_h, int((width - crop_w) / 2)
    return top, left, top + crop_h, left + crop_w


def nyu_train_crop_box(height: int, width: int) -> Box:
    """`NYU_TRAIN_CROP` (scaled like `eigen_crop_mask` for sizes other than 480 x 640)."""
    top, left, bottom, right = NYU_TRAIN_CROP
    if (height, width) != NYU_SIZE:
        sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
        top, bottom, left, right = int(top * sy), int(bottom * sy), int(left * sx), int(right * sx)
    return top, left, min(bottom, height), min(right, width)


def mask_outside(depth: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """depth with 0 (no ground truth) wherever `keep` is False."""
    return np.where(keep, depth, 0).astype(np.float32)


# --- resolution and sliding windows ----------------------------------------------------------------


def protocol_scale(protocol: DenseProtocol, size: tuple[int, int], patch_px: int) -> float:
    """Resize factor of an (H, W) image: the reference resolution, at `patch_px` pixels per patch."""
    scale = patch_px / REFERENCE_PATCH_PX
    if protocol.short_side_px is None:
        return scale
    fit = protocol.short_side_px / min(size)
    if protocol.max_long_side_px is not None:
        fit = min(fit, protocol.max_long_side_px / max(size))
    return fit * scale


def window_origins(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis, mmseg `slide_inference` style: a regular grid whose last
    window is moved back to end at the border; one window at 0 when the image is shorter."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window}, {stride}")
    count = max(length - window + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride, length - window), 0) for i in range(count)})


@dataclass(frozen=True)
class WindowPlan:
    """How one image is tiled: resized to `resized`, cut into `window`-sized crops at `origins`."""

    size: tuple[int, int]  # (H, W) of the image (and its ground truth)
    resized: tuple[int, int]  # (H', W') after the protocol's resize
    window: tuple[int, int]  # (h, w) of the encoder's input
    origins: tuple[tuple[int, int], ...]  # (y, x) of each window in resized pixels

    def __len__(self) -> int:
        return len(self.origins)

    def boxes(self) -> list[Box]:
        """Each window as (top, left, bottom, right) in the original image's pixels (may extend
        past the image where a window is padded)."""
        fy, fx = self.resized[0] / self.size[0], self.resized[1] / self.size[1]
        wh, ww = self.window
        return [(round(y / fy), round(x / fx), round((y + wh) / fy), round((x + ww) / fx)) for y, x in self.origins]

    def crops(self, image: np.ndarray, fill: Sequence[int] = (0, 0, 0)) -> list[np.ndarray]:
        """(h, w, 3) uint8 windows of the resized image, padded with `fill` past its border."""
        if image.shape[:2] != self.size:
            raise ValueError(f"image is {image.shape[:2]}, the plan is for {self.size}")
        resized = np.asarray(Image.fromarray(image).resize(self.resized[::-1], Image.Resampling.BICUBIC))
        wh, ww = self.window
        out = []
        for y, x in self.origins:
            crop = np.empty((wh, ww, 3), np.uint8)
            crop[:] = np.asarray(fill, np.uint8)
            part = resized[y : y + wh, x : x + ww]
            crop[: part.shape[0], : part.shape[1]] = part
            out.append(crop)
        return out


def window_plan(protocol: DenseProtocol, size: tuple[int, int], window: tuple[int, int], patch_px: int) -> WindowPlan:
    """The windows an (H, W) image is seen through under `protocol` by an encoder with
    `window`-sized input and `patch_px`-pixel patches."""
    scale = protocol_scale(protocol, size, patch_px)
    resized = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    ys, xs = (window_origins(resized[a], window[a], max(1, round(window[a] * WINDOW_STRIDE))) for a in (0, 1))
    return WindowPlan(tuple(size), resized, tuple(window), tuple((y, x) for y in ys for x in xs))


def stitch_windows(outputs: Sequence[np.ndarray], plan: WindowPlan) -> np.ndarray:
    """(H, W, C): per-window (h, w, C) patch outputs upsampled bilinearly onto their boxes and
    averaged where windows overlap (mmseg `slide_inference`), at the original image's size."""
    height, width = plan.size
    channels = outputs[0].shape[-1]
    total = torch.zeros((channels, height, width))
    count = torch.zeros((1, height, width))
    for out, (top, left, bottom, right) in zip(outputs, plan.boxes(), strict=True):
        x = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).permute(2, 0, 1)[None]
        up = F.interpolate(x, size=(bottom - top, right - left), mode="bilinear", align_corners=False)[0]
        t, lft, b, r = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
        total[:, t:b, lft:r] += up[:, t - top : b - top, lft - left : r - left]
        count[:, t:b, lft:r] += 1
    if bool((count == 0).any()):
        raise ValueError("the windows do not cover the whole image")
    return (total / count).permute(1, 2, 0).numpy()


# --- metrics ---------------------------------------------------------------------------------------


def depth_eval_metrics(pred: np.ndarray, gt: np.ndarray, depth_range: tuple[float, float]) -> dict[str, float] | None:
    """BTS / FiT3D depth metrics of one image: rmse (m), abs_rel, delta1 (max ratio < 1.25).

    pred is clipped to [min, max] (inf -> max, NaN -> min); scored where min < gt < max (gt 0 =
    no ground truth, and eval crops are applied by zeroing gt outside them). None without any
    valid pixel.
    """
    low, high = depth_range
    p = np.nan_to_num(pred.astype(np.float64), nan=low, posinf=high, neginf=low).clip(low, high)
    valid = np.isfinite(gt) & (gt > low) & (gt < high)
    if not valid.any():
        return None
    p, g = p[valid], gt[valid].astype(np.float64)
    ratio = np.maximum(p / g, g / p)
    return {
        "depth_rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "depth_absrel": float(np.mean(np.abs(p - g) / g)),
        "depth_delta1": float(np.mean(ratio < 1.25)),
    }


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, over pixels labelled in [0, C) (IGNORE_INDEX skipped)."""
    keep = (gt != IGNORE_INDEX) & (gt >= 0) & (gt < num_classes)
    index = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: np.ndarray) -> dict[str, float]:
    """mmseg's dataset-level scores: mIoU = nanmean over classes of intersect / union (a class
    absent from both prediction and ground truth is NaN, skipped), and pixel accuracy."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan
    return {"seg_miou": miou, "seg_pixel_acc": float(tp.sum() / max(1, confusion.sum()))}
