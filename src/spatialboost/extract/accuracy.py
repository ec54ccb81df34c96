"""How close extracted scenes are to the truth, on a dataset that knows it (the world).

Three measures, matched object by object through the dataset's instance ids (ground-truth
backend; model records carry mask ranks, not instance ids, and are not matched here):

(a) pair distances: for every pair of recorded objects, |d_est - d_true| / d_true, where d is
    the distance between the two object centres (the annotation's `box_camera.center`, i.e. the
    centre of the object's full 3D box). Frame-free: a rigid transform keeps distances.
(b) relations: left/right (canonical x of the centres) and closer/farther (distance from the
    camera centre to the object centre) of each pair, estimated vs true, on the pairs whose true
    margin is clear. The margin is relative to how far the pair is from the camera:
        left/right:      |x_b - x_a| / mean(|c_a|, |c_b|)      (about the angle between them, rad)
        closer/farther:  ||c_b| - |c_a|| / mean(|c_a|, |c_b|)
    with c the true camera-frame centres and x the true canonical x (from the true gravity).
    A pair counts for a relation when that margin exceeds `min_relative_margin` (10%).
(c) the ground plane: the share of scenes whose camera pitch and roll, from a canonical frame
    fitted by RANSAC with the dataset's gravity withheld, are both within 1 degree of the
    annotation's. Quarantined scenes and scenes without a plane (fallback frame) count as misses.
(d) boxes: per recorded object, (length, width, height) of its (amodal) box minus the annotated
    box's (horizontal sides longer first, height along gravity), and camera-to-centre distance
    minus the true one, metres; medians over every object (occluded and truncated ones included:
    metrics/synthesize.json has the errors of the objects conversations ask about).

    report = evaluate_extraction(GroundTruthObserver(ds), ds.ids("test"), cfg.extract.geometry)
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from spatialboost.config import ObjectGeometryConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.protocols import Observation, ObservationFailure
from spatialboost.extract.records import SceneRecord
from spatialboost.extract.scene import SceneFailure, build_scene, fit_frame, image_rng
from spatialboost.geometry import canonical_frame_from_gravity, unproject

TARGETS = {"pair_distance_median_relative_error_max": 0.05, "relation_agreement_min": 0.98,
           "ground_plane_within_1deg_min": 0.95, "box_size_median_abs_error_max_m": 0.10,
           "distance_median_abs_error_max_m": 0.05}  # fmt: skip
"""The acceptance targets of the extraction stage on held-out world scenes."""

RELATIONS = ("left_right", "closer_farther")


@dataclass
class SceneComparison:
    """One scene's record against its annotation.

    pair_errors: (a) per object pair. relation_agree / relation_total: (b) per relation name.
    n_visible: annotated objects with a visible pixel; n_matched: recorded objects whose id is
    an annotated instance.
    """

    pair_errors: list[float] = field(default_factory=list)
    size_errors: list[tuple[float, float, float]] = field(default_factory=list)
    distance_errors: list[float] = field(default_factory=list)
    relation_agree: Counter[str] = field(default_factory=Counter)
    relation_total: Counter[str] = field(default_factory=Counter)
    n_visible: int = 0
    n_matched: int = 0


def compare_scene(record: SceneRecord, annotation: dict[str, Any], min_relative_margin: float = 0.1) -> SceneComparison:
    """(a) and (b) for one scene. annotation: the dataset's annotations/<id>.json."""
    truth = {obj["instance_id"]: obj for obj in annotation["objects"]}
    out = SceneComparison(n_visible=sum(1 for obj in annotation["objects"] if obj.get("pixel_count", 1) > 0))
    objects = [obj for obj in record.objects if obj.object_id in truth]
    out.n_matched = len(objects)
    true_cam = np.array([truth[obj.object_id]["box_camera"]["center"] for obj in objects]).reshape(-1, 3)  # (M, 3)
    est_cam = np.array([obj.center_cam for obj in objects]).reshape(-1, 3)
    rotation, _ = canonical_frame_from_gravity(np.asarray(annotation["gravity_cam"], dtype=np.float64))
    true_x = true_cam @ rotation[0]  # canonical x (right) of each true centre
    est_x = np.array([obj.box.center[0] for obj in objects])
    true_dist = np.linalg.norm(true_cam, axis=1)  # camera centre to object centre
    est_dist = np.array([obj.center_distance_m for obj in objects])
    for obj, distance in zip(objects, true_dist, strict=True):
        true_size = box_extents(truth[obj.object_id]["box_camera"], rotation[2])
        out.size_errors.append(tuple(float(e - t) for e, t in zip(obj.box.size, true_size, strict=True)))  # type: ignore[arg-type]
        out.distance_errors.append(float(obj.center_distance_m - distance))
    for a in range(len(objects)):
        for b in range(a + 1, len(objects)):
            d_true = float(np.linalg.norm(true_cam[b] - true_cam[a]))
            d_est = float(np.linalg.norm(est_cam[b] - est_cam[a]))
            out.pair_errors.append(abs(d_est - d_true) / d_true)
            scale = (true_dist[a] + true_dist[b]) / 2
            margins = {
                "left_right": (true_x[b] - true_x[a], est_x[b] - est_x[a]),
                "closer_farther": (true_dist[b] - true_dist[a], est_dist[b] - est_dist[a]),
            }
            for name, (true_margin, est_margin) in margins.items():
                if abs(true_margin) / scale > min_relative_margin:
                    out.relation_total[name] += 1
                    out.relation_agree[name] += int(np.sign(true_margin) == np.sign(est_margin))
    return out


