"""Naive reference renderer: one Python loop iteration per pixel, scalar math, no culling.

Slow (use images of a few hundred pixels); it exists so that tests can check the vectorised
renderer in render.py against something obviously correct. It shares only the per-shape
intersections (tested separately against their implicit inside tests) and the noise draw.
"""

from __future__ import annotations

import math

import numpy as np

from spatialboost.world.render import AMBIENT, GROUND_RADIUS_M, OBJECT_CHECKS, SKY_HORIZON, SKY_ZENITH, Rendering
from spatialboost.world.scene import Scene
from spatialboost.world.shapes import SHAPES


def _trace(scene: Scene, origin: np.ndarray, d: np.ndarray) -> tuple[float, int, np.ndarray, np.ndarray]:
    """Nearest hit of one ray: (t, instance, albedo (3,), world normal (3,)); t = inf for sky."""
    best_t, best_k = math.inf, 0
    albedo, normal = np.zeros(3), np.array([0.0, 0.0, 1.0])
    if d[2] < 0.0:
        t = -origin[2] / d[2]
        x, y = origin[0] + t * d[0], origin[1] + t * d[1]
        if math.hypot(x, y) <= GROUND_RADIUS_M:
            best_t = t
            albedo = np.asarray(scene.ground_rgb[(math.floor(x) + math.floor(y)) % 2])
    for k, obj in enumerate(scene.objects, start=1):
        R = obj.R_world_from_object
        o_local = R.T @ (origin - np.asarray(obj.center))
        d_local = R.T @ d
        t_arr, n_arr = SHAPES[obj.label].intersect(o_local, d_local[None, :], obj.half)
        t = float(t_arr[0])
        if t < best_t:
            best_t, best_k = t, k
            normal = R @ n_arr[0]
            p = o_local + t * d_local
            cell = max(obj.size) / OBJECT_CHECKS
            parity = sum(math.floor(c / cell) for c in p) % 2
            albedo = np.asarray(obj.colour_rgb) * (1.0 if parity == 0 else 0.8)
    return best_t, best_k, albedo, normal


def render_scene_naive(scene: Scene, width: int, height: int) -> Rendering:
    """Same outputs as render.render_scene, computed pixel by pixel."""
    cam = scene.camera
    fx, fy, cx, cy = cam.intrinsics(width, height)
    R, origin = cam.R_cam_from_world, cam.position
    light = np.asarray(scene.light_dir)
    radiance = np.zeros((height, width, 3))
    depth = np.zeros((height, width), dtype=np.float32)
    instances = np.zeros((height, width), dtype=np.uint16)
    in_view = np.zeros(len(scene.objects), dtype=np.int64)
    for v in range(height):
        for u in range(width):
            d = R.T @ np.array([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1.0])
            t, k, albedo, normal = _trace(scene, origin, d)
            if math.isinf(t):
                elevation = min(max(d[2] / np.linalg.norm(d), 0.0), 1.0)
                radiance[v, u] = SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * elevation
            else:
                lambert = max(float(normal @ light), 0.0)
                radiance[v, u] = albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)
                depth[v, u] = t  # the ray's camera z component is 1, so t is the z-depth
                instances[v, u] = k
            for j, obj in enumerate(scene.objects):
                o_local = obj.R_world_from_object.T @ (origin - np.asarray(obj.center))
                d_local = obj.R_world_from_object.T @ d
                in_view[j] += bool(np.isfinite(SHAPES[obj.label].intersect(o_local, d_local[None, :], obj.half)[0][0]))
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, scene.rgb_noise_std, radiance.shape)
    rgb = np.floor(np.clip(radiance + noise, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Rendering(
        rgb=rgb,
        depth=depth,
        instances=instances,
        intrinsics=(fx, fy, cx, cy),
        T_cam_from_world=cam.T_cam_from_world,
        gravity_cam=cam.gravity_cam,
        in_view_pixels=in_view,
        visible_pixels=np.array([(instances == k).sum() for k in range(1, len(scene.objects) + 1)], dtype=np.int64),
    )
