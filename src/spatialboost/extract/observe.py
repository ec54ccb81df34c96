"""Observations: what the extraction stage knows about an image before any 3D geometry.

An `Observation` holds an image with its metric depth, intrinsics, object masks and labels,
wherever they came from; an `ObservationSource` turns a batch of manifest ids into
observations, or into per-image failures (never an exception for one bad image). Two sources:

- `GroundTruthObserver` (ground_truth.py): depth, instance masks, labels, intrinsics and gravity
  read from a `spatialboost-rgbd` dataset.
- `ModelObserver` (here): images decoded by spatialboost.data, then Depth Pro, SAM 2 and
  OpenCLIP, each run batched through its protocol.

    observer = build_observer(cfg.extract, cfg.data, device="auto")
    for item in observer.observe(["test-000000", "test-000001"]): ...
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from spatialboost.data.decode import decode_image
from spatialboost.data.records import BadImage, ImageLimits, ImageRef, Reason
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.data.sources import ImageSource
from spatialboost.extract.protocols import DepthEstimator, DepthResult, FocalSource, Label, Labeler, Mask, Segmenter
from spatialboost.extract.records import Provenance

if TYPE_CHECKING:
    from spatialboost.config import DataConfig, ExtractConfig

EXIF_IFD = 0x8769
EXIF_FOCAL_35MM = 0xA405  # FocalLengthIn35mmFilm, millimetres
FULL_FRAME_DIAGONAL_MM = 43.267  # a 36 x 24 mm frame: what "35 mm equivalent" is relative to


@dataclass(frozen=True, eq=False)
class Observation:
    """One image and everything measured on it, before geometry.

    image: (H, W, 3) uint8 RGB. depth: (H, W) float32 metres, z-depth; 0 = no depth (sky).
    fx, fy, cx, cy: intrinsics, pixels (K @ [X/Z, Y/Z, 1] = [u + 0.5, v + 0.5, 1]).
    focal_source: where fx came from ("dataset", "exif" or "model").
    masks, labels: one Label per Mask, same order. object_ids: per mask, the dataset instance
    id (ground truth) or the mask's rank from 1 (models). colours: per mask, a colour name or None.
    gravity_cam: (3,) unit gravity in the camera frame, or None when unknown.
    dropped: masks the observer already left out, by reason (e.g. "low_label_score").
    """

    image_id: str
    uri: str
    image: np.ndarray
    depth: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    focal_source: FocalSource
    masks: tuple[Mask, ...]
    labels: tuple[Label, ...]
    object_ids: tuple[int, ...]
    colours: tuple[str | None, ...]
    gravity_cam: np.ndarray | None
    provenance: Provenance
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.masks)
        if not len(self.labels) == len(self.object_ids) == len(self.colours) == n:
            raise ValueError(
                f"{self.image_id}: {n} masks but {len(self.labels)} labels, {len(self.object_ids)} ids, "
                f"{len(self.colours)} colours"
            )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class ObservationFailure:
    """An image that could not be observed: reason code (scene.QuarantineReason) and detail."""

    image_id: str
    uri: str
    reason: str
    detail: str


@runtime_checkable
class ObservationSource(Protocol):
    """Turns a batch of ids into observations, one result per id, in order."""

    backend: str

    def observe(self, ids: Sequence[str]) -> list[Observation | ObservationFailure]:
        """Observations or per-image failures; raises only for failures of the source itself."""
        ...


# ---------------------------------------------------------------------------------------------
# Images for the model path


@dataclass(frozen=True, eq=False, kw_only=True)
class LoadedImage:
    """A decoded image and what is known about its camera.

    rgb: (H, W, 3) uint8. fx, fy, cx, cy: pixels, None when unknown. focal_source: "dataset" or
    "exif" when fx is known, else None. gravity_cam: (3,) or None.
    """

    image_id: str
    uri: str
    rgb: np.ndarray
    fx: float | None
    fy: float | None
    cx: float | None
    cy: float | None
    focal_source: FocalSource | None
    gravity_cam: np.ndarray | None


class ImageReader:
    """Reads and decodes images by manifest id; knows their intrinsics when a dataset or EXIF says.

    source: where the bytes are; refs: the manifest's images (id, uri, size); limits: the
    decoder's. dataset: an RGB-D dataset over the same ids (the world source): its intrinsics and
    gravity are used, and win over EXIF.
    """

    def __init__(
        self,
        source: ImageSource,
        refs: Iterable[ImageRef],
        limits: ImageLimits,
        dataset: RGBDDataset | None = None,
    ) -> None:
        self.source = source
        self.refs = {ref.id: ref for ref in refs}
        self.limits = limits
        self.dataset = dataset

    def uri(self, image_id: str) -> str:
        ref = self.refs.get(image_id)
        return ref.uri if ref is not None else ""

    def read(self, image_id: str) -> LoadedImage:
        """The decoded image; raises BadImage when it cannot be read or decoded."""
        ref = self.refs.get(image_id)
        if ref is None:
            raise BadImage(Reason.UNREADABLE, f"id {image_id!r} is not in the manifest")
        data = self.source.read_bytes(ref, max_bytes=self.limits.max_file_bytes)
        rgb = decode_image(data, self.limits)  # (H, W, 3) uint8
        height, width = rgb.shape[:2]
        if self.dataset is not None and image_id in self.dataset:
            row = self.dataset.row(image_id)
            gravity = np.asarray(row.gravity_cam, dtype=np.float64)
            return LoadedImage(
                image_id=image_id,
                uri=ref.uri,
                rgb=rgb,
                fx=row.fx,
                fy=row.fy,
                cx=row.cx,
                cy=row.cy,
                focal_source="dataset",
                gravity_cam=gravity if np.isfinite(gravity).all() else None,
            )
        focal = exif_focal_px(data, width, height)
        if focal is not None:
            return LoadedImage(
                image_id=image_id,
                uri=ref.uri,
                rgb=rgb,
                fx=focal,
                fy=focal,
                cx=width / 2,
                cy=height / 2,
                focal_source="exif",
                gravity_cam=None,
            )
        return LoadedImage(
            image_id=image_id,
            uri=ref.uri,
            rgb=rgb,
            fx=None,
            fy=None,
            cx=None,
            cy=None,
            focal_source=None,
            gravity_cam=None,
        )


def exif_focal_px(data: bytes, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF's 35 mm-equivalent focal length, or None.

    f_px = f_35mm * image diagonal (px) / 43.267 mm (the full-frame diagonal): the diagonal,
    unlike a side, does not depend on the aspect ratio or on EXIF rotation.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif().get_ifd(EXIF_IFD)
    except Exception:  # EXIF of an image that decoded fine: a broken tag only means "unknown"
        return None
    value = exif.get(EXIF_FOCAL_35MM)
    try:
        focal_35mm = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return None
    if not math.isfinite(focal_35mm) or focal_35mm <= 0:
        return None
    return focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


# ---------------------------------------------------------------------------------------------
# The model path


class ModelObserver:
    """Observations from models: depth estimator -> segmenter -> labeler, each batched.

    Images that fail a step leave the funnel there as ObservationFailure: unreadable files,
    depth the estimator itself flags (`DepthResult.reasons`: "invalid_depth" or, for focal
    problems only, "absurd_focal"), images with no mask ("empty_masks"). A known focal (dataset
    intrinsics, then EXIF) wins over the model's and sets the metric scale. Masks whose label
    is missing or scores below `min_label_score` are dropped and counted.
    """

    backend = "models"

    def __init__(
        self,
        depth_estimator: DepthEstimator,
        segmenter: Segmenter,
        labeler: Labeler,
        *,
        vocabulary: Sequence[str],
        reader: ImageReader,
        min_label_score: float = 0.0,
        model_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.depth_estimator = depth_estimator
        self.segmenter = segmenter
        self.labeler = labeler
        self.vocabulary = tuple(vocabulary)
        self.reader = reader
        self.min_label_score = min_label_score
        self.provenance = Provenance(backend="models", models=dict(model_ids or {}))

    def observe(self, ids: Sequence[str]) -> list[Observation | ObservationFailure]:
        results: dict[str, Observation | ObservationFailure] = {}
        loaded: list[LoadedImage] = []
        for image_id in ids:
            try:
                loaded.append(self.reader.read(image_id))
            except BadImage as bad:
                results[image_id] = ObservationFailure(
                    image_id, self.reader.uri(image_id), "unreadable", f"{bad.reason.value}: {bad.detail}"
                )
        images, focals = [item.rgb for item in loaded], [item.fx for item in loaded]
        sources = [item.focal_source or "dataset" for item in loaded]
        depths = self.depth_estimator.estimate(images, focals, sources) if loaded else []
        with_depth = []
        for item, depth in zip(loaded, depths, strict=True):
            if depth.reasons:
                results[item.image_id] = ObservationFailure(
                    item.image_id, item.uri, _depth_reason(depth.reasons), "; ".join(depth.reasons)
                )
            else:
                with_depth.append((item, depth))
        masks_per_image = self.segmenter.segment([item.rgb for item, _ in with_depth]) if with_depth else []
        for (item, depth), masks in zip(with_depth, masks_per_image, strict=True):
            if not masks:
                results[item.image_id] = ObservationFailure(
                    item.image_id, item.uri, "empty_masks", "the segmenter found no mask"
                )
                continue
            labels = self.labeler.label(item.rgb, masks, self.vocabulary)
            results[item.image_id] = self._observation(item, depth, masks, labels)
        return [results[image_id] for image_id in ids]

    def _observation(
        self, item: LoadedImage, depth: DepthResult, masks: list[Mask], labels: list[Label]
    ) -> Observation:
        keep = [
            i for i, label in enumerate(labels)
            if label.name is not None and np.isfinite(label.score) and label.score >= self.min_label_score
        ]  # fmt: skip
        dropped = {"low_label_score": len(masks) - len(keep)} if len(keep) < len(masks) else {}
        height, width = item.rgb.shape[:2]
        focal = float(depth.focal_px)
        return Observation(
            image_id=item.image_id,
            uri=item.uri,
            image=item.rgb,
            depth=np.asarray(depth.depth, dtype=np.float32),
            fx=focal,
            fy=float(item.fy) if item.fy is not None else focal,
            cx=float(item.cx) if item.cx is not None else width / 2,
            cy=float(item.cy) if item.cy is not None else height / 2,
            focal_source=depth.focal_source,
            masks=tuple(masks[i] for i in keep),
            labels=tuple(labels[i] for i in keep),
            object_ids=tuple(i + 1 for i in keep),
            colours=tuple(None for _ in keep),
            gravity_cam=item.gravity_cam,
            provenance=self.provenance,
            dropped=dropped,
        )


def _depth_reason(reasons: Sequence[str]) -> str:
    """The quarantine reason of a depth verdict: "absurd_focal" when only the focal is wrong, else "invalid_depth"."""
    if all(reason.startswith("focal:") for reason in reasons):
        return "absurd_focal"
    return "invalid_depth"


# ---------------------------------------------------------------------------------------------
# Construction from config


def resolve_device(device: str) -> str:
    """The torch device name: "auto" -> "cuda" when torch sees a GPU, else "cpu"; others unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_observer(cfg: ExtractConfig, data: DataConfig, device: str = "auto") -> ObservationSource:
    """The observer `cfg.backend` names, with the real backends configured from `cfg`.

    ground_truth: a `GroundTruthObserver` over the RGB-D dataset at `data.uri`.
    models: Depth Pro, SAM 2 (`cfg.segmenter.backend`: hf or official) and OpenCLIP loaded from
    the configured local paths (nothing is downloaded), over the images of the data manifest.
    """
    if cfg.backend == "ground_truth":
        from spatialboost.extract.ground_truth import GroundTruthObserver

        return GroundTruthObserver(RGBDDataset(data.uri))
    if cfg.backend == "models":
        return _build_model_observer(cfg, data, resolve_device(device))
    raise ValueError(f"unknown extract backend {cfg.backend!r} (known: ground_truth, models)")


