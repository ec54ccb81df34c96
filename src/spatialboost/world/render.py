"""Analytic ray casting of a Scene, vectorised over all pixels.

One ray per pixel centre, d = R^T K^-1 (u + 0.5, v + 0.5, 1): its camera-frame z component
is 1, so the ray parameter t of a hit *is* the z-depth. Ground (a disc of GROUND_RADIUS_M
around the camera) and every object are intersected exactly; the nearest hit wins. Shading
is Lambertian with one directional light plus ambient, over checker-textured albedo.

    r = render_scene(scene, 128, 128)   # r.rgb (128, 128, 3) uint8, r.depth metres, r.instances
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialboost.world.scene import Object3D, Scene
from spatialboost.world.shapes import SHAPES

GROUND_RADIUS_M = 50.0
"""The ground ends here (beyond it is sky, depth 0), like a depth sensor's range."""

AMBIENT = 0.35
OBJECT_CHECKS = 4.0
"""Checker cells across an object's largest extent; the darker cell has albedo x0.8."""

SKY_HORIZON, SKY_ZENITH = np.array([0.85, 0.88, 0.92]), np.array([0.45, 0.62, 0.88])


@dataclass(frozen=True)
class Rendering:
    """One rendered image and its exact geometry.

    rgb: (H, W, 3) uint8. depth: (H, W) float32, z-depth in metres, 0 where nothing is hit.
    instances: (H, W) uint16, k = scene.objects[k - 1], 0 = ground or sky.
    intrinsics: (fx, fy, cx, cy) pixels. T_cam_from_world: (4, 4). gravity_cam: (3,) unit.
    in_view_pixels: (n_objects,) int64, pixels whose ray hits the object ignoring occlusion.
    visible_pixels: (n_objects,) int64, pixels where the object is the nearest surface.
    """

    rgb: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    intrinsics: tuple[float, float, float, float]
    T_cam_from_world: np.ndarray
    gravity_cam: np.ndarray
    in_view_pixels: np.ndarray
    visible_pixels: np.ndarray


