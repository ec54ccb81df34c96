"""Spatial relations between two boxes in the canonical frame, each with a signed margin.

Canonical frame: x right, y forward, z up, metres; the camera centre is at `camera_position`.
A margin is positive when the relation holds for (a, b) in the named direction and its size
says by how much, so a caller can skip relations whose |margin| is below the noise level:

- left_of_m     = b.center.x - a.center.x: > 0 when a is left of b (camera-relative).
- above_m       = a.center.z - b.center.z: > 0 when a is higher than b (centre heights: what
                  "is A above B" asks of objects side by side). vertical_gap_m says whether
                  they are also stacked: a.bottom - b.top when a is higher, else b.bottom -
                  a.top; > 0 means a clear gap between the boxes along z.
- closer_m      = distance(b) - distance(a), camera centre to box centre: > 0 when a is in
                  front of (closer than) b.
- center_distance_m: Euclidean distance between the box centres (>= 0).
- horizontal_distance_m: the same on the ground (x, y only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spatialboost.geometry.boxes import OrientedBox


@dataclass(frozen=True)
class PairRelations:
    """Signed relation margins of box a with respect to box b, metres (see module docstring)."""

    left_of_m: float
    above_m: float
    vertical_gap_m: float
    closer_m: float
    center_distance_m: float
    horizontal_distance_m: float

    def left_right(self, min_margin_m: float = 0.0) -> Literal["left", "right"] | None:
        """Where a is relative to b, or None when |margin| <= min_margin_m."""
        return _decide(self.left_of_m, min_margin_m, "left", "right")

    def above_below(self, min_margin_m: float = 0.0) -> Literal["above", "below"] | None:
        """Whether a is higher or lower than b, or None when |margin| <= min_margin_m."""
        return _decide(self.above_m, min_margin_m, "above", "below")

    def front_behind(self, min_margin_m: float = 0.0) -> Literal["in front of", "behind"] | None:
        """Whether a is closer to or farther from the camera than b, or None within the margin."""
        return _decide(self.closer_m, min_margin_m, "in front of", "behind")


def relate(a: OrientedBox, b: OrientedBox, camera_position: np.ndarray) -> PairRelations:
    """Relations of box a to box b; camera_position: (3,) camera centre, canonical frame, metres."""
    camera = np.asarray(camera_position, dtype=np.float64)
    if camera.shape != (3,) or not np.isfinite(camera).all():
        raise ValueError(f"camera_position must be a finite (3,) vector, got {camera_position}")
    offset = b.center - a.center  # (3,)
    above = float(a.center[2] - b.center[2])
    gap = a.bottom_z - b.top_z if above >= 0 else b.bottom_z - a.top_z
    return PairRelations(
        left_of_m=float(offset[0]),
        above_m=above,
        vertical_gap_m=float(gap),
        closer_m=float(np.linalg.norm(b.center - camera) - np.linalg.norm(a.center - camera)),
        center_distance_m=float(np.linalg.norm(offset)),
        horizontal_distance_m=float(np.linalg.norm(offset[:2])),
    )


def _decide(margin: float, min_margin: float, positive: str, negative: str) -> str | None:
    if abs(margin) <= min_margin:
        return None
    return positive if margin > 0 else negative
