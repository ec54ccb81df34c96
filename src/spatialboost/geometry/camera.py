"""Pinhole camera: depth maps to camera-frame points and back.

Conventions (docs/dataset-format.md): OpenCV camera frame, x right, y down, z forward, metres.
Pixel (u, v) = (column, row) has its centre at (u + 0.5, v + 0.5) in continuous image
coordinates, so `K @ [X/Z, Y/Z, 1] = [u + 0.5, v + 0.5, 1]`. Depth is z-depth (the camera-frame
Z of the surface), and 0, negative or non-finite depth means "no valid depth".
"""

from __future__ import annotations

import numpy as np


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 pinhole matrix K (float64) from focal lengths and principal point, in pixels."""
    _check_intrinsics(fx, fy, cx, cy)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def valid_depth_mask(depth: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose depth is finite and strictly positive."""
    depth = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(depth) & (depth > 0)


def unproject(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Lift every pixel of a depth map into the camera frame.

    depth: (H, W) float, metres, z-depth. fx, fy, cx, cy: pixels.
    Returns (H, W, 3) float64 camera-frame points, metres; NaN where the depth is invalid
    (non-finite or <= 0).
    """
    depth = _as_depth_map(depth)
    _check_intrinsics(fx, fy, cx, cy)
    height, width = depth.shape
    u = np.arange(width, dtype=np.float64) + 0.5  # pixel centres, (W,)
    v = np.arange(height, dtype=np.float64) + 0.5  # (H,)
    z = np.where(valid_depth_mask(depth), depth, np.nan)  # (H, W)
    x = (u[None, :] - cx) / fx * z
    y = (v[:, None] - cy) / fy * z
    return np.stack([x, y, z], axis=-1)


def unproject_masked(depth: np.ndarray, mask: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Camera-frame points of the pixels in `mask` that have valid depth.

    depth: (H, W) float, metres, z-depth. mask: (H, W) bool (or 0/1). fx, fy, cx, cy: pixels.
    Returns (N, 3) float64, metres, in row-major pixel order; N = 0 when nothing is valid
    (an all-NaN depth or an empty mask gives an empty array, not an error).
    """
    depth = _as_depth_map(depth)
    mask = np.asarray(mask)
    if mask.shape != depth.shape:
        raise ValueError(f"mask shape {mask.shape} does not match depth shape {depth.shape}")
    _check_intrinsics(fx, fy, cx, cy)
    rows, cols = np.nonzero(mask.astype(bool) & valid_depth_mask(depth))
    z = depth[rows, cols].astype(np.float64)
    x = (cols + 0.5 - cx) / fx * z
    y = (rows + 0.5 - cy) / fy * z
    return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project camera-frame points to pixel coordinates.

    points: (N, 3) camera frame, metres. K: (3, 3) intrinsics, pixels.
    Returns (N, 2) float64 (u, v) such that pixel (u, v)'s centre is at integer u, v (the
    inverse of `unproject`); NaN for points with Z <= 0 or non-finite coordinates.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    z = points[:, 2]
    with np.errstate(invalid="ignore"):
        in_front = np.isfinite(points).all(axis=1) & (z > 0)
    safe_z = np.where(in_front, z, 1.0)
    normalised = points / safe_z[:, None]  # (N, 3): [X/Z, Y/Z, 1]
    pixels = normalised @ K.T  # (N, 3): [u + 0.5, v + 0.5, 1]
    uv = pixels[:, :2] - 0.5
    uv[~in_front] = np.nan
    return uv


def _as_depth_map(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a 2-D (H, W) map, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.number):
        raise ValueError(f"depth must be numeric, got dtype {depth.dtype}")
    return depth


def _check_intrinsics(fx: float, fy: float, cx: float, cy: float) -> None:
    values = np.array([fx, fy, cx, cy], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"intrinsics must be finite, got fx={fx}, fy={fy}, cx={cx}, cy={cy}")
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
