"""The RGB-D dataset reader, on small datasets written here by hand in the documented format
(docs/dataset-format.md), independent of the world renderer."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialboost.config import DataConfig
from spatialboost.data import (
    ImageLimits,
    RGBDDataset,
    RGBDFormatError,
    WorldSource,
    build_manifest,
    decode_image,
    open_source,
    read_manifest,
)

W, H = 24, 16
FX = FY = 20.0
SPLITS = {"train-000000": "train", "train-000001": "train", "test-000000": "test"}


def scene_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb (H, W, 3) uint8, depth (H, W) float32 metres with a sky band of 0, instances (H, W) uint16."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = np.round(rng.uniform(0.5, 9.0, (H, W)), 3).astype(np.float32)
    depth[:3] = 0.0  # sky: no valid depth
    instances = np.zeros((H, W), np.uint16)
    instances[5:10, 2:8] = 1
    instances[8:14, 12:20] = 2
    return rgb, depth, instances


def annotation(image_id: str, instances: np.ndarray) -> dict[str, Any]:
    corners = [list(c) for c in itertools.product([-0.5, 0.5], repeat=3)]
    objects = []
    for k, (label, colour) in enumerate([("cube", "red"), ("sphere", "blue")], start=1):
        objects.append({
            "instance_id": k, "label": label, "colour": colour, "colour_rgb": [0.8, 0.1, 0.1],
            "box_world": {"center": [k, 4.0, 0.5], "size": [1.0, 1.0, 1.0], "yaw_rad": 0.3},
            "box_camera": {"center": [k, 0.5, 4.0], "size": [1.0, 1.0, 1.0],
                           "rotation": np.eye(3).tolist(), "corners": corners},
            "pixel_count": int((instances == k).sum()),
        })  # fmt: skip
    return {
        "schema_version": 1, "id": image_id, "width": W, "height": H,
        "intrinsics": {"fx": FX, "fy": FY, "cx": W / 2, "cy": H / 2},
        "T_cam_from_world": np.eye(4).tolist(), "gravity_cam": [0.0, 1.0, 0.0],
        "camera": {"height_m": 1.5, "pitch_deg": -12.0, "roll_deg": 3.0, "fov_deg": 60.0},
        "objects": objects,
    }  # fmt: skip


def write_dataset(root: Path, depth_as_png: bool = False) -> Path:
    """Write SPLITS in the documented layout; depth as float32 .npy, or as millimetre PNGs."""
    for sub in ("rgb", "depth", "instances", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"format": "spatialboost-rgbd", "schema_version": 1, "generator": "hand-written test",
                            "params": {}, "counts": {"train": 2, "test": 1}}  # fmt: skip
    if depth_as_png:
        meta["depth_scale"] = 0.001
    (root / "dataset.json").write_text(json.dumps(meta))
    rows = []
    for seed, (image_id, split) in enumerate(SPLITS.items()):
        rgb, depth, instances = scene_arrays(seed)
        Image.fromarray(rgb).save(root / "rgb" / f"{image_id}.png")
        if depth_as_png:
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(root / "depth" / f"{image_id}.png")
            depth_rel = f"depth/{image_id}.png"
        else:
            np.save(root / "depth" / f"{image_id}.npy", depth)
            depth_rel = f"depth/{image_id}.npy"
        Image.fromarray(instances).save(root / "instances" / f"{image_id}.png")
        (root / "annotations" / f"{image_id}.json").write_text(json.dumps(annotation(image_id, instances)))
        rows.append({
            "id": image_id, "split": split, "rgb": f"rgb/{image_id}.png", "depth": depth_rel,
            "instances": f"instances/{image_id}.png", "annotation": f"annotations/{image_id}.json",
            "width": W, "height": H, "fx": FX, "fy": FY, "cx": W / 2, "cy": H / 2,
            "gravity_x": 0.0, "gravity_y": 1.0, "gravity_z": float("nan") if split == "test" else 0.0,
            "n_objects": 2,
        })  # fmt: skip
    write_index(root, rows)
    return root


INDEX_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("id", "split", "rgb", "depth", "instances", "annotation")]
    + [("width", pa.int32()), ("height", pa.int32())]
    + [(name, pa.float64()) for name in ("fx", "fy", "cx", "cy", "gravity_x", "gravity_y", "gravity_z")]
    + [("n_objects", pa.int32())]
)


def write_index(root: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = INDEX_SCHEMA) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "index.parquet")


def index_rows(root: Path) -> list[dict[str, Any]]:
    return pq.read_table(root / "index.parquet").to_pylist()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "world")


# ---------------------------------------------------------------- reading


def test_reads_what_was_written(dataset: Path) -> None:
    ds = RGBDDataset(dataset)
    assert len(ds) == 3 and ds.splits() == ["test", "train"]
    assert ds.ids("train") == ["train-000000", "train-000001"] and ds.ids("test") == ["test-000000"]
    assert ds.ids() == list(SPLITS)
    for seed, image_id in enumerate(SPLITS):
        rgb, depth, instances = scene_arrays(seed)
        sample = ds.sample(image_id)
        np.testing.assert_array_equal(sample.rgb, rgb)
        assert sample.depth.dtype == np.float32 and sample.depth.shape == (H, W)
        np.testing.assert_array_equal(sample.depth, depth)
        assert sample.instances.dtype == np.int32
        np.testing.assert_array_equal(sample.instances, instances)
        assert sample.annotation["id"] == image_id and len(sample.annotation["objects"]) == 2
    row = ds.row("train-000001")
    np.testing.assert_array_equal(row.K, [[FX, 0, W / 2], [0, FY, H / 2], [0, 0, 1]])
    assert row.gravity_cam == (0.0, 1.0, 0.0)
    assert np.isnan(ds.row("test-000000").gravity_cam[2])  # unknown gravity stays NaN


def test_png_depth_uses_depth_scale(tmp_path: Path) -> None:
    ds = RGBDDataset(write_dataset(tmp_path / "png", depth_as_png=True))
    _, depth, _ = scene_arrays(0)
    got = ds.depth("train-000000")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, depth, atol=1e-6)  # millimetre units, exact at 3 decimals
    assert (got[:3] == 0).all()


def test_unknown_id_and_split(dataset: Path) -> None:
    ds = RGBDDataset(dataset)
    with pytest.raises(KeyError, match="index.parquet.*nope"):
        ds.rgb("nope")
    with pytest.raises(ValueError, match="no split 'val'"):
        WorldSource(dataset, "val")


def test_world_source_feeds_the_manifest(dataset: Path, tmp_path: Path) -> None:
    source = open_source(DataConfig(source="world", uri=str(dataset), split="train"))
    assert isinstance(source, WorldSource)
    refs = list(source.refs())
    assert [ref.id for ref in refs] == ["train-000000", "train-000001"]
    assert refs[0].uri == (dataset / "rgb" / "train-000000.png").resolve().as_uri()
    limits = ImageLimits(max_file_bytes=10**6, max_pixels=10**6, min_side_px=16, formats=("PNG",))
    np.testing.assert_array_equal(decode_image(source.read_bytes(refs[1]), limits), scene_arrays(1)[0])
    report = build_manifest(source, limits, tmp_path / "m.jsonl", tmp_path / "q.jsonl", progress=False)
    assert (report.n_ok, report.n_quarantined) == (2, 0)
    assert [(e.width, e.height) for e in read_manifest(tmp_path / "m.jsonl")] == [(W, H), (W, H)]


# ---------------------------------------------------------------- validation errors name the file


def rewrite_json(path: Path, **changes: Any) -> None:
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def break_index(root: Path, column: str, value: Any) -> None:
    rows = index_rows(root)
    rows[0][column] = value
    write_index(root, rows)


OPEN_ERRORS = {
    # name -> (how to break the dataset, file the error must name, words in the message)
    "no dataset.json": (lambda r: (r / "dataset.json").unlink(), "dataset.json", "missing"),
    "wrong format": (lambda r: rewrite_json(r / "dataset.json", format="coco"), "dataset.json", "format"),
    "future schema": (lambda r: rewrite_json(r / "dataset.json", schema_version=2), "dataset.json", "schema_version"),
    "bad depth_scale": (lambda r: rewrite_json(r / "dataset.json", depth_scale=-1), "dataset.json", "depth_scale"),
    "no index": (lambda r: (r / "index.parquet").unlink(), "index.parquet", "missing"),
    "index not parquet": (lambda r: (r / "index.parquet").write_text("id,split\n"), "index.parquet", "parquet"),
    "missing column": (
        lambda r: write_index(r, [{k: v for k, v in row.items() if k != "fx"} for row in index_rows(r)], None),
        "index.parquet", "missing column 'fx'"),
    "string width": (
        lambda r: write_index(r, [{**row, "width": "24"} for row in index_rows(r)], None),
        "index.parquet", "'width' must be an integer"),
    "bad id": (lambda r: break_index(r, "id", "../x"), "index.parquet", r"is not \[A-Za-z0-9_-\]\+"),
    "escaping path": (lambda r: break_index(r, "rgb", "../../etc/passwd"), "index.parquet", "leaves the dataset root"),
    "duplicate id": (lambda r: break_index(r, "id", "train-000001"), "index.parquet", "more than once"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OPEN_ERRORS))
def test_open_errors_name_the_file(dataset: Path, case: str) -> None:
    breaker, filename, words = OPEN_ERRORS[case]
    breaker(dataset)
    with pytest.raises(RGBDFormatError, match=words) as caught:
        RGBDDataset(dataset)
    assert caught.value.path.name == filename and filename in str(caught.value)


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save on a path would append .npy to a non-.npy name
        np.save(handle, array)


IMAGE_ID = "train-000000"
READ_ERRORS = {
    # name -> (how to break it, reader method, file the error must name, words)
    "rgb missing": (lambda r: (r / f"rgb/{IMAGE_ID}.png").unlink(), "rgb", f"{IMAGE_ID}.png", "missing"),
    "rgb is grey": (lambda r: Image.new("L", (W, H)).save(r / f"rgb/{IMAGE_ID}.png"), "rgb", f"{IMAGE_ID}.png", "mode 'L'"),
    "rgb wrong size": (lambda r: Image.new("RGB", (W, H + 1)).save(r / f"rgb/{IMAGE_ID}.png"), "rgb", f"{IMAGE_ID}.png", "index says 24x16"),
    "rgb not png": (lambda r: (r / f"rgb/{IMAGE_ID}.png").write_text("x"), "rgb", f"{IMAGE_ID}.png", "not a readable PNG"),
    "depth float64": (lambda r: save_npy(r / f"depth/{IMAGE_ID}.npy", np.ones((H, W))), "depth", f"{IMAGE_ID}.npy", "float32"),
    "depth wrong shape": (lambda r: save_npy(r / f"depth/{IMAGE_ID}.npy", np.ones((W, H), np.float32)), "depth", f"{IMAGE_ID}.npy", "index says"),
    "depth negative": (lambda r: save_npy(r / f"depth/{IMAGE_ID}.npy", -np.ones((H, W), np.float32)), "depth", f"{IMAGE_ID}.npy", "negative"),
    "depth NaN": (lambda r: save_npy(r / f"depth/{IMAGE_ID}.npy", np.full((H, W), np.nan, np.float32)), "depth", f"{IMAGE_ID}.npy", "NaN"),
    "depth pickle": (lambda r: save_npy(r / f"depth/{IMAGE_ID}.npy", np.array([{"a": 1}], dtype=object)), "depth", f"{IMAGE_ID}.npy", "not a readable"),
    "depth png without scale": (lambda r: break_index(r, "depth", f"rgb/{IMAGE_ID}.png"), "depth", "dataset.json", "depth_scale"),
    "depth other suffix": (lambda r: break_index(r, "depth", f"annotations/{IMAGE_ID}.json"), "depth", f"{IMAGE_ID}.json", ".npy"),
    "instances 8 bit": (lambda r: Image.new("L", (W, H)).save(r / f"instances/{IMAGE_ID}.png"), "instances", f"{IMAGE_ID}.png", "16-bit"),
    "annotation missing": (lambda r: (r / f"annotations/{IMAGE_ID}.json").unlink(), "annotation", f"{IMAGE_ID}.json", "missing"),
    "annotation not json": (lambda r: (r / f"annotations/{IMAGE_ID}.json").write_text("{"), "annotation", f"{IMAGE_ID}.json", "JSON"),
    "annotation other id": (lambda r: rewrite_json(r / f"annotations/{IMAGE_ID}.json", id="x"), "annotation", f"{IMAGE_ID}.json", "does not match"),
    "annotation size": (lambda r: rewrite_json(r / f"annotations/{IMAGE_ID}.json", width=99), "annotation", f"{IMAGE_ID}.json", "99x16"),
    "annotation intrinsics": (lambda r: rewrite_json(r / f"annotations/{IMAGE_ID}.json", intrinsics={"fx": 1, "fy": 1, "cx": 1, "cy": 1}), "annotation", f"{IMAGE_ID}.json", "intrinsics.fx"),
    "n_objects mismatch": (lambda r: break_index(r, "n_objects", 5), "annotation", f"{IMAGE_ID}.json", "n_objects = 5"),
    "duplicate instance": (lambda r: rewrite_json(r / f"annotations/{IMAGE_ID}.json", objects=[{"instance_id": 1}, {"instance_id": 1}]), "annotation", f"{IMAGE_ID}.json", "unique"),
    "unknown instance pixels": (lambda r: Image.fromarray(np.full((H, W), 7, np.uint16)).save(r / f"instances/{IMAGE_ID}.png"), "sample", f"{IMAGE_ID}.png", r"\[7\] are not objects"),
    "pixel_count wrong": (
        lambda r: rewrite_json(r / f"annotations/{IMAGE_ID}.json", objects=[{**o, "pixel_count": 1} for o in annotation(IMAGE_ID, scene_arrays(0)[2])["objects"]]),
        "sample", f"{IMAGE_ID}.png", "annotation says 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_read_errors_name_the_file(dataset: Path, case: str) -> None:
    breaker, method, filename, words = READ_ERRORS[case]
    breaker(dataset)
    ds = RGBDDataset(dataset)
    with pytest.raises(RGBDFormatError, match=words) as caught:
        getattr(ds, method)(IMAGE_ID)
    assert caught.value.path.name == filename
    assert ds.sample("train-000001").rgb.shape == (H, W, 3)  # the other images stay readable
