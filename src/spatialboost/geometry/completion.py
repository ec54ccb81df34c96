"""Amodal 3D boxes: an object's whole box from the part of its surface one camera sees.

A box fitted to the visible points alone is short along the viewing direction (the back is
hidden: a sphere's box is half as deep as it is wide) and short at the bottom (a camera looking
down misses the underside of round objects). Two assumptions single-view 3D methods make
complete it, from the observation alone (points, camera, ground plane; never the label):

- support: an object whose lowest visible point is close to the ground plane rests on it,
  so its box reaches down to the ground (z = 0 of the canonical frame). "Close" is at most
  `contact_ratio` of its visible height plus `contact_pixels` pixels: a camera at elevation e
  above a round object misses a bottom cap of r (1 - cos e) under a visible height of
  r (1 + cos e), a third of it at e = 60 degrees. Without a known camera height (no ground
  plane) nothing is extended.
- a round-footprint prior along the viewing ray: the footprint is taken as centrally
  symmetric about a vertical axis, and that axis is placed where a round footprint touching
  both silhouette rays and the nearest visible point would have it. Seen from the camera, the
  object spans azimuths theta_c +- alpha (the silhouette, which one view sees whole) and its
  nearest point lies at horizontal distance d; a circle of radius r at distance D has
  sin(alpha) = r / D and d = D - r, so D = d / (1 - sin alpha), exactly, perspective
  included. For round and square footprints (any yaw) the depth along the view equals the
  width across it, so the axis is right; the visible points are then mirrored through it
  (the symmetry) and the box is the minimum-area rectangle of both. When the visible
  surface is already deeper than the prior (an elongated object seen end on, its top in
  view), the axis moves to the middle of the visible depth instead: the box never claims
  less than what is seen.

Why this and not a learned prior: the prior needs nothing but the silhouette, the nearest
point and the ground (the same quantities on real images), no class table, and on the world
(seven shapes, exact truth) it removes the bias the visible-surface box had. The numbers, and
the alternatives tried (a height cap, silhouette-point symmetry, pixel widening), are in
benchmarks/results/box_completion.md.

Every extent is at least one pixel at the object's distance (`pixel_angle_rad`): a single
view cannot resolve less, so no box is ever written as 0 cm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from spatialboost.geometry.boxes import OrientedBox, min_area_rectangle

CompletionMethod = Literal["visible", "round_prior", "visible_depth", "free_space"]
"""How the far side was placed: not at all (visible surface only), by the round-footprint
prior, at the middle of a visible surface deeper than that prior, or nearer than the prior
because the prior's far side would stand where the camera sees empty space."""

SeenThrough = Callable[[np.ndarray], np.ndarray]
"""(N, 3) canonical points -> (N,) bool: True where the camera would have seen the point (it
lies in front of the observed surface, outside the object's own mask), so nothing is there."""

FREE_SPACE_STEPS = 12
"""Axis distances tried between the prior's and the visible surface's middle."""


@dataclass(frozen=True)
class CompletionParams:
    """Settings of `complete_box`.

    enabled: False gives the visible-surface box (the pre-completion behaviour; ablations).
    contact_ratio, contact_pixels: the support test (module docstring): an object rests on the
        ground when its lowest visible point is at most contact_ratio x its visible height plus
        contact_pixels pixels above (or below) the ground.
    max_half_angle_deg: objects spanning wider azimuths (the camera almost inside them) get no
        round prior: the circle would be unbounded as alpha approaches 90 degrees.
    min_pixels: the smallest extent written, pixels at the object's nearest distance.
    max_seen_fraction: a completed far side is consistent with the image when at most this
        share of its mirrored points stand where the camera sees empty space (`SeenThrough`).
    """

    enabled: bool = True
    contact_ratio: float = 0.5
    contact_pixels: float = 2.0
    max_half_angle_deg: float = 60.0
    min_pixels: float = 1.0
    max_seen_fraction: float = 0.05

    def __post_init__(self) -> None:
        if min(self.contact_ratio, self.contact_pixels, self.min_pixels) < 0:
            raise ValueError("contact_ratio, contact_pixels and min_pixels must be >= 0")
        if not 0 < self.max_half_angle_deg < 90:
            raise ValueError(f"max_half_angle_deg must lie in (0, 90), got {self.max_half_angle_deg}")


