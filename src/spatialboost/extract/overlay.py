"""PNG overlays of extracted scenes, for looking at what the stage did (Pillow only).

Left panel: the image with each object's mask tinted, its projected oriented 3D box (the 8
corners projected with the intrinsics, 12 edges drawn) and "id label distance" beside its 2D
box. Right panel: the depth map in the turbo colour map (black = no depth), with its range.
A header line gives the image id and the canonical frame (source, pitch, roll).

    write_overlay("overlays/test-000000.png", observation, record)
"""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from spatialboost.extract.protocols import Observation
from spatialboost.extract.records import ObjectRecord, SceneRecord
from spatialboost.geometry import OrientedBox, project, valid_depth_mask
from spatialboost.io import write_bytes_atomic

PANEL_PX = 512  # longest side of each panel, pixels
HEADER_PX = 22
GAP_PX = 8
MASK_ALPHA = 0.45
PALETTE = np.array(colormaps["tab10"].colors) * 255  # (10, 3) distinct object colours
DEPTH_LUT = (colormaps["turbo"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)  # (256, 3)

_CORNER_SIGNS = list(itertools.product([-1, 1], repeat=3))
BOX_EDGES = [(i, j) for i, j in itertools.combinations(range(8), 2)
             if sum(a != b for a, b in zip(_CORNER_SIGNS[i], _CORNER_SIGNS[j], strict=True)) == 1]  # fmt: skip
"""The 12 edges of a box whose corners are ordered as itertools.product([-1, 1], repeat=3)."""


def box_corners_cam(obj: ObjectRecord, record: SceneRecord) -> np.ndarray:
    """(8, 3) corners of an object's canonical box in the camera frame, metres."""
    box = OrientedBox(np.array(obj.box.center), *obj.box.size, obj.box.yaw_rad)
    rotation, translation = np.array(record.frame.rotation), np.array(record.frame.translation)
    return (box.corners() - translation) @ rotation  # X_cam = R^T (X_can - t), row-vector form


def box_edges_px(obj: ObjectRecord, record: SceneRecord) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 12 box edges as ((u, v), (u, v)) pixel pairs (pixel centres at integers); edges with a
    corner behind the camera are left out."""
    uv = project(box_corners_cam(obj, record), record.K)  # (8, 2), NaN behind the camera
    return [(uv[i], uv[j]) for i, j in BOX_EDGES if np.isfinite(uv[[i, j]]).all()]


def depth_colours(depth: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 turbo colours over the 2nd-98th percentile; black = no depth."""
    valid = valid_depth_mask(depth)
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not valid.any():
        return out
    low, high = np.percentile(depth[valid], [2, 98])
    scaled = np.clip((depth[valid] - low) / max(high - low, 1e-9), 0.0, 1.0)
    out[valid] = DEPTH_LUT[np.round(scaled * 255).astype(np.int64)]
    return out


def render_overlay(observation: Observation, record: SceneRecord) -> np.ndarray:
    """The overlay of one scene: (header + panel height, 2 panels + gap, 3) uint8."""
    image = observation.image.astype(np.float64)  # (H, W, 3)
    for k, obj in enumerate(record.objects):
        mask = obj.mask.decode()
        image[mask] = (1 - MASK_ALPHA) * image[mask] + MASK_ALPHA * PALETTE[k % len(PALETTE)]
    scale = PANEL_PX / max(record.width, record.height)
    size = (round(record.width * scale), round(record.height * scale))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    left = Image.fromarray(image.round().astype(np.uint8)).resize(size, resample)
    right = Image.fromarray(depth_colours(np.asarray(observation.depth))).resize(size, resample)
    font = _font()
    _draw_objects(ImageDraw.Draw(left), record, scale, font)  # on the panel: long edges stay inside it
    canvas = Image.new("RGB", (2 * size[0] + GAP_PX, size[1] + HEADER_PX), (255, 255, 255))
    canvas.paste(left, (0, HEADER_PX))
    canvas.paste(right, (size[0] + GAP_PX, HEADER_PX))
    draw = ImageDraw.Draw(canvas)
    frame = record.frame
    draw.text(
        (4, 4),
        f"{record.image_id}  frame: {frame.source}  pitch {frame.pitch_deg:.1f}  roll {frame.roll_deg:.1f}",
        fill=(0, 0, 0),
        font=font,
    )
    valid = valid_depth_mask(observation.depth)
    if valid.any():
        low, high = np.percentile(observation.depth[valid], [2, 98])
        draw.text(
            (size[0] + GAP_PX + 4, HEADER_PX + 4), f"depth {low:.1f}-{high:.1f} m", fill=(255, 255, 255), font=font
        )
    return np.asarray(canvas)


def _draw_objects(
    draw: ImageDraw.ImageDraw, record: SceneRecord, scale: float, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
) -> None:
    """Projected 3D boxes and "id label distance" tags on the image panel (`scale` panel px per pixel)."""
    for k, obj in enumerate(record.objects):
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        for a, b in box_edges_px(obj, record):
            segment = clip_segment(_to_panel(a, scale), _to_panel(b, scale), draw.im.size)
            if segment is not None:
                draw.line(segment, fill=colour, width=2)
        x0, y0 = obj.bbox[0] * scale, obj.bbox[1] * scale
        text = f"{obj.object_id} {obj.label} {obj.center_distance_m:.1f}m"
        draw.rectangle(draw.textbbox((x0, y0), text, font=font), fill=(0, 0, 0))
        draw.text((x0, y0), text, fill=colour, font=font)


def write_overlay(path: str | os.PathLike[str], observation: Observation, record: SceneRecord) -> None:
    """Render and atomically write one overlay PNG."""
    buffer = io.BytesIO()
    Image.fromarray(render_overlay(observation, record)).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def clip_segment(
    a: tuple[float, float], b: tuple[float, float], size: tuple[int, int]
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The part of segment a-b inside [0, width] x [0, height] (Liang-Barsky), or None.

    Box corners of nonsense depth project millions of pixels away; the drawing library wants
    coordinates it can hold, and the visible part of an edge must keep its direction.
    """
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, x0), (dx, size[0] - x0), (-dy, y0), (dy, size[1] - y0)):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return (x0 + t0 * dx, y0 + t0 * dy), (x0 + t1 * dx, y0 + t1 * dy)


def _to_panel(uv: np.ndarray, scale: float) -> tuple[float, float]:
    """Pixel (u, v) with centres at integers -> image-panel coordinates."""
    return float((uv[0] + 0.5) * scale), float((uv[1] + 0.5) * scale)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
