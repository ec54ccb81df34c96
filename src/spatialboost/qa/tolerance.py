"""Tolerances of numeric answers, metres, set from the measured error of the labels.

Every numeric answer states how far off it may be: `max(rel * scale, pixels * pixel_m)`, where
`pixel_m = distance / focal` is one pixel at the object's distance (what a single view cannot
resolve) and `rel` is the relative error that the extraction showed on the world's *train*
split against the world's exact boxes. The scale is the value itself for distances, heights
and extents, and the object's distance for a box centre (its error grows with distance, not
with how far the centre is from an axis).

How the constants were set: `benchmarks/box_completion.py` extracts the world's train split with
the ground-truth extractor (amodal boxes, geometry/completion.py), takes every measurable object
and pair a conversation may ask about, and sets each `rel` to the smallest value that keeps
`COVERAGE` (98%) of that question type inside its band (for a box, all six components at once,
by one quantile level common to the six components). The held-out test split's
coverage is reported there and in metrics/synthesize.json (`checker`); nothing was widened to
make it pass. Depth at a pixel reads the stored depth map (16-bit log codes, relative error
below 1.2e-4): its band only covers that storage and float rounding.

These bands describe the ground-truth extractor. Model-extracted scenes (Depth Pro, SAM 2) err
more; their bands would have to be measured the same way on a dataset with ground truth.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from spatialboost.qa.facts import ObjectFacts, SceneFacts

if TYPE_CHECKING:
    from spatialboost.qa.checker import WorldTruth

COVERAGE = 0.98
"""Share of every numeric question type's labels that the bands keep inside, on the train split."""


@dataclass(frozen=True)
class ToleranceModel:
    """Relative bands per numeric question type (fractions of the scale), and a pixel floor.

    point_rel: depth at a pixel. distance_rel: camera to an object's box centre.
    between_rel: between two box centres. height_rel: an object's height.
    center_rel: box centre (x, y, z), fractions of the object's distance.
    extent_rel: box (length, width, height), fractions of the extent.
    pixels: no band is tighter than this many pixels at the object's distance (two objects: the
    sum of theirs).

    The values are `fit_tolerances` on the world's train split (benchmarks/results/box_completion.md).
    A 0 means the pixel floor alone held 98% of the labels (heights: the box reaches the ground the
    object stands on, and its top is seen). The box's horizontal extents need the widest bands: their
    medians are 4-5 cm, but an elongated object seen end on or broadside (ellipsoid, capsule) is
    where the round-footprint prior errs, and a band that holds 98% of boxes has to cover those.
    """

    point_rel: float = 0.002
    distance_rel: float = 0.043
    between_rel: float = 0.034
    height_rel: float = 0.0
    center_rel: tuple[float, float, float] = (0.036, 0.081, 0.0)
    extent_rel: tuple[float, float, float] = (0.71, 0.53, 0.0)
    pixels: float = 2.0

    def point_depth(self, depth_m: float, confidence: float = 1.0) -> float:
        """A depth read at one pixel of the stored depth map."""
        return self.point_rel * abs(depth_m)

    def object_distance(self, obj: ObjectFacts) -> float:
        """Camera centre to box centre."""
        return max(self.distance_rel * obj.distance_m, self._floor(obj))

    def object_height(self, obj: ObjectFacts) -> float:
        """The box's height."""
        return max(self.height_rel * obj.size[2], self._floor(obj))

    def object_box(self, obj: ObjectFacts) -> tuple[float, ...]:
        """Per component of (cx, cy, cz, length, width, height)."""
        floor = self._floor(obj)
        centre = tuple(max(rel * obj.distance_m, floor) for rel in self.center_rel)
        extents = tuple(max(rel * size, floor) for rel, size in zip(self.extent_rel, obj.size, strict=True))
        return centre + extents

    def distance_between(self, a: ObjectFacts, b: ObjectFacts, value_m: float) -> float:
        """Box centre to box centre."""
        return max(self.between_rel * value_m, self._floor(a) + self._floor(b))

    def _floor(self, obj: ObjectFacts) -> float:
        return self.pixels * obj.pixel_m


@dataclass(frozen=True)
class LabelError:
    """One measured label against the truth, for fitting bands.

    qtype: "object_distance", "distance_between", "object_height" or "object_box"; values and
    truths: the label's components (one, or six for a box), metres; scales: each component's
    scale (ToleranceModel's docstring), metres; floor_m: its pixel floor for `pixels` = 1.
    """

    qtype: str
    values: tuple[float, ...]
    truths: tuple[float, ...]
    scales: tuple[float, ...]
    floor_m: float


