"""Tiny copies of every paper benchmark in its released layout, for tests and smoke runs.

    mapping = write_benchmark_fixtures(tmp_path / "benchmarks")
    cfg = load_config("configs/paper.yaml", [f"evaluate.benchmarks={json.dumps(mapping)}"])

Each benchmark gets a few synthetic images with consistent ground truth (depth grows down the
image and the image darkens with depth; segmentation classes are horizontal bands), written in
the layout `evaluate/benchmarks.py` reads: NYU (BTS lists, 480 x 640, 16-bit mm PNG), KITTI
(raw frames 375 x 1242, sparse 16-bit /256 annotated depth, one Eigen line with gt "None"),
ADE20K (ADEChallengeData2016, 0 = other), VOC 2012 (palette PNGs, 255 borders), ImageNet class
folders (.JPEG), CIFAR-100 (Python-2 pickles with bytes keys), BLINK (HF parquet, a val and a
hidden-answer test file), SpatialRGPT-Bench_v1.json with its images, and the general VQA ones
(VQAv2 val2014 questions + annotations + COCO-named images, GQA test-dev balanced + images, an
MMBench TSV with circular copies and base64 images, MME's release folders in both layouts).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from spatialboost.evaluate.demo_bench import BLINK_PROMPT, BLINK_QUESTION, BLINK_SCHEMA


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        kwargs.setdefault("compress_level", 1)  # fixtures: fast to write, size does not matter
    Image.fromarray(array, mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)


def _scene(rng: np.random.Generator, height: int, width: int, far_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8, depth (H, W) metres): depth from far at the top to near at the bottom."""
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    depth = np.broadcast_to(far_m * (1.0 - 0.85 * rows), (height, width)).astype(np.float32)
    depth = depth * (1 + 0.05 * rng.standard_normal((1, width)).astype(np.float32))
    shade = np.clip(255 * (1 - depth / (1.2 * far_m)), 0, 255)
    noise = rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    image = np.stack([shade, shade * 0.8 + 20, 255 - shade], -1) + noise
    return np.clip(image, 0, 255).astype(np.uint8), depth


