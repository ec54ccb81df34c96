"""Write the procedural world as a `spatialboost-rgbd` dataset (docs/dataset-format.md).

    counts = render_dataset(cfg.world, Path(cfg.world.root))

Every file goes through spatialboost.io's atomic writes; the annotation is written last per
image and marks it complete, so an interrupted run resumes by skipping annotated ids. Scene i
of a split depends only on (seed, split, i) and every writer is deterministic, so a resumed
run gives the same bytes as an uninterrupted one.

For fan-out (one task per shard of cfg.shard_size images, retried independently):

    prepare_root(cfg, root)                  # once, before the tasks
    for shard in shards(cfg): render_shard(cfg, root, shard)   # in parallel, any order
    write_index(cfg, root)                   # once, after all of them
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from spatialboost import __version__
from spatialboost.config import WorldConfig
from spatialboost.io import remove_stale_temporaries, write_atomic, write_bytes_atomic, write_json_atomic
from spatialboost.world.annotate import SCHEMA_VERSION, annotation
from spatialboost.world.render import Rendering, render_scene
from spatialboost.world.scene import sample_scene, scene_rng

FORMAT_NAME = "spatialboost-rgbd"
FOLDERS = ("rgb", "depth", "instances", "annotations")
NOT_PARAMS = {"root", "shard_size"}
"""WorldConfig fields that do not change a single byte of the images."""

ImageKey = tuple[str, str, int]
"""(split, id, index of the scene within its split)."""

INDEX_SCHEMA = pa.schema(
    [("id", pa.string()), ("split", pa.string())]
    + [(name, pa.string()) for name in ("rgb", "depth", "instances", "annotation")]
    + [("width", pa.int32()), ("height", pa.int32())]
    + [(name, pa.float64()) for name in ("fx", "fy", "cx", "cy", "gravity_x", "gravity_y", "gravity_z")]
    + [("n_objects", pa.int32())]
)


def image_ids(cfg: WorldConfig) -> list[ImageKey]:
    """Every image, train first: ids like train-000000."""
    splits = (("train", cfg.n_train), ("test", cfg.n_test))
    return [(split, f"{split}-{i:06d}", i) for split, n in splits for i in range(n)]


def shards(cfg: WorldConfig) -> list[list[ImageKey]]:
    """image_ids(cfg) in consecutive chunks of cfg.shard_size."""
    ids = image_ids(cfg)
    return [ids[i : i + cfg.shard_size] for i in range(0, len(ids), cfg.shard_size)]


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of an (H, W, 3) uint8 or (H, W) uint16 array (Pillow writes no timestamp: deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(root: Path, image_id: str, rendering: Rendering, ann: dict[str, Any]) -> None:
    """The four files of one image; the annotation last, as the completion marker."""
    write_bytes_atomic(root / "rgb" / f"{image_id}.png", png_bytes(rendering.rgb))
    write_atomic(root / "depth" / f"{image_id}.npy", lambda f: np.save(f, rendering.depth, allow_pickle=False))
    write_bytes_atomic(root / "instances" / f"{image_id}.png", png_bytes(rendering.instances))
    write_json_atomic(root / "annotations" / f"{image_id}.json", ann)


def render_image(cfg: WorldConfig, split: str, index: int, image_id: str) -> tuple[Rendering, dict[str, Any]]:
    """Sample and render scene `index` of `split`; returns (Rendering, annotation)."""
    scene = sample_scene(cfg, scene_rng(cfg, split, index))
    rendering = render_scene(scene, cfg.width, cfg.height)
    return rendering, annotation(scene, rendering, image_id)


def is_done(root: Path, image_id: str) -> bool:
    return (root / "annotations" / f"{image_id}.json").exists()


def render_shard(cfg: WorldConfig, root: Path, keys: list[ImageKey], progress: bool = False) -> int:
    """Render the images of `keys` that are not complete yet; returns how many were rendered.

    Safe to run concurrently with other shards on the same root (temporaries are per process).
    """
    root = Path(root)
    rendered = 0
    for split, image_id, index in tqdm(keys, desc="world", unit="img", disable=not progress):
        if is_done(root, image_id):
            continue
        rendering, ann = render_image(cfg, split, index, image_id)
        write_image(root, image_id, rendering, ann)
        rendered += 1
    return rendered


def index_table(root: Path, keys: list[ImageKey]) -> pa.Table:
    """index.parquet rows, read back from the annotations so that resumed runs match exactly."""
    rows: dict[str, list] = {field.name: [] for field in INDEX_SCHEMA}
    for split, image_id, _ in keys:
        ann = json.loads((root / "annotations" / f"{image_id}.json").read_text())
        gravity = ann["gravity_cam"]
        row = {
            "id": image_id,
            "split": split,
            "rgb": f"rgb/{image_id}.png",
            "depth": f"depth/{image_id}.npy",
            "instances": f"instances/{image_id}.png",
            "annotation": f"annotations/{image_id}.json",
            "width": ann["width"],
            "height": ann["height"],
            **ann["intrinsics"],
            "gravity_x": gravity[0],
            "gravity_y": gravity[1],
            "gravity_z": gravity[2],
            "n_objects": len(ann["objects"]),
        }
        for name, value in row.items():
            rows[name].append(value)
    return pa.Table.from_arrays([pa.array(rows[f.name], f.type) for f in INDEX_SCHEMA], schema=INDEX_SCHEMA)


def generator_params(cfg: WorldConfig) -> dict[str, Any]:
    """The config that determines the images (everything but NOT_PARAMS)."""
    return cfg.model_dump(mode="json", exclude=NOT_PARAMS)


def prepare_root(cfg: WorldConfig, root: Path) -> None:
    """Create the folders and remove crash leftovers; refuse a root rendered with other params.

    Only n_train and n_test may differ from an existing dataset.json: scene i of a split does
    not depend on them, so a dataset can grow.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if meta_path.exists():
        old, new = json.loads(meta_path.read_text()).get("params", {}), generator_params(cfg)
        differ = sorted(k for k in set(old) | set(new) if k not in {"n_train", "n_test"} and old.get(k) != new.get(k))
        if differ:
            raise ValueError(f"{root} holds a world rendered with other params ({', '.join(differ)}); use another root")
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder in (root, *(root / name for name in FOLDERS)):
        remove_stale_temporaries(folder)