def label_errors(facts: SceneFacts, truth: WorldTruth) -> list[LabelError]:
    """Every numeric label a conversation may state about the scene's measurable objects (and
    their pairs), against the world's truth: what `fit_tolerances` is fitted on."""
    out = []
    measurable = [obj for obj in facts.objects if obj.measurable]
    for obj in measurable:
        true_center = tuple(float(x) for x in truth.center(obj.object_id))
        true_size = truth.extents(obj.object_id)
        out.append(
            LabelError(
                "object_distance",
                (obj.distance_m,),
                (truth.camera_distance(obj.object_id),),
                (obj.distance_m,),
                obj.pixel_m,
            )
        )
        out.append(LabelError("object_height", (obj.size[2],), (true_size[2],), (obj.size[2],), obj.pixel_m))
        out.append(
            LabelError(
                "object_box",
                (*obj.center, *obj.size),
                (*true_center, *true_size),
                (obj.distance_m,) * 3 + tuple(obj.size),
                obj.pixel_m,
            )
        )
    for a, b in itertools.combinations(measurable, 2):
        value = math.dist(a.center, b.center)
        true = float(np.linalg.norm(truth.center(a.object_id) - truth.center(b.object_id)))
        out.append(LabelError("distance_between", (value,), (true,), (value,), a.pixel_m + b.pixel_m))
    return out


def fit_tolerances(
    errors: Sequence[LabelError], coverage: float = COVERAGE, base: ToleranceModel | None = None
) -> ToleranceModel:
    """The smallest relative bands that keep `coverage` of every question type's labels inside.

    For a single number the band is the coverage quantile of |error| / scale (0 where the pixel
    floor holds the error);
    for a box, every component gets the same quantile level, raised (bisection) until `coverage`
    of the boxes lie inside in all six components at once.
    Question types without samples keep `base`'s values (ToleranceModel() by default).
    """
    base = base or ToleranceModel()
    by_type: dict[str, list[LabelError]] = {}
    for err in errors:
        by_type.setdefault(err.qtype, []).append(err)
    updates: dict[str, object] = {}
    single = {"object_distance": "distance_rel", "distance_between": "between_rel", "object_height": "height_rel"}
    for qtype, field in single.items():
        if by_type.get(qtype):
            ratios = _excess_ratios(by_type[qtype], base.pixels)[:, 0]
            updates[field] = _round_up(float(np.quantile(ratios, coverage)))
    if by_type.get("object_box"):
        ratios = _excess_ratios(by_type["object_box"], base.pixels)  # (N, 6)
        low, high = coverage, 1.0  # one quantile level for all six components, raised until the boxes are covered
        for _ in range(40):
            mid = (low + high) / 2
            bands = np.quantile(ratios, mid, axis=0)
            inside = (ratios <= bands + 1e-12).all(axis=1).mean()
            low, high = (low, mid) if inside >= coverage else (mid, high)
        rel = [_round_up(float(x)) for x in np.quantile(ratios, high, axis=0)]
        updates["center_rel"], updates["extent_rel"] = tuple(rel[:3]), tuple(rel[3:])
    return replace(base, **updates)  # type: ignore[arg-type]


def within(model: ToleranceModel, err: LabelError) -> bool:
    """Whether every component of a measured label lies within the band `model` gives it."""
    rels = {
        "object_distance": (model.distance_rel,),
        "distance_between": (model.between_rel,),
        "object_height": (model.height_rel,),
        "object_box": (*model.center_rel, *model.extent_rel),
    }[err.qtype]
    floor = model.pixels * err.floor_m
    return all(
        abs(v - t) <= max(rel * scale, floor) + 1e-12
        for v, t, rel, scale in zip(err.values, err.truths, rels, err.scales, strict=True)
    )


def model_as_dict(model: ToleranceModel) -> dict[str, object]:
    """The constants, for reports."""
    return {f.name: getattr(model, f.name) for f in fields(model)}


def _excess_ratios(errors: Sequence[LabelError], pixels: float) -> np.ndarray:
    """(N, K) per component: the relative band it needs, |error| / scale, or 0 when the pixel
    floor alone holds it (a band is max(rel * scale, floor))."""
    values = np.array([e.values for e in errors], dtype=np.float64)
    truths = np.array([e.truths for e in errors], dtype=np.float64)
    scales = np.maximum(np.array([e.scales for e in errors], dtype=np.float64), 1e-9)
    floors = pixels * np.array([e.floor_m for e in errors], dtype=np.float64)[:, None]
    error = np.abs(values - truths)
    return np.where(error <= floors, 0.0, error / scales)


def _round_up(value: float) -> float:
    """Two significant digits, rounded up (a band is never tighter than measured)."""
    if value <= 0:
        return 0.0
    digits = 1 - int(np.floor(np.log10(value)))
    return float(np.ceil(value * 10**digits) / 10**digits)
