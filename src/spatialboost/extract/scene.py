"""One observation -> one canonical 3D scene record, or the reason there is none.

    result = build_scene(observation, cfg.extract.geometry, rng, min_objects=cfg.extract.min_objects)
    if isinstance(result, SceneFailure): quarantine(result.reason, result.detail)

The steps (the paper's extraction stage, geometry/ does the maths):
1. check the camera (focal length) and the depth map; a bad one quarantines the image;
2. unproject every pixel with the intrinsics;
3. the canonical frame: dataset gravity when known, else RANSAC on the pixels outside every
   object mask, else the camera's own axes (the frame records which, and why);
4. per object: its masked points, subsampled to `max_points_per_object` with `rng`, outliers
   removed, an amodal oriented box (completed beyond the visible surface: down to the ground
   it rests on, the hidden back by a round-footprint prior; geometry/completion.py), distances
   between the camera and the completed box, evidence and confidence. Objects left with too few
   points are dropped and counted in `SceneRecord.dropped`; fewer than `min_objects` usable
   objects quarantine the image. No image is ever dropped silently.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spatialboost.config import ObjectGeometryConfig
from spatialboost.extract.protocols import Observation
from spatialboost.extract.records import (
    CanonicalBox,
    DepthStats,
    FrameRecord,
    Intrinsics,
    MaskRLE,
    ObjectEvidence,
    ObjectRecord,
    SceneRecord,
)
from spatialboost.geometry import (
    CanonicalFrame,
    CompletionParams,
    ObjectGeometry,
    OutlierParams,
    canonical_frame,
    free_space_test,
    measure_object,
    unproject,
    valid_depth_mask,
)

MAX_PLANE_POINTS = 20_000
"""Background points given to RANSAC: plenty for a plane, and bounded on megapixel images."""

_GEOMETRY_FOCAL_SOURCE = {"dataset": "dataset", "exif": "exif", "model": "estimated"}
"""Protocol focal sources -> the names geometry's confidence weights use."""


class QuarantineReason(str, enum.Enum):
    """Why an image produced no scene record. The value is the code in quarantine records."""

    UNREADABLE = "unreadable"  # the observer could not read or decode the image
    INVALID_DEPTH = "invalid_depth"  # NaN, inf or negative depth, no valid pixel, or a depth model's verdict
    ABSURD_FOCAL = "absurd_focal"  # focal length not finite or outside [min_focal_px, max_focal_px]
    EMPTY_MASKS = "empty_masks"  # no object mask with a single pixel (e.g. the segmenter found nothing)
    NO_OBJECTS = "no_objects"  # fewer than min_objects usable objects


@dataclass(frozen=True)
class SceneFailure:
    """A quarantine verdict: reason code (a QuarantineReason value) and one human line."""

    reason: str
    detail: str


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator of one image: depends only on (seed, image id), not on its shard or batch."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(image_id.encode()),)))


def build_scene(
    observation: Observation,
    geometry: ObjectGeometryConfig,
    rng: np.random.Generator,
    *,
    min_objects: int = 1,
    min_focal_px: float = 10.0,
    max_focal_px: float = 1e5,
) -> SceneRecord | SceneFailure:
    """The scene record of one observation, or the reason it is quarantined.

    geometry: RANSAC, subsampling, point-count and outlier settings. rng: the only randomness
    (RANSAC triplets, point subsampling): the same rng state gives the same record.
    min_objects: fewer usable objects quarantine the image ("no_objects").
    min_focal_px, max_focal_px: plausible focal lengths, pixels (cfg.extract.depth's).
    """
    failure = check_camera(observation, min_focal_px, max_focal_px) or check_depth(observation)
    if failure is not None:
        return failure
    if not observation.masks:
        return SceneFailure(QuarantineReason.NO_OBJECTS.value, _no_objects_detail(0, min_objects, observation.dropped))
    if all(mask.area == 0 for mask in observation.masks):
        return SceneFailure(QuarantineReason.EMPTY_MASKS.value, f"all {len(observation.masks)} masks are empty")

    obs = observation
    points = unproject(obs.depth, obs.fx, obs.fy, obs.cx, obs.cy)  # (H, W, 3), NaN where invalid
    frame = fit_frame(obs, points, geometry, rng)
    objects: list[ObjectRecord] = []
    dropped = dict(obs.dropped)
    for i in range(len(obs.masks)):
        measured = measure_mask(obs, i, points, frame, geometry, rng)
        if isinstance(measured, str):
            dropped[measured] = dropped.get(measured, 0) + 1
        else:
            objects.append(measured)
    if len(objects) < min_objects:
        return SceneFailure(QuarantineReason.NO_OBJECTS.value, _no_objects_detail(len(objects), min_objects, dropped))
    return SceneRecord(
        image_id=obs.image_id,
        image_uri=obs.uri,
        width=obs.width,
        height=obs.height,
        intrinsics=Intrinsics(fx=obs.fx, fy=obs.fy, cx=obs.cx, cy=obs.cy, focal_source=obs.focal_source),
        frame=frame_record(frame),
        depth=depth_stats(obs.depth),
        objects=tuple(objects),
        dropped=dict(sorted(dropped.items())),
        provenance=obs.provenance,
    )