def box_extents(box_camera: dict[str, Any], up_cam: np.ndarray) -> tuple[float, float, float]:
    """(length, width, height) of an annotated box: its two horizontal sides, longer first, and
    its extent along `up_cam` (canonical z in the camera frame), metres."""
    corners = np.asarray(box_camera["corners"], dtype=np.float64)  # (8, 3)
    axes = np.asarray(box_camera["rotation"], dtype=np.float64)  # columns: box axes, camera frame
    vertical = int(np.argmax(np.abs(axes.T @ up_cam)))
    horizontal = [float(size) for k, size in enumerate(box_camera["size"]) if k != vertical]
    return max(horizontal), min(horizontal), float(np.ptp(corners @ up_cam))


def ransac_plane_errors(
    observation: Observation, annotation: dict[str, Any], geometry: ObjectGeometryConfig, rng: np.random.Generator
) -> tuple[float, float, str]:
    """(|pitch error|, |roll error| in degrees, frame source) of the frame `build_scene` fits
    when the observation's gravity is withheld: the RANSAC ground plane (or the fallback)."""
    no_gravity = dataclasses.replace(observation, gravity_cam=None)
    points = unproject(observation.depth, observation.fx, observation.fy, observation.cx, observation.cy)
    frame = fit_frame(no_gravity, points, geometry, rng)
    camera = annotation["camera"]
    return abs(frame.pitch_deg - camera["pitch_deg"]), abs(frame.roll_deg - camera["roll_deg"]), frame.source


