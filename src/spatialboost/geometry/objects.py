"""One object's 3D measurement: cleaned points -> boxes, distances, evidence and confidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from spatialboost.geometry.boxes import AxisAlignedBox, OrientedBox, axis_aligned_box
from spatialboost.geometry.completion import CompletedBox, CompletionParams, SeenThrough, complete_box
from spatialboost.geometry.frame import CanonicalFrame
from spatialboost.geometry.pointcloud import OutlierParams, remove_outliers

FocalSource = Literal["dataset", "exif", "estimated", "default"]
"""Where the focal length came from: dataset intrinsics, EXIF, a depth model's estimate, or a guess."""


@dataclass(frozen=True)
class ConfidenceWeights:
    """Scales of the confidence formula (see `object_confidence`).

    points_for_full: kept points at which the point-count factor saturates at 1.
    depth_spread_scale: relative depth spread (IQR / median) at which its factor is 0.5.
    plane_residual_scale_m: plane RMS residual, metres, at which the plane factor is 1/e.
    fallback_frame: the frame factor when up had to be assumed (no gravity, no plane).
    focal: factor per focal-length source.
    """

    points_for_full: int = 100
    depth_spread_scale: float = 0.5
    plane_residual_scale_m: float = 0.05
    fallback_frame: float = 0.5
    focal: dict[str, float] = field(
        default_factory=lambda: {"dataset": 1.0, "exif": 1.0, "estimated": 0.8, "default": 0.5}
    )


@dataclass(frozen=True)
class ObjectEvidence:
    """What the measurement of one object rests on.

    depth_spread: IQR / median of the object's z-depths (dimensionless; robust to a few bad pixels).
    plane_residual_m: RMS residual of the ground plane, metres, or None when no plane was used.
    frame_source: how the canonical frame's up direction was found.
    focal_source: where the focal length came from.
    n_points: masked points with valid depth; n_kept: points left after outlier removal.
    """

    depth_spread: float
    plane_residual_m: float | None
    frame_source: str
    focal_source: str
    n_points: int
    n_kept: int

    @property
    def kept_fraction(self) -> float:
        """n_kept / n_points, in [0, 1]."""
        return self.n_kept / self.n_points if self.n_points else 0.0


@dataclass(frozen=True, eq=False)
class ObjectGeometry:
    """An object in the canonical frame (metres).

    box: the amodal gravity-aligned box (geometry/completion.py: the hidden back and bottom
    completed); completion: that box, the visible-surface one and how it was made; aabb:
    axis-aligned box of the visible points; kept: (N,) bool over the input points;
    center_distance_m: camera centre to the (amodal) box centre; nearest_distance_m: camera
    centre to the nearest kept point; confidence in [0, 1].
    """

    box: OrientedBox
    completion: CompletedBox
    aabb: AxisAlignedBox
    kept: np.ndarray
    center_distance_m: float
    nearest_distance_m: float
    evidence: ObjectEvidence
    confidence: float


def depth_spread(depths: np.ndarray) -> float:
    """IQR / median of positive finite z-depths (N,), metres in, dimensionless out; NaN if none."""
    depths = np.asarray(depths, dtype=np.float64)
    depths = depths[np.isfinite(depths) & (depths > 0)]
    if len(depths) == 0:
        return float("nan")
    q25, q50, q75 = np.percentile(depths, [25, 50, 75])
    return float((q75 - q25) / q50)


def object_confidence(evidence: ObjectEvidence, weights: ConfidenceWeights | None = None) -> float:
    """Confidence in [0, 1]: the product of five factors, each in [0, 1].

    - points: min(1, n_kept / points_for_full)
    - kept: n_kept / n_points
    - spread: 1 / (1 + (depth_spread / depth_spread_scale) ** 2)
    - frame: exp(-plane_residual_m / plane_residual_scale_m) with a plane; 1 for dataset
      gravity without a plane; fallback_frame when up was assumed
    - focal: weights.focal[focal_source] (0.5 for an unknown source)

    An object with no valid point gets 0.
    """
    weights = weights or ConfidenceWeights()
    if evidence.n_points == 0:
        return 0.0
    points = min(1.0, evidence.n_kept / weights.points_for_full)
    spread = evidence.depth_spread if np.isfinite(evidence.depth_spread) else np.inf
    spread_factor = 1.0 / (1.0 + (spread / weights.depth_spread_scale) ** 2)
    if evidence.plane_residual_m is not None:
        frame = float(np.exp(-evidence.plane_residual_m / weights.plane_residual_scale_m))
    elif evidence.frame_source == "fallback_camera":
        frame = weights.fallback_frame
    else:
        frame = 1.0
    focal = weights.focal.get(evidence.focal_source, 0.5)
    return float(np.clip(points * evidence.kept_fraction * spread_factor * frame * focal, 0.0, 1.0))


def measure_object(
    points_cam: np.ndarray,
    frame: CanonicalFrame,
    *,
    focal_source: FocalSource = "dataset",
    outliers: OutlierParams | None = None,
    weights: ConfidenceWeights | None = None,
    completion: CompletionParams | None = None,
    pixel_angle_rad: float | None = None,
    seen_through: SeenThrough | None = None,
) -> ObjectGeometry:
    """Measure one object from its masked camera-frame points.

    points_cam: (N, 3) camera frame, metres, e.g. from `unproject_masked(depth, mask, ...)`;
    non-finite rows are dropped. frame: the image's canonical frame. completion: how the box
    is completed beyond the visible surface (CompletionParams() by default). pixel_angle_rad:
    1 / focal length (pixels): no extent is written below one pixel at the object's distance.
    seen_through: the image's free space for this object (geometry.free_space_test), which
    keeps the completed far side out of space the camera sees empty.
    Raises ValueError when no point has valid depth (an empty mask, or all-NaN depth under it).
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    if points_cam.ndim != 2 or points_cam.shape[1] != 3:
        raise ValueError(f"points_cam must have shape (N, 3), got {points_cam.shape}")
    valid = np.isfinite(points_cam).all(axis=1)
    if not valid.any():
        raise ValueError("object has no point with valid depth (empty mask or all-NaN depth)")
    kept = remove_outliers(points_cam, outliers)
    canonical = frame.to_canonical(points_cam[kept])  # (K, 3)
    camera = frame.camera_position
    evidence = ObjectEvidence(
        depth_spread=depth_spread(points_cam[valid, 2]),
        plane_residual_m=None if frame.plane is None else frame.plane.residual_m,
        frame_source=frame.source,
        focal_source=focal_source,
        n_points=int(valid.sum()),
        n_kept=int(kept.sum()),
    )
    completed = complete_box(
        canonical, camera, frame.camera_height_m is not None, pixel_angle_rad, completion, seen_through
    )
    box = completed.box
    return ObjectGeometry(
        box=box,
        completion=completed,
        aabb=axis_aligned_box(canonical),
        kept=kept,
        center_distance_m=float(np.linalg.norm(box.center - camera)),
        nearest_distance_m=float(np.linalg.norm(canonical - camera, axis=1).min()),
        evidence=evidence,
        confidence=object_confidence(evidence, weights),
    )