def _build_model_observer(cfg: ExtractConfig, data: DataConfig, device: str) -> ModelObserver:
    from spatialboost.data.manifest import read_manifest
    from spatialboost.data.sources import open_source
    from spatialboost.extract.depth_pro import DepthProEstimator
    from spatialboost.extract.masks import MaskFilter
    from spatialboost.extract.openclip_labeler import OpenCLIPLabeler

    depth = DepthProEstimator(
        cfg.depth.model_path,
        device=device,
        dtype=cfg.dtype,
        batch_size=cfg.depth.batch_size,
        min_depth_m=cfg.depth.min_depth_m,
        max_depth_m=cfg.depth.max_depth_m,
        min_focal_px=cfg.depth.min_focal_px,
        max_focal_px=cfg.depth.max_focal_px,
    )
    seg = cfg.segmenter
    mask_filter = MaskFilter(
        pred_iou_thresh=seg.pred_iou_thresh,
        stability_thresh=seg.stability_thresh,
        min_area_px=seg.min_area_px,
        duplicate_iou_thresh=seg.duplicate_iou,
        nested_thresh=seg.nested_containment,
    )
    segmenter: Segmenter
    if seg.backend == "hf":
        from spatialboost.extract.sam2_hf import HFSam2Segmenter

        segmenter = HFSam2Segmenter(
            seg.model_path,
            device=device,
            dtype=cfg.dtype,
            batch_size=seg.batch_size,
            points_per_side=seg.points_per_side,
            points_per_batch=seg.points_per_batch,
            mask_filter=mask_filter,
        )
    else:
        from spatialboost.extract.sam2_official import OfficialSam2Segmenter

        segmenter = OfficialSam2Segmenter(
            seg.official_config,
            seg.model_path,
            device=device,
            dtype=cfg.dtype,
            points_per_side=seg.points_per_side,
            points_per_batch=seg.points_per_batch,
            mask_filter=mask_filter,
        )
    lab = cfg.labeler
    labeler = OpenCLIPLabeler(
        lab.model_name,
        lab.pretrained,
        device=device,
        dtype=cfg.dtype,
        batch_size=lab.batch_size,
        templates=lab.templates,
    )
    entries = read_manifest(data.manifest)
    refs = [ImageRef(entry.id, entry.uri, entry.size) for entry in entries]
    dataset = RGBDDataset(data.uri) if data.source == "world" else None
    reader = ImageReader(open_source(data), refs, ImageLimits.from_config(data), dataset)
    model_ids = {
        "depth": _model_id(cfg.depth.model_path),
        "segmenter": f"sam2-{seg.backend}:{_model_id(seg.model_path)}",
        "labeler": _labeler_id(lab.model_name, lab.pretrained),
    }
    return ModelObserver(
        depth,
        segmenter,
        labeler,
        vocabulary=lab.vocabulary,
        reader=reader,
        min_label_score=lab.min_score,
        model_ids=model_ids,
    )


def _labeler_id(model_name: str, pretrained: str | None) -> str:
    """The labeler as recorded: its local-dir folder, or architecture:checkpoint ("random" without one)."""
    if model_name.startswith("local-dir:"):
        return "local-dir:" + _model_id(model_name.removeprefix("local-dir:"))
    return f"{model_name}:{_model_id(pretrained) if pretrained else 'random'}"


def _model_id(path: str) -> str:
    """A checkpoint path as recorded: relative paths as given, absolute ones by their last two parts
    (so records do not depend on where a machine keeps its checkpoints)."""
    if os.path.isabs(path):
        return "/".join(Path(path).parts[-2:])
    return path
