"""Scenes of the procedural world: frozen records and their sampling from a WorldConfig.

World frame: z up, the ground is z = 0. The camera stands at (0, 0, height) and looks along
world +x (yaw 0), pitched about its x axis and rolled about its optical axis. Camera frame:
OpenCV (x right, y down, z forward). All lengths in metres, angles as named.

    rng = scene_rng(cfg, "train", 3)    # scene 3 of the train split, same on every machine
    scene = sample_scene(cfg, rng)
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import numpy as np

from spatialboost.config import WorldConfig
from spatialboost.world.shapes import SHAPES

Vec3 = tuple[float, float, float]

COLOURS: dict[str, Vec3] = {
    "red": (0.80, 0.12, 0.10),
    "green": (0.15, 0.62, 0.20),
    "blue": (0.12, 0.28, 0.85),
    "yellow": (0.92, 0.82, 0.15),
    "orange": (0.95, 0.50, 0.08),
    "purple": (0.50, 0.18, 0.65),
    "white": (0.92, 0.92, 0.90),
    "black": (0.10, 0.10, 0.11),
}
"""Named object colours, linear RGB in [0, 1]."""

MAX_PLACEMENT_TRIES = 30
"""Resamples per object before it is dropped (a crowded scene keeps fewer objects)."""

FOOTPRINT_GAP_M = 0.05
NEAR_PLANE_M = 0.1
"""Every box corner lies this far in front of the camera, so box projections are well defined."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, 0, height_m) looking along world +x.

    pitch_deg < 0 looks down; roll_deg rotates the camera about its optical axis; fov_deg is
    the horizontal field of view. Square pixels, principal point at the image centre.
    """

    height_m: float
    pitch_deg: float
    roll_deg: float
    fov_deg: float

    @property
    def position(self) -> np.ndarray:
        """(3,) camera centre in world coordinates, metres."""
        return np.array([0.0, 0.0, self.height_m])

    @property
    def R_cam_from_world(self) -> np.ndarray:
        """(3, 3) rotation; its rows are the camera x (right), y (down), z (forward) axes in world."""
        p, r = np.radians(self.pitch_deg), np.radians(self.roll_deg)
        forward = np.array([np.cos(p), 0.0, np.sin(p)])
        right = np.array([0.0, -1.0, 0.0])
        down = np.cross(forward, right)
        right, down = np.cos(r) * right + np.sin(r) * down, -np.sin(r) * right + np.cos(r) * down
        return np.stack([right, down, forward])

    @property
    def T_cam_from_world(self) -> np.ndarray:
        """(4, 4) extrinsics: X_cam = R @ X_world + t."""
        T = np.eye(4)
        T[:3, :3] = self.R_cam_from_world
        T[:3, 3] = -self.R_cam_from_world @ self.position
        return T

    @property
    def gravity_cam(self) -> np.ndarray:
        """(3,) unit gravity direction (world (0, 0, -1)) in the camera frame."""
        return self.R_cam_from_world @ np.array([0.0, 0.0, -1.0])

    def intrinsics(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels; pixel (u, v) has its centre at (u + 0.5, v + 0.5)."""
        fx = (width / 2.0) / np.tan(np.radians(self.fov_deg) / 2.0)
        return (float(fx), float(fx), width / 2.0, height / 2.0)


