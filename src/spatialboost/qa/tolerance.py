"""Tolerances of numeric answers, metres, from the evidence behind each one.

Every numeric answer states how far off it may be. The base is a metric-QA band,
`max(abs_floor_m, rel * value)`, widened by `(2 - confidence)` (x1 for a certain object, up to
x2 for a doubtful one), plus terms for what a single view cannot see:

- pixels: an extent is known to about a pixel at each side, and one pixel at the object's
  distance is `pixel_m = distance / focal` metres;
- the hidden back: a box fitted to the visible surface misses the object's far side. Its
  footprint's long side minus its short side, `hidden_m`, is a proxy for how much depth went
  unseen (a sphere seen from the front gives a footprint of about 2r by 1.3r); a centre may move
  by about a third of it, an extent by all of it;
- the hidden bottom: a camera looking down at a round object at elevation e misses a bottom
  cap of about r (1 - cos e); `look_down = 1 - cos e` times the height is added to heights
  (half of it to centres).

The constants were set on the world's *train* split (250 scenes through the ground-truth
extractor, default geometry, two seeds, ~4,000 numeric answers), against the world's own
boxes: the smallest bands, of a few candidates, that keep >= 98% of every numeric question type
inside (overall 99.5%). Median band / value there: point depth 5%, distance to an object 10%,
between objects 18%, height 27%; a box's width gets the widest band (the hidden side is what a
single view does not measure). The acceptance check runs on the held-out test split.
"""

from __future__ import annotations

from dataclasses import dataclass

from spatialboost.qa.facts import ObjectFacts


@dataclass(frozen=True)
class ToleranceModel:
    """Constants of the tolerance bands (metres, or fractions of the value).

    abs_floor_m: never tighter than this (also > half a rendering step of 0.1 m).
    rel: relative band of object measurements; point_rel: of depths read off the depth map.
    center_pixels, extent_pixels: pixel slack of a box centre / an extent.
    center_hidden, extent_hidden: share of `hidden_m` added to a centre / an extent.
    bottom_hidden: share of height * look_down (the bottom cap a camera looking down misses)
    added to a height (half of it to a centre's height and distance).
    """

    abs_floor_m: float = 0.1
    rel: float = 0.05
    point_rel: float = 0.05
    center_pixels: float = 1.5
    extent_pixels: float = 2.0
    center_hidden: float = 0.35
    extent_hidden: float = 1.0
    bottom_hidden: float = 1.0

    def base(self, value_m: float, confidence: float, rel: float | None = None) -> float:
        """max(abs_floor_m, rel * |value|) * (2 - confidence), metres."""
        rel = self.rel if rel is None else rel
        return max(self.abs_floor_m, rel * abs(value_m)) * (2.0 - min(max(confidence, 0.0), 1.0))

    def point_depth(self, depth_m: float, confidence: float) -> float:
        """A depth read at one pixel of the depth map."""
        return self.base(depth_m, confidence, self.point_rel)

    def object_distance(self, obj: ObjectFacts) -> float:
        """Camera centre to box centre."""
        return self.base(obj.distance_m, obj.confidence) + self._center_slack(obj)

    def object_height(self, obj: ObjectFacts) -> float:
        """Box height: pixels, and the bottom cap of a round object seen from above."""
        return self.base(obj.size[2], obj.confidence) + self.extent_pixels * obj.pixel_m + self._bottom(obj)

    def object_box(self, obj: ObjectFacts) -> tuple[float, ...]:
        """Per component of (cx, cy, cz, length, width, height)."""
        center = self._center_slack(obj)
        footprint = self.extent_hidden * obj.hidden_m + self.extent_pixels * obj.pixel_m
        c = obj.confidence
        return (  # y is (almost) the distance from the camera: it gets the distance's band
            self.base(0.0, c) + center,
            self.base(obj.distance_m, c) + center,
            self.base(0.0, c) + self.center_pixels * obj.pixel_m + self._bottom(obj) / 2,
            self.base(obj.size[0], c) + footprint,
            self.base(obj.size[1], c) + footprint,
            self.object_height(obj),
        )

    def distance_between(self, a: ObjectFacts, b: ObjectFacts, value_m: float) -> float:
        """Box centre to box centre: both centres' slack adds up."""
        return self.base(value_m, min(a.confidence, b.confidence)) + self._center_slack(a) + self._center_slack(b)

    def _center_slack(self, obj: ObjectFacts) -> float:
        return self.center_hidden * obj.hidden_m + self.center_pixels * obj.pixel_m + self._bottom(obj) / 2

    def _bottom(self, obj: ObjectFacts) -> float:
        return self.bottom_hidden * obj.size[2] * obj.look_down
