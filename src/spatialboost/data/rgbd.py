"""Reader for the `spatialboost-rgbd` dataset format (docs/dataset-format.md, schema version 1).

    ds = RGBDDataset("data/world")
    for image_id in ds.ids("train"):
        sample = ds.sample(image_id)        # rgb, depth, instances, annotation, cross-checked
        K = sample.row.K                    # (3, 3) intrinsics, pixels

Every check that fails raises `RGBDFormatError` naming the offending file, so a broken dataset
says where it is broken instead of failing later with a shape error.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from spatialboost.io import NotARegularFile, read_regular_file

FORMAT_NAME = "spatialboost-rgbd"
SCHEMA_VERSION = 1
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")

_STRING_COLUMNS = ("id", "split", "rgb", "depth", "instances", "annotation")
_INT_COLUMNS = ("width", "height", "n_objects")
_FLOAT_COLUMNS = ("fx", "fy", "cx", "cy", "gravity_x", "gravity_y", "gravity_z")
_NULLABLE_COLUMNS = ("gravity_x", "gravity_y", "gravity_z")  # unknown gravity is NaN; null read as NaN
_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's names for a 16-bit grey PNG


class RGBDFormatError(ValueError):
    """The dataset breaks the documented format; `path` is the file at fault."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True)
class IndexRow:
    """One row of index.parquet. Paths are relative to the dataset root; intrinsics in pixels."""

    id: str
    split: str
    rgb: str
    depth: str
    instances: str
    annotation: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    gravity_cam: tuple[float, float, float]  # unit vector in the camera frame; NaNs if unknown
    n_objects: int

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the paper's name for the intrinsics matrix
        """(3, 3) float64 intrinsics: K @ [X/Z, Y/Z, 1] = [u + 0.5, v + 0.5, 1]."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class RGBDSample:
    """Everything stored for one image.

    rgb: (H, W, 3) uint8. depth: (H, W) float32, metres, z-depth, 0 = no depth.
    instances: (H, W) int32, 0 = no object, k = the annotation object with instance_id k.
    """

    row: IndexRow
    rgb: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    annotation: dict[str, Any]


class RGBDDataset:
    """Read-only view of one dataset root. Reads dataset.json and index.parquet eagerly (and
    validates them); images are read on demand."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.meta_path = self.root / "dataset.json"
        self.index_path = self.root / "index.parquet"
        self.meta = _read_meta(self.meta_path)
        self.depth_scale: float | None = self.meta.get("depth_scale")
        self._rows = {row.id: row for row in _read_index(self.index_path)}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._rows

    def splits(self) -> list[str]:
        """Split names present in the index, sorted."""
        return sorted({row.split for row in self._rows.values()})

    def ids(self, split: str | None = None) -> list[str]:
        """Image ids in index order; only those of `split` unless it is None."""
        return [row.id for row in self._rows.values() if split is None or row.split == split]

    def row(self, image_id: str) -> IndexRow:
        """The index row of an id; KeyError naming the index when absent."""
        try:
            return self._rows[image_id]
        except KeyError:
            raise KeyError(f"{self.index_path}: no image with id {image_id!r}") from None

    def rgb_path(self, image_id: str) -> Path:
        return self.root / self.row(image_id).rgb

    def rgb(self, image_id: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        row = self.row(image_id)
        path = self.root / row.rgb
        with _open_png(path) as img:
            if img.mode != "RGB":
                raise RGBDFormatError(path, f"expected 8-bit RGB, got Pillow mode {img.mode!r}")
            array = np.array(img, dtype=np.uint8)
        _check_shape(path, array.shape[:2], row)
        return array

    def depth(self, image_id: str) -> np.ndarray:
        """(H, W) float32 z-depth in metres; 0 = no valid depth. Reads .npy or 16-bit .png."""
        row = self.row(image_id)
        path = self.root / row.depth
        if path.suffix == ".npy":
            depth = _read_depth_npy(path)
        elif path.suffix == ".png":
            depth = self._read_depth_png(path)
        else:
            raise RGBDFormatError(path, "depth must be a .npy (float32 metres) or a 16-bit .png")
        _check_shape(path, depth.shape, row)
        if not np.all(np.isfinite(depth)) or np.any(depth < 0):
            raise RGBDFormatError(path, "depth has NaN, infinite or negative values (0 marks no depth)")
        return depth

    def _read_depth_png(self, path: Path) -> np.ndarray:
        if self.depth_scale is None:
            raise RGBDFormatError(self.meta_path, f"no depth_scale, needed to read the PNG depth {path.name}")
        with _open_png(path) as img:
            if img.mode not in _SIXTEEN_BIT_GREY:
                raise RGBDFormatError(path, f"expected a 16-bit single-channel PNG, got Pillow mode {img.mode!r}")
            units = np.array(img).astype(np.float64)
        return (units * self.depth_scale).astype(np.float32)

    def instances(self, image_id: str) -> np.ndarray:
        """(H, W) int32 instance ids; 0 = no object."""
        row = self.row(image_id)
        path = self.root / row.instances
        with _open_png(path) as img:
            if img.mode not in _SIXTEEN_BIT_GREY:
                raise RGBDFormatError(path, f"expected a 16-bit single-channel PNG, got Pillow mode {img.mode!r}")
            ids = np.array(img).astype(np.int32)
        _check_shape(path, ids.shape, row)
        return ids

    def annotation(self, image_id: str) -> dict[str, Any]:
        """The parsed annotations/<id>.json, checked against its index row."""
        row = self.row(image_id)
        path = self.root / row.annotation
        raw = _read_json_object(path)
        _check_annotation(path, raw, row)
        return raw

    def sample(self, image_id: str) -> RGBDSample:
        """All four files of an image, with the cross-file checks (instance ids, pixel counts)."""
        row = self.row(image_id)
        annotation = self.annotation(image_id)
        instances = self.instances(image_id)
        _check_instances_match(self.root / row.instances, instances, annotation)
        return RGBDSample(row, self.rgb(image_id), self.depth(image_id), instances, annotation)


def _read_file(path: Path) -> bytes:
    """The bytes of one file of the dataset: a regular file only (a FIFO would block the reader)."""
    try:
        return read_regular_file(path)
    except FileNotFoundError:
        raise RGBDFormatError(path, "missing") from None
    except NotARegularFile as err:
        raise RGBDFormatError(path, f"a {err.kind}, not a regular file") from None
    except OSError as err:
        raise RGBDFormatError(path, f"unreadable: {err.strerror or err}") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    data = _read_file(path)
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RGBDFormatError(path, f"not readable JSON: {err}") from None
    if not isinstance(raw, dict):
        raise RGBDFormatError(path, f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _read_meta(path: Path) -> dict[str, Any]:
    meta = _read_json_object(path)
    if meta.get("format") != FORMAT_NAME:
        raise RGBDFormatError(path, f"format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise RGBDFormatError(
            path, f"schema_version {meta.get('schema_version')!r}, this reader reads {SCHEMA_VERSION}"
        )
    scale = meta.get("depth_scale")
    if scale is not None and not (isinstance(scale, int | float) and not isinstance(scale, bool) and scale > 0):
        raise RGBDFormatError(path, f"depth_scale must be a positive number of metres per unit, got {scale!r}")
    return meta


def _read_index(path: Path) -> list[IndexRow]:
    data = _read_file(path)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as err:
        raise RGBDFormatError(path, f"not a readable parquet file: {err}") from None
    _check_index_schema(path, table)
    rows = [_index_row(path, raw) for raw in table.to_pylist()]
    seen: set[str] = set()
    for row in rows:
        if row.id in seen:
            raise RGBDFormatError(path, f"id {row.id!r} appears more than once")
        seen.add(row.id)
    return rows


def _check_index_schema(path: Path, table: pa.Table) -> None:
    checks = (
        (_STRING_COLUMNS, lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "a string"),
        (_INT_COLUMNS, pa.types.is_integer, "an integer"),
        (_FLOAT_COLUMNS, pa.types.is_floating, "a float"),
    )
    for columns, is_right_type, type_name in checks:
        for name in columns:
            if name not in table.column_names:
                raise RGBDFormatError(path, f"missing column {name!r}")
            column = table.column(name)
            if not is_right_type(column.type):
                raise RGBDFormatError(path, f"column {name!r} must be {type_name} type, got {column.type}")
            if column.null_count and name not in _NULLABLE_COLUMNS:
                raise RGBDFormatError(path, f"column {name!r} has {column.null_count} null values")


def _index_row(path: Path, raw: dict[str, Any]) -> IndexRow:
    image_id = raw["id"]
    if not ID_PATTERN.match(image_id):
        raise RGBDFormatError(path, f"id {image_id!r} is not [A-Za-z0-9_-]+")
    for column in ("rgb", "depth", "instances", "annotation"):
        relative = PurePosixPath(raw[column])
        if relative.is_absolute() or ".." in relative.parts:
            raise RGBDFormatError(path, f"{column} path {raw[column]!r} of {image_id!r} leaves the dataset root")
    if raw["width"] <= 0 or raw["height"] <= 0:
        raise RGBDFormatError(path, f"{image_id!r} has size {raw['width']}x{raw['height']}")
    gravity = tuple(math.nan if raw[f"gravity_{a}"] is None else float(raw[f"gravity_{a}"]) for a in "xyz")
    return IndexRow(
        id=image_id,
        split=raw["split"],
        rgb=raw["rgb"],
        depth=raw["depth"],
        instances=raw["instances"],
        annotation=raw["annotation"],
        width=int(raw["width"]),
        height=int(raw["height"]),
        fx=float(raw["fx"]),
        fy=float(raw["fy"]),
        cx=float(raw["cx"]),
        cy=float(raw["cy"]),
        gravity_cam=(gravity[0], gravity[1], gravity[2]),
        n_objects=int(raw["n_objects"]),
    )


def _open_png(path: Path) -> Image.Image:
    data = _read_file(path)
    try:
        return Image.open(io.BytesIO(data), formats=["PNG"])
    except Exception as err:  # Pillow raises many types for a broken file
        raise RGBDFormatError(path, f"not a readable PNG: {type(err).__name__}: {err}") from None


def _read_depth_npy(path: Path) -> np.ndarray:
    data = _read_file(path)
    try:
        depth = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise RGBDFormatError(path, f"not a readable .npy array: {err}") from None
    if depth.dtype != np.float32 or depth.ndim != 2:
        raise RGBDFormatError(path, f"expected (H, W) float32 metres, got {depth.dtype} {depth.shape}")
    return depth


def _check_shape(path: Path, shape: tuple[int, ...], row: IndexRow) -> None:
    if tuple(shape) != (row.height, row.width):
        raise RGBDFormatError(path, f"is {shape[1]}x{shape[0]} (WxH) but the index says {row.width}x{row.height}")


def _check_annotation(path: Path, raw: dict[str, Any], row: IndexRow) -> None:
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise RGBDFormatError(path, f"schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if raw.get("id") != row.id:
        raise RGBDFormatError(path, f"id {raw.get('id')!r} does not match the index id {row.id!r}")
    if (raw.get("width"), raw.get("height")) != (row.width, row.height):
        raise RGBDFormatError(path, f"size {raw.get('width')}x{raw.get('height')} != index {row.width}x{row.height}")
    intrinsics = raw.get("intrinsics")
    if not isinstance(intrinsics, dict):
        raise RGBDFormatError(path, "missing the intrinsics object")
    for key in ("fx", "fy", "cx", "cy"):
        value = intrinsics.get(key)
        if not isinstance(value, int | float) or not math.isclose(value, getattr(row, key), rel_tol=1e-9, abs_tol=1e-9):
            raise RGBDFormatError(path, f"intrinsics.{key} = {value!r} but the index says {getattr(row, key)}")
    objects = raw.get("objects")
    if not isinstance(objects, list):
        raise RGBDFormatError(path, "missing the objects list")
    if len(objects) != row.n_objects:
        raise RGBDFormatError(path, f"{len(objects)} objects but the index says n_objects = {row.n_objects}")
    instance_ids = [obj.get("instance_id") if isinstance(obj, dict) else None for obj in objects]
    if any(not isinstance(k, int) or k < 1 for k in instance_ids) or len(set(instance_ids)) != len(instance_ids):
        raise RGBDFormatError(path, f"instance_id values must be unique integers >= 1, got {instance_ids}")


def _check_instances_match(path: Path, instances: np.ndarray, annotation: dict[str, Any]) -> None:
    ids, counts = np.unique(instances, return_counts=True)
    pixels = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    known = {obj["instance_id"]: obj for obj in annotation["objects"]}
    unknown = sorted(set(pixels) - {0} - set(known))
    if unknown:
        raise RGBDFormatError(path, f"instance ids {unknown} are not objects of the annotation")
    for instance_id, obj in known.items():
        stored = obj.get("pixel_count")
        if stored is not None and stored != pixels.get(instance_id, 0):
            raise RGBDFormatError(
                path, f"object {instance_id} covers {pixels.get(instance_id, 0)} pixels, annotation says {stored}"
            )
