"""Readers for the probe benchmarks, each in its published on-disk layout, behind one `Sample`.

    test = read_nyu("data/nyu", "test", filelist="nyu_depth_v2_test_files_with_gt.txt")
    sample = test[0]            # Sample(id, image (H, W, 3) uint8, depth (H, W) metres, seg, label)

Conventions of `Sample`: depth float32 metres with 0 = no ground truth; seg int32 class ids with
IGNORE_INDEX (-1) = not labelled; label int class id. Every reader returns a `SampleSet` that
loads samples lazily by id (ADE20K alone is 20k images).

Layouts (paths relative to the root given to the reader):

NYU Depth v2 (two layouts; the labelled .mat is HDF5 and not read here):
    filelist (BTS / DPT style): lines "<rgb path> <depth path> [focal]", e.g.
        "bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579" (a leading "/" is
        ignored), paths relative to `root`.
    folders (no filelist): `root/<split>/**/*.jpg`, each with its depth PNG beside it, named
        `sync_depth_<n>.png` for `rgb_<n>.jpg`, else `<stem>.png`.
    Depth: 16-bit PNG in millimetres (depth_scale 1e-3), 0 = missing; valid range (1e-3, 10] m.
KITTI (Eigen split): `eigen_test_files.txt` lines "<rgb> [<gt> [focal]]", rgb relative to
    `raw_root` ("2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"), gt
    relative to `gt_root` ("2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/
    0000000069.png"); "None" or a missing gt column: the gt path is derived from the rgb path
    and looked up under gt_root, gt_root/train and gt_root/val (the annotated-depth release's
    folders). Lines without a ground-truth file are skipped. Depth: sparse 16-bit PNG / 256 in
    metres, 0 = no LiDAR point; valid range (1e-3, 80] m; optional Garg crop.
ADE20K (SceneParsing): `ADEChallengeData2016/images/{training,validation}/*.jpg` and
    `annotations/{training,validation}/*.png` (8-bit, 0 = other/ignore, 1..150) -> seg 0..149.
    Class names from objectInfo150.txt when present.
Pascal VOC 2012: `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (palette PNG: pixel value
    = class index, 0 = background, 255 = ignore), `ImageSets/Segmentation/{train,val}.txt`;
    21 classes. `root` is VOC2012, the VOCdevkit folder above it, or the folder holding VOCdevkit.
CIFAR-100: `cifar-100-python/{train,test,meta}`, Python pickles of dicts with bytes keys
    (b"data" (N, 3072) uint8 array, b"fine_labels", b"filenames"; meta b"fine_label_names").
    Read with `restricted_unpickle`, which refuses everything but plain containers and uint8 /
    integer numpy arrays.
ImageNet-style class folders: `root/<split>/<class>/*.{jpg,jpeg,png}`; class index = position
    of the folder name in sorted order (torchvision's ImageFolder convention).
World (the demo): the spatialboost-rgbd dataset; seg = 1 + index of the object's shape label in
    `classes` (0 = ground / background, no-depth sky ignored); label = shape of the object with
    the most visible pixels.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

IGNORE_INDEX = -1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ADE20K_CLASSES = 150
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
NYU_DEPTH_RANGE = (1e-3, 10.0)
KITTI_DEPTH_RANGE = (1e-3, 80.0)


@dataclass(frozen=True)
class Sample:
    """One evaluation image and whatever ground truth its benchmark has.

    image: (H, W, 3) uint8 RGB. depth: (H, W) float32 metres, 0 = no ground truth.
    seg: (H, W) int32 class ids, IGNORE_INDEX = not labelled. label: class id of the image.
    """

    id: str
    image: np.ndarray
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None
    label: int | None = None
    objects: np.ndarray | None = None  # (H, W) bool: object pixels (depth is also scored there)


@dataclass(frozen=True, kw_only=True)
class SampleSet:
    """The samples of one benchmark split, loaded on demand by id."""

    name: str
    split: str
    ids: tuple[str, ...]
    load: Callable[[str], Sample]
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    depth_range: tuple[float, float] | None = None  # (min, max) metres of ground truth to score
    label_names: tuple[str, ...] | None = None  # names of the image labels when they differ from class_names
    load_image: Callable[[str], np.ndarray] | None = field(default=None, repr=False)
    load_label: Callable[[str], int | None] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def __iter__(self) -> Iterator[Sample]:
        return (self.load(i) for i in self.ids)

    def image(self, image_id: str) -> np.ndarray:
        """(H, W, 3) uint8 of one id, without reading its ground truth when the reader can."""
        return self.load_image(image_id) if self.load_image else self.load(image_id).image

    def label(self, image_id: str) -> int | None:
        """The image label of one id, without decoding the image when the reader can."""
        return self.load_label(image_id) if self.load_label else self.load(image_id).label

    def take(self, n: int) -> SampleSet:
        """The first n ids (quick runs)."""
        return self.with_ids(self.ids[:n])

    def with_ids(self, ids: Sequence[str]) -> SampleSet:
        """The same benchmark split restricted to `ids` (each must be one of its ids)."""
        unknown = set(ids) - set(self.ids)
        if unknown:
            raise KeyError(f"{self.name}/{self.split}: unknown ids {sorted(unknown)[:3]}")
        return SampleSet(
            name=self.name,
            split=self.split,
            ids=tuple(ids),
            load=self.load,
            num_classes=self.num_classes,
            class_names=self.class_names,
            depth_range=self.depth_range,
            label_names=self.load_image,
            load_image=self.load_label,
        )

    def subset(self, n: int | None, seed: int) -> SampleSet:
        """A seeded random subset of n ids in their original order (all when n is None or >= len):
        class-sorted splits (ImageNet folders) keep every class, unlike `take`."""
        if n is None or n >= len(self.ids):
            return self
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.ids))[:n])
        return self.with_ids([self.ids[i] for i in keep])


# --- decoding helpers ----------------------------------------------------------------------------


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 of any image file Pillow reads."""
    with Image.open(path) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)