@dataclass(frozen=True)
class Object3D:
    """One object resting on the ground: its tight box, yawed about z, defines its shape.

    center: box centre in world, metres (center[2] == size[2] / 2, the object rests on z = 0).
    size: full box extents (x, y, z) in the object frame, metres; yaw_rad: rotation about world z.
    colour_rgb: linear RGB in [0, 1] of the named `colour`.
    """

    label: str
    colour: str
    colour_rgb: Vec3
    center: Vec3
    size: Vec3
    yaw_rad: float

    @property
    def half(self) -> np.ndarray:
        """(3,) box half-sizes, metres."""
        return np.asarray(self.size) / 2.0

    @property
    def R_world_from_object(self) -> np.ndarray:
        """(3, 3) rotation by yaw about z."""
        c, s = np.cos(self.yaw_rad), np.sin(self.yaw_rad)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def footprint_radius(self) -> float:
        """Radius of the smallest ground circle around the centre that holds the shape, metres."""
        return float(np.hypot(self.size[0], self.size[1]) / 2.0)

    def corners_world(self) -> np.ndarray:
        """(8, 3) box corners, ordered as itertools.product([-1, 1], repeat=3) over half-sizes."""
        signs = np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
        return np.asarray(self.center) + (signs * self.half) @ self.R_world_from_object.T


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image, apart from its resolution.

    objects: in instance order (instance id k is objects[k - 1]); light_dir: (3,) unit vector
    towards the light in world; ground_rgb: the two checker tones of the 1 m ground tiles;
    rgb_noise_std and noise_seed fix the Gaussian pixel noise, so rendering is a pure function.
    """

    camera: Camera
    objects: tuple[Object3D, ...]
    light_dir: Vec3
    ground_rgb: tuple[Vec3, Vec3]
    rgb_noise_std: float
    noise_seed: int


def scene_rng(cfg: WorldConfig, split: str, index: int) -> np.random.Generator:
    """The generator of scene `index` of `split`: depends only on (cfg.seed, split, index)."""
    split_key = zlib.crc32(split.encode())  # stable across processes, unlike hash()
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(split_key, index)))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_camera(cfg: WorldConfig, rng: np.random.Generator) -> Camera:
    return Camera(
        height_m=_uniform(rng, cfg.camera_height_m),
        pitch_deg=_uniform(rng, cfg.camera_pitch_deg),
        roll_deg=_uniform(rng, cfg.camera_roll_deg),
        fov_deg=_uniform(rng, cfg.fov_deg),
    )


def sample_object(cfg: WorldConfig, camera: Camera, rng: np.random.Generator) -> Object3D:
    """One object at a horizontal distance in cfg.object_distance_m, inside 90% of the fov."""
    label = str(rng.choice(cfg.classes))
    colour = str(rng.choice(list(COLOURS)))
    size = SHAPES[label].sample_size(_uniform(rng, cfg.object_size_m), rng)
    distance = _uniform(rng, cfg.object_distance_m)
    azimuth = np.radians(camera.fov_deg) * rng.uniform(-0.45, 0.45)
    center = (float(distance * np.cos(azimuth)), float(distance * np.sin(azimuth)), size[2] / 2.0)
    yaw = float(rng.uniform(0.0, 2.0 * np.pi))
    return Object3D(label, colour, COLOURS[colour], center, size, yaw)


def fits(obj: Object3D, placed: list[Object3D], camera: Camera) -> bool:
    """True if obj is fully in front of the camera and its footprint overlaps no placed one.

    Disjoint footprint circles mean disjoint solids: every shape lies in the vertical
    cylinder over its footprint.
    """
    corners_cam = (obj.corners_world() - camera.position) @ camera.R_cam_from_world.T
    if corners_cam[:, 2].min() < NEAR_PLANE_M:
        return False
    for other in placed:
        gap = np.hypot(obj.center[0] - other.center[0], obj.center[1] - other.center[1])
        if gap < obj.footprint_radius + other.footprint_radius + FOOTPRINT_GAP_M:
            return False
    return True


def sample_scene(cfg: WorldConfig, rng: np.random.Generator) -> Scene:
    """A random scene: camera, objects that do not interpenetrate, light, ground, noise seed."""
    camera = sample_camera(cfg, rng)
    n_objects = int(rng.integers(cfg.objects_per_scene[0], cfg.objects_per_scene[1] + 1))
    placed: list[Object3D] = []
    for _ in range(n_objects):
        for _ in range(MAX_PLACEMENT_TRIES):
            obj = sample_object(cfg, camera, rng)
            if fits(obj, placed, camera):
                placed.append(obj)
                break
    elevation = rng.uniform(np.radians(30.0), np.radians(70.0))
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    light = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation))
    tone = rng.uniform(0.45, 0.6)
    ground = ((tone, tone * 0.92, tone * 0.8), (tone * 0.75, tone * 0.7, tone * 0.62))
    return Scene(
        camera=camera,
        objects=tuple(placed),
        light_dir=tuple(float(x) for x in light),  # type: ignore[arg-type]
        ground_rgb=tuple(tuple(float(c) for c in g) for g in ground),  # type: ignore[arg-type]
        rgb_noise_std=cfg.rgb_noise_std,
        noise_seed=int(rng.integers(2**63)),
    )
