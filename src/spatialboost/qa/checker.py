"""An independent checker: every typed answer recomputed from an RGB-D dataset's own ground truth.

    rates = check_output("data/qa", "data/world")          # every sidecar shard of a synthesis
    rates["choice_bool"]["rate"], rates["numeric"]["rate"]

It reads the sidecar's raw JSON (not qa's classes) and the dataset's annotations and depth maps
(not the scene records), and implements each relation itself, in a few lines of numpy:

- canonical frame: up = -gravity; forward = the optical axis made horizontal; right =
  forward x up; origin on the ground below the camera (annotation camera.height_m);
- object centre, height, footprint: from `box_camera` (centre, corners, rotation, size);
- left/right: canonical x of the centres; above/below: canonical z; in front/behind and
  distances to the camera: Euclidean norm of the camera-frame centre; distances between
  objects: between centres; points: the depth map at (row y, column x), and the ray length.

A bool or choice answer agrees when it equals the truth; a number (or every component of a
box) is within its stated tolerance. Caption turns (text) are counted as unchecked. Numeric
types also report their errors against the world's exact boxes: the median absolute error (per
component for a box: centre x, y, z, length, width, height, and the size error over all three
extents), and the share within 25% of the truth (SpatialRGPT-bench's quantitative criterion,
independent of our own bands).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.data.rgbd import RGBDDataset

LETTERS = "ABCDEFGH"
BOX_COMPONENTS = ("center_x", "center_y", "center_z", "length", "width", "height")
RELATIVE_CRITERION = 0.25
"""A number counts as right within 25% of the truth (SpatialRGPT-bench's 0.75 gt <= pred <= 1.25 gt)."""


class WorldTruth:
    """Ground truth of one image: object centres in camera and canonical frames, box sizes, depth."""

    def __init__(self, dataset: RGBDDataset, image_id: str) -> None:
        ann = dataset.annotation(image_id)
        self.depth = dataset.depth(image_id)  # (H, W) metres, z-depth
        row = dataset.row(image_id)
        self.fx, self.fy, self.cx, self.cy = row.fx, row.fy, row.cx, row.cy
        up = -np.asarray(ann["gravity_cam"], dtype=float)
        up /= np.linalg.norm(up)
        forward = np.array([0.0, 0.0, 1.0]) - up[2] * up
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, up)
        self.rotation = np.stack([right, forward, up])  # rows: canonical x, y, z in the camera frame
        self.origin_height = float(ann["camera"]["height_m"])
        self.objects = {obj["instance_id"]: obj for obj in ann["objects"]}

    def center_cam(self, object_id: int) -> np.ndarray:
        return np.asarray(self.objects[object_id]["box_camera"]["center"], dtype=float)

    def center(self, object_id: int) -> np.ndarray:
        """(3,) canonical centre, metres."""
        return self.rotation @ self.center_cam(object_id) + np.array([0.0, 0.0, self.origin_height])

    def camera_distance(self, object_id: int) -> float:
        return float(np.linalg.norm(self.center_cam(object_id)))

    def extents(self, object_id: int) -> tuple[float, float, float]:
        """(length, width, height): the box's horizontal sides (longer first) and its vertical extent."""
        box = self.objects[object_id]["box_camera"]
        corners = np.asarray(box["corners"], dtype=float)  # (8, 3)
        height = float(np.ptp(corners @ self.rotation[2]))
        axes = np.asarray(box["rotation"], dtype=float)  # columns: box axes in the camera frame
        verticality = np.abs(axes.T @ self.rotation[2])
        horizontal = [float(s) for k, s in enumerate(box["size"]) if k != int(np.argmax(verticality))]
        return max(horizontal), min(horizontal), height

    def point_depth(self, x: int, y: int) -> float:
        return float(self.depth[y, x])

    def point_range(self, x: int, y: int) -> float:
        ray = np.array([(x + 0.5 - self.cx) / self.fx, (y + 0.5 - self.cy) / self.fy, 1.0])
        return float(self.depth[y, x] * np.linalg.norm(ray))


