"""The paper's benchmarks, wired from `evaluate.benchmarks` to readers, protocols and probes.

    result = evaluate_benchmarks(cfg, {"baseline": init_folder, "boosted": boosted_folder})
    result["metrics"]["boosted"]["nyu"]["depth_rmse"]            # {"mean", "std"} over probe seeds
    result["metrics"]["protocol"]["nyu"]["full_protocol"]        # False when capped or incomplete

Each configured benchmark is read in its released layout (paths relative to its `path`):

    nyu       BTS layout: sync/ (train frames), official_splits/test/ (the 654 Eigen test frames
              extracted from the labelled .mat), nyudepthv2_{train,test}_files_with_gt.txt
              (cleinc/bts train_test_inputs/)
    kitti     KITTI raw (<date>/<drive>/image_02/data/*.png) beside data_depth_annotated/
              ({train,val}/<drive>/proj_depth/groundtruth/image_02/*.png) and
              eigen_{train,test}_files_with_gt.txt (cleinc/bts)
    ade20k    ADEChallengeData2016/{images,annotations}/{training,validation}
    voc       VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt)
    imagenet  train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (torchvision ImageFolder layout)
    cifar100  cifar-100-python/{train,test,meta}
    blink     BLINK-Benchmark/BLINK snapshot (Relative_Depth/val-00000-of-00001.parquet), val split
    spatialrgpt  SpatialRGPT-Bench_v1.json; images under image_root (omni3d/datasets)
    vqav2     v2_OpenEnded_mscoco_val2014_questions.json + v2_mscoco_val2014_annotations.json;
              COCO val2014 images under image_root (default path/val2014)
    gqa       testdev_balanced_questions.json; images under image_root (default path/images)
    mmbench   the MMBench TSV (base64 images), dev split (answers included)
    mme       MME_Benchmark_release_version (a folder per subtask); general_vqa.py has every format

Models are evaluated one at a time on cfg.device in the training precision (bf16 on GPU): the
baseline is released before the boosted model loads. Per model: features of every image (or
sliding window) are extracted in batches and cached per encoder fingerprint in shards of
`shard_images` images; probe heads train on the cached features (head_grid.py, CPU);
VQA answers (spatial and general) are greedy and batched through one generation path.

Cost at the full protocols (ViT-L/14-336, float32 cache, 576 tokens x 1024 per window, 4.7 MB):
NYU 24k train images x 6 windows = 0.7 TB and ADE20K 20k x about 6 = 0.6 TB of patch features;
the dense heads train on rows held in memory, so full-size dense probes need `max_train_images`
(2000 NYU images = 56 GB in memory). ImageNet keeps only CLS + mean token per image (8 KB):
1.28M train images = 10.5 GB. Capped runs say so in `protocol.<name>.full_protocol`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatialboost.config import BenchmarksConfig, ProbeBenchmarkConfig, SpatialBoostConfig, VQABenchmarkConfig
from spatialboost.evaluate.features import FeatureSet, cached_features, crop_to_view, encoder_fingerprint, patch_grid
from spatialboost.evaluate.general_vqa import (
    GENERAL_VQA,
    MME_SUBTASKS,
    GeneralVQAItem,
    GeneralVQAResult,
    mme_subtasks_found,
    read_gqa,
    read_mmbench,
    read_mme,
    read_vqav2,
    run_general_vqa,
)
from spatialboost.evaluate.general_vqa import METRICS as GENERAL_VQA_METRICS
from spatialboost.evaluate.head_grid import ProbeOptions
from spatialboost.evaluate.probe_targets import PatchTargets, depth_patch_target, seg_patch_target
from spatialboost.evaluate.probes import ProbeResult, classification_probe, dense_probe
from spatialboost.evaluate.protocols import (
    PROTOCOLS,
    ClassificationProtocol,
    DenseProtocol,
    WindowPlan,
    confusion_matrix,
    depth_eval_metrics,
    eigen_crop_mask,
    kb_crop_box,
    nyu_train_crop_box,
    segmentation_scores,
    stitch_windows,
    window_plan,
)
from spatialboost.evaluate.readers import (
    IGNORE_INDEX,
    Sample,
    SampleSet,
    read_ade20k,
    read_cifar100,
    read_image_folder,
    read_kitti_eigen,
    read_nyu,
    read_voc,
)
from spatialboost.evaluate.vqa import (
    VQAItem,
    VQAResult,
    read_blink,
    read_spatialrgpt,
    run_vqa_batched,
    vlm_batch_answer_fn,
)
from spatialboost.models.encoders import VisionEncoder
from spatialboost.models.preprocess import ImagePreprocess

DENSE = ("nyu", "kitti", "ade20k", "voc")
CLASSIFICATION = ("imagenet", "cifar100")
VQA = ("blink", "spatialrgpt")
SPATIALRGPT_FILE = "SpatialRGPT-Bench_v1.json"
BLINK_EXPECTED_VAL = 124  # Relative_Depth val rows (zeyofu/BLINK_Benchmark eval/saved_outputs/*/Relative_Depth.json)
VQAV2_EXPECTED_VAL = 214_354  # v2_OpenEnded_mscoco_val2014_questions.json (visualqa.org: 214K val questions)
GQA_EXPECTED_TESTDEV = 12_578  # testdev_balanced_questions.json (LLaVA's llava_gqa_testdev_balanced.jsonl)


class BenchmarkLayoutError(FileNotFoundError):
    """A configured benchmark is missing or not in its released layout; one line naming the key."""


# --- reading the benchmarks in their layouts ------------------------------------------------------


@dataclass(frozen=True)
class ProbeSplits:
    """A probe benchmark's train and test splits, protocol transforms applied."""

    name: str
    protocol: DenseProtocol | ClassificationProtocol
    train: SampleSet
    test: SampleSet


