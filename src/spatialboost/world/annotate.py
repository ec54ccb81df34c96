"""Per-image annotation of a rendered scene, exactly as docs/dataset-format.md specifies."""

from __future__ import annotations

from typing import Any

import numpy as np

from spatialboost.world.render import Rendering
from spatialboost.world.scene import Object3D, Scene

SCHEMA_VERSION = 1


def _floats(a: np.ndarray | tuple) -> list:
    """Nested lists of Python floats (JSON writes them with repr, so they read back exactly)."""
    return np.asarray(a, dtype=float).tolist()


def box_annotation(obj: Object3D, T_cam_from_world: np.ndarray) -> dict[str, Any]:
    """`box_world` and `box_camera` of one object: its tight yawed box in both frames."""
    R, t = T_cam_from_world[:3, :3], T_cam_from_world[:3, 3]
    return {
        "box_world": {"center": _floats(obj.center), "size": _floats(obj.size), "yaw_rad": float(obj.yaw_rad)},
        "box_camera": {
            "center": _floats(R @ np.asarray(obj.center) + t),
            "size": _floats(obj.size),
            "rotation": _floats(R @ obj.R_world_from_object),  # box axes -> camera axes
            "corners": _floats(obj.corners_world() @ R.T + t),
        },
    }


def annotation(scene: Scene, rendering: Rendering, image_id: str) -> dict[str, Any]:
    """The annotations/<id>.json record. Objects whose rays all miss them are left out."""
    height, width = rendering.depth.shape
    fx, fy, cx, cy = rendering.intrinsics
    cam = scene.camera
    objects = []
    for k, obj in enumerate(scene.objects, start=1):
        if rendering.in_view_pixels[k - 1] == 0:
            continue
        objects.append(
            {
                "instance_id": k,
                "label": obj.label,
                "colour": obj.colour,
                "colour_rgb": _floats(obj.colour_rgb),
                **box_annotation(obj, rendering.T_cam_from_world),
                "pixel_count": int(rendering.visible_pixels[k - 1]),
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "id": image_id,
        "width": width,
        "height": height,
        "intrinsics": {"fx": float(fx), "fy": float(fy), "cx": float(cx), "cy": float(cy)},
        "T_cam_from_world": _floats(rendering.T_cam_from_world),
        "gravity_cam": _floats(rendering.gravity_cam),
        "camera": {
            "height_m": float(cam.height_m),
            "pitch_deg": float(cam.pitch_deg),
            "roll_deg": float(cam.roll_deg),
            "fov_deg": float(cam.fov_deg),
        },
        "objects": objects,
    }
