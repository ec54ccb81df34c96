"""Demo versions of BLINK Relative_Depth and SpatialRGPT-bench, made from held-out world scenes.

    paths = write_demo_benches("data/world", "data/bench", split="test")
    items = read_blink(paths.blink) + read_spatialrgpt(paths.spatialrgpt, paths.image_root)

Both are written in the published formats (vqa.py documents them), so the demo exercises the
readers and scorers the real benchmarks use. Answers come from the world's exact ground truth.

BLINK-style: two points on different surfaces (objects or the ground) whose true depths differ by
more than `min_depth_ratio`, circled and labelled "A" / "B" on the image; "(A)" and "(B)" are
balanced (a shuffled half / half assignment). The marks are those of data/marks.py: BLINK's red
circles with their letter, but each label in its own colour (a 6-pixel letter is unreadable at the
demo's 64-pixel encoder input; a colour is not).
SpatialRGPT-style: questions about uniquely named objects ("the red cube"), categories taken in
turn: predicates (yes / no, balanced) and choices for left/right, above/below, behind/front,
tall/short, big/small, wide/thin; quantities (metres, 2 decimals) for centre distance, width,
height and distance from the camera. Relations are decided in the gravity-aligned world frame
(camera at (0, 0, h) looking along +x, so "left" is +y), and "left"/"right" must also agree with
the image columns of the box centres; pairs closer than the margins are not asked about.
Lengths: width = the larger horizontal side of the object's box, height = its vertical side,
distances between box centres.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from scipy import ndimage

from spatialboost.data.marks import Mark, draw_marks
from spatialboost.data.rgbd import RGBDDataset, RGBDSample
from spatialboost.io import write_atomic, write_bytes_atomic, write_json_atomic

BLINK_QUESTION = "Which point is closer to the camera?"
BLINK_PROMPT = (
    "Two points are circled on the image, labeled by A and B beside each circle. Which point is closer to the "
    "camera?\nSelect from the following choices.\n(A) A is closer\n(B) B is closer"
)
BLINK_CHOICES = ("A is closer", "B is closer")
_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
BLINK_SCHEMA = pa.schema(
    [("idx", pa.string()), ("question", pa.string()), ("sub_task", pa.string())]
    + [(f"image_{i}", _IMAGE_STRUCT) for i in range(1, 5)]
    + [
        ("choices", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("prompt", pa.string()),
        ("explanation", pa.string()),
    ]
)


@dataclass(frozen=True)
class DemoBenchOptions:
    """How many questions, and how clear-cut they must be."""

    seed: int = 0
    max_images: int | None = None  # of the split, in index order (None: all)
    blink_per_image: int = 1
    spatial_per_image: int = 4
    min_depth_ratio: float = 1.1  # BLINK points: deeper / shallower >= this
    min_region_pixels: int = 12  # a surface smaller than this (after erosion) gets no point
    min_margin_m: float = 0.3  # left/right, above/below, behind/front
    min_size_ratio: float = 0.2  # tall/big/wide: (larger - smaller) / larger >= this


@dataclass(frozen=True)
class DemoBenchPaths:
    blink: Path  # <out>/BLINK/Relative_Depth/val-00000-of-00001.parquet
    spatialrgpt: Path  # <out>/SpatialRGPT-Bench/SpatialRGPT-Bench_demo.json
    image_root: Path  # <out>/SpatialRGPT-Bench: image_info.file_path is relative to it


@dataclass(frozen=True)
class BlinkTruth:
    """Where the circled points are (pixels, x right / y down) and their true depths (metres)."""

    idx: str
    image_id: str
    point_a: tuple[int, int]
    point_b: tuple[int, int]
    depth_a: float
    depth_b: float


# --- BLINK-style relative depth ----------------------------------------------------------------


def draw_point_markers(image: np.ndarray, points: Sequence[tuple[int, int]], labels: Sequence[str]) -> np.ndarray:
    """Circles around (x, y) points, each with its label in a box beside it (BLINK's look), in
    the colours of data/marks.py: the same marks the training conversations draw."""
    return draw_marks(image, [Mark(label, x, y) for (x, y), label in zip(points, labels, strict=True)])


def _surfaces(sample: RGBDSample, min_pixels: int) -> list[np.ndarray]:
    """(H, W) bool masks of each visible object and of the ground, eroded so a point sits inside."""
    valid = sample.depth > 0
    ids = [obj["instance_id"] for obj in sample.annotation["objects"]]
    masks = [(sample.instances == k) & valid for k in ids] + [(sample.instances == 0) & valid]
    eroded = [ndimage.binary_erosion(m, iterations=2) for m in masks]
    return [m for m in eroded if m.sum() >= min_pixels]


def pick_point_pair(
    sample: RGBDSample, rng: np.random.Generator, options: DemoBenchOptions, tries: int = 50
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(closer (x, y), farther (x, y)) on two different surfaces, depth ratio >= min_depth_ratio."""
    surfaces = _surfaces(sample, options.min_region_pixels)
    if len(surfaces) < 2:
        return None
    min_gap = 4 * max(3, round(min(sample.depth.shape) / 32))
    for _ in range(tries):
        i, j = rng.choice(len(surfaces), size=2, replace=False)
        points = []
        for k in (i, j):
            ys, xs = np.nonzero(surfaces[k])
            n = rng.integers(len(ys))
            points.append((int(xs[n]), int(ys[n])))
        (xa, ya), (xb, yb) = points
        da, db = float(sample.depth[ya, xa]), float(sample.depth[yb, xb])
        if max(da, db) / min(da, db) >= options.min_depth_ratio and np.hypot(xa - xb, ya - yb) >= min_gap:
            return (points[0], points[1]) if da < db else (points[1], points[0])
    return None


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_demo_blink(
    dataset: RGBDDataset, path: str | Path, split: str = "test", options: DemoBenchOptions = DemoBenchOptions()
) -> list[BlinkTruth]:
    """Write the BLINK-style parquet at `path`; returns where each question's points are."""
    rng = np.random.default_rng([options.seed, 0])
    pairs = []
    for image_id in dataset.ids(split)[: options.max_images]:
        sample = dataset.sample(image_id)
        for _ in range(options.blink_per_image):
            pair = pick_point_pair(sample, rng, options)
            if pair is not None:
                pairs.append((sample, *pair))
    if not pairs:
        raise ValueError(f"no image of split {split!r} has two surfaces to ask about")
    closer_is_a = rng.permutation(np.arange(len(pairs)) % 2 == 0)  # balanced (A) / (B)
    rows, truths = [], []
    for n, ((sample, closer, farther), a_closer) in enumerate(zip(pairs, closer_is_a, strict=True), start=1):
        point_a, point_b = (closer, farther) if a_closer else (farther, closer)
        idx = f"val_Relative_Depth_{n}"
        image = draw_point_markers(sample.rgb, [point_a, point_b], ["A", "B"])
        rows.append(
            {
                "idx": idx,
                "question": BLINK_QUESTION,
                "sub_task": "Relative_Depth",
                "image_1": {"bytes": _png(image), "path": f"{idx}.png"},
                "image_2": None,
                "image_3": None,
                "image_4": None,
                "choices": list(BLINK_CHOICES),
                "answer": "(A)" if a_closer else "(B)",
                "prompt": BLINK_PROMPT,
                "explanation": "",
            }
        )
        depth = sample.depth
        truths.append(
            BlinkTruth(
                idx,
                sample.row.id,
                point_a,
                point_b,
                float(depth[point_a[1], point_a[0]]),
                float(depth[point_b[1], point_b[0]]),
            )
        )
    table = pa.Table.from_pylist(rows, schema=BLINK_SCHEMA)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: pq.write_table(table, f))
    return truths