def _transformed(
    samples: SampleSet, fn: Callable[[Sample], Sample], image_fn: Callable[[np.ndarray], np.ndarray]
) -> SampleSet:
    """The split with `fn` applied to every sample (and `image_fn` to bare images)."""
    load, load_image = samples.load, samples.image
    return dataclasses.replace(samples, load=lambda i: fn(load(i)), load_image=lambda i: image_fn(load_image(i)))


def _cropped(box_of: Callable[[int, int], tuple[int, int, int, int]]) -> tuple[Callable, Callable]:
    """(sample fn, image fn) cutting image and depth to box_of(H, W)."""

    def image_fn(image: np.ndarray) -> np.ndarray:
        top, left, bottom, right = box_of(*image.shape[:2])
        return np.ascontiguousarray(image[top:bottom, left:right])

    def sample_fn(sample: Sample) -> Sample:
        top, left, bottom, right = box_of(*sample.image.shape[:2])
        depth = None if sample.depth is None else np.ascontiguousarray(sample.depth[top:bottom, left:right])
        return dataclasses.replace(sample, image=image_fn(sample.image), depth=depth)

    return sample_fn, image_fn


def _eigen_masked(sample: Sample) -> Sample:
    return dataclasses.replace(
        sample, depth=np.where(eigen_crop_mask(sample.depth.shape), sample.depth, 0).astype(np.float32)
    )


def _need(path: Path, key: str, what: str) -> Path:
    if not path.exists():
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{key}: {path} not found ({what})")
    return path


def read_nyu_benchmark(root: str | Path) -> ProbeSplits:
    """NYUd v2 in the BTS layout: train NYU-cropped, test depth zeroed outside the Eigen crop."""
    root = Path(root)
    lists = {
        s: _need(root / f"nyudepthv2_{s}_files_with_gt.txt", "nyu.path", "BTS file list") for s in ("train", "test")
    }
    train = read_nyu(_need(root / "sync", "nyu.path", "BTS train frames"), "train", lists["train"])
    test = read_nyu(_need(root / "official_splits" / "test", "nyu.path", "Eigen test frames"), "test", lists["test"])
    crop_sample, crop_image = _cropped(nyu_train_crop_box)
    return ProbeSplits(
        "nyu",
        PROTOCOLS["nyu"],
        _transformed(train, crop_sample, crop_image),
        _transformed(test, _eigen_masked, lambda image: image),
    )


