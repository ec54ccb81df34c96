"""Pixel probes: points on objects with their exact depth, for the pixel-level turns.

The pixel-level questions ("what is the depth at (x, y)?") need the depth map itself: the
extraction stores the map each scene was measured on beside its record (extract/depth_maps.py),
and the synthesis reads it back (pipeline.scene_conversation). `pixel_probes` picks a few pixels
inside each object's mask where the depth is valid and reads their depth exactly. Without a
map, the pixel turns go to the object and scene levels (recorded as "no_depth").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spatialboost.extract.records import SceneRecord
from spatialboost.qa.draws import Draws


@dataclass(frozen=True)
class PixelProbe:
    """One pixel (x, y) = (column, row) on object `object_id`; depth_m: its z-depth, metres;
    range_m: the distance from the camera centre to the surface point, metres."""

    x: int
    y: int
    depth_m: float
    range_m: float
    object_id: int

    def to_dict(self) -> dict[str, float | int]:
        return {"x": self.x, "y": self.y, "depth_m": self.depth_m, "range_m": self.range_m, "object_id": self.object_id}


def pixel_probes(
    depth: np.ndarray,
    record: SceneRecord,
    draws: Draws,
    per_object: int = 2,
    min_confidence: float = 0.0,
    masks: list[np.ndarray] | None = None,
) -> tuple[PixelProbe, ...]:
    """Up to `per_object` probes on every object with confidence >= min_confidence.

    depth: (H, W) float metres, z-depth, 0 / non-finite = invalid; must match the record's
    size. Probes are drawn uniformly (with `draws`) from the mask eroded by one pixel, so a probe
    never sits on a depth edge; from the whole mask when erosion leaves nothing. Pixels without
    valid depth are never probed. masks: decoded (H, W) bool masks in record order, if at hand.
    Probes of an object are in row-major order.
    """
    depth = np.asarray(depth)
    if depth.shape != (record.height, record.width):
        raise ValueError(
            f"{record.image_id}: depth {depth.shape} does not match the image {record.height}x{record.width}"
        )
    valid = np.isfinite(depth) & (depth > 0)
    masks = masks if masks is not None else [obj.mask.decode() for obj in record.objects]
    k = record.intrinsics
    probes: list[PixelProbe] = []
    for obj, mask in zip(record.objects, masks, strict=True):
        if obj.confidence < min_confidence:
            continue
        points = interior_by_rejection(mask, valid, obj.bbox, draws, per_object)
        if points is None:
            points = interior_by_listing(mask, valid, obj.bbox, draws, per_object)
        for x, y in points:
            z = float(depth[y, x])
            ray = math.sqrt(((x + 0.5 - k.cx) / k.fx) ** 2 + ((y + 0.5 - k.cy) / k.fy) ** 2 + 1.0)
            probes.append(PixelProbe(x, y, z, z * ray, obj.object_id))
    return tuple(probes)


def interior_by_rejection(
    mask: np.ndarray, valid: np.ndarray, bbox: tuple[int, int, int, int], draws: Draws, n: int, tries: int = 48
) -> list[tuple[int, int]] | None:
    """n distinct (x, y) drawn uniformly from the pixels of `bbox` that are interior (they and
    their 4 neighbours in mask & valid); None when `tries` draws do not find n of them.

    Rejection sampling: uniform over the accepted pixels, and a few scalar lookups per draw
    instead of array operations over the box. mask, valid: (H, W) bool.
    """
    x0, y0, x1, y1 = bbox
    height, width = mask.shape
    chosen: list[tuple[int, int]] = []
    for _ in range(tries):
        x, y = x0 + draws.below(x1 - x0), y0 + draws.below(y1 - y0)
        if (x, y) in chosen or not (0 < x < width - 1 and 0 < y < height - 1):
            continue
        if all(mask[v, u] and valid[v, u] for u, v in ((x, y), (x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1))):
            chosen.append((x, y))
            if len(chosen) == n:
                return sorted(chosen, key=lambda p: (p[1], p[0]))
    return None


def interior_by_listing(
    mask: np.ndarray, valid: np.ndarray, bbox: tuple[int, int, int, int], draws: Draws, n: int
) -> list[tuple[int, int]]:
    """min(n, available) distinct (x, y) drawn uniformly from the interior pixels of the mask
    (mask eroded by one pixel, valid depth), or from all its valid pixels when none is interior.
    The reference for `interior_by_rejection`, and its fallback for thin or tiny masks."""
    x0, y0, x1, y1 = bbox
    crop = mask[y0:y1, x0:x1] & valid[y0:y1, x0:x1]
    inner = erode(crop)
    rows, cols = np.nonzero(inner if inner.any() else crop)
    return [(int(cols[i] + x0), int(rows[i] + y0)) for i in draws.distinct(rows.size, n)]


def erode(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> pixels whose 4 neighbours are all in the mask (outside the array = out)."""
    out = mask.copy()
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    out[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return out