def read_depth_png(path: str | Path, metres_per_unit: float) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit single-channel PNG (0 stays 0 = missing)."""
    with Image.open(path) as img:
        if img.mode not in ("I;16", "I;16L", "I;16B", "I", "L"):
            raise ValueError(f"{path}: expected a 16-bit single-channel depth PNG, got Pillow mode {img.mode!r}")
        units = np.array(img).astype(np.float64)
    return (units * metres_per_unit).astype(np.float32)


def read_label_png(path: str | Path) -> np.ndarray:
    """(H, W) int32 of an 8-bit palette ("P") or greyscale ("L") label PNG: the stored indices."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette or greyscale label PNG, got Pillow mode {img.mode!r}")
        return np.array(img).astype(np.int32)


def _list_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


# --- NYU Depth v2 --------------------------------------------------------------------------------


def read_nyu(root: str | Path, split: str, filelist: str | Path | None = None) -> SampleSet:
    """NYU Depth v2 from a BTS-style filelist or `root/<split>/` folders (see module docstring)."""
    root = Path(root)
    pairs: dict[str, tuple[Path, Path]] = {}
    if filelist is not None:
        for parts in _list_lines(Path(filelist)):
            rgb, depth = (root / p.lstrip("/") for p in parts[:2])
            pairs[parts[0].lstrip("/")] = (rgb, depth)
    else:
        folder = root / split
        for rgb in sorted(folder.rglob("*")):
            if rgb.suffix.lower() in (".jpg", ".jpeg") and rgb.is_file():
                stem = rgb.stem
                depth_name = f"sync_depth_{stem[4:]}.png" if stem.startswith("rgb_") else f"{stem}.png"
                pairs[rgb.relative_to(folder).as_posix()] = (rgb, rgb.with_name(depth_name))
    if not pairs:
        raise FileNotFoundError(f"no NYU images found for split {split!r} under {root}")

    def load(image_id: str) -> Sample:
        rgb, depth = pairs[image_id]
        return Sample(image_id, read_rgb(rgb), depth=read_depth_png(depth, 1e-3))

    return SampleSet(
        name="nyu",
        split=split,
        ids=tuple(pairs),
        load=load,
        depth_range=NYU_DEPTH_RANGE,
        load_image=lambda i: read_rgb(pairs[i][0]),
    )


