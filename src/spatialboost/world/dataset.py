"""Write the procedural world as a `spatialboost-rgbd` dataset (docs/dataset-format.md).

    metrics = run_world_stage(cfg.world)     # the stage: `spatialboost world render` and flows/world.py
    counts = render_dataset(cfg.world, Path(cfg.world.root))   # the same into any root (tests)

The root is one of shards.py's resumable outputs, its units the images: every file goes through
spatialboost.io's atomic writes and the annotation is written last per image, marking it
complete; params.json (the generator's settings, less the split sizes: scene i of a split
depends only on (seed, split, i), so a dataset can grow) is written first, and a run with
other params removes every image first. A resumed run gives the same bytes as an
uninterrupted one.

For fan-out (one task per shard of cfg.shard_size images, retried independently):

    prepare_root(cfg, root)                  # once, before the tasks
    for shard in shards(cfg): render_shard(cfg, root, shard)   # in parallel, any order
    write_index(cfg, root)                   # once, after all of them
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from spatialboost import __version__
from spatialboost.config import WorldConfig
from spatialboost.io import write_atomic, write_bytes_atomic, write_json_atomic
from spatialboost.shards import ShardedOutput
from spatialboost.world.annotate import SCHEMA_VERSION, annotation
from spatialboost.world.render import Rendering, render_scene
from spatialboost.world.scene import sample_scene, scene_rng

FORMAT_NAME = "spatialboost-rgbd"
IMAGE_FILES = (("rgb", ".png"), ("depth", ".npy"), ("instances", ".png"), ("annotations", ".json"))
"""The four files of an image (folder, suffix), in the order they are written: the annotation last."""
FOLDERS = tuple(folder for folder, _ in IMAGE_FILES)
NOT_PARAMS = {"root", "shard_size"}
"""WorldConfig fields that do not change a single byte of the images."""
SPLIT_SIZES = {"n_train", "n_test"}
"""WorldConfig fields that say how many images there are, not what any one of them is."""

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


def world_images(root: str | Path) -> ShardedOutput:
    """A world root as shards.py's resumable output: one unit per image id."""
    root = Path(root)

    def image_files(image_id: str) -> tuple[Path, ...]:
        return tuple(root / folder / f"{image_id}{suffix}" for folder, suffix in IMAGE_FILES)

    def on_disk(folder_root: Path) -> Iterator[tuple[Hashable, Path]]:
        for folder, suffix in IMAGE_FILES:
            for path in sorted((folder_root / folder).glob(f"*{suffix}")):
                yield path.name.removesuffix(suffix), path

    return ShardedOutput(root, image_files, on_disk, manifests=("dataset.json", "index.parquet"), folders=FOLDERS)


def image_params(cfg: WorldConfig) -> dict[str, Any]:
    """What decides an image's bytes besides its split and index: written to params.json."""
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "world": cfg.model_dump(mode="json", exclude=NOT_PARAMS | SPLIT_SIZES),
    }


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
    """Whether an image is complete (its annotation, written last, exists)."""
    return world_images(root).is_complete(image_id)


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
    """Make `root` safe to resume from (shards.py's rule): crash leftovers, the old index and every
    image of other params or no longer planned are removed; params.json is written."""
    world_images(root).prepare([image_id for _, image_id, _ in image_ids(cfg)], image_params(cfg))


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


def render_dataset(
    cfg: WorldConfig,
    root: Path,
    *,
    run_shards: Callable[[list[list[ImageKey]]], list[int]] | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Render (or finish rendering) the train and test splits of `cfg` into `root`.

    Returns counts: train, test and images (listed in the index), objects (annotated objects
    over all images) and rendered (by this run; the others were complete). run_shards: renders
    the planned shards, one count each: the flow submits one Prefect task per shard; default
    here, one after the other.
    """
    prepare_root(cfg, root)
    plan = shards(cfg)
    if run_shards is None:
        planned = tqdm(plan, desc="world", unit="shard", disable=not progress)
        rendered = [render_shard(cfg, Path(root), keys) for keys in planned]
    else:
        rendered = run_shards(plan)
    counts = write_index(cfg, root)
    return {**counts, "rendered": sum(rendered)}


def run_world_stage(
    cfg: WorldConfig, *, run_shards: Callable[[list[list[ImageKey]]], list[int]] | None = None, progress: bool = False
) -> dict[str, Any]:
    """The `world` stage, what `spatialboost world render` and flows/world.py both run: world.root
    rendered (render_dataset), resuming. Returns metrics/world.json."""
    start = time.perf_counter()
    counts = render_dataset(cfg, Path(cfg.root), run_shards=run_shards, progress=progress)
    return {**counts, "seconds": round(time.perf_counter() - start, 2)}