@dataclass(frozen=True, eq=False)
class CompletedBox:
    """The amodal box and how it was made.

    box: gravity-aligned box, canonical frame, metres. visible: the box of the visible points
    alone. method: how the far side was placed. ground_contact: the box was extended down to
    the ground. axis_distance_m: horizontal distance from the camera to the symmetry axis
    (None for "visible").
    """

    box: OrientedBox
    visible: OrientedBox
    method: CompletionMethod
    ground_contact: bool
    axis_distance_m: float | None


def complete_box(
    points: np.ndarray,
    camera: np.ndarray,
    ground_known: bool,
    pixel_angle_rad: float | None = None,
    params: CompletionParams | None = None,
    seen_through: SeenThrough | None = None,
) -> CompletedBox:
    """The amodal box of one object from its visible points.

    points: (N >= 1, 3) finite canonical points of the object's visible surface, metres.
    camera: (3,) the camera centre in the canonical frame, metres. ground_known: the canonical
    z = 0 is the ground (the frame knows the camera height). pixel_angle_rad: the angle one
    pixel spans (1 / focal length in pixels), for the support slack and the smallest extent;
    None: neither. params: CompletionParams() by default. seen_through: the image's free space
    (`free_space_test`); with it, the axis is moved towards the camera, at most to the middle of
    the visible depth, until the mirrored far side is consistent with what the camera sees.
    """
    params = params or CompletionParams()
    points = np.asarray(points, dtype=np.float64)
    camera = np.asarray(camera, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or not np.isfinite(points).all():
        raise ValueError(f"points must be (N >= 1, 3) and finite, got shape {points.shape}")
    visible = _box(points[:, :2], points[:, 2].min(), points[:, 2].max())
    nearest_m = float(np.linalg.norm(points - camera, axis=1).min())
    pixel_m = 0.0 if pixel_angle_rad is None else nearest_m * pixel_angle_rad
    if not params.enabled:
        return CompletedBox(_floored(visible, params.min_pixels * pixel_m, False), visible, "visible", False, None)

    z_low, z_high = float(points[:, 2].min()), float(points[:, 2].max())
    slack = params.contact_ratio * (z_high - z_low) + params.contact_pixels * pixel_m
    ground_contact = ground_known and abs(z_low) <= slack
    if ground_contact:
        z_low = 0.0

    axis = round_prior_axis(points[:, :2], camera[:2], params.max_half_angle_deg)
    if axis is None:
        box = _box(points[:, :2], z_low, z_high)
        return CompletedBox(
            _floored(box, params.min_pixels * pixel_m, ground_contact), visible, "visible", ground_contact, None
        )
    (azimuth, prior_m), (u, v) = axis
    depth_mid = float(v.min() + v.max()) / 2
    s, c = np.sin(azimuth), np.cos(azimuth)

    def mirrored_xy(axis_m: float) -> np.ndarray:
        """(N, 2) the visible points' images under the half turn about the axis."""
        mu, mv = -u, 2.0 * axis_m - v
        return np.stack([mu * c + mv * s, -mu * s + mv * c], axis=1) + camera[:2]

    method: CompletionMethod = "round_prior" if prior_m >= depth_mid else "visible_depth"
    axis_m = max(prior_m, depth_mid)
    if seen_through is not None and method == "round_prior":
        for candidate in np.linspace(prior_m, depth_mid, FREE_SPACE_STEPS):
            mirrored = np.concatenate([mirrored_xy(float(candidate)), points[:, 2:]], axis=1)
            if seen_through(mirrored).mean() <= params.max_seen_fraction:
                break
        if candidate < prior_m:
            method, axis_m = "free_space", float(candidate)
    box = _box(np.concatenate([points[:, :2], mirrored_xy(axis_m)]), z_low, z_high)
    floored = _floored(box, params.min_pixels * pixel_m, ground_contact)
    return CompletedBox(floored, visible, method, ground_contact, float(axis_m))


def round_prior_axis(
    xy: np.ndarray, camera_xy: np.ndarray, max_half_angle_deg: float = 60.0
) -> tuple[tuple[float, float], tuple[np.ndarray, np.ndarray]] | None:
    """Where a round footprint tangent to the silhouette rays and the nearest point has its centre.

    xy: (N, 2) the visible points on the ground plane, metres; camera_xy: (2,) the camera's.
    Returns ((azimuth_rad, D), (u, v)): the azimuth of the silhouette's middle (from canonical
    +y towards +x), the horizontal distance D of the centre along it, and every point's
    coordinates across (u, right positive) and along (v) that ray, metres. None when the
    silhouette spans more than 2 x max_half_angle_deg (or the points sit on the camera).
    """
    rel = np.asarray(xy, dtype=np.float64) - camera_xy
    ranges = np.hypot(rel[:, 0], rel[:, 1])
    if ranges.max() <= 0:
        return None
    mean = rel.mean(axis=0)
    reference = float(np.arctan2(mean[0], mean[1]))
    angles = np.mod(np.arctan2(rel[:, 0], rel[:, 1]) - reference + np.pi, 2 * np.pi) - np.pi  # (N,) about the mean
    low, high = float(angles.min()), float(angles.max())
    half_angle = (high - low) / 2
    if half_angle >= np.radians(max_half_angle_deg):
        return None
    azimuth = reference + (low + high) / 2
    s, c = np.sin(azimuth), np.cos(azimuth)
    u = rel[:, 0] * c - rel[:, 1] * s
    v = rel[:, 0] * s + rel[:, 1] * c
    distance = float(ranges.min()) / (1.0 - np.sin(half_angle))
    return (azimuth, distance), (u, v)


def free_space_test(
    depth: np.ndarray,
    *,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    rotation: np.ndarray,
    translation: np.ndarray,
    own_mask: np.ndarray,
    rel_margin: float = 0.05,
) -> SeenThrough:
    """The `SeenThrough` test of one object in one image.

    depth: (H, W) z-depth, metres (invalid <= 0 or non-finite: unknown, never free). fx, fy,
    cx, cy: intrinsics, pixels. rotation (3, 3), translation (3,): X_can = rotation @ X_cam +
    translation. own_mask: (H, W) bool, the object's pixels grown by a pixel, where nothing is
    concluded (its own back is behind its front; its border pixels are half background).
    rel_margin: a point is seen through only when the observed surface is farther by more than
    this share of its depth. Points outside the image or behind the camera are unknown.
    """
    depth = np.asarray(depth, dtype=np.float64)
    height, width = depth.shape
    rotation = np.asarray(rotation, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64)

    def seen(points: np.ndarray) -> np.ndarray:
        cam = (np.asarray(points, dtype=np.float64) - translation) @ rotation  # R^T (X - t), (N, 3)
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            col = np.floor(fx * cam[:, 0] / z + cx)
            row = np.floor(fy * cam[:, 1] / z + cy)
        inside = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        out = np.zeros(len(cam), dtype=bool)
        r, k = row[inside].astype(np.intp), col[inside].astype(np.intp)
        observed = depth[r, k]
        with np.errstate(invalid="ignore"):
            free = np.isfinite(observed) & (observed > 0) & (observed > z[inside] * (1 + rel_margin))
        out[inside] = free & ~own_mask[r, k]
        return out

    return seen


def _box(xy: np.ndarray, z_low: float, z_high: float) -> OrientedBox:
    center_xy, length, width, yaw = min_area_rectangle(xy)
    center = np.array([center_xy[0], center_xy[1], (z_low + z_high) / 2])
    return OrientedBox(center, length, width, float(z_high - z_low), yaw)


def _floored(box: OrientedBox, min_extent_m: float, on_ground: bool) -> OrientedBox:
    """The box with every extent at least min_extent_m, grown about its centre (upwards from
    the ground when it rests on it: its bottom is known)."""
    length, width, height = (max(float(x), min_extent_m) for x in (box.length, box.width, box.height))
    center = box.center.copy()
    if on_ground:
        center[2] = box.bottom_z + height / 2
    return OrientedBox(center, length, width, height, box.yaw_rad)