# --- KITTI Eigen split ---------------------------------------------------------------------------


def kitti_gt_path(rgb_relative: str) -> str:
    """ "2011_09_26/<drive>/image_02/data/<frame>.png" -> "<drive>/proj_depth/groundtruth/image_02/<frame>.png"."""
    parts = Path(rgb_relative).parts
    if len(parts) < 5 or parts[-2] != "data":
        raise ValueError(f"not a KITTI raw image path (<date>/<drive>/image_0x/data/<frame>): {rgb_relative}")
    drive, camera, frame = parts[-4], parts[-3], parts[-1]
    return f"{drive}/proj_depth/groundtruth/{camera}/{Path(frame).with_suffix('.png').name}"


def garg_crop(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the Garg et al. evaluation crop used on the Eigen split."""
    return (int(0.40810811 * height), int(0.03594771 * width), int(0.99189189 * height), int(0.96405229 * width))


def read_kitti_eigen(
    raw_root: str | Path,
    gt_root: str | Path,
    filelist: str | Path,
    split: str = "test",
    crop: str | None = "garg",
) -> SampleSet:
    """KITTI raw images with the annotated (proj_depth/groundtruth) depth of the Eigen split.

    crop: "garg" sets depth outside the Garg crop to 0 (not scored), None scores every LiDAR point.
    """
    if crop not in (None, "garg"):
        raise ValueError(f"crop must be None or 'garg', got {crop!r}")
    raw_root, gt_root = Path(raw_root), Path(gt_root)
    pairs: dict[str, tuple[Path, Path]] = {}
    for parts in _list_lines(Path(filelist)):
        rgb_rel = parts[0]
        gt_rel = parts[1] if len(parts) > 1 and parts[1] != "None" else kitti_gt_path(rgb_rel)
        candidates = [gt_root / gt_rel, gt_root / "train" / gt_rel, gt_root / "val" / gt_rel]
        gt = next((c for c in candidates if c.is_file()), None)
        if gt is not None:  # Eigen frames without annotated depth are not scored (the usual protocol)
            pairs[rgb_rel] = (raw_root / rgb_rel, gt)
    if not pairs:
        raise FileNotFoundError(f"no KITTI frame of {filelist} has ground truth under {gt_root}")

    def load(image_id: str) -> Sample:
        rgb, gt = pairs[image_id]
        depth = read_depth_png(gt, 1 / 256)
        if crop == "garg":
            top, left, bottom, right = garg_crop(*depth.shape)
            keep = np.zeros(depth.shape, bool)
            keep[top:bottom, left:right] = True
            depth = np.where(keep, depth, 0).astype(np.float32)
        return Sample(image_id, read_rgb(rgb), depth=depth)

    return SampleSet(
        name="kitti",
        split=split,
        ids=tuple(pairs),
        load=load,
        depth_range=KITTI_DEPTH_RANGE,
        load_image=lambda i: read_rgb(pairs[i][0]),
    )


# --- segmentation ----------------------------------------------------------------------------------


def read_ade20k(root: str | Path, split: str) -> SampleSet:
    """ADE20K SceneParsing (150 classes); split "training" or "validation" ("train"/"val" accepted)."""
    split = {"train": "training", "val": "validation"}.get(split, split)
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    images, annotations = root / "images" / split, root / "annotations" / split
    stems = sorted(p.stem for p in images.glob("*.jpg"))
    if not stems:
        raise FileNotFoundError(f"no ADE20K images in {images}")

    def load(image_id: str) -> Sample:
        raw = read_label_png(annotations / f"{image_id}.png")
        seg = np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.int32)  # 0 = other: not scored
        return Sample(image_id, read_rgb(images / f"{image_id}.jpg"), seg=seg)

    return SampleSet(
        name="ade20k",
        split=split,
        ids=tuple(stems),
        load=load,
        num_classes=ADE20K_CLASSES,
        class_names=_ade20k_names(root),
        load_image=lambda i: read_rgb(images / f"{i}.jpg"),
    )


def _ade20k_names(root: Path) -> tuple[str, ...] | None:
    """Class names from objectInfo150.txt (tab separated: Idx, Ratio, Train, Val, Name)."""
    info = root / "objectInfo150.txt"
    if not info.is_file():
        return None
    rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
    return tuple(row[-1].split(";")[0].strip() for row in rows)


def read_voc(root: str | Path, split: str) -> SampleSet:
    """Pascal VOC 2012 segmentation (21 classes incl. background; 255 -> IGNORE_INDEX)."""
    root = Path(root)
    for inner in ("VOCdevkit/VOC2012", "VOC2012"):  # the tar's VOCdevkit/VOC2012, or either folder
        if (root / inner).is_dir():
            root = root / inner
            break
    ids = tuple(
        line.strip() for line in (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().splitlines()
    )
    ids = tuple(i for i in ids if i)

    def load(image_id: str) -> Sample:
        raw = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        if np.any((raw >= len(VOC_CLASSES)) & (raw != 255)):
            raise ValueError(f"{image_id}: label values outside 0..20 and 255")
        seg = np.where(raw == 255, IGNORE_INDEX, raw).astype(np.int32)
        return Sample(image_id, read_rgb(root / "JPEGImages" / f"{image_id}.jpg"), seg=seg)

    return SampleSet(
        name="voc2012",
        split=split,
        ids=ids,
        load=load,
        num_classes=len(VOC_CLASSES),
        class_names=VOC_CLASSES,
        load_image=lambda i: read_rgb(root / "JPEGImages" / f"{i}.jpg"),
    )


# --- classification --------------------------------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global except what a pickled numeric numpy array needs.

    Plain dicts, lists, tuples, bytes, str, int and float need no globals. A numpy array pickles
    as `_reconstruct(ndarray, (0,), b"b")` + `dtype(...)` + raw bytes (numpy 2 wraps the bytes in
    `_codecs.encode(str, "latin1")`); those are replaced by checked stand-ins that build only
    bool / integer / float arrays (never object arrays, whose items would be arbitrary pickles).
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): _safe_dtype,
            ("_codecs", "encode"): _latin1_encode,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset pickle")
        return allowed[(module, name)]


def _safe_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"only plain numpy arrays are allowed, got {cls!r}")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    dtype = np.dtype(spec.decode() if isinstance(spec, bytes) else spec)
    if dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy dtype {dtype} is not allowed (numeric arrays only)")
    return dtype


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only as numpy's str -> latin1 bytes")
    return text.encode("latin1")


def restricted_unpickle(data: bytes) -> Any:
    """pickle.loads for dataset files: containers, scalars and numeric numpy arrays only."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _key(d: dict, name: str) -> Any:
    """d[b"name"] (Python 2 pickles) or d["name"]."""
    return d[name.encode()] if name.encode() in d else d[name]


def read_cifar100(root: str | Path, split: str) -> SampleSet:
    """CIFAR-100 fine labels (100 classes); split "train" or "test"; images (32, 32, 3) uint8."""
    root = Path(root)
    if (root / "cifar-100-python").is_dir():
        root = root / "cifar-100-python"
    batch = restricted_unpickle((root / split).read_bytes())
    meta = restricted_unpickle((root / "meta").read_bytes())
    data = np.asarray(_key(batch, "data"), dtype=np.uint8)
    labels = [int(x) for x in _key(batch, "fine_labels")]
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise ValueError(f"{root / split}: data {data.shape} and {len(labels)} labels do not match CIFAR's layout")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R(1024) G(1024) B(1024)
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in _key(meta, "fine_label_names"))
    ids = tuple(f"{split}-{i:05d}" for i in range(len(labels)))
    index = {image_id: i for i, image_id in enumerate(ids)}

    def load(image_id: str) -> Sample:
        i = index[image_id]
        return Sample(image_id, np.ascontiguousarray(images[i]), label=labels[i])

    return SampleSet(
        name="cifar100",
        split=split,
        ids=ids,
        load=load,
        num_classes=len(names),
        class_names=names,
        load_label=lambda i: labels[index[i]],
    )