def read_kitti_benchmark(root: str | Path) -> ProbeSplits:
    """KITTI Eigen split with annotated depth: KB crop on both splits, Garg crop on test depth."""
    root = Path(root)
    gt = _need(root / "data_depth_annotated", "kitti.path", "KITTI annotated depth")
    lists = {s: _need(root / f"eigen_{s}_files_with_gt.txt", "kitti.path", "BTS file list") for s in ("train", "test")}
    train = read_kitti_eigen(root, gt, lists["train"], "train", crop=None)
    test = read_kitti_eigen(root, gt, lists["test"], "test", crop="garg")  # Garg crop on the full frame first
    crop_sample, crop_image = _cropped(kb_crop_box)
    return ProbeSplits(
        "kitti",
        PROTOCOLS["kitti"],
        _transformed(train, crop_sample, crop_image),
        _transformed(test, crop_sample, crop_image),
    )


_PROBE_READERS: dict[str, Callable[[Path], ProbeSplits]] = {
    "nyu": read_nyu_benchmark,
    "kitti": read_kitti_benchmark,
    "ade20k": lambda p: ProbeSplits("ade20k", PROTOCOLS["ade20k"], read_ade20k(p, "training"), read_ade20k(p, "validation")),
    "voc": lambda p: ProbeSplits("voc", PROTOCOLS["voc"], read_voc(p, "train"), read_voc(p, "val")),
    "imagenet": lambda p: ProbeSplits("imagenet", PROTOCOLS["imagenet"], read_image_folder(p, "train"), read_image_folder(p, "val")),
    "cifar100": lambda p: ProbeSplits("cifar100", PROTOCOLS["cifar100"], read_cifar100(p, "train"), read_cifar100(p, "test")),
}  # fmt: skip


@contextlib.contextmanager
def _released_layout(name: str, path: Path) -> Iterator[None]:
    """Reader errors (a missing file, a bad value) as one BenchmarkLayoutError line naming the key."""
    try:
        yield
    except BenchmarkLayoutError:
        raise
    except (FileNotFoundError, KeyError, ValueError) as err:
        message = str(err).replace("\n", " ")
        raise BenchmarkLayoutError(
            f"evaluate.benchmarks.{name}.path: {path} is not in the released layout: {message}"
        ) from None


def read_probe_benchmark(name: str, spec: ProbeBenchmarkConfig) -> ProbeSplits:
    """The benchmark's splits, or BenchmarkLayoutError naming `evaluate.benchmarks.<name>.path`."""
    path = Path(spec.path)
    if not path.is_dir():
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{name}.path: no such folder {path}")
    with _released_layout(name, path):
        return _PROBE_READERS[name](path)


def read_vqa_benchmark(name: str, spec: VQABenchmarkConfig) -> list[VQAItem]:
    """BLINK Relative_Depth val or SpatialRGPT-bench items."""
    path = Path(spec.path)
    if not path.exists():
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{name}.path: no such file or folder {path}")
    with _released_layout(name, path):
        if name == "blink":
            items = read_blink(path, "Relative_Depth", split="val")
        else:
            file = path / SPATIALRGPT_FILE if path.is_dir() else path
            items = read_spatialrgpt(_need(file, f"{name}.path", "the bench JSON"), spec.image_root or file.parent)
    if not items:
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{name}.path: no {name} items under {path}")
    return items


@dataclass(frozen=True)
class GeneralVQASet:
    """A general VQA benchmark's items and what its protocol record needs."""

    items: list[GeneralVQAItem]
    detail: dict[str, Any]  # split / circular copies / subtasks found


