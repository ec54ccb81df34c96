"""3D boxes ("bounding cubes") of canonical-frame point clouds.

Canonical frame: x right, y forward, z up, metres (geometry/frame.py). An oriented box is
yawed about z only (gravity-aligned), with
- length, width: the footprint's sides on the ground, length >= width;
- height: the extent along z, from the lowest to the highest point;
- yaw_rad: angle from canonical +x to the length axis, counter-clockwise seen from above,
  wrapped to [-pi/2, pi/2) because a box is symmetric under a half turn.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError


@dataclass(frozen=True, eq=False)
class AxisAlignedBox:
    """Box with faces along the canonical axes. minimum, maximum: (3,) corners, metres."""

    minimum: np.ndarray
    maximum: np.ndarray

    @property
    def center(self) -> np.ndarray:
        """(3,) metres."""
        return (self.minimum + self.maximum) / 2

    @property
    def size(self) -> np.ndarray:
        """(3,) extents along canonical x, y, z, metres."""
        return self.maximum - self.minimum


@dataclass(frozen=True, eq=False)
class OrientedBox:
    """Gravity-aligned box yawed about z. center: (3,) metres; sizes in metres; yaw in radians."""

    center: np.ndarray
    length: float
    width: float
    height: float
    yaw_rad: float

    @property
    def size(self) -> np.ndarray:
        """(3,) (length, width, height), metres."""
        return np.array([self.length, self.width, self.height])

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) columns: the length axis, the width axis and up, in the canonical frame."""
        c, s = np.cos(self.yaw_rad), np.sin(self.yaw_rad)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def bottom_z(self) -> float:
        """Canonical z of the bottom face, metres."""
        return float(self.center[2] - self.height / 2)

    @property
    def top_z(self) -> float:
        """Canonical z of the top face, metres."""
        return float(self.center[2] + self.height / 2)

    def corners(self) -> np.ndarray:
        """(8, 3) corners, metres, ordered as itertools.product([-1, 1], repeat=3) over half-sizes."""
        signs = np.array(list(itertools.product([-1.0, 1.0], repeat=3)))  # (8, 3)
        return self.center + (signs * self.size / 2) @ self.rotation.T


def axis_aligned_box(points: np.ndarray) -> AxisAlignedBox:
    """Tight box along the canonical axes around (N >= 1, 3) finite points, metres."""
    points = _as_points(points, 3)
    return AxisAlignedBox(points.min(axis=0), points.max(axis=0))


def oriented_box(points: np.ndarray) -> OrientedBox:
    """Tight gravity-aligned box around (N >= 1, 3) finite canonical points, metres.

    The footprint is the minimum-area rectangle of the points' (x, y); the height spans their z.
    """
    points = _as_points(points, 3)
    center_xy, length, width, yaw = min_area_rectangle(points[:, :2])
    z_low, z_high = points[:, 2].min(), points[:, 2].max()
    center = np.array([center_xy[0], center_xy[1], (z_low + z_high) / 2])
    return OrientedBox(center, length, width, float(z_high - z_low), yaw)


def min_area_rectangle(xy: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Minimum-area enclosing rectangle of (N >= 1, 2) points, metres.

    Rotating calipers: the optimal rectangle has a side along a convex-hull edge, so only the
    hull's edge directions are tried (vectorised over edges). Returns (center (2,), length,
    width, yaw_rad) with length >= width and yaw the length axis' angle in [-pi/2, pi/2).
    Collinear or coincident points give width 0 (and length 0 for a single location).
    """
    xy = _as_points(xy, 2)
    try:
        hull = xy[ConvexHull(xy).vertices]  # (h, 2), counter-clockwise
    except (QhullError, ValueError):
        return _segment_rectangle(xy)
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    return _best_rectangle(hull, angles)


def min_area_rectangle_naive(xy: np.ndarray, n_angles: int = 3600) -> tuple[np.ndarray, float, float, float]:
    """Reference for `min_area_rectangle`: all points, `n_angles` orientations evenly over 90 degrees."""
    xy = _as_points(xy, 2)
    return _best_rectangle(xy, np.linspace(0.0, np.pi / 2, n_angles, endpoint=False))


def wrap_half_turn(angle_rad: float) -> float:
    """The angle modulo pi, in [-pi/2, pi/2)."""
    return float(np.mod(angle_rad + np.pi / 2, np.pi) - np.pi / 2)


def _best_rectangle(xy: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Smallest of the rectangles aligned with each angle (A,) around (N, 2) points."""
    cos, sin = np.cos(angles), np.sin(angles)  # (A,)
    along = xy[:, :1] * cos + xy[:, 1:] * sin  # (N, A): coordinate along the angle
    across = -xy[:, :1] * sin + xy[:, 1:] * cos  # (N, A): coordinate perpendicular to it
    extent_along = along.max(axis=0) - along.min(axis=0)
    extent_across = across.max(axis=0) - across.min(axis=0)
    best = int(np.argmin(extent_along * extent_across))
    mid_along = (along[:, best].max() + along[:, best].min()) / 2
    mid_across = (across[:, best].max() + across[:, best].min()) / 2
    c, s = cos[best], sin[best]
    center = np.array([c * mid_along - s * mid_across, s * mid_along + c * mid_across])
    if extent_along[best] >= extent_across[best]:
        return center, float(extent_along[best]), float(extent_across[best]), wrap_half_turn(angles[best])
    return center, float(extent_across[best]), float(extent_along[best]), wrap_half_turn(angles[best] + np.pi / 2)


def _segment_rectangle(xy: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """The rectangle of (nearly) collinear points: along their principal direction."""
    centred = xy - xy.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    angle = float(np.arctan2(vt[0, 1], vt[0, 0]))
    return _best_rectangle(xy, np.array([angle]))


def _as_points(points: np.ndarray, dim: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != dim:
        raise ValueError(f"points must have shape (N, {dim}), got {points.shape}")
    if len(points) == 0:
        raise ValueError("a box needs at least one point, got 0")
    if not np.isfinite(points).all():
        raise ValueError("box points must be finite")
    return points