# --- SpatialRGPT-style ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Object:
    name: str  # "the red cube"
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive) pixels
    left_m: float  # world +y: larger is further left for a camera looking along +x
    height_m: float  # centre height above the ground
    distance_m: float  # camera centre to box centre
    u: float  # image column of the box centre
    center: np.ndarray  # (3,) world
    width_m: float
    tall_m: float
    volume_m3: float


def _objects(sample: RGBDSample, min_pixels: int) -> list[_Object]:
    """Visible objects with an unambiguous "the <colour> <shape>" name."""
    ann = sample.annotation
    camera = np.array([0.0, 0.0, ann["camera"]["height_m"]])
    fx, cx = ann["intrinsics"]["fx"], ann["intrinsics"]["cx"]
    visible = [o for o in ann["objects"] if o.get("pixel_count", 0) >= min_pixels]
    names = [f"the {o['colour']} {o['label']}" for o in visible]
    out = []
    for obj, name in zip(visible, names, strict=True):
        if names.count(name) > 1:
            continue
        ys, xs = np.nonzero(sample.instances == obj["instance_id"])
        center, size = np.asarray(obj["box_world"]["center"]), np.asarray(obj["box_world"]["size"])
        cam = obj["box_camera"]["center"]
        out.append(
            _Object(
                name=name,
                bbox=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                left_m=float(center[1]),
                height_m=float(center[2]),
                distance_m=float(np.linalg.norm(center - camera)),
                u=float(fx * cam[0] / cam[2] + cx),
                center=center,
                width_m=float(max(size[0], size[1])),
                tall_m=float(size[2]),
                volume_m3=float(np.prod(size)),
            )
        )
    return out


