"""The depth maps scenes were built from, stored beside the scene records (one archive per shard).

Pixel-level questions ("what is the depth at (x, y)?", "which point is closer?") need the depth
map itself, not the scene record's summary. The extraction stage keeps the map it measured the
scene on (Depth Pro's metric depth for the `models` backend, the dataset's depth for ground
truth), so the synthesis reads depth the same way for every source (world, folder, S3):

    payload = encode_depth(depth)                        # (H, W) float metres -> PNG bytes
    ref = depth_map_ref("shard-00000.depth.zip", payload)   # goes into SceneRecord.depth_map
    write_depth_archive(path, {ref.sha256: payload})     # atomically, before the shard's records
    depth = DepthMaps().read(scenes_dir, record)         # (H, W) float32 metres, verified

Encoding `png16-log` (DEPTH_ENCODING): a 16-bit grey PNG at the image's resolution. Code 0 is
"no depth" (0, negative, NaN or inf: sky, sensor holes); code k >= 1 is
`min_m * exp((k - 1) * step)` with `step = ln(max_m / min_m) / 65534`, so every depth in
[min_m, max_m] = [1 mm, 10 km] is kept to a relative error of at most `step / 2` (1.23e-4:
1.2 mm at 10 m), far below any model's error and the 5% band of point-depth answers; depths
outside the range are clipped to it. Log spacing spends the codes evenly over near and far.

Archive `shard-NNNNN.depth.zip`: uncompressed zip members `<sha256>.png`, named by the sha256 of
their bytes (content-addressed: a record's `depth_map.sha256` names its member and verifies
it), sorted by name, with fixed timestamps and attributes: the same maps give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from spatialboost.extract.records import DepthMapRef, SceneRecord
from spatialboost.io import write_atomic

DEPTH_ENCODING = "png16-log"
MIN_DEPTH_M = 1e-3
MAX_DEPTH_M = 1e4
N_CODES = 65535  # codes 1 .. 65535 hold depths; 0 = no depth
PNG_COMPRESS_LEVEL = 3
"""zlib level of the PNGs: part of the format (it decides the bytes). Level 3 keeps ~90% of level
6's compression at a fraction of its time on noisy maps (benchmarks/results/depth_storage.md)."""

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's epoch: no wall-clock time in an archive


class DepthMapError(ValueError):
    """A stored depth map that is missing, damaged or does not match its record."""


def log_step(min_m: float = MIN_DEPTH_M, max_m: float = MAX_DEPTH_M) -> float:
    """The log-depth step between two codes."""
    return float(np.log(max_m / min_m) / (N_CODES - 1))


def max_relative_error(min_m: float = MIN_DEPTH_M, max_m: float = MAX_DEPTH_M) -> float:
    """Largest |decoded - d| / d for a depth d in [min_m, max_m] (half a step, in log space)."""
    return float(np.expm1(log_step(min_m, max_m) / 2))


