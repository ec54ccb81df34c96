"""Ground-plane fitting in the camera frame: RANSAC over point triplets, then least squares.

A plane is `normal @ X + offset = 0` with a unit `normal` pointing up (away from the ground,
towards the camera's side) and `offset` the signed distance of the camera centre (the
camera-frame origin) above the plane, metres. `offset > 0` means the camera is above it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERA_UP = np.array([0.0, -1.0, 0.0])
"""Up in an un-rolled, un-pitched camera: image "up" is camera -y (OpenCV y points down)."""


@dataclass(frozen=True, eq=False)
class GroundPlane:
    """A fitted ground plane in the camera frame.

    normal: (3,) unit, camera frame, pointing up. offset: metres, camera height above the plane.
    inliers: (N,) bool over the points given to the fit. residual_m: RMS point-to-plane distance
    of the inliers, metres.
    """

    normal: np.ndarray
    offset: float
    inliers: np.ndarray
    residual_m: float

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) height of camera-frame points (N, 3) above the plane, metres."""
        return np.asarray(points, dtype=np.float64) @ self.normal + self.offset


@dataclass(frozen=True)
class NoGroundPlane:
    """The fit found no acceptable plane; `reason` says why, in one line."""

    reason: str


def fit_plane_least_squares(points: np.ndarray, up_hint: np.ndarray = CAMERA_UP) -> tuple[np.ndarray, float]:
    """Total-least-squares plane through (N, 3) points (N >= 3), metres.

    Returns (normal (3,), offset) with the normal oriented to agree with `up_hint` (3,).
    Raises ValueError for fewer than 3 points.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 3:
        raise ValueError(f"a plane needs (N >= 3, 3) points, got shape {points.shape}")
    centroid = points.mean(axis=0)
    # The direction of least spread of the centred points is the normal.
    _, _, vt = np.linalg.svd(points - centroid, full_matrices=False)
    normal = vt[-1]
    if normal @ up_hint < 0:
        normal = -normal
    return normal, float(-normal @ centroid)


def fit_ground_plane_ransac(
    points: np.ndarray,
    rng: np.random.Generator,
    *,
    threshold_m: float = 0.02,
    iterations: int = 200,
    min_inliers: int = 50,
    up_hint: np.ndarray = CAMERA_UP,
    max_tilt_deg: float = 45.0,
    min_camera_height_m: float = 0.0,
    refine_steps: int = 2,
) -> GroundPlane | NoGroundPlane:
    """Find the ground in camera-frame points with RANSAC, then refine by least squares.

    points: (N, 3) camera frame, metres; non-finite rows are ignored (their inlier flag is False).
    rng: the only source of randomness (triplet sampling). threshold_m: inlier distance, metres.
    up_hint: (3,) camera-frame direction the ground normal should point to (camera -y when
    gravity is unknown, -gravity when known). A candidate plane counts only when its normal is
    within `max_tilt_deg` of `up_hint` and the camera is more than `min_camera_height_m` above
    it, so walls, ceilings and table tops above the camera are never taken for the ground.
    Among admissible planes the one with most inliers wins; ties go to the normal closest to
    `up_hint`. Returns a GroundPlane, or NoGroundPlane with the reason.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    if threshold_m <= 0 or iterations < 1 or min_inliers < 3:
        raise ValueError("needs threshold_m > 0, iterations >= 1 and min_inliers >= 3")
    up_hint = unit_vector(up_hint)
    finite = np.isfinite(points).all(axis=1)
    cloud = points[finite]
    if len(cloud) < max(3, min_inliers):
        return NoGroundPlane(f"too few finite points for a plane: {len(cloud)} < {max(3, min_inliers)}")

    min_cos = np.cos(np.deg2rad(max_tilt_deg))
    normals, offsets = _triplet_planes(cloud, rng.integers(0, len(cloud), size=(iterations, 3)), up_hint)
    admissible = (normals @ up_hint >= min_cos) & (offsets > min_camera_height_m)
    if not admissible.any():
        return NoGroundPlane(
            f"no candidate plane below the camera within {max_tilt_deg:g} deg of up in {iterations} samples"
        )
    counts = _inlier_counts(cloud, normals[admissible], offsets[admissible], threshold_m)
    # Most inliers first; among equal counts, the normal closest to up.
    order = np.lexsort((-(normals[admissible] @ up_hint), -counts))
    best = order[0]
    if counts[best] < min_inliers:
        return NoGroundPlane(f"best plane has {counts[best]} inliers < min_inliers {min_inliers}")

    normal, offset = normals[admissible][best], offsets[admissible][best]
    inliers = np.abs(cloud @ normal + offset) < threshold_m
    for _ in range(refine_steps):
        normal, offset = fit_plane_least_squares(cloud[inliers], up_hint)
        refined = np.abs(cloud @ normal + offset) < threshold_m
        if refined.sum() < 3:
            break
        inliers = refined
    if inliers.sum() < min_inliers:
        return NoGroundPlane(f"refined plane keeps {inliers.sum()} inliers < min_inliers {min_inliers}")
    if normal @ up_hint < min_cos or offset <= min_camera_height_m:
        return NoGroundPlane("refined plane is too tilted or not below the camera")

    residual = float(np.sqrt(np.mean((cloud[inliers] @ normal + offset) ** 2)))
    full_inliers = np.zeros(len(points), dtype=bool)
    full_inliers[np.flatnonzero(finite)[inliers]] = True
    return GroundPlane(normal=normal, offset=float(offset), inliers=full_inliers, residual_m=residual)


def _triplet_planes(cloud: np.ndarray, triplets: np.ndarray, up_hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planes through point triplets: normals (T, 3) oriented to up_hint, offsets (T,).

    Degenerate (collinear or repeated) triplets get a zero normal and offset -inf, so no
    admissibility test accepts them.
    """
    a, b, c = cloud[triplets[:, 0]], cloud[triplets[:, 1]], cloud[triplets[:, 2]]  # (T, 3) each
    cross = np.cross(b - a, c - a)
    norm = np.linalg.norm(cross, axis=1)
    scale = np.maximum(np.linalg.norm(b - a, axis=1) * np.linalg.norm(c - a, axis=1), 1e-300)
    ok = norm > 1e-9 * scale
    normals = np.zeros_like(cross)
    normals[ok] = cross[ok] / norm[ok, None]
    normals *= np.where(normals @ up_hint < 0, -1.0, 1.0)[:, None]
    offsets = np.where(ok, -np.einsum("ij,ij->i", normals, a), -np.inf)
    return normals, offsets


def _inlier_counts(
    cloud: np.ndarray, normals: np.ndarray, offsets: np.ndarray, threshold_m: float, max_elements: int = 4_000_000
) -> np.ndarray:
    """(T,) number of points within threshold of each of T planes, in memory-bounded chunks."""
    chunk = max(1, max_elements // max(1, len(cloud)))
    counts = np.empty(len(normals), dtype=np.int64)
    for start in range(0, len(normals), chunk):
        stop = start + chunk
        distances = np.abs(cloud @ normals[start:stop].T + offsets[start:stop])  # (N, chunk)
        counts[start:stop] = (distances < threshold_m).sum(axis=0)
    return counts


def unit_vector(vector: np.ndarray) -> np.ndarray:
    """(3,) float64 unit vector along `vector`; ValueError for a zero, non-finite or non-3 vector."""
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector)
    if vector.shape != (3,) or not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"expected a non-zero finite 3-vector, got {vector}")
    return vector / norm
