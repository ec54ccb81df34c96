"""Bytes in, (H, W, 3) uint8 RGB out, or a typed `BadImage` saying why not.

The checks run cheapest first and never decode pixels of a file the header already rejects:
size in bytes -> signature -> header (format, declared size) -> full decode -> EXIF
orientation -> conversion to RGB.

Transparency: alpha is composited onto white, as a page would show the image. Dropping alpha
instead would expose whatever colour sits under fully transparent pixels (often black or
garbage), which is not what anyone saw.

Decompression bombs: the declared width x height is checked against `limits.max_pixels` before
any pixel is decoded. Pillow's global `Image.MAX_IMAGE_PIXELS` is never changed; its own bomb
error (declared pixels above twice that global, about 179 M by default) is mapped to the same
reason, so a `max_pixels` above 179 M is capped there.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spatialboost.data.records import BadImage, ImageLimits, Reason

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    # (magic bytes, offset, Pillow format name); used only to explain a file Pillow refused.
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"8BPS", 0, "PSD"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypheic", 4, "HEIF"),
)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DIRECT_TO_RGB = ("RGB", "L", "1", "CMYK", "YCbCr", "HSV", "RGBX")


def sniff_format(data: bytes) -> str | None:
    """Pillow format name whose signature `data` starts with, or None. Header bytes only."""
    for magic, offset, fmt in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if fmt == "WEBP" and data[:4] != b"RIFF":
                continue
            return fmt
    if data[:2] == b"BM" and len(data) >= 26:
        return "BMP"
    return None


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode an encoded image fully; returns (H, W, 3) uint8 RGB, EXIF orientation applied.

    Raises BadImage for every kind of bad input; never anything else for bad bytes.
    """
    if not data:
        raise BadImage(Reason.EMPTY, "zero bytes")
    if len(data) > limits.max_file_bytes:
        raise BadImage(Reason.FILE_TOO_LARGE, f"{len(data)} bytes > max_file_bytes {limits.max_file_bytes}")
    _check_container_length(data)
    with _open_header(data, limits) as img:
        _check_declared_size(img, limits)
        _load_pixels(img)
        oriented = _apply_exif_orientation(img)
        return to_rgb_array(oriented)


def _check_container_length(data: bytes) -> None:
    """RIFF (WebP) states its own length: a shorter file is truncated, whatever libwebp says later."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            raise BadImage(Reason.TRUNCATED, f"RIFF header declares {declared} bytes, file has {len(data)}")


def _open_header(data: bytes, limits: ImageLimits) -> Image.Image:
    """Parse the header with only the allowed format plugins; explain a refusal by signature."""
    try:
        return Image.open(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError as err:
        raise BadImage(Reason.TOO_MANY_PIXELS, str(err)) from None
    except UnidentifiedImageError:
        sniffed = sniff_format(data)
        if sniffed is None:
            raise BadImage(Reason.NOT_AN_IMAGE, f"no known image signature (starts {data[:8]!r})") from None
        if sniffed not in limits.formats:
            raise BadImage(Reason.UNSUPPORTED_FORMAT, f"{sniffed} is not among {list(limits.formats)}") from None
        raise BadImage(Reason.CORRUPT_HEADER, f"{sniffed} signature but the header does not parse") from None
    except Exception as err:  # Pillow parses untrusted bytes: any failure is a bad file
        raise BadImage(Reason.CORRUPT_HEADER, f"{type(err).__name__}: {err}") from None


def _check_declared_size(img: Image.Image, limits: ImageLimits) -> None:
    width, height = img.size
    if width * height > limits.max_pixels:
        raise BadImage(Reason.TOO_MANY_PIXELS, f"declared {width}x{height} > max_pixels {limits.max_pixels}")
    if min(width, height) < limits.min_side_px:
        raise BadImage(Reason.TOO_SMALL, f"{width}x{height} has a side < min_side_px {limits.min_side_px}")


def _load_pixels(img: Image.Image) -> None:
    try:
        img.load()
    except Exception as err:  # OSError, SyntaxError, ValueError, zlib/struct errors...
        message = f"{type(err).__name__}: {err}"
        if "truncated" in str(err) or isinstance(err, EOFError):
            raise BadImage(Reason.TRUNCATED, message) from None
        raise BadImage(Reason.CORRUPT_DATA, message) from None


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as err:
        raise BadImage(Reason.CORRUPT_DATA, f"EXIF orientation: {type(err).__name__}: {err}") from None


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any supported Pillow mode -> (H, W, 3) uint8 RGB.

    Alpha (RGBA, LA, P with transparency) is composited on white. 16-bit grey (I;16*, and I
    holding 0..65535) is scaled by 255/65535 with rounding, not clipped at 255.
    """
    mode = img.mode
    if mode == "P":
        mode_after = "RGBA" if "transparency" in img.info else "RGB"
        return to_rgb_array(img.convert(mode_after))
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.array(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        grey = _sixteen_bit_to_eight(np.array(img))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _DIRECT_TO_RGB:
        return np.array(img.convert("RGB"), dtype=np.uint8)
    raise BadImage(Reason.UNSUPPORTED_MODE, f"pixel mode {mode!r} has no defined conversion to RGB")


def _sixteen_bit_to_eight(values: np.ndarray) -> np.ndarray:
    """(H, W) integers in 0..65535 -> (H, W) uint8, v * 255 / 65535 rounded to nearest."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)