def _bands(height: int, width: int, classes: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, label map): one horizontal band per class, each with its own colour."""
    label = np.zeros((height, width), np.int32)
    edges = np.linspace(0, height, len(classes) + 1).astype(int)
    image = np.zeros((height, width, 3), np.float64)
    for k, cls in enumerate(classes):
        label[edges[k] : edges[k + 1]] = cls
        image[edges[k] : edges[k + 1]] = [(cls * 53) % 256, (cls * 97) % 256, (cls * 31) % 256]
    image += rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_nyu(root: Path, rng: np.random.Generator, n_train: int = 3, n_test: int = 2) -> Path:
    lists = {}
    for split, folder, n in (("train", root / "sync", n_train), ("test", root / "official_splits" / "test", n_test)):
        lines = []
        for i in range(n):
            scene = f"{'kitchen_0028b' if split == 'train' else 'bathroom'}"
            image, depth = _scene(rng, 480, 640, far_m=8.0)
            mm = (depth * 1000).astype(np.uint16)
            mm[:20, :30] = 0  # missing depth stays missing
            _save(folder / scene / f"rgb_{i:05d}.jpg", image, quality=95)
            _save(folder / scene / f"sync_depth_{i:05d}.png", mm)
            slash = "/" if split == "train" else ""  # BTS: the train list's paths start with "/"
            lines.append(f"{slash}{scene}/rgb_{i:05d}.jpg {slash}{scene}/sync_depth_{i:05d}.png 518.8579")
        lists[split] = root / f"nyudepthv2_{split}_files_with_gt.txt"
        lists[split].write_text("\n".join(lines))  # BTS's lists have no final newline
    return root


def write_kitti(root: Path, rng: np.random.Generator, n_train: int = 2, n_test: int = 2) -> Path:
    for split, drive_no, n in (("train", 1, n_train), ("test", 2, n_test)):
        drive = f"2011_09_26_drive_{drive_no:04d}_sync"
        lines = []
        for i in range(n + 1):  # one more frame, listed with gt "None" (no annotated depth)
            frame = f"{i:010d}.png"
            image, depth = _scene(rng, 375, 1242, far_m=70.0)
            _save(root / "2011_09_26" / drive / "image_02" / "data" / frame, image)
            rgb = f"2011_09_26/{drive}/image_02/data/{frame}"
            if i == n:
                lines.append(f"{rgb} None 721.5377")
                continue
            sparse = (depth * 256).astype(np.uint16) * (rng.random(depth.shape) < 0.3)  # LiDAR: sparse
            sparse[:120] = 0  # no LiDAR above the horizon
            folder = "train" if split == "train" else "val"
            gt = f"{drive}/proj_depth/groundtruth/image_02/{frame}"
            _save(root / "data_depth_annotated" / folder / gt, sparse.astype(np.uint16))
            lines.append(f"{rgb} {gt} 721.5377")
        (root / f"eigen_{split}_files_with_gt.txt").write_text("\n".join(lines))
    return root


def write_ade20k(root: Path, rng: np.random.Generator, n_train: int = 3, n_val: int = 2) -> Path:
    base = root / "ADEChallengeData2016"
    for split, prefix, n in (("training", "train", n_train), ("validation", "val", n_val)):
        for i in range(n):
            image, label = _bands(96, 128, [1, 4, 12, 150, 0], rng)  # 0 = "other": not scored
            _save(base / "images" / split / f"ADE_{prefix}_{i + 1:08d}.jpg", image, quality=95)
            _save(base / "annotations" / split / f"ADE_{prefix}_{i + 1:08d}.png", label.astype(np.uint8), "L")
    (base / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n" + "".join(f"{k}\t0.01\t1\t1\tclass{k};alias\n" for k in range(1, 151))
    )
    return root


def write_voc(root: Path, rng: np.random.Generator, n_train: int = 3, n_val: int = 2) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    palette = [v for k in range(256) for v in ((k * 37) % 256, (k * 91) % 256, (k * 13) % 256)]
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 100)):
        ids = [f"2007_{offset + i:06d}" for i in range(n)]
        for image_id in ids:
            image, label = _bands(96, 128, [0, 15, 7, 20], rng)
            label[:, :2] = 255  # object borders: ignored
            png = Image.fromarray(label.astype(np.uint8), "P")
            png.putpalette(palette)
            (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            png.save(base / "SegmentationClass" / f"{image_id}.png")
            _save(base / "JPEGImages" / f"{image_id}.jpg", image, quality=95)
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_imagenet(root: Path, rng: np.random.Generator, n_classes: int = 3, n_train: int = 4, n_val: int = 2) -> Path:
    for c in range(n_classes):
        wnid = f"n0{1440764 + c}"
        colour = np.array([(c * 90) % 256, (c * 150 + 40) % 256, (c * 60 + 100) % 256], np.float64)
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                image = np.clip(colour + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * 100 + i:08d}.JPEG"
                _save(root / split / wnid / name, image, format="JPEG", quality=95)
    return root


def write_cifar100(root: Path, rng: np.random.Generator, n_train: int = 20, n_test: int = 10) -> Path:
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [int(k % 4) for k in range(n)]
        images = np.stack([np.full((3, 32, 32), 40 + 60 * y, np.uint8) for y in labels])
        images = np.clip(images + rng.normal(0, 10, images.shape), 0, 255).astype(np.uint8).reshape(n, 3072)
        batch = {b"filenames": [f"img_{k}.png".encode() for k in range(n)], b"fine_labels": labels,
                 b"coarse_labels": [0] * n, b"data": images}  # fmt: skip
        (base / split).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"class{k}".encode() for k in range(100)], b"coarse_label_names": [b"all"]}
    (base / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_blink(root: Path, rng: np.random.Generator, n_val: int = 4) -> Path:
    folder = root / "Relative_Depth"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        rows = []
        for i in range(n_val):
            image, _ = _scene(rng, 96, 128, far_m=8.0)
            answer = "hidden" if split == "test" else ("(A)", "(B)")[i % 2]
            rows.append(
                {
                    "idx": f"{split}_Relative_Depth_{i + 1}",
                    "question": BLINK_QUESTION,
                    "sub_task": "Relative_Depth",
                    "image_1": {"bytes": _jpeg(image), "path": None},
                    "image_2": None,
                    "image_3": None,
                    "image_4": None,
                    "choices": ["A is closer", "B is closer"],
                    "answer": answer,
                    "prompt": BLINK_PROMPT,
                    "explanation": "",
                }
            )
        pq.write_table(pa.Table.from_pylist(rows, schema=BLINK_SCHEMA), folder / f"{split}-00000-of-00001.parquet")
    return root


def write_spatialrgpt(root: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """(SpatialRGPT-Bench_v1.json, image root)."""
    image_root = root / "omni3d" / "datasets"
    image, _ = _scene(rng, 96, 128, far_m=8.0)
    _save(image_root / "SUNRGBD" / "kv2" / "image" / "0001.jpg", image, quality=95)
    info = {"file_path": "SUNRGBD/kv2/image/0001.jpg", "height": 96, "width": 128}
    boxes = [[10.0, 20.0, 50.0, 70.0], [70.0, 30.0, 120.0, 90.0]]
    qa = [
        ("qualitative", "left_predicate", "Is Region [0] to the left of Region [1]?", "Yes, Region [0] is to the left of Region [1]."),
        ("qualitative", "tall_choice", "Which is taller, Region [0] or Region [1]?", "Region [1] is taller."),
        ("quantitative", "distance_data", "How far apart are Region [0] and Region [1]?", "They are 1.5 meters apart."),
        ("quantitative", "width_data", "How wide is Region [0]?", "Region [0] is 40 centimeters wide."),
        ("quantitative", "direction", "If you are at Region [0], where will you find Region [1]?", "Region [1] is roughly at 3 o'clock from Region [0]."),
    ]  # fmt: skip
    rows = [
        {"id": f"srgpt-{k}", "image_info": info, "text_q": question,
         "qa_info": {"type": kind, "category": category},
         "conversations": [{"from": "human", "value": "<image>\n" + question.replace("Region [0]", "<mask>")},
                           {"from": "gpt", "value": answer}],
         "bbox": boxes}
        for k, (kind, category, question, answer) in enumerate(qa)
    ]  # fmt: skip
    path = root / "SpatialRGPT-Bench_v1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path, image_root


def write_vqav2(root: Path, rng: np.random.Generator) -> Path:
    """v2_OpenEnded_mscoco_val2014_questions.json + annotations (10 answers each) + val2014/ images."""
    qa = [
        (42, "What colour is the sky?", ["blue"] * 8 + ["grey"] * 2, "other"),
        (42, "Is it daytime?", ["yes"] * 10, "yes/no"),
        (73, "How many cubes are there?", ["2"] * 6 + ["3"] * 4, "number"),
    ]
    questions, annotations = [], []
    for k, (image_id, question, answers, answer_type) in enumerate(qa):
        qid = image_id * 1000 + k
        questions.append({"image_id": image_id, "question": question, "question_id": qid})
        annotations.append({
            "question_id": qid, "image_id": image_id, "question_type": question.split()[0].lower(),
            "answer_type": answer_type, "multiple_choice_answer": max(set(answers), key=answers.count),
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
        })  # fmt: skip
    for image_id in sorted({q["image_id"] for q in questions}):
        _save(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg", _scene(rng, 48, 64, far_m=6.0)[0], quality=90)
    meta = {"info": {}, "license": {}, "data_subtype": "val2014"}
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({**meta, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions})
    )
    (root / "v2_mscoco_val2014_annotations.json").write_text(
        json.dumps({**meta, "data_type": "mscoco", "annotations": annotations})
    )
    return root


def write_gqa(root: Path, rng: np.random.Generator) -> Path:
    """testdev_balanced_questions.json + images/<imageId>.jpg."""
    rows = {
        "20968379": ("n161313", "Is the cube to the left of the sphere?", "yes", "verify"),
        "20968380": ("n161313", "What colour is the cube?", "red", "query"),
        "20968381": ("n288870", "Which is bigger, the cube or the cone?", "cone", "choose"),
    }
    data = {
        qid: {"imageId": image, "question": question, "answer": answer, "fullAnswer": f"The answer is {answer}.",
              "isBalanced": True, "types": {"structural": kind, "semantic": "rel", "detailed": kind}}
        for qid, (image, question, answer, kind) in rows.items()
    }  # fmt: skip
    for image in sorted({v[0] for v in rows.values()}):
        _save(root / "images" / f"{image}.jpg", _scene(rng, 48, 64, far_m=6.0)[0], quality=90)
    (root / "testdev_balanced_questions.json").write_text(json.dumps(data))
    return root


MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split"]  # fmt: skip


def write_mmbench(path: Path, rng: np.random.Generator, circular: bool = True) -> Path:
    """An MMBench TSV (pandas-style: empty fields for absent options and hints). With `circular`,
    every question's rotations are rows index + k * 1e6 whose image field names the main row."""
    questions = [
        (0, "What shape is the largest object?", "", ["cube", "sphere", "cone", "cylinder"], "A", "attribute_recognition"),
        (1, "Is the scene indoors or outdoors?", "Look at the sky.", ["indoors", "outdoors"], "B", "scene"),
    ]  # fmt: skip
    rows = []
    for index, question, hint, options, answer, category in questions:
        image = base64.b64encode(_jpeg(_scene(rng, 48, 64, far_m=6.0)[0])).decode()
        n = len(options)
        for k in range(n if circular else 1):
            shown = [options[(j + k) % n] for j in range(n)]
            letter = "ABCD"[(("ABCD".index(answer)) - k) % n]
            cells = dict(zip("ABCD", [*shown, "", "", ""][:4], strict=True))
            rows.append({"index": index + k * 1_000_000, "question": question, "hint": hint, **cells, "answer": letter,
                         "category": category, "image": image if k == 0 else str(index), "source": "fixture",
                         "l2-category": "perception", "comment": "", "split": "dev"})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, MMBENCH_COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_mme(root: Path, rng: np.random.Generator) -> Path:
    """MME_Benchmark_release_version with count (flat), artwork (images/ + questions_answers_YN/) and
    code_reasoning (flat, cognition): two images each, two yes/no questions per image."""
    questions = {
        "count": ["Are there two objects in this image?", "Are there five objects in this image?"],
        "artwork": ["Is this artwork a painting?", "Is this artwork a sculpture?"],
        "code_reasoning": ["Does this code print 3?", "Does this code print 4?"],
    }
    for subtask, (first, second) in questions.items():
        split = subtask == "artwork"
        for k in range(2):
            stem = f"{k + 1:05d}"
            image_dir = root / subtask / "images" if split else root / subtask
            qa_dir = root / subtask / "questions_answers_YN" if split else root / subtask
            _save(image_dir / f"{stem}.{'jpg' if k == 0 else 'png'}", _scene(rng, 48, 64, far_m=6.0)[0])
            qa_dir.mkdir(parents=True, exist_ok=True)
            (qa_dir / f"{stem}.txt").write_text(f"{first} Please answer yes or no.\tYes\n"
                                                f"{second} Please answer yes or no.\tNo\n")  # fmt: skip
    return root


