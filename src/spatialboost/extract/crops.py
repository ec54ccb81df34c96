"""Mask crops for region labelling: the object on grey, square, nothing else in view."""

from __future__ import annotations

import numpy as np


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(H, W) bool -> (x0, y0, x1, y1) pixels, x1/y1 exclusive; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mask_crop(image: np.ndarray, mask: np.ndarray, *, margin: float = 0.1, fill: int = 128) -> np.ndarray | None:
    """The masked object cut out of its image, background greyed, padded to a square.

    image: (H, W, 3) uint8; mask: (H, W) bool. margin: extra border around the mask's box, as a
    fraction of the box's longer side (grey, so the object's outline stays visible). fill: grey
    level of everything outside the mask. Returns (S, S, 3) uint8 with the box centred, S = the
    box's longer side plus margins; None for an empty mask.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} does not match image {image.shape[:2]}")
    box = mask_bbox(mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    side = max(h, w) + 2 * int(round(margin * max(h, w)))
    out = np.full((side, side, 3), fill, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    region = out[top : top + h, left : left + w]
    inside = mask[y0:y1, x0:x1]
    region[inside] = image[y0:y1, x0:x1][inside]
    return out