def true_relation(truth: WorldTruth, qtype: str, ids: list[int]) -> str:
    """The true side of a (a, b) relation: left/right, above/below, in front of/behind."""
    a, b = ids
    if qtype == "left_right":
        return "left" if truth.center(a)[0] < truth.center(b)[0] else "right"
    if qtype == "above_below":
        return "above" if truth.center(a)[2] > truth.center(b)[2] else "below"
    return "in front of" if truth.camera_distance(a) < truth.camera_distance(b) else "behind"


def check_discrete(truth: WorldTruth, turn: dict[str, Any]) -> bool:
    """Does a bool or choice answer agree with the ground truth?"""
    qtype, ids, value = turn["qtype"], turn["object_ids"], turn["value"]
    if qtype == "point_closer":
        (ax, ay), (bx, by) = turn["points"][:2]
        a_closer = truth.point_depth(ax, ay) < truth.point_depth(bx, by)
        if turn["answer_type"] == "choice":
            return value == ("A" if a_closer else "B")
        return value == (a_closer == (turn["asked"] == "closer"))
    if qtype in ("left_right", "above_below", "front_behind"):
        side = true_relation(truth, qtype, ids)
        return value == side if turn["answer_type"] == "choice" else value == (turn["asked"] == side)
    if qtype in ("closest_to", "farthest_from"):
        anchor, options = ids[0], ids[1:]
        distances = [float(np.linalg.norm(truth.center(o) - truth.center(anchor))) for o in options]
    elif qtype == "closest_to_camera":
        options = ids
        distances = [truth.camera_distance(o) for o in options]
    else:
        raise ValueError(f"no discrete check for question type {qtype!r}")
    best = int(np.argmax(distances)) if qtype == "farthest_from" else int(np.argmin(distances))
    return value == LETTERS[best]


def true_numbers(truth: WorldTruth, turn: dict[str, Any]) -> list[float]:
    """The true value(s) of a number or box answer, metres."""
    qtype, ids = turn["qtype"], turn["object_ids"]
    if qtype == "point_depth":
        x, y = turn["points"][0]
        return [truth.point_depth(x, y)]
    if qtype == "object_distance":
        return [truth.camera_distance(ids[0])]
    if qtype == "object_height":
        return [truth.extents(ids[0])[2]]
    if qtype == "object_box":
        return [*truth.center(ids[0]).tolist(), *truth.extents(ids[0])]
    if qtype == "distance_between":
        return [float(np.linalg.norm(truth.center(ids[0]) - truth.center(ids[1])))]
    raise ValueError(f"no numeric check for question type {qtype!r}")


def within_tolerance(truth: WorldTruth, turn: dict[str, Any]) -> tuple[bool, list[float]]:
    """(every component within its tolerance, the errors value - truth in metres)."""
    values = turn["value"] if isinstance(turn["value"], list) else [turn["value"]]
    tolerances = turn["tolerance"] if isinstance(turn["tolerance"], list) else [turn["tolerance"]]
    errors = [float(v) - t for v, t in zip(values, true_numbers(truth, turn), strict=True)]
    return all(abs(e) <= tol for e, tol in zip(errors, tolerances, strict=True)), errors


