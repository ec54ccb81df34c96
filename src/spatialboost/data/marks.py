"""Visual point marks: circled, labelled points drawn on an image (BLINK's look, ViP-LLaVA's idea).

A question can name a point by its pixel coordinates ("the depth at (107, 77)") or by a mark drawn
on the image ("the depth at point A"). A small language model finds a drawn mark among its image
tokens by content, in one attention step; finding the token that "(107, 77)" names is arithmetic
over digit tokens that a small model does not learn (benchmarks/results/point_reference.md: the
gradient of a coordinate-named answer spreads evenly over the image, that of a marked one lands
on the mark's token). BLINK's Relative_Depth benchmark asks about marked points too.

    marks = [Mark("A", 107, 77), Mark("B", 40, 61)]
    marked = draw_marks(rgb, marks)                # (H, W, 3) uint8, a copy

Every mark is a ring with its letter in a box beside it, as BLINK draws them, and each label has
its own colour (A magenta, B cyan, ...): at the demo's 64-pixel encoder input a 6-pixel letter is
unreadable, the colour is not. The colours are none of the procedural world's object colours.
Sizes scale with the image (ring radius min(H, W) / 21, at least 3 pixels).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

MARK_COLOURS: dict[str, tuple[int, int, int]] = {
    "A": (255, 0, 255),  # magenta
    "B": (0, 255, 255),  # cyan
    "C": (255, 140, 200),  # pink
    "D": (140, 255, 140),  # mint
    "E": (255, 255, 140),
    "F": (140, 140, 255),
    "G": (255, 200, 140),
    "H": (200, 140, 255),
}
"""Ring and label-box colour of each mark label."""


@dataclass(frozen=True)
class Mark:
    """A labelled point: (x, y) = (column, row) in pixels of the image it is drawn on."""

    label: str
    x: int
    y: int

    def __post_init__(self) -> None:
        if self.label not in MARK_COLOURS:
            raise ValueError(f"mark label {self.label!r} is not one of {''.join(MARK_COLOURS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "x": self.x, "y": self.y}


def marks_of(raw: Iterable[Mapping[str, Any]] | None) -> list[Mark]:
    """Marks from their JSON form [{"label", "x", "y"}, ...] (None or [] = none)."""
    return [Mark(str(m["label"]), int(m["x"]), int(m["y"])) for m in (raw or [])]


def mark_radius(height: int, width: int) -> int:
    """Ring radius in pixels for an image of that size."""
    return max(3, round(min(height, width) / 21))


def draw_marks(image: np.ndarray, marks: Sequence[Mark]) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 image with each mark's ring and label drawn on it."""
    if not marks:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(pil)
    radius = mark_radius(pil.height, pil.width)
    width = max(2, radius // 3)
    for mark in marks:
        colour = MARK_COLOURS[mark.label]
        x, y = mark.x, mark.y
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), mark.label)
        tx = x + radius + 1 if x + radius + 2 + right < pil.width else x - radius - 2 - right
        ty = min(max(0, y - radius - bottom), pil.height - bottom - 1)
        draw.rectangle((tx - 1, ty + top - 1, tx + right + 1, ty + bottom + 1), fill=colour)
        draw.text((tx, ty), mark.label, fill=(0, 0, 0))
    return np.array(pil)