def pixel_rays(scene: Scene, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and world ray directions (H * W, 3), row-major, camera z component 1."""
    fx, fy, cx, cy = scene.camera.intrinsics(width, height)
    x = (np.arange(width) + 0.5 - cx) / fx  # (W,) camera-frame X / Z of each column
    y = (np.arange(height) + 0.5 - cy) / fy  # (H,)
    R = scene.camera.R_cam_from_world  # world d = R^T (x, y, 1) = x R[0] + y R[1] + R[2]
    dirs = x[None, :, None] * R[0] + y[:, None, None] * R[1] + R[2]  # (H, W, 3)
    return scene.camera.position, dirs.reshape(-1, 3)


def intersect_ground(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """t (N,) of the first hit with the ground disc z = 0, |xy| <= GROUND_RADIUS_M; inf if none."""
    with np.errstate(divide="ignore"):
        t = np.where(dirs[:, 2] < 0.0, -origin[2] / dirs[:, 2], np.inf)
    xy = origin[:2] + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs[:, :2]
    return np.where(np.hypot(xy[:, 0], xy[:, 1]) <= GROUND_RADIUS_M, t, np.inf)


def ground_albedo(points: np.ndarray, ground_rgb: tuple) -> np.ndarray:
    """(N, 3) albedo of 1 m checker tiles at world points (N, 3)."""
    parity = (np.floor(points[:, 0]) + np.floor(points[:, 1])) % 2
    return np.where(parity[:, None] == 0, np.asarray(ground_rgb[0]), np.asarray(ground_rgb[1]))


def object_albedo(obj: Object3D, local_points: np.ndarray) -> np.ndarray:
    """(N, 3) albedo: the object's colour on a 3D checker in its own frame (local_points (N, 3))."""
    cell = max(obj.size) / OBJECT_CHECKS
    parity = np.floor(local_points / cell).sum(axis=1) % 2
    return np.asarray(obj.colour_rgb) * np.where(parity == 0, 1.0, 0.8)[:, None]


def box_candidates(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Indices of the rays (origin o (3,), directions d (N, 3)) that cross the box |p| <= half."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1, t2 = (-half - o) * inv, (half - o) * inv
    t_near = np.nanmax(np.minimum(t1, t2), axis=1, initial=-np.inf)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1, initial=np.inf)
    return np.flatnonzero((t_near <= t_far) & (t_far > 0.0))


def object_hits(obj: Object3D, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact hits of rays (origin (3,), dirs (N, 3), world) with one object.

    Returns t (N,) (inf on a miss), world normals (N, 3) and local hit points (N, 3). Only rays
    through the object's box are intersected exactly.
    """
    R = obj.R_world_from_object
    o_local = R.T @ (origin - np.asarray(obj.center))  # (3,)
    d_local = dirs @ R  # (N, 3), rows R^T d
    candidates = box_candidates(o_local, d_local, obj.half * (1.0 + 1e-9))
    t = np.full(len(dirs), np.inf)
    normals, local_points = np.zeros((len(dirs), 3)), np.zeros((len(dirs), 3))
    if candidates.size:
        t_c, n_c = SHAPES[obj.label].intersect(o_local, d_local[candidates], obj.half)
        t[candidates] = t_c
        normals[candidates] = n_c @ R.T
        local_points[candidates] = o_local + np.where(np.isfinite(t_c), t_c, 0.0)[:, None] * d_local[candidates]
    return t, normals, local_points


def pixel_window(obj: Object3D, scene: Scene, width: int, height: int) -> np.ndarray:
    """Row-major indices of the pixels inside the projection of obj's box (all pixels if the box
    reaches behind the camera, where the projection is unbounded)."""
    cam = scene.camera
    corners = (obj.corners_world() - cam.position) @ cam.R_cam_from_world.T  # (8, 3) camera frame
    if corners[:, 2].min() <= 1e-6:
        return np.arange(width * height)
    fx, fy, cx, cy = cam.intrinsics(width, height)
    u = fx * corners[:, 0] / corners[:, 2] + cx - 0.5  # pixel index whose centre projects there
    v = fy * corners[:, 1] / corners[:, 2] + cy - 0.5
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())), width - 1)  # floor/ceil: 1 px margin
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())), height - 1)
    if u0 > u1 or v0 > v1:
        return np.zeros(0, dtype=np.int64)
    rows, cols = np.mgrid[v0 : v1 + 1, u0 : u1 + 1]
    return (rows * width + cols).ravel()


def shade(albedo: np.ndarray, normals: np.ndarray, light_dir: np.ndarray) -> np.ndarray:
    """(N, 3) Lambertian radiance: albedo * (ambient + (1 - ambient) * max(0, n . l))."""
    lambert = np.clip(normals @ light_dir, 0.0, None)
    return albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)[:, None]


def sky(dirs: np.ndarray) -> np.ndarray:
    """(N, 3) sky colour, from the horizon to the zenith by ray elevation."""
    elevation = np.clip(dirs[:, 2] / np.linalg.norm(dirs, axis=1), 0.0, 1.0)
    return SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * elevation[:, None]


def to_uint8(radiance: np.ndarray, scene: Scene) -> np.ndarray:
    """(H, W, 3) float radiance in [0, 1] -> uint8 after Gaussian noise of scene.rgb_noise_std."""
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, scene.rgb_noise_std, radiance.shape)
    return np.floor(np.clip(radiance + noise, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_scene(scene: Scene, width: int, height: int) -> Rendering:
    """Render `scene` at width x height pixels (see Rendering for the outputs)."""
    origin, dirs = pixel_rays(scene, width, height)
    n_rays = len(dirs)
    t_best = intersect_ground(origin, dirs)
    ground = np.isfinite(t_best)
    normals = np.zeros((n_rays, 3))
    normals[:, 2] = 1.0
    albedo = np.zeros((n_rays, 3))
    albedo[ground] = ground_albedo(origin + t_best[ground, None] * dirs[ground], scene.ground_rgb)
    instances = np.zeros(n_rays, dtype=np.uint16)
    in_view = np.zeros(len(scene.objects), dtype=np.int64)
    for k, obj in enumerate(scene.objects, start=1):
        window = pixel_window(obj, scene, width, height)
        t, obj_normals, local_points = object_hits(obj, origin, dirs[window])
        in_view[k - 1] = np.isfinite(t).sum()
        nearer = t < t_best[window]
        pixels = window[nearer]
        t_best[pixels] = t[nearer]
        instances[pixels] = k
        normals[pixels] = obj_normals[nearer]
        albedo[pixels] = object_albedo(obj, local_points[nearer])
    hit = np.isfinite(t_best)
    radiance = sky(dirs)
    radiance[hit] = shade(albedo[hit], normals[hit], np.asarray(scene.light_dir))
    return Rendering(
        rgb=to_uint8(radiance.reshape(height, width, 3), scene),
        depth=np.where(hit, t_best, 0.0).astype(np.float32).reshape(height, width),
        instances=instances.reshape(height, width),
        intrinsics=scene.camera.intrinsics(width, height),
        T_cam_from_world=scene.camera.T_cam_from_world,
        gravity_cam=scene.camera.gravity_cam,
        in_view_pixels=in_view,
        visible_pixels=np.bincount(instances, minlength=len(scene.objects) + 1)[1:].astype(np.int64),
    )