def check_sidecar(records: Iterable[dict[str, Any]], dataset: RGBDDataset, max_examples: int = 20) -> dict[str, Any]:
    """Agreement of every typed turn of the sidecar records with the dataset's ground truth.

    Returns choice_bool and numeric {n, agree, rate}, per question type {n, agree}, unchecked
    (text turns), images, and up to max_examples disagreements (image, turn, truth or errors).
    """
    discrete, numeric = Counter(), Counter()
    by_qtype: dict[str, Counter] = {}
    errors: dict[str, list[list[float]]] = {}
    truths: dict[str, list[list[float]]] = {}
    examples: list[dict[str, Any]] = []
    unchecked, images = 0, set()
    cache: dict[str, WorldTruth] = {}
    for record in records:
        image_id = record["image_id"]
        images.add(image_id)
        if image_id not in cache:
            cache.clear()  # records of one image are consecutive; keep memory flat
            cache[image_id] = WorldTruth(dataset, image_id)
        truth = cache[image_id]
        for turn in record["turns"]:
            kind = turn["answer_type"]
            if kind == "text":
                unchecked += 1
                continue
            if kind in ("bool", "choice"):
                ok, detail = check_discrete(truth, turn), None
                tally = discrete
            else:
                ok, detail = within_tolerance(truth, turn)
                tally = numeric
                errors.setdefault(turn["qtype"], []).append(detail)
                truths.setdefault(turn["qtype"], []).append(true_numbers(truth, turn))
            tally["n"] += 1
            tally["agree"] += int(ok)
            stats = by_qtype.setdefault(turn["qtype"], Counter())
            stats["n"] += 1
            stats["agree"] += int(ok)
            if not ok and len(examples) < max_examples:
                examples.append(
                    {
                        "image_id": image_id,
                        "qtype": turn["qtype"],
                        "question": turn["question"],
                        "answer": turn["answer"],
                        "value": turn["value"],
                        "errors": detail,
                    }
                )
    return {
        "images": len(images),
        "choice_bool": _rate(discrete),
        "numeric": _rate(numeric),
        "by_qtype": {k: _rate(v) | _error_stats(k, errors.get(k), truths.get(k)) for k, v in sorted(by_qtype.items())},
        "label_errors": _headline_errors(errors),
        "unchecked_text_turns": unchecked,
        "disagreements": examples,
    }


def _error_stats(qtype: str, errors: list[list[float]] | None, truths: list[list[float]] | None) -> dict[str, Any]:
    """Median absolute errors (metres) and the share within RELATIVE_CRITERION of the truth."""
    if not errors or truths is None:
        return {}
    err, true = np.abs(np.array(errors, dtype=np.float64)), np.abs(np.array(truths, dtype=np.float64))
    if qtype == "object_box":
        sizes = err[:, 3:]
        return {
            "median_abs_error_m": dict(zip(BOX_COMPONENTS, np.median(err, axis=0).round(4).tolist(), strict=True)),
            "size_median_abs_error_m": round(float(np.median(sizes)), 4),
            "size_within_25pct": round(float((sizes <= RELATIVE_CRITERION * true[:, 3:]).all(axis=1).mean()), 4),
        }
    if qtype == "point_depth":
        return {"median_abs_error_m": round(float(np.median(err)), 4)}
    return {
        "median_abs_error_m": round(float(np.median(err)), 4),
        "within_25pct": round(float((err[:, 0] <= RELATIVE_CRITERION * true[:, 0]).mean()), 4),
    }


def _headline_errors(errors: dict[str, list[list[float]]]) -> dict[str, Any]:
    """The medians a reader looks for first: box size per extent, distances to the camera and between objects, metres."""
    out: dict[str, Any] = {}
    if errors.get("object_box"):
        sizes = np.abs(np.array(errors["object_box"], dtype=np.float64))[:, 3:]
        out["box_size_median_abs_error_m"] = dict(
            zip(BOX_COMPONENTS[3:], np.median(sizes, axis=0).round(4).tolist(), strict=True)
        )
    for qtype in ("object_distance", "distance_between"):
        if errors.get(qtype):
            out[f"{qtype}_median_abs_error_m"] = round(float(np.median(np.abs(errors[qtype]))), 4)
    return out


def _rate(tally: Counter) -> dict[str, float | int]:
    n, agree = tally["n"], tally["agree"]
    return {"n": n, "agree": agree, "rate": agree / n if n else float("nan")}


def check_output(
    qa_dir: str | os.PathLike[str], dataset_root: str | os.PathLike[str], max_examples: int = 20
) -> dict[str, Any]:
    """`check_sidecar` over every sidecar shard (shard-NNNNN.jsonl) of a synthesis output folder."""
    paths = sorted(Path(qa_dir).glob("shard-[0-9][0-9][0-9][0-9][0-9].jsonl"))
    if not paths:
        raise FileNotFoundError(f"{qa_dir}: no sidecar shards (shard-NNNNN.jsonl)")

    def records():
        for path in paths:
            with open(path, encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())

    return check_sidecar(records(), RGBDDataset(dataset_root), max_examples)