def write_index(cfg: WorldConfig, root: Path) -> dict[str, int]:
    """index.parquet, then dataset.json, once every image is complete; returns the counts."""
    root = Path(root)
    keys = image_ids(cfg)
    missing = [image_id for _, image_id, _ in keys if not is_done(root, image_id)]
    if missing:
        raise FileNotFoundError(f"{root}: {len(missing)} images are not rendered yet, e.g. {missing[0]}")
    table = index_table(root, keys)
    write_atomic(root / "index.parquet", lambda f: pq.write_table(table, f))
    counts = {
        "train": cfg.n_train,
        "test": cfg.n_test,
        "images": len(keys),
        "objects": int(sum(table.column("n_objects").to_pylist())),
    }
    meta = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "spatialboost.world", "version": __version__},
        "params": generator_params(cfg),
        "counts": counts,
    }
    write_json_atomic(root / "dataset.json", meta)
    return counts


def render_dataset(cfg: WorldConfig, root: Path, progress: bool = True) -> dict[str, int]:
    """Render (or finish rendering) the train and test splits of `cfg` into `root`.

    Returns counts: train, test and images (listed in the index), objects (annotated objects
    over all images), rendered and skipped (by this run).
    """
    prepare_root(cfg, root)
    keys = image_ids(cfg)
    rendered = render_shard(cfg, Path(root), keys, progress=progress)
    counts = write_index(cfg, root)
    return {**counts, "rendered": rendered, "skipped": len(keys) - rendered}
