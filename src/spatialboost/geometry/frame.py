"""The canonical gravity-aligned frame: camera pitch and roll removed, origin on the ground.

Canonical frame (right-handed, metres): z up (opposite gravity); y forward = the camera's
optical axis projected onto the ground; x = y cross z = right, horizontal. So "left/right" is
along canonical x and stays camera-relative, and for a camera with no roll canonical x is the
camera's x axis projected onto the ground. (We take the heading from the optical axis, not
from camera x, because then a camera built as yaw -> pitch -> roll about the optical axis
has a canonical frame that is exactly the world frame yawed to the camera heading: the two
choices differ by about roll * pitch, 3 degrees at roll 8, pitch -25.) The origin is the
point on the ground straight below the camera when the camera height is known, otherwise
the camera centre. Points map as `X_can = rotation @ X_cam + translation`, so the camera
centre is at `translation = (0, 0, camera_height_m)` (or 0).

Pitch and roll (degrees) follow one convention everywhere, `rotation_cam_from_canonical`:
start level (camera x = canonical x, camera z = canonical y, camera y = -canonical z), pitch
about camera x (negative looks down), then roll about the optical axis (positive dips the
camera's right side, i.e. the image's right edge moves towards the ground). Then gravity in
the camera frame is `g = (sin(roll) cos(pitch), cos(roll) cos(pitch), -sin(pitch))`, hence
`pitch = -asin(g_z)` and `roll = atan2(g_x, g_y)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spatialboost.geometry.plane import CAMERA_UP, GroundPlane, fit_ground_plane_ransac, unit_vector

FrameSource = Literal["dataset_gravity", "ransac_plane", "fallback_camera"]

CAMERA_GRAVITY = np.array([0.0, 1.0, 0.0])
"""The fallback gravity: camera y points down, so an un-pitched, un-rolled camera is assumed."""


@dataclass(frozen=True, eq=False)
class CanonicalFrame:
    """Camera -> canonical transform and where it came from.

    rotation: (3, 3) R_can_from_cam. translation: (3,) metres. source: which evidence set the
    up direction. camera_height_m: camera height above the ground, or None when unknown (then
    the origin is the camera centre). plane: the ground plane used, if any. reason: one line.
    """

    rotation: np.ndarray
    translation: np.ndarray
    source: FrameSource
    camera_height_m: float | None
    plane: GroundPlane | None
    reason: str

    def to_canonical(self, points_cam: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points, metres -> (..., 3) canonical points, metres."""
        return np.asarray(points_cam, dtype=np.float64) @ self.rotation.T + self.translation

    @property
    def camera_position(self) -> np.ndarray:
        """(3,) the camera centre in the canonical frame, metres."""
        return self.translation.copy()

    @property
    def gravity_cam(self) -> np.ndarray:
        """(3,) unit gravity direction in the camera frame (minus canonical z)."""
        return -self.rotation[2]

    @property
    def pitch_deg(self) -> float:
        """Camera pitch, degrees, negative when looking down (see module docstring)."""
        return pitch_roll_from_gravity(self.gravity_cam)[0]

    @property
    def roll_deg(self) -> float:
        """Camera roll about the optical axis, degrees, positive when the right side dips."""
        return pitch_roll_from_gravity(self.gravity_cam)[1]