def depth_codes(depth: np.ndarray, min_m: float = MIN_DEPTH_M, max_m: float = MAX_DEPTH_M) -> np.ndarray:
    """(H, W) float metres -> (H, W) uint16 codes (0 where depth is not finite and positive)."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    codes = np.zeros(depth.shape, dtype=np.uint16)
    logs = np.log(np.clip(depth[valid], min_m, max_m) / min_m)
    codes[valid] = np.clip(np.rint(logs / log_step(min_m, max_m)) + 1, 1, N_CODES).astype(np.uint16)
    return codes


def depth_from_codes(codes: np.ndarray, min_m: float = MIN_DEPTH_M, max_m: float = MAX_DEPTH_M) -> np.ndarray:
    """(H, W) uint16 codes -> (H, W) float32 metres (0 where the code is 0)."""
    codes = np.asarray(codes)
    depth = min_m * np.exp((codes.astype(np.float64) - 1) * log_step(min_m, max_m))
    return np.where(codes > 0, depth, 0.0).astype(np.float32)


def encode_depth(depth: np.ndarray) -> bytes:
    """(H, W) float metres -> the PNG bytes of its png16-log codes (stable: same map, same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(depth_codes(depth)).save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_depth(payload: bytes, ref: DepthMapRef) -> np.ndarray:
    """PNG bytes of a png16-log map -> (H, W) float32 metres; DepthMapError if they are not one."""
    if ref.encoding != DEPTH_ENCODING:
        raise DepthMapError(f"depth encoding {ref.encoding!r} is not {DEPTH_ENCODING!r}")
    try:
        with Image.open(io.BytesIO(payload), formats=["PNG"]) as img:
            if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
                raise DepthMapError(f"depth PNG has mode {img.mode!r}, not 16-bit grey")
            codes = np.array(img).astype(np.uint16)
    except DepthMapError:
        raise
    except Exception as err:  # Pillow raises many types for a broken file
        raise DepthMapError(f"depth PNG does not decode: {type(err).__name__}: {err}") from None
    return depth_from_codes(codes, ref.min_m, ref.max_m)


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def depth_map_ref(file: str, payload: bytes) -> DepthMapRef:
    """The record's pointer to an encoded map stored in the archive `file` (relative to the shard folder)."""
    return DepthMapRef(
        file=file, sha256=sha256_hex(payload), encoding=DEPTH_ENCODING, min_m=MIN_DEPTH_M, max_m=MAX_DEPTH_M
    )


def member_name(sha256: str) -> str:
    """The archive member of a map: its content hash."""
    return f"{sha256}.png"


def write_depth_archive(path: str | os.PathLike[str], payloads: Mapping[str, bytes]) -> None:
    """Atomically write the zip of `payloads` (sha256 -> PNG bytes), members sorted, stored
    uncompressed (PNG is compressed already), with fixed times and attributes: stable bytes."""

    def write(handle) -> None:  # noqa: ANN001 - a binary file object
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for sha in sorted(payloads):
                info = zipfile.ZipInfo(member_name(sha), date_time=ZIP_DATE_TIME)
                info.create_system = 3  # Unix, whatever machine wrote it
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED
                archive.writestr(info, payloads[sha])

    write_atomic(path, write)


def archive_members(path: str | os.PathLike[str]) -> set[str]:
    """The member names of an archive (reads only its directory); DepthMapError if unreadable."""
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as err:
        raise DepthMapError(f"{path}: not a readable depth archive: {err}") from None


class DepthMaps:
    """Reads the stored depth maps of scene records, verifying each against its record.

    Keeps the last archive open (a QA shard reads one scene shard after another); picklable
    (the open archive is not sent to a worker).
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._archive: zipfile.ZipFile | None = None

    def __getstate__(self) -> dict:
        return {"_path": None, "_archive": None}

    def read(self, scenes_dir: str | os.PathLike[str], record: SceneRecord) -> np.ndarray:
        """(H, W) float32 metres, z-depth, 0 = no depth, of `record`, from the archive its
        `depth_map` names under `scenes_dir`. Raises DepthMapError when the record has no stored
        map, or the map is missing, damaged, of another image (sha256) or of another size."""
        ref = record.depth_map
        if ref is None:
            raise DepthMapError(f"{record.image_id}: the scene record has no stored depth map")
        path = Path(scenes_dir) / ref.file
        try:
            payload = self._open(path).read(member_name(ref.sha256))
        except KeyError:
            raise DepthMapError(f"{path}: no member {member_name(ref.sha256)} for {record.image_id}") from None
        except (OSError, zipfile.BadZipFile) as err:
            self.close()
            raise DepthMapError(f"{path}: not a readable depth archive: {err}") from None
        if sha256_hex(payload) != ref.sha256:
            raise DepthMapError(f"{path}: the depth map of {record.image_id} does not match its sha256")
        depth = decode_depth(payload, ref)
        if depth.shape != (record.height, record.width):
            raise DepthMapError(
                f"{path}: depth map of {record.image_id} is {depth.shape[1]}x{depth.shape[0]}, "
                f"the image {record.width}x{record.height}"
            )
        return depth

    def _open(self, path: Path) -> zipfile.ZipFile:
        if self._archive is None or self._path != path:
            self.close()
            if not path.is_file():
                raise DepthMapError(f"{path}: depth archive missing")
            self._archive, self._path = zipfile.ZipFile(path), path
        return self._archive

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
        self._archive, self._path = None, None