def _ratio(a: float, b: float) -> float:
    return (a - b) / max(a, b)


# relation -> (signed margin of "a is <relation> b", needs the size threshold)
_RELATIONS: dict[str, tuple[Callable[[_Object, _Object], float], bool]] = {
    "left": (lambda a, b: (a.left_m - b.left_m) if (a.left_m - b.left_m) * (b.u - a.u) > 0 else 0.0, False),
    "right": (lambda a, b: (b.left_m - a.left_m) if (a.left_m - b.left_m) * (b.u - a.u) > 0 else 0.0, False),
    "above": (lambda a, b: a.height_m - b.height_m, False),
    "below": (lambda a, b: b.height_m - a.height_m, False),
    "behind": (lambda a, b: a.distance_m - b.distance_m, False),
    "front": (lambda a, b: b.distance_m - a.distance_m, False),
    "tall": (lambda a, b: _ratio(a.tall_m, b.tall_m), True),
    "short": (lambda a, b: _ratio(b.tall_m, a.tall_m), True),
    "big": (lambda a, b: _ratio(a.volume_m3, b.volume_m3), True),
    "small": (lambda a, b: _ratio(b.volume_m3, a.volume_m3), True),
    "wide": (lambda a, b: _ratio(a.width_m, b.width_m), True),
    "thin": (lambda a, b: _ratio(b.width_m, a.width_m), True),
}
_PREDICATE = {
    "left": ("Is {a} to the left of {b}?", "{a} is to the left of {b}", "{a} is not to the left of {b}"),
    "right": ("Is {a} to the right of {b}?", "{a} is to the right of {b}", "{a} is not to the right of {b}"),
    "above": ("Is {a} above {b}?", "{a} is above {b}", "{a} is not above {b}"),
    "below": ("Is {a} below {b}?", "{a} is below {b}", "{a} is not below {b}"),
    "behind": ("Is {a} behind {b}?", "{a} is behind {b}", "{a} is not behind {b}"),
    "front": ("Is {a} in front of {b}?", "{a} is in front of {b}", "{a} is not in front of {b}"),
    "tall": ("Is {a} taller than {b}?", "{a} is taller than {b}", "{a} is not taller than {b}"),
}
_CHOICE = {
    "left": ("Which is more to the left, {a} or {b}?", "{w} is more to the left."),
    "right": ("Which is more to the right, {a} or {b}?", "{w} is more to the right."),
    "above": ("Which is higher, {a} or {b}?", "{w} is higher."),
    "below": ("Which is lower, {a} or {b}?", "{w} is lower."),
    "front": ("Which is closer to the camera, {a} or {b}?", "{w} is closer to the camera."),
    "behind": ("Which is farther from the camera, {a} or {b}?", "{w} is farther from the camera."),
    "tall": ("Which is taller, {a} or {b}?", "{w} is taller."),
    "short": ("Which is shorter, {a} or {b}?", "{w} is shorter."),
    "big": ("Which is bigger, {a} or {b}?", "{w} is bigger."),
    "small": ("Which is smaller, {a} or {b}?", "{w} is smaller."),
    "wide": ("Which is wider, {a} or {b}?", "{w} is wider."),
    "thin": ("Which is thinner, {a} or {b}?", "{w} is thinner."),
}
_QUANTITY = {
    "distance_data": ("How far apart are {a} and {b}?", "{a} and {b} are {v:.2f} meters apart."),
    "width_data": ("How wide is {a}?", "{a} is {v:.2f} meters wide."),
    "height_data": ("How tall is {a}?", "{a} is {v:.2f} meters tall."),
    "camera_distance_data": ("How far is {a} from the camera?", "{a} is {v:.2f} meters from the camera."),
}
DEMO_CATEGORIES = (
    *(f"{r}_predicate" for r in _PREDICATE), *(f"{r}_choice" for r in _CHOICE), *_QUANTITY,
)  # fmt: skip


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _question(
    category: str, objects: list[_Object], rng: np.random.Generator, options: DemoBenchOptions
) -> tuple[str, str, list[_Object]] | None:
    """(question, reference answer, objects in question order) or None when nothing fits."""
    if category in _QUANTITY:
        q, a = _QUANTITY[category]
        if category == "distance_data":
            if len(objects) < 2:
                return None
            x, y = (objects[i] for i in rng.choice(len(objects), 2, replace=False))
            value = float(np.linalg.norm(x.center - y.center))
            return q.format(a=x.name, b=y.name), _sentence(a.format(a=x.name, b=y.name, v=value)), [x, y]
        x = objects[rng.integers(len(objects))]
        value = {"width_data": x.width_m, "height_data": x.tall_m, "camera_distance_data": x.distance_m}[category]
        return q.format(a=x.name), _sentence(a.format(a=x.name, v=value)), [x]
    relation, kind = category.rsplit("_", 1)
    margin, is_size = _RELATIONS[relation]
    threshold = options.min_size_ratio if is_size else options.min_margin_m
    pairs = [(x, y) for x, y in itertools.permutations(objects, 2) if margin(x, y) >= threshold]
    if not pairs:
        return None
    holds, other = pairs[rng.integers(len(pairs))]  # `holds` is <relation> `other`
    if kind == "choice":
        q, a = _CHOICE[relation]
        first, second = (holds, other) if rng.random() < 0.5 else (other, holds)
        return q.format(a=first.name, b=second.name), _sentence(a.format(w=holds.name)), [first, second]
    q, yes, no = _PREDICATE[relation]
    if rng.random() < 0.5:
        return (
            q.format(a=holds.name, b=other.name),
            "Yes, " + yes.format(a=holds.name, b=other.name) + ".",
            [holds, other],
        )
    return q.format(a=other.name, b=holds.name), "No, " + no.format(a=other.name, b=holds.name) + ".", [other, holds]