def read_image_folder(root: str | Path, split: str, name: str = "imagenet") -> SampleSet:
    """ImageNet-style `root/<split>/<class>/<image>`; classes indexed in sorted folder order."""
    folder = Path(root) / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = {
        f"{c}/{f.name}": (f, k)
        for k, c in enumerate(classes)
        for f in sorted((folder / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    }
    if not files:
        raise FileNotFoundError(f"no class folders with images under {folder}")

    def load(image_id: str) -> Sample:
        path, label = files[image_id]
        return Sample(image_id, read_rgb(path), label=label)

    return SampleSet(
        name=name,
        split=split,
        ids=tuple(files),
        load=load,
        num_classes=len(classes),
        class_names=tuple(classes),
        load_image=lambda i: read_rgb(files[i][0]),
        load_label=lambda i: files[i][1],
    )


# --- the procedural world (demo) -------------------------------------------------------------------


def world_seg(instances: np.ndarray, depth: np.ndarray, objects: Sequence[dict], classes: Sequence[str]) -> np.ndarray:
    """(H, W) int32: 1 + class index of each object pixel, 0 = ground, IGNORE_INDEX = sky (no depth)."""
    lut = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
    for obj in objects:
        if obj["instance_id"] < len(lut):
            lut[obj["instance_id"]] = 1 + list(classes).index(obj["label"])
    seg = lut[instances]
    return np.where((instances == 0) & (depth <= 0), IGNORE_INDEX, seg).astype(np.int32)


def dominant_label(objects: Sequence[dict], classes: Sequence[str], attribute: str = "label") -> int | None:
    """Index in `classes` of the `attribute` ("label": shape, or "colour") of the object with the
    most visible pixels; None when nothing is visible."""
    visible = [o for o in objects if o.get("pixel_count", 0) > 0]
    if not visible:
        return None
    return list(classes).index(max(visible, key=lambda o: (o["pixel_count"], -o["instance_id"]))[attribute])


def read_world(
    root: str | Path, split: str, classes: Sequence[str] | None = None, label: Literal["shape", "colour"] = "shape"
) -> SampleSet:
    """The world's RGB-D split as samples with depth, object masks, shape segmentation and an
    image label: the shape or the colour of the largest visible object.

    classes: the shape vocabulary (default: the dataset's generator params, else SHAPE_CLASSES).
    Images where no object is visible get label None (the classification probe skips them).
    """
    from spatialboost.config import SHAPE_CLASSES
    from spatialboost.data.rgbd import RGBDDataset
    from spatialboost.world.scene import COLOURS

    dataset = RGBDDataset(root)
    classes = tuple(classes or dataset.meta.get("params", {}).get("classes") or SHAPE_CLASSES)
    label_names, attribute = (classes, "label") if label == "shape" else (tuple(COLOURS), "colour")

    def load(image_id: str) -> Sample:
        s = dataset.sample(image_id)
        objects = s.annotation["objects"]
        seg = world_seg(s.instances, s.depth, objects, classes)
        return Sample(
            image_id,
            s.rgb,
            depth=s.depth,
            seg=seg,
            label=dominant_label(objects, label_names, attribute),
            objects=s.instances > 0,
        )

    return SampleSet(
        name="world",
        split=split,
        ids=tuple(dataset.ids(split)),
        load=load,
        num_classes=1 + len(classes),
        class_names=("ground", *classes),
        load_image=dataset.rgb,
        label_names=label_names,
    )