def write_benchmark_fixtures(folder: str | Path, seed: int = 0) -> dict[str, dict[str, str]]:
    """Write every benchmark's fixture under `folder`; returns the `evaluate.benchmarks` mapping."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    srgpt, image_root = write_spatialrgpt(folder / "SpatialRGPT-Bench", rng)
    return {
        "nyu": {"path": str(write_nyu(folder / "nyu_depth_v2", rng))},
        "kitti": {"path": str(write_kitti(folder / "kitti_dataset", rng))},
        "ade20k": {"path": str(write_ade20k(folder / "ade20k", rng))},
        "voc": {"path": str(write_voc(folder / "voc", rng))},
        "imagenet": {"path": str(write_imagenet(folder / "imagenet", rng))},
        "cifar100": {"path": str(write_cifar100(folder / "cifar100", rng))},
        "blink": {"path": str(write_blink(folder / "BLINK", rng))},
        "spatialrgpt": {"path": str(srgpt), "image_root": str(image_root)},
        "vqav2": {"path": str(write_vqav2(folder / "VQAv2", rng))},
        "gqa": {"path": str(write_gqa(folder / "GQA", rng))},
        "mmbench": {"path": str(write_mmbench(folder / "MMBench" / "mmbench_dev_20230712.tsv", rng))},
        "mme": {"path": str(write_mme(folder / "MME_Benchmark_release_version", rng))},
    }