def read_general_vqa_benchmark(name: str, spec: VQABenchmarkConfig) -> GeneralVQASet:
    """VQAv2 val2014, GQA test-dev balanced, an MMBench TSV or MME's release folders, or
    BenchmarkLayoutError naming `evaluate.benchmarks.<name>.path`."""
    path = Path(spec.path)
    if not path.exists():
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{name}.path: no such file or folder {path}")
    with _released_layout(name, path):
        if name == "vqav2":
            items, detail = read_vqav2(path, spec.image_root), {"split": "val2014"}
        elif name == "gqa":
            items, detail = read_gqa(path, spec.image_root), {"split": "testdev_balanced"}
        elif name == "mmbench":
            items, from_file = read_mmbench(path)
            detail = {"split": (path if path.is_file() else next(path.glob("*.tsv"))).stem,
                      "circular_copies": "in the file" if from_file else "generated (n - 1 rotations per question)"}  # fmt: skip
        else:
            items = read_mme(path)
            detail = {"subtasks": mme_subtasks_found(items)}
    if not items:
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{name}.path: no {name} items under {path}")
    paths = dict.fromkeys(i.image_path for i in items if i.image_path is not None)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:  # checked before any model loads (VQAv2 val: 40K images, about a second)
        raise BenchmarkLayoutError(f"evaluate.benchmarks.{name}: {len(missing)} of {len(paths)} images not found, "
                                   f"e.g. {missing[0]} (set evaluate.benchmarks.{name}.image_root?)")  # fmt: skip
    return GeneralVQASet(items, detail)


