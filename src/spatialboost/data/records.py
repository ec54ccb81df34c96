"""Records shared by the image sources, the decoder and the manifest.

`ImageRef` names one file in a source, `ImageLimits` says which files are acceptable,
`BadImage` says why one is not (a `Reason` code plus a human detail), and `ManifestEntry` /
`QuarantineEntry` are the two kinds of JSONL line `build_manifest` writes.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, TypeVar

from PIL import Image

if TYPE_CHECKING:
    from spatialboost.config import DataConfig

MANIFEST_SCHEMA_VERSION = 1
"""Written on every manifest and quarantine line; bump when a field changes meaning."""


class Reason(str, enum.Enum):
    """Why a file went to quarantine. The value is the code written to quarantine.jsonl."""

    UNREADABLE = "unreadable"  # the source could not read it: a broken or looping link, no permission, a missing object
    NOT_A_FILE = "not_a_file"  # a directory, FIFO, socket or device named like an image: never opened for reading
    EMPTY = "empty"  # zero bytes
    FILE_TOO_LARGE = "file_too_large"  # more bytes than max_file_bytes
    NOT_AN_IMAGE = "not_an_image"  # no known image signature (text, HTML, random bytes)
    UNSUPPORTED_FORMAT = "unsupported_format"  # a real image in a format outside `extensions` (GIF, TIFF...)
    CORRUPT_HEADER = "corrupt_header"  # an image signature, but the header does not parse
    TOO_MANY_PIXELS = "too_many_pixels"  # declared size above max_pixels (decompression bomb)
    TOO_SMALL = "too_small"  # a side shorter than min_side_px
    TRUNCATED = "truncated"  # the data ends before the image does
    CORRUPT_DATA = "corrupt_data"  # pixel data or EXIF that does not decode (bad CRC, bad stream)
    UNSUPPORTED_MODE = "unsupported_mode"  # a pixel mode with no defined conversion to RGB


class BadImage(Exception):
    """A file that cannot become an RGB image; `reason` is the quarantine code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageRef:
    """One file in a source, known from the listing alone (no read).

    id: unique and stable within the source (a relative path, an S3 key below the prefix, a world id).
    uri: where it lives (file:///abs/path or s3://bucket/key); never carries credentials.
    size: bytes as listed; None when the listing could not tell (a broken link).
    """

    id: str
    uri: str
    size: int | None


@dataclass(frozen=True)
class ImageLimits:
    """What the decoder accepts. Build it from `DataConfig` with `from_config`.

    formats: Pillow format names allowed (e.g. "JPEG", "PNG"); only these plugins ever parse a file.
    """

    max_file_bytes: int
    max_pixels: int
    min_side_px: int
    formats: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ImageLimits:
        """Limits from a `DataConfig` (its extensions decide the allowed formats)."""
        return cls(
            max_file_bytes=cfg.max_file_bytes,
            max_pixels=cfg.max_pixels,
            min_side_px=cfg.min_side_px,
            formats=formats_for_extensions(cfg.extensions),
        )


DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "TGA", "JPEG2000", "AVIF")
"""Pillow formats `decode_image` turns into RGB without outside programs or handlers (EPS needs
Ghostscript, GRIB/HDF5 are stubs, PDF is write-only, HEIC needs a plugin we do not ship)."""

_CODECS = {"WEBP": ("webp", False), "JPEG2000": ("jpg_2000", True), "AVIF": ("avif", False)}
"""Formats whose decoder is an optional library of Pillow's build: (feature name, is a codec)."""


def readable_extensions() -> dict[str, str]:
    """Suffix -> Pillow format name, for every format in DECODED_FORMATS this Pillow build reads."""
    from PIL import features

    known = Image.registered_extensions()  # Pillow's own suffix -> format table (runs Image.init)
    readable = {}
    for ext, fmt in known.items():
        if fmt not in DECODED_FORMATS or fmt not in Image.OPEN:
            continue
        feature = _CODECS.get(fmt)
        if feature is not None:
            name, is_codec = feature
            available = features.check_codec(name) if is_codec else features.check_module(name)
            if not available:
                continue
        readable[ext] = fmt
    return readable


def formats_for_extensions(extensions: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Pillow format names for file suffixes (".jpg" -> "JPEG"), in first-seen order.

    Raises ValueError for a suffix Pillow cannot read, so a typo fails at start-up.
    """
    known = readable_extensions()
    formats: list[str] = []
    for ext in extensions:
        fmt = known.get(ext.lower())
        if fmt is None:
            raise ValueError(f"no Pillow image format reads {ext!r} files")
        if fmt not in formats:
            formats.append(fmt)
    return tuple(formats)


_Line = TypeVar("_Line", bound="_JsonLine")


class _JsonLine:
    """One JSONL line of a dataclass record, tagged with the manifest schema version."""

    def to_json(self) -> str:
        fields = asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses
        return json.dumps({"schema_version": MANIFEST_SCHEMA_VERSION, **fields}, sort_keys=True)

    @classmethod
    def from_json(cls: type[_Line], line: str) -> _Line:
        raw = json.loads(line)
        if raw.get("schema_version") != MANIFEST_SCHEMA_VERSION:
            raise ValueError(
                f"{cls.__name__} line has schema_version {raw.get('schema_version')!r}, "
                f"expected {MANIFEST_SCHEMA_VERSION}"
            )
        return cls(**{field.name: raw[field.name] for field in dataclass_fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class ManifestEntry(_JsonLine):
    """One readable image. width/height are after EXIF orientation, i.e. as decoded."""

    id: str
    uri: str
    sha256: str
    size: int
    width: int
    height: int


@dataclass(frozen=True)
class QuarantineEntry(_JsonLine):
    """One rejected file. sha256/size are None when the bytes could not be read."""

    id: str
    uri: str
    reason: str
    detail: str
    sha256: str | None
    size: int | None