def summarize(
    comparisons: Sequence[SceneComparison],
    plane_results: Sequence[tuple[float, float, str] | None],
    quarantined: Counter[str],
    min_relative_margin: float = 0.1,
    max_plane_error_deg: float = 1.0,
) -> dict[str, Any]:
    """The metrics dict (metrics/extract.json) from per-scene results.

    plane_results: per evaluated scene, (pitch error, roll error, frame source) of the RANSAC
    frame, or None when that scene was quarantined.
    """
    errors = np.array([e for c in comparisons for e in c.pair_errors])
    sizes = np.abs(np.array([e for c in comparisons for e in c.size_errors]).reshape(-1, 3))
    distances = np.abs(np.array([e for c in comparisons for e in c.distance_errors]))
    agree = sum((c.relation_agree for c in comparisons), Counter())
    total = sum((c.relation_total for c in comparisons), Counter())
    within = [
        r is not None and r[2] == "ransac_plane" and max(r[0], r[1]) <= max_plane_error_deg for r in plane_results
    ]
    fitted = [r for r in plane_results if r is not None]
    pair_median = float(np.median(errors)) if len(errors) else float("nan")
    agreement = sum(agree.values()) / sum(total.values()) if sum(total.values()) else float("nan")
    plane_share = float(np.mean(within)) if within else float("nan")
    n_visible = sum(c.n_visible for c in comparisons)
    return {
        "n_scenes": len(plane_results),
        "n_recorded": len(comparisons),
        "n_quarantined": sum(quarantined.values()),
        "quarantine_by_reason": dict(sorted(quarantined.items())),
        "objects": {
            "n_visible_annotated": n_visible,
            "n_matched": sum(c.n_matched for c in comparisons),
            "recall": sum(c.n_matched for c in comparisons) / n_visible if n_visible else float("nan"),
        },
        "pair_distance": {
            "n_pairs": int(len(errors)),
            "median_relative_error": pair_median,
            "p90_relative_error": float(np.quantile(errors, 0.9)) if len(errors) else float("nan"),
            "target_max": TARGETS["pair_distance_median_relative_error_max"],
            "passed": bool(pair_median <= TARGETS["pair_distance_median_relative_error_max"]),
        },
        "boxes": {
            "n_objects": int(len(sizes)),
            "size_median_abs_error_m": dict(
                zip(
                    ("length", "width", "height"),
                    (np.median(sizes, axis=0).round(4).tolist() if len(sizes) else [float("nan")] * 3),
                    strict=True,
                )
            ),  # fmt: skip
            "distance_median_abs_error_m": round(float(np.median(distances)), 4) if len(distances) else float("nan"),
            "distance_p90_abs_error_m": round(float(np.quantile(distances, 0.9)), 4)
            if len(distances)
            else float("nan"),
            "size_target_max_m": TARGETS["box_size_median_abs_error_max_m"],
            "distance_target_max_m": TARGETS["distance_median_abs_error_max_m"],
            "passed": bool(
                len(sizes)
                and np.median(sizes, axis=0).max() <= TARGETS["box_size_median_abs_error_max_m"]
                and np.median(distances) <= TARGETS["distance_median_abs_error_max_m"]
            ),  # fmt: skip
        },
        "relations": {
            "min_relative_margin": min_relative_margin,
            **{
                name: {"n_pairs": total[name], "agreement": agree[name] / total[name] if total[name] else float("nan")}
                for name in RELATIONS
            },  # fmt: skip
            "agreement": agreement,
            "target_min": TARGETS["relation_agreement_min"],
            "passed": bool(agreement >= TARGETS["relation_agreement_min"]),
        },
        "ground_plane": {
            "max_error_deg": max_plane_error_deg,
            "within_share": plane_share,
            "median_pitch_error_deg": float(np.median([r[0] for r in fitted])) if fitted else float("nan"),
            "median_roll_error_deg": float(np.median([r[1] for r in fitted])) if fitted else float("nan"),
            "frame_sources": dict(sorted(Counter(r[2] for r in fitted).items())),
            "target_min": TARGETS["ground_plane_within_1deg_min"],
            "passed": bool(plane_share >= TARGETS["ground_plane_within_1deg_min"]),
        },
    }


def evaluate_extraction(
    observer: GroundTruthObserver,
    ids: Iterable[str],
    geometry: ObjectGeometryConfig,
    *,
    seed: int = 0,
    min_objects: int = 1,
    min_relative_margin: float = 0.1,
    progress: bool = False,
) -> dict[str, Any]:
    """Extract every id twice through the ground-truth observer and measure (a), (b), (c).

    The extraction is the pipeline's own (`build_scene`, dataset gravity used): (a) and (b).
    For (c) the same frame fit (`fit_frame`, same pixels and rng) runs again with the gravity
    withheld, so the frame comes from the RANSAC ground plane. Both use the pipeline's per-image
    rng (`image_rng(seed, id)`).
    """
    dataset = observer.dataset
    comparisons: list[SceneComparison] = []
    plane_results: list[tuple[float, float, str] | None] = []
    quarantined: Counter[str] = Counter()
    for image_id in tqdm(list(ids), desc="accuracy", unit="img", disable=not progress):
        observation = observer.observe_one(image_id)
        if isinstance(observation, ObservationFailure):
            quarantined[observation.reason] += 1
            plane_results.append(None)
            continue
        record = build_scene(observation, geometry, image_rng(seed, image_id), min_objects=min_objects)
        if isinstance(record, SceneFailure):
            quarantined[record.reason] += 1
            plane_results.append(None)
            continue
        annotation = dataset.annotation(image_id)
        comparisons.append(compare_scene(record, annotation, min_relative_margin))
        plane_results.append(ransac_plane_errors(observation, annotation, geometry, image_rng(seed, image_id)))
    return summarize(comparisons, plane_results, quarantined, min_relative_margin)


def evaluate_dataset(
    root: str, ids: Iterable[str] | None, geometry: ObjectGeometryConfig, **kwargs: Any
) -> dict[str, Any]:
    """`evaluate_extraction` over the RGB-D dataset at `root` (all ids when None)."""
    dataset = RGBDDataset(root)
    return evaluate_extraction(GroundTruthObserver(dataset), dataset.ids() if ids is None else ids, geometry, **kwargs)