def check_camera(obs: Observation, min_focal_px: float, max_focal_px: float) -> SceneFailure | None:
    """Quarantine as "absurd_focal" unless fx, fy lie in [min_focal_px, max_focal_px] and cx, cy are finite."""
    focal = np.array([obs.fx, obs.fy], dtype=np.float64)
    if not np.isfinite(focal).all() or focal.min() < min_focal_px or focal.max() > max_focal_px:
        detail = f"focal fx={obs.fx:.6g}, fy={obs.fy:.6g} px from {obs.focal_source} outside [{min_focal_px:g}, {max_focal_px:g}] px"
        return SceneFailure(QuarantineReason.ABSURD_FOCAL.value, detail)
    if not np.isfinite([obs.cx, obs.cy]).all():
        return SceneFailure(QuarantineReason.ABSURD_FOCAL.value, f"principal point ({obs.cx}, {obs.cy}) is not finite")
    return None


def check_depth(obs: Observation) -> SceneFailure | None:
    """Quarantine as "invalid_depth" a depth map of the wrong shape, with NaN, inf or negative values, or
    with no valid pixel. 0 is the format's "no depth" (sky, sensor holes), not an error."""
    depth = np.asarray(obs.depth)
    if depth.shape != obs.image.shape[:2]:
        return SceneFailure(
            QuarantineReason.INVALID_DEPTH.value, f"depth shape {depth.shape} != image {obs.image.shape[:2]}"
        )
    problems = []
    n_nonfinite = int((~np.isfinite(depth)).sum())
    if n_nonfinite:
        problems.append(f"{n_nonfinite} NaN or inf pixels")
    with np.errstate(invalid="ignore"):
        n_negative = int((depth < 0).sum())
    if n_negative:
        problems.append(f"{n_negative} negative pixels")
    if not problems and not valid_depth_mask(depth).any():
        problems.append("no pixel has positive depth")
    if problems:
        return SceneFailure(
            QuarantineReason.INVALID_DEPTH.value, f"depth of {depth.size} pixels has " + ", ".join(problems)
        )
    return None


def fit_frame(
    obs: Observation, points: np.ndarray, geometry: ObjectGeometryConfig, rng: np.random.Generator
) -> CanonicalFrame:
    """The canonical frame from the pixels outside every object mask (the ground's candidates).

    points: (H, W, 3) camera frame, metres, NaN where depth is invalid. Dataset gravity, when the
    observation has it, fixes the rotation; the plane then only gives the camera height.
    """
    objects = np.zeros(obs.depth.shape, dtype=bool)
    for mask in obs.masks:
        objects |= np.asarray(mask.mask, dtype=bool)
    background = points[~objects & valid_depth_mask(obs.depth)]  # (N, 3)
    if len(background) > MAX_PLANE_POINTS:
        background = background[np.sort(rng.choice(len(background), MAX_PLANE_POINTS, replace=False))]
    gravity = obs.gravity_cam
    if gravity is not None and not (np.isfinite(gravity).all() and np.linalg.norm(gravity) > 1e-9):
        gravity = None  # a zero or NaN vector says "unknown", like the dataset format's NaN
    return canonical_frame(
        background,
        gravity,
        rng=rng,
        threshold_m=geometry.ransac_threshold_m,
        iterations=geometry.ransac_iterations,
        min_inliers=geometry.ransac_min_inliers,
    )


