"""The model observer: images decoded by spatialboost.data, then Depth Pro, SAM 2 and OpenCLIP,
each run batched through its protocol (extract/protocols.py).

    observer = ModelObserver(depth, segmenter, labeler, vocabulary=vocab, reader=reader)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spatialboost.data.reader import ImageReader, LoadedImage
from spatialboost.data.records import BadImage
from spatialboost.extract.protocols import (
    DepthEstimator,
    DepthResult,
    Label,
    Labeler,
    Mask,
    Observation,
    ObservationFailure,
    Segmenter,
)
from spatialboost.extract.records import Provenance


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