def subset_items(items: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    """A seeded subset of n items in their original order (all when n is None or >= len)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.sort(np.random.default_rng(seed).permutation(len(items))[:n])]


def subset_groups(items: Sequence[GeneralVQAItem], n: int | None, seed: int) -> list[GeneralVQAItem]:
    """The items of a seeded subset of n groups (MMBench's circular copies, MME's image pairs stay whole)."""
    groups = list(dict.fromkeys(item.group for item in items))
    keep = set(subset_items(groups, n, seed))
    return [item for item in items if item.group in keep]


# --- features of whole images and of sliding windows ------------------------------------------------


def window_preprocess(encoder: VisionEncoder) -> ImagePreprocess:
    """The encoder's normalisation without its resize / crop: windows already have its input size."""
    return dataclasses.replace(encoder.preprocess, mode="squash", resize_shortest=None)


@dataclass(frozen=True)
class EncoderGeometry:
    window: tuple[int, int]  # (h, w) pixels of the encoder's input
    grid: tuple[int, int]  # its patch grid
    patch_px: int


def encoder_geometry(encoder: VisionEncoder) -> EncoderGeometry:
    """Input size, patch grid and patch side of an encoder, from one forward of a blank window."""
    pre = window_preprocess(encoder)
    with torch.inference_mode():
        out = encoder(pre([np.zeros((*pre.size, 3), np.uint8)]))
    grid = patch_grid(pre, out.patch_tokens.shape[1])
    return EncoderGeometry(pre.size, grid, pre.size[0] // grid[0])


def _chunks(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def concat_features(parts: Sequence[FeatureSet]) -> FeatureSet:
    """One FeatureSet of the parts' images, in order."""
    cls = None if parts[0].cls_token is None else np.concatenate([p.cls_token for p in parts])
    return FeatureSet(tuple(i for p in parts for i in p.ids), np.concatenate([p.patch_tokens for p in parts]), cls)


@dataclass(frozen=True)
class FeatureRun:
    """Where and how features of one encoder are extracted and cached."""

    encoder: VisionEncoder
    fingerprint: str
    cache_dir: str | None
    batch_size: int
    shard_images: int


def window_features(run: FeatureRun, samples: SampleSet, plans: dict[str, WindowPlan], dataset: str) -> FeatureSet:
    """Features of every window of every image (ids "<image id>#<k>"), cached in image shards."""
    pre = window_preprocess(run.encoder)
    fill = tuple(round(255 * m) for m in pre.mean)  # padding = the mean colour: 0 after normalisation
    load = _WindowLoader(samples, plans, fill)
    parts = []
    for shard in _chunks(samples.ids, run.shard_images):
        ids = [f"{i}#{k}" for i in shard for k in range(len(plans[i]))]
        parts.append(
            cached_features(
                run.encoder,
                ids,
                load,
                cache_dir=run.cache_dir,
                dataset=dataset,
                batch_size=run.batch_size,
                fingerprint=run.fingerprint,
                preprocess=pre,
            )
        )
    return concat_features(parts)


class _WindowLoader:
    """window id "<image id>#<k>" -> its crop; windows arrive image by image, so each image is
    decoded and tiled once (only the current image's windows are held)."""

    def __init__(self, samples: SampleSet, plans: dict[str, WindowPlan], fill: Sequence[int]) -> None:
        self.samples, self.plans, self.fill = samples, plans, fill
        self.current: tuple[str, list[np.ndarray]] | None = None

    def __call__(self, window_id: str) -> np.ndarray:
        image_id, k = window_id.rsplit("#", 1)
        if self.current is None or self.current[0] != image_id:
            self.current = (image_id, self.plans[image_id].crops(self.samples.image(image_id), self.fill))
        return self.current[1][int(k)]


def pooled_features(run: FeatureRun, samples: SampleSet, dataset: str) -> FeatureSet:
    """CLS + mean patch token of every image through the encoder's own eval transform, cached in shards."""
    parts = [
        cached_features(
            run.encoder,
            list(shard),
            samples.image,
            cache_dir=run.cache_dir,
            dataset=dataset,
            batch_size=run.batch_size,
            fingerprint=run.fingerprint,
            pooled=True,
        )
        for shard in _chunks(samples.ids, run.shard_images)
    ]
    return concat_features(parts)


# --- dense probes through sliding windows -----------------------------------------------------------


@dataclass(frozen=True)
class _Truth:
    plans: dict[str, WindowPlan]
    maps: list[np.ndarray]  # per image: (H, W) depth (metres) or class ids


def _truth(samples: SampleSet, protocol: DenseProtocol, geometry: EncoderGeometry) -> _Truth:
    """Ground-truth maps and window plans of every image (sizes differ in ADE20K / VOC)."""
    plans, maps = {}, []
    for sample in samples:
        truth = sample.depth if protocol.task == "depth" else sample.seg
        if truth is None:
            raise ValueError(f"{samples.name} sample {sample.id} has no {protocol.task} ground truth")
        if truth.shape != sample.image.shape[:2]:
            raise ValueError(
                f"{samples.name} sample {sample.id}: ground truth {truth.shape} vs image {sample.image.shape[:2]}"
            )
        plans[sample.id] = window_plan(protocol, truth.shape, geometry.window, geometry.patch_px)
        maps.append(truth)
    return _Truth(plans, maps)


def _window_targets(
    truth: _Truth, ids: Sequence[str], protocol: DenseProtocol, grid: tuple[int, int], log: bool
) -> PatchTargets:
    """Patch targets of every window: the ground truth under each window's box, on its patch grid."""
    values, fractions = [], []
    for image_id, gt in zip(ids, truth.maps, strict=True):
        for box in truth.plans[image_id].boxes():
            if protocol.task == "depth":
                value, fraction = depth_patch_target(crop_to_view(gt, box, 0.0), grid, protocol.depth_range, log)
            else:
                value, fraction = seg_patch_target(crop_to_view(gt, box, IGNORE_INDEX), grid, protocol.num_classes)
            values.append(value)
            fractions.append(fraction)
    kind = "class" if protocol.task == "seg" else "log_depth" if log else "depth"
    return PatchTargets(kind, np.stack(values), np.stack(fractions))


def dense_benchmark_probe(
    run: FeatureRun, splits: ProbeSplits, options: ProbeOptions, geometry: EncoderGeometry | None = None
) -> ProbeResult:
    """Probe heads on the train windows; test windows stitched per image and scored by the protocol."""
    protocol = splits.protocol
    if not isinstance(protocol, DenseProtocol):
        raise TypeError(f"{splits.name} is not a dense benchmark")
    geometry = geometry or encoder_geometry(run.encoder)
    if protocol.min_valid_fraction is not None:
        options = dataclasses.replace(options, min_valid_fraction=protocol.min_valid_fraction)
    log = options.depth_target == "log"
    train_truth, test_truth = _truth(splits.train, protocol, geometry), _truth(splits.test, protocol, geometry)
    name = f"{splits.name}/{{}}/{protocol.name}"
    ftrain = window_features(run, splits.train, train_truth.plans, name.format(splits.train.split))
    ftest = window_features(run, splits.test, test_truth.plans, name.format(splits.test.split))
    targets = _window_targets(train_truth, splits.train.ids, protocol, geometry.grid, log)
    offsets = np.cumsum([0] + [len(test_truth.plans[i]) for i in splits.test.ids])

    def stitched(head: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k, image_id in enumerate(splits.test.ids):
            windows = head.predict_dense(ftest.subset(np.arange(offsets[k], offsets[k + 1])))  # (n, h, w, C)
            yield stitch_windows(list(windows), test_truth.plans[image_id]), test_truth.maps[k]

    def score_depth(head: Any) -> dict[str, float]:
        per_image = []
        for raw, gt in stitched(head):
            pred = np.exp(raw[..., 0]) if log else raw[..., 0]
            metrics = depth_eval_metrics(pred, gt, protocol.depth_range)
            if metrics is not None:
                per_image.append(metrics)
        if not per_image:
            raise ValueError(f"{splits.name}: no test image has valid ground truth inside the eval crop")
        return {key: float(np.mean([m[key] for m in per_image])) for key in per_image[0]}  # BTS: mean over images

    def score_seg(head: Any) -> dict[str, float]:
        confusion = np.zeros((protocol.num_classes, protocol.num_classes), np.int64)
        for logits, gt in stitched(head):
            confusion += confusion_matrix(logits.argmax(-1), gt, protocol.num_classes)
        return segmentation_scores(confusion)

    if protocol.task == "depth":
        return dense_probe(
            "depth", ftrain, targets, options=options, out_dim=1, score=score_depth, depth_range=protocol.depth_range
        )
    return dense_probe("seg", ftrain, targets, options=options, out_dim=protocol.num_classes, score=score_seg)


def classification_benchmark_probe(run: FeatureRun, splits: ProbeSplits, options: ProbeOptions) -> ProbeResult:
    """DINOv2's linear classification probe on cached CLS + mean-patch features."""
    protocol = splits.protocol
    name = f"{splits.name}/{{}}/{protocol.name}"
    ftrain = pooled_features(run, splits.train, name.format(splits.train.split))
    ftest = pooled_features(run, splits.test, name.format(splits.test.split))
    train_labels = [splits.train.label(i) for i in splits.train.ids]
    test_labels = [splits.test.label(i) for i in splits.test.ids]
    return classification_probe(ftrain, train_labels, ftest, test_labels, protocol.num_classes, options)


# --- the evaluate stage with benchmarks ------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedBenchmarks:
    """Every configured benchmark read and capped; the same for baseline and boosted."""

    probes: dict[str, ProbeSplits]
    vqa: dict[str, list[VQAItem]]
    protocol: dict[str, dict[str, Any]]  # per benchmark: protocol name, sizes, caps, full_protocol
    general: dict[str, list[GeneralVQAItem]] = dataclasses.field(default_factory=dict)  # VQAv2, GQA, MMBench, MME


def resolve_benchmarks(cfg: BenchmarksConfig) -> ResolvedBenchmarks:
    """Read every configured benchmark (fails fast, before any model loads) and apply the caps."""
    probes, vqa, general, info = {}, {}, {}, {}
    for name, spec in cfg.configured().items():
        if name in GENERAL_VQA:
            general[name], info[name] = _resolve_general(name, spec, cfg.subset_seed)
        elif isinstance(spec, ProbeBenchmarkConfig):
            full = read_probe_benchmark(name, spec)
            splits = dataclasses.replace(
                full,
                train=full.train.subset(spec.max_train_images, cfg.subset_seed),
                test=full.test.subset(spec.max_test_images, cfg.subset_seed),
            )
            probes[name] = splits
            expected = splits.protocol.expected_test_images
            info[name] = {
                "protocol": splits.protocol.name, "source": splits.protocol.source,
                "n_train": len(splits.train), "n_test": len(splits.test),
                "available_train": len(full.train), "available_test": len(full.test), "expected_test": expected,
                "max_train_images": spec.max_train_images, "max_test_images": spec.max_test_images,
                "full_protocol": len(splits.train) == len(full.train) and len(splits.test) == len(full.test)
                and (expected is None or len(full.test) == expected),
            }  # fmt: skip
        else:
            items = read_vqa_benchmark(name, spec)
            vqa[name] = subset_items(items, spec.max_items, cfg.subset_seed)
            expected = BLINK_EXPECTED_VAL if name == "blink" else None
            info[name] = {
                "protocol": "blink-relative-depth/val" if name == "blink" else "spatialrgpt-bench/v1",
                "source": "zeyofu/BLINK_Benchmark eval/evaluate.py (exact match)" if name == "blink"
                else "AnjieCheng/SpatialRGPT scripts/srgpt/eval/evaluate_spatial_with_gpt4.py (rules instead of the GPT judge)",
                "n_test": len(vqa[name]), "available_test": len(items), "expected_test": expected,
                "max_items": spec.max_items,
                "full_protocol": len(vqa[name]) == len(items) and (expected is None or len(items) == expected),
            }  # fmt: skip
    return ResolvedBenchmarks(probes, vqa, info, general)


_GENERAL_PROTOCOLS = {
    "vqav2": ("vqav2-official-accuracy/val2014", "GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py "
              "(the paper: test-dev, scored by the EvalAI server)"),
    "gqa": ("gqa-exact-match/testdev-balanced", "GQA eval.py accuracy; answers as LLaVA's convert_gqa_for_eval"),
    "mmbench": ("mmbench-circular", "MMBench CircularEval with its evaluator's choice rules (can_infer option / text), "
                "no GPT judge"),
    "mme": ("mme/perception+cognition", "MME eval_tool/calculation.py (acc + acc+ per subtask)"),
}  # fmt: skip


def _resolve_general(name: str, spec: VQABenchmarkConfig, seed: int) -> tuple[list[GeneralVQAItem], dict[str, Any]]:
    """(the items asked, the protocol record) of one general VQA benchmark; max_items counts groups."""
    full = read_general_vqa_benchmark(name, spec)
    items = subset_groups(full.items, spec.max_items, seed)
    expected = {"vqav2": VQAV2_EXPECTED_VAL, "gqa": GQA_EXPECTED_TESTDEV}.get(name)
    complete = expected is None or len(full.items) == expected
    if name == "mme":
        complete = full.detail["subtasks"] == list(MME_SUBTASKS)
    unit = {"mmbench": "circular questions", "mme": "images"}.get(name, "questions")
    n_groups, all_groups = len({i.group for i in items}), len({i.group for i in full.items})
    protocol, source = _GENERAL_PROTOCOLS[name]
    if name == "mmbench":
        protocol += f"/{full.detail['split']}"  # dev (answers included) or whatever TSV was configured
    info = {
        "protocol": protocol, "source": source, "n_test": n_groups, "available_test": all_groups, "unit": unit,
        "n_asked": len(items), "expected_test": expected, "max_items": spec.max_items, **full.detail,
        "full_protocol": len(items) == len(full.items) and complete,
    }  # fmt: skip
    return items, info


def load_eval_model(cfg: SpatialBoostConfig, folder: str | Path) -> tuple[Any, Any]:
    """(vlm, tokenizer) on cfg.device in the training precision (bf16 on GPU, fp32 on CPU), eval mode."""
    from spatialboost.train.distributed import resolve_device
    from spatialboost.train.loop import resolve_precision
    from spatialboost.train.stage import load_initial_model

    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.train.precision, device) or torch.float32
    vlm, tokenizer = load_initial_model(folder, dtype)
    return vlm.to(device).eval(), tokenizer


def free_device_memory() -> None:
    """Collect what the caller has just dropped (`del vlm`) and return cached GPU memory, before
    the next model loads (two 7B models do not fit comfortably)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class BenchmarkOutcome:
    """One model's results: probe results and VQA results by benchmark, and its encoder family."""

    probes: dict[str, ProbeResult]
    vqa: dict[str, VQAResult]
    family: str
    general: dict[str, GeneralVQAResult] = dataclasses.field(default_factory=dict)


def evaluate_model_on_benchmarks(
    cfg: SpatialBoostConfig, folder: str | Path, resolved: ResolvedBenchmarks, options: ProbeOptions
) -> BenchmarkOutcome:
    """Load one VLM, probe its frozen encoder on every probe benchmark, quiz it on the VQA ones, free it."""
    ev, bench = cfg.evaluate, cfg.evaluate.benchmarks
    vlm, tokenizer = load_eval_model(cfg, folder)
    family = vlm.encoder.family
    run = FeatureRun(
        vlm.encoder, encoder_fingerprint(vlm.encoder), ev.cache_dir, bench.feature_batch_size, bench.shard_images
    )
    probes = {}
    for name, splits in resolved.probes.items():
        if name in DENSE:
            probes[name] = dense_benchmark_probe(run, splits, options)
        else:
            probes[name] = classification_benchmark_probe(run, splits, options)
    answer = vlm_batch_answer_fn(vlm, tokenizer, ev.max_new_tokens)
    vqa = {name: run_vqa_batched(answer, items, ev.vqa_batch_size) for name, items in resolved.vqa.items()}
    general = {name: run_general_vqa(answer, items, ev.vqa_batch_size) for name, items in resolved.general.items()}
    del run, answer, vlm, tokenizer  # nothing returned refers to the model
    free_device_memory()
    return BenchmarkOutcome(probes, vqa, family, general)


VQA_METRICS = {
    "blink": {"relative_depth_acc": "relative_depth_acc"},
    "spatialrgpt": {
        "qualitative_acc": "qualitative_acc",
        "quantitative_acc": "quantitative_acc",
        "spatialrgpt_acc": "overall_acc",
    },
}
"""benchmark -> {VQAResult.summary key: metrics/evaluate.json key}."""


def outcome_metrics(outcome: BenchmarkOutcome, n_boot: int = 1000) -> dict[str, dict[str, dict[str, float | None]]]:
    """{benchmark: {metric: {"mean", "std"}}}: probes over seeds, VQA over an item bootstrap."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, result in outcome.probes.items():
        out[name] = {k: {"mean": _finite(v["mean"]), "std": _finite(v["std"])} for k, v in result.summary.items()}
    for name, result in outcome.vqa.items():
        summary = result.summary(n_boot)
        out[name] = {
            key: {"mean": _finite(summary[src]["mean"]), "std": _finite(summary[src]["std"])} if src in summary
            else {"mean": None, "std": None}
            for src, key in VQA_METRICS[name].items()
        }  # fmt: skip
    for name, result in outcome.general.items():
        summary = result.summary(n_boot)
        out[name] = {
            key: {"mean": _finite(summary[key]["mean"]), "std": _finite(summary[key]["std"])}
            for key in GENERAL_VQA_METRICS[name]
        }
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _finite_dict(values: dict[str, float]) -> dict[str, float | None]:
    return {key: _finite(value) for key, value in values.items()}


def evaluate_benchmarks(
    cfg: SpatialBoostConfig, folders: dict[str, str | Path], options: ProbeOptions
) -> dict[str, Any]:
    """Baseline and boosted on every configured benchmark; writes the report and VQA records.

    Returns {"metrics": {"baseline": {benchmark: {metric: {mean, std}}}, "boosted": {...},
    "protocol": {benchmark: {...}}} (metrics/evaluate.json), "detail": {run: {chosen heads}},
    "report": path of report.md}.
    """
    from spatialboost.evaluate.paper import write_benchmark_report
    from spatialboost.io import write_json_atomic

    resolved = resolve_benchmarks(cfg.evaluate.benchmarks)
    outcomes = {run: evaluate_model_on_benchmarks(cfg, folder, resolved, options) for run, folder in folders.items()}
    metrics: dict[str, Any] = {run: outcome_metrics(o) for run, o in outcomes.items()}
    metrics["protocol"] = resolved.protocol
    out = Path(cfg.evaluate.output)
    out.mkdir(parents=True, exist_ok=True)
    for run, outcome in outcomes.items():
        records = {name: {"metrics": r.metrics, "records": list(r.records)} for name, r in outcome.vqa.items()}
        records.update({name: {"metrics": _finite_dict(r.metrics), "records": list(r.records)}
                        for name, r in outcome.general.items()})  # fmt: skip
        write_json_atomic(out / f"vqa_{run}.json", records)
    family = outcomes["boosted"].family if "boosted" in outcomes else next(iter(outcomes.values())).family
    report = write_benchmark_report(metrics, family, out)
    detail = {run: {name: list(r.chosen) for name, r in o.probes.items()} for run, o in outcomes.items()}
    return {"metrics": metrics, "detail": detail, "report": str(report)}