def measure_mask(
    obs: Observation,
    index: int,
    points: np.ndarray,
    frame: CanonicalFrame,
    geometry: ObjectGeometryConfig,
    rng: np.random.Generator,
) -> ObjectRecord | str:
    """The record of mask `index`, or why it is dropped ("empty_mask", "too_few_points").

    points: (H, W, 3) camera frame, metres, NaN where depth is invalid.
    """
    mask = np.asarray(obs.masks[index].mask, dtype=bool)
    area = int(mask.sum())
    if area == 0:
        return "empty_mask"
    cloud = points[mask & valid_depth_mask(obs.depth)]  # (N, 3), row-major pixel order
    n_points = len(cloud)
    if n_points < geometry.min_points_per_object:
        return "too_few_points"
    if n_points > geometry.max_points_per_object:
        cloud = cloud[np.sort(rng.choice(n_points, geometry.max_points_per_object, replace=False))]
    measured = measure_object(
        cloud,
        frame,
        focal_source=_GEOMETRY_FOCAL_SOURCE[obs.focal_source],  # type: ignore[arg-type]
        outliers=OutlierParams(enabled=geometry.outlier_removal),
        completion=completion_params(geometry),
        pixel_angle_rad=1.0 / min(obs.fx, obs.fy),
        seen_through=free_space_test(
            obs.depth,
            fx=obs.fx,
            fy=obs.fy,
            cx=obs.cx,
            cy=obs.cy,
            rotation=frame.rotation,
            translation=frame.translation,
            own_mask=ndimage.binary_dilation(mask),
        ),
    )
    if measured.evidence.n_kept < geometry.min_points_per_object:
        return "too_few_points"
    return object_record(obs, index=index, mask=mask, area=area, n_points=n_points, measured=measured, frame=frame)


def completion_params(geometry: ObjectGeometryConfig) -> CompletionParams:
    """The box completion settings of the `extract.geometry` config."""
    return CompletionParams(enabled=geometry.box_completion == "amodal", contact_ratio=geometry.ground_contact_ratio)


def object_record(
    obs: Observation,
    *,
    index: int,
    mask: np.ndarray,
    area: int,
    n_points: int,
    measured: ObjectGeometry,
    frame: CanonicalFrame,
) -> ObjectRecord:
    """An ObjectRecord from a measured object; mask (H, W) bool, area its pixel count."""
    box, evidence = measured.box, measured.evidence
    center_cam = frame.rotation.T @ (box.center - frame.translation)  # canonical -> camera frame
    label = obs.labels[index]
    ys, xs = np.nonzero(mask)
    return ObjectRecord(
        object_id=obs.object_ids[index],
        label=str(label.name),
        label_score=float(label.score),
        colour=obs.colours[index],
        mask=MaskRLE.encode(mask),
        mask_area_px=area,
        bbox=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        box=CanonicalBox(center=tuple(box.center), size=(box.length, box.width, box.height), yaw_rad=box.yaw_rad),
        center_cam=tuple(center_cam),
        center_distance_m=measured.center_distance_m,
        nearest_distance_m=measured.nearest_distance_m,
        evidence=ObjectEvidence(
            n_points=n_points,
            n_used=evidence.n_points,
            n_kept=evidence.n_kept,
            depth_spread=evidence.depth_spread,
            plane_residual_m=evidence.plane_residual_m,
            frame_source=frame.source,
            focal_source=obs.focal_source,
            mask_score=obs.masks[index].score,
            mask_stability=obs.masks[index].stability,
            completion=measured.completion.method,
            ground_contact=measured.completion.ground_contact,
            visible_size=tuple(measured.completion.visible.size),
        ),
        confidence=measured.confidence,
    )  # type: ignore[arg-type]  # tuples of numpy floats validate as Vec3


def frame_record(frame: CanonicalFrame) -> FrameRecord:
    """The record of a canonical frame (rotation, translation, source, pitch and roll)."""
    return FrameRecord(
        rotation=tuple(tuple(row) for row in frame.rotation),  # type: ignore[arg-type]
        translation=tuple(frame.translation),  # type: ignore[arg-type]
        source=frame.source,
        reason=frame.reason,
        camera_height_m=frame.camera_height_m,
        pitch_deg=frame.pitch_deg,
        roll_deg=frame.roll_deg,
        plane_inliers=0 if frame.plane is None else int(frame.plane.inliers.sum()),
        plane_residual_m=None if frame.plane is None else frame.plane.residual_m,
    )


def depth_stats(depth: np.ndarray) -> DepthStats:
    """Statistics of the valid (finite, > 0) pixels of a (H, W) depth map, metres."""
    valid = valid_depth_mask(depth)
    values = np.asarray(depth, dtype=np.float64)[valid]
    return DepthStats(
        valid_fraction=float(valid.mean()),
        min_m=float(values.min()),
        median_m=float(np.median(values)),
        mean_m=float(values.mean()),
        max_m=float(values.max()),
    )


def _no_objects_detail(n_usable: int, min_objects: int, dropped: dict[str, int]) -> str:
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(dropped.items())) or "none dropped"
    return f"{n_usable} usable objects < min_objects {min_objects} (dropped: {reasons})"