def pitch_roll_from_gravity(gravity_cam: np.ndarray) -> tuple[float, float]:
    """(pitch_deg, roll_deg) of a camera from its gravity direction (3,) in the camera frame."""
    g = unit_vector(gravity_cam)
    pitch = -np.degrees(np.arcsin(np.clip(g[2], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(g[0], g[1]))
    return float(pitch), float(roll)


def gravity_from_pitch_roll(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """(3,) unit gravity in the camera frame of a camera with this pitch and roll, degrees."""
    pitch, roll = np.radians(pitch_deg), np.radians(roll_deg)
    return np.array([np.sin(roll) * np.cos(pitch), np.cos(roll) * np.cos(pitch), -np.sin(pitch)])


def rotation_cam_from_canonical(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) R_cam_from_canonical of a camera with this pitch and roll, degrees.

    A camera at world position C (world z up) whose canonical x axis (horizontal right) is at
    angle psi counter-clockwise from world +x, seen from above, has
    `R_cam_from_world = rotation_cam_from_canonical(pitch, roll) @ Rz(psi).T` and
    `t = -R_cam_from_world @ C`; its canonical frame is the world frame rotated by psi about z
    and shifted so the ground point below C is the origin. (world/scene.py's camera looks
    along world +x, so its right is world -y: psi = -90 degrees.)
    """
    pitch, roll = np.radians(pitch_deg), np.radians(roll_deg)
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    level_pitched = np.array([[1.0, 0.0, 0.0], [0.0, sp, -cp], [0.0, cp, sp]])  # rows: camera x, y, z
    about_optical_axis = np.array([[cr, sr, 0.0], [-sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return about_optical_axis @ level_pitched


def canonical_frame_from_gravity(
    gravity_cam: np.ndarray, camera_height_m: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R_can_from_cam (3, 3) and translation (3,) metres from gravity (3,) in the camera frame.

    Canonical z = -gravity, y = optical axis projected onto the ground (camera x projected
    when the camera looks straight down or up), x = y cross z. With `camera_height_m` the origin
    is the ground point below the camera; without it, the camera centre.
    """
    up = -unit_vector(gravity_cam)
    forward = _horizontal(np.array([0.0, 0.0, 1.0]), up)
    if forward is None:
        right = _horizontal(np.array([1.0, 0.0, 0.0]), up)
        forward = np.cross(up, right)
    right = np.cross(forward, up)
    rotation = np.stack([right, forward, up])
    height = 0.0 if camera_height_m is None else float(camera_height_m)
    return rotation, np.array([0.0, 0.0, height])


def canonical_frame(
    points_cam: np.ndarray,
    gravity_cam: np.ndarray | None,
    *,
    rng: np.random.Generator,
    threshold_m: float = 0.02,
    iterations: int = 200,
    min_inliers: int = 50,
    max_tilt_deg: float = 45.0,
    gravity_tilt_deg: float = 10.0,
) -> CanonicalFrame:
    """The canonical frame of one image, from the best evidence available.

    points_cam: (N, 3) camera-frame points of the whole image, metres (NaN rows ignored).
    gravity_cam: (3,) gravity in the camera frame, or None / all-NaN when unknown.
    rng: passed to RANSAC. threshold_m, iterations, min_inliers: RANSAC settings.
    max_tilt_deg: how far the ground normal may lean from camera up when gravity is unknown.
    gravity_tilt_deg: how far it may lean from -gravity when gravity is known.

    Sources, in order of preference:
    - "dataset_gravity": rotation from the given gravity; the camera height comes from a
      ground plane roughly perpendicular to it when one is found (else origin at the camera).
    - "ransac_plane": rotation and height from the RANSAC ground plane.
    - "fallback_camera": neither; camera y is taken as gravity and the origin is the camera.
    """
    gravity = _known_gravity(gravity_cam)
    if gravity is not None:
        up = -gravity
        found = fit_ground_plane_ransac(
            points_cam,
            rng,
            threshold_m=threshold_m,
            iterations=iterations,
            min_inliers=min_inliers,
            up_hint=up,
            max_tilt_deg=gravity_tilt_deg,
        )
        if isinstance(found, GroundPlane):
            inlier_points = np.asarray(points_cam, dtype=np.float64)[found.inliers]
            height = float(-np.median(inlier_points @ up))
            reason = f"gravity from the dataset; camera height from a ground plane of {found.inliers.sum()} points"
            return _frame(gravity, height, "dataset_gravity", found, reason)
        reason = f"gravity from the dataset; camera height unknown ({found.reason}): origin at the camera"
        return _frame(gravity, None, "dataset_gravity", None, reason)

    found = fit_ground_plane_ransac(
        points_cam,
        rng,
        threshold_m=threshold_m,
        iterations=iterations,
        min_inliers=min_inliers,
        up_hint=CAMERA_UP,
        max_tilt_deg=max_tilt_deg,
    )
    if isinstance(found, GroundPlane):
        reason = f"no gravity given; ground plane of {found.inliers.sum()} points"
        return _frame(-found.normal, found.offset, "ransac_plane", found, reason)
    return _frame(
        CAMERA_GRAVITY, None, "fallback_camera", None, f"no gravity given and no ground plane: {found.reason}"
    )


def _frame(
    gravity: np.ndarray, height: float | None, source: FrameSource, plane: GroundPlane | None, reason: str
) -> CanonicalFrame:
    rotation, translation = canonical_frame_from_gravity(gravity, height)
    return CanonicalFrame(rotation, translation, source, height, plane, reason)


def _known_gravity(gravity_cam: np.ndarray | None) -> np.ndarray | None:
    """Unit gravity, or None when unknown (None or any NaN, the dataset's 'unknown')."""
    if gravity_cam is None:
        return None
    gravity = np.asarray(gravity_cam, dtype=np.float64)
    if gravity.shape != (3,):
        raise ValueError(f"gravity_cam must have shape (3,), got {gravity.shape}")
    if np.isnan(gravity).any():
        return None
    return unit_vector(gravity)


def _horizontal(direction: np.ndarray, up: np.ndarray) -> np.ndarray | None:
    """Unit projection of `direction` onto the plane perpendicular to `up`; None if ~vertical."""
    flat = direction - (direction @ up) * up
    norm = np.linalg.norm(flat)
    return None if norm < 1e-6 else flat / norm
