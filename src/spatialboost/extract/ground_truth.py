"""The ground-truth observer: depth, masks, labels, intrinsics and gravity from an RGB-D dataset.

Works for any dataset in the `spatialboost-rgbd` format (docs/dataset-format.md): the world's,
or a real sensor dataset converted once. Sensor depth and dataset masks are first-class inputs
to the extraction (the paper's later version: they work as well as model labels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spatialboost.data.rgbd import RGBDDataset, RGBDFormatError, RGBDSample
from spatialboost.extract.crops import mask_bbox
from spatialboost.extract.protocols import Label, Mask, Observation, ObservationFailure
from spatialboost.extract.records import Provenance


class GroundTruthObserver:
    """Observations read from `dataset`; implements `ObservationSource`.

    One mask per annotated object with at least one visible pixel (instance id k -> pixels of
    value k), label and colour from the annotation, score 1. Fully occluded objects (0 pixels)
    are not observed. A depth file the reader rejects (NaN, inf, negative, wrong shape) is an
    "invalid_depth" failure; any other unreadable file of the image is "unreadable".
    """

    backend = "ground_truth"

    def __init__(self, dataset: RGBDDataset) -> None:
        self.dataset = dataset
        models = {"dataset": str(dataset.meta.get("format", ""))}
        generator = dataset.meta.get("generator")
        if isinstance(generator, dict) and "name" in generator:
            models["generator"] = f"{generator['name']}=={generator.get('version', '?')}"
        self.provenance = Provenance(backend="ground_truth", models=models)

    def uri(self, image_id: str) -> str:
        """file:// uri of the image's RGB file ("" for an id not in the dataset)."""
        if image_id not in self.dataset:
            return ""
        return Path(os.path.abspath(self.dataset.rgb_path(image_id))).as_uri()

    def observe(self, ids: Sequence[str]) -> list[Observation | ObservationFailure]:
        return [self.observe_one(image_id) for image_id in ids]

    def observe_one(self, image_id: str) -> Observation | ObservationFailure:
        """The observation of one image, or why there is none."""
        uri = self.uri(image_id)
        if image_id not in self.dataset:
            return ObservationFailure(image_id, uri, "unreadable", f"id {image_id!r} is not in the dataset index")
        try:
            sample = self.dataset.sample(image_id)
        except RGBDFormatError as err:
            depth_file = self.dataset.root / self.dataset.row(image_id).depth
            reason = "invalid_depth" if Path(err.path) == depth_file else "unreadable"
            return ObservationFailure(image_id, uri, reason, str(err))
        return observation_of(sample, uri, self.provenance)


def observation_of(sample: RGBDSample, uri: str, provenance: Provenance) -> Observation:
    """The ground-truth observation of one sample (read from a dataset or rendered in memory)."""
    row = sample.row
    masks, labels, object_ids, colours = [], [], [], []
    for obj in sorted(sample.annotation["objects"], key=lambda o: o["instance_id"]):
        mask = sample.instances == obj["instance_id"]  # (H, W) bool
        box = mask_bbox(mask)
        if box is None:
            continue  # fully occluded: nothing of it is in the image
        masks.append(Mask(mask=mask, score=1.0, stability=1.0, bbox=box))
        labels.append(Label(name=str(obj["label"]), score=1.0, top_k=((str(obj["label"]), 1.0),)))
        object_ids.append(int(obj["instance_id"]))
        colours.append(obj.get("colour"))
    gravity = np.asarray(row.gravity_cam, dtype=np.float64)
    return Observation(
        image_id=row.id,
        uri=uri,
        image=sample.rgb,
        depth=sample.depth,
        fx=row.fx,
        fy=row.fy,
        cx=row.cx,
        cy=row.cy,
        focal_source="dataset",
        masks=tuple(masks),
        labels=tuple(labels),
        object_ids=tuple(object_ids),
        colours=tuple(colours),
        gravity_cam=gravity if np.isfinite(gravity).all() else None,
        provenance=provenance,
    )
