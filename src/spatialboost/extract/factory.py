"""The observer the config names, built: the ground-truth observer over an RGB-D dataset, or the
model observer with Depth Pro, SAM 2 and OpenCLIP loaded from their configured local paths.

    observer = build_observer(cfg.extract, cfg.data, device="auto")
    for item in observer.observe(["test-000000", "test-000001"]): ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from spatialboost.data.reader import ImageReader
from spatialboost.data.records import ImageLimits, ImageRef
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.model_observer import ModelObserver
from spatialboost.extract.protocols import ObservationSource, Segmenter
from spatialboost.runtime import BuildOnce

if TYPE_CHECKING:
    from spatialboost.config import DataConfig, ExtractConfig


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
        return GroundTruthObserver(RGBDDataset(data.uri))
    if cfg.backend == "models":
        return _build_model_observer(cfg, data, resolve_device(device))
    raise ValueError(f"unknown extract backend {cfg.backend!r} (known: ground_truth, models)")


shared_observer: BuildOnce[ObservationSource] = BuildOnce(build_observer, maxsize=2)
"""shared_observer(extract, data, device): the observer of this process. Models load once per
worker process, not once per shard, and under one lock: threads of a worker never build two at
once (a concurrent bf16 `from_pretrained` gave mixed-dtype models) nor use a half-built one."""


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
