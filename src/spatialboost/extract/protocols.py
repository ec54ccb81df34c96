"""The contract between extraction backends and the rest of the pipeline: records and protocols.

An `Observation` holds an image with its metric depth, intrinsics, object masks and labels,
wherever they came from; an `ObservationSource` turns a batch of manifest ids into observations,
or into per-image failures (never an exception for one bad image): the ground-truth observer
(ground_truth.py) and the model observer (model_observer.py) are the two, `build_observer`
(factory.py) picks one from the config.

Every backend takes a batch of RGB images, `(H, W, 3) uint8` numpy arrays of any sizes, and
returns one record per image in the same order, at the image's own resolution. Backends never
raise on a model's nonsense output (random or broken weights give negative focal lengths, NaN
depth, empty masks): they return the values and say what is wrong (`DepthResult.reasons`), so
the caller can quarantine the image instead of losing the shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from spatialboost.extract.records import Provenance

FocalSource = Literal["dataset", "exif", "model"]
"""Where a focal length came from: dataset intrinsics and EXIF beat the model's estimate."""

FOCAL_SOURCES: tuple[FocalSource, ...] = ("dataset", "exif", "model")


@dataclass(frozen=True, eq=False)
class DepthResult:
    """Metric depth of one image.

    depth: (H, W) float32, metres along the optical axis, at the input image's resolution.
    focal_px: focal length that set the metric scale, pixels of the input image (nan if none).
    focal_source: where `focal_px` came from.
    model_focal_px: the model's own focal estimate, pixels (nan without a FOV head); kept even
        when a given focal won, so model and dataset can be compared.
    reasons: why this result should not be trusted (empty: valid); see `validate_depth`.
    """

    depth: np.ndarray
    focal_px: float
    focal_source: FocalSource
    model_focal_px: float = float("nan")
    reasons: tuple[str, ...] = ()

    @property
    def is_valid(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, eq=False)
class Mask:
    """One object mask of one image.

    mask: (H, W) bool, the image's resolution.
    score: the model's predicted IoU in [0, 1] (1.0 for ground-truth masks).
    stability: IoU of the mask binarised at threshold +/- offset, in [0, 1] (SAM's stability).
    bbox: (x0, y0, x1, y1) pixels, x1 and y1 exclusive; (0, 0, 0, 0) for an empty mask.
    """

    mask: np.ndarray
    score: float
    stability: float
    bbox: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        """Pixels in the mask."""
        return int(self.mask.sum())


@dataclass(frozen=True)
class Label:
    """The region label of one mask.

    name: the best vocabulary entry; None when the mask has no pixels to look at.
    score: its probability under a softmax over the vocabulary (nan when name is None).
    top_k: the k most probable (name, probability) pairs, most probable first.
    """

    name: str | None
    score: float
    top_k: tuple[tuple[str, float], ...] = ()


@runtime_checkable
class DepthEstimator(Protocol):
    """Metric depth for a batch of images."""

    def estimate(
        self,
        images: Sequence[np.ndarray],
        focal_px: Sequence[float | None],
        focal_sources: Sequence[FocalSource] | None = None,
    ) -> list[DepthResult]:
        """images: (H, W, 3) uint8 each; focal_px: known focal length per image in pixels, or
        None to use the model's; focal_sources: where each known focal came from ("dataset" or
        "exif"; default "dataset"). A known focal sets the metric scale, not just the record."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Class-agnostic object masks for a batch of images."""

    def segment(self, images: Sequence[np.ndarray]) -> list[list[Mask]]:
        """images: (H, W, 3) uint8 each; returns the kept masks of each image, best score first."""
        ...


@runtime_checkable
class Labeler(Protocol):
    """Names for the masked regions of one image, chosen from a vocabulary."""

    def label(
        self,
        image: np.ndarray,
        masks: Sequence[Mask | np.ndarray],
        vocabulary: Sequence[str],
    ) -> list[Label]:
        """image: (H, W, 3) uint8; masks: Mask records or (H, W) bool arrays; one Label per mask."""
        ...


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