def write_demo_spatialrgpt(
    dataset: RGBDDataset, root: str | Path, split: str = "test", options: DemoBenchOptions = DemoBenchOptions()
) -> Path:
    """Write root/SpatialRGPT-Bench_demo.json and root/images/<id>.png; returns the JSON path."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([options.seed, 1])
    order = list(rng.permutation(DEMO_CATEGORIES))
    turn = itertools.count()
    rows: list[dict[str, Any]] = []
    for image_id in dataset.ids(split)[: options.max_images]:
        sample = dataset.sample(image_id)
        objects = _objects(sample, options.min_region_pixels)
        if not objects:
            continue
        file_path = f"images/{image_id}.png"
        write_bytes_atomic(root / file_path, dataset.rgb_path(image_id).read_bytes())
        for k in range(options.spatial_per_image):
            for _ in range(len(order)):  # categories in turn; skip those this image cannot ask
                category = str(order[next(turn) % len(order)])
                made = _question(category, objects, rng, options)
                if made is not None:
                    break
            else:
                continue
            question, answer, used = made
            rows.append(
                {
                    "id": f"{image_id}-{k}",
                    "image_info": {"file_path": file_path, "height": sample.row.height, "width": sample.row.width},
                    "text_q": question,
                    "qa_info": {
                        "type": "quantitative" if category in _QUANTITY else "qualitative",
                        "category": category,
                    },
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{question}"},
                        {"from": "gpt", "value": answer},
                    ],
                    "bbox": [list(o.bbox) for o in used],
                }
            )
    if not rows:
        raise ValueError(f"no image of split {split!r} has a nameable object")
    path = root / "SpatialRGPT-Bench_demo.json"
    write_json_atomic(path, rows)
    return path


def write_demo_benches(
    world_root: str | Path, out_dir: str | Path, split: str = "test", options: DemoBenchOptions = DemoBenchOptions()
) -> DemoBenchPaths:
    """Both demo benchmarks from the world's `split`, under out_dir."""
    dataset, out_dir = RGBDDataset(world_root), Path(out_dir)
    blink = out_dir / "BLINK" / "Relative_Depth" / "val-00000-of-00001.parquet"
    write_demo_blink(dataset, blink, split, options)
    spatial = write_demo_spatialrgpt(dataset, out_dir / "SpatialRGPT-Bench", split, options)
    return DemoBenchPaths(blink, spatial, spatial.parent)
