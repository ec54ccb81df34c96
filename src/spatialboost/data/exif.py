"""The camera's focal length from an image's EXIF, when the camera wrote it."""

from __future__ import annotations

import io
import math

from PIL import Image

EXIF_IFD = 0x8769
EXIF_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm, millimetres
FULL_FRAME_DIAGONAL_MM = 43.267  # a 36 x 24 mm frame: what "35 mm equivalent" is relative to


def exif_focal_px(data: bytes, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF's 35 mm-equivalent focal length, or None.

    f_px = f_35mm * image diagonal (px) / 43.267 mm (the full-frame diagonal): the diagonal,
    unlike a side, does not depend on the aspect ratio or on EXIF rotation.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif().get_ifd(EXIF_IFD)
    except Exception:  # EXIF of an image that decoded fine: a broken tag only means "unknown"
        return None
    value = exif.get(EXIF_FOCAL_35MM)
    try:
        focal_35mm = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return None
    if not math.isfinite(focal_35mm) or focal_35mm <= 0:
        return None
    return focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
