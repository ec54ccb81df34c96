"""What a conversation may say about a scene: the askable objects, their names and evidence.

    facts = scene_facts(record, min_confidence=cfg.min_confidence)
    facts.objects[0].name          # "the red cube", or "the red cube at (45, 60)" when repeated

From a SceneRecord (extract/records.py) this module derives, once per scene:
- names: label, with the colour when known ("the red cube"); when two objects of the record
  share that name, each is told apart by a point on its mask ("at (x, y)", the pixel deepest
  inside the mask) or by its 2D box ("in the box [x0, y0, x1, y1]"), chosen at random;
- visibility: an object is *truncated* when its mask touches the image border and *occluded*
  when its mask touches (or overlaps) the mask of an object whose nearest point is closer to
  the camera. Metric questions (distances, heights, 3D boxes) are asked only about objects that
  are neither: their boxes are measured on the visible surface only, and a hidden part can move
  a box by more than any sane tolerance. Relations (left/right, ...) need only margins;
- evidence: `hidden_m` (length - width of the box footprint: how much of an object's depth a
  single view may have missed), `pixel_m` (one pixel at the object's distance) and `look_down`
  (1 - cos of the angle the camera looks down at the object from: how much of a round object's
  bottom it cannot see), which set the tolerances of numeric answers (qa/tolerance.py).

Objects below `min_confidence` are kept out of `objects` (never asked about) but still count
when deciding whether a name repeats: they are in the image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spatialboost.extract.records import ObjectRecord, SceneRecord
from spatialboost.qa.draws import Draws
from spatialboost.qa.turns import Box2D, Point


@dataclass(frozen=True, eq=False)
class ObjectFacts:
    """One askable object.

    base_name: "red cube" (colour + label, or the label alone). name: what the text calls it,
    with its article ("the red cube", "the red cube at (45, 60)"). point, box: the point or 2D
    box the name mentions, if any. center: (x, y, z) canonical frame, metres. size: (length, width,
    height), metres. distance_m: camera centre to box centre; nearest_m: to its nearest point.
    bbox: the mask's 2D box, pixels. measurable: neither truncated nor occluded. pixel_m: one
    pixel at the object's distance, metres.
    """

    object_id: int
    label: str
    colour: str | None
    base_name: str
    name: str
    point: Point | None
    box: Box2D | None
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    distance_m: float
    nearest_m: float
    confidence: float
    bbox: Box2D
    truncated: bool
    occluded: bool
    pixel_m: float
    n_kept: int

    @property
    def measurable(self) -> bool:
        """True when metric questions (distance, height, box) may be asked about the object."""
        return not (self.truncated or self.occluded)


@dataclass(frozen=True, eq=False)
class SceneFacts:
    """The askable objects of one scene (confidence >= the minimum), in record order.

    camera: (3,) camera centre in the canonical frame, metres. fx, fy, cx, cy: intrinsics,
    pixels. n_low_confidence: objects of the record left out for low confidence.
    """

    image_id: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    camera: np.ndarray
    objects: tuple[ObjectFacts, ...]
    n_low_confidence: int

    def by_id(self, object_id: int) -> ObjectFacts:
        for obj in self.objects:
            if obj.object_id == object_id:
                return obj
        raise KeyError(f"{self.image_id}: no askable object {object_id}")


def base_name(label: str, colour: str | None) -> str:
    """The colour and the label ("red cube"), or the label alone when the colour is unknown."""
    return f"{colour} {label}" if colour else label


def scene_facts(
    record: SceneRecord,
    draws: Draws,
    min_confidence: float = 0.0,
    masks: list[np.ndarray] | None = None,
) -> SceneFacts:
    """Facts of every object of `record` whose confidence is >= min_confidence.

    draws: picks a point or a 2D box to tell same-named objects apart (one draw per repeated
    object, in record order). masks: the decoded (H, W) bool masks in record order, when the
    caller already has them.
    """
    objects = record.objects
    masks = masks if masks is not None else [obj.mask.decode() for obj in objects]
    occluded = occluded_objects(objects, masks)
    names = [base_name(obj.label, obj.colour) for obj in objects]
    repeated = {name for name in names if names.count(name) > 1}
    facts = []
    for i, obj in enumerate(objects):
        use_box = draws.flip() if names[i] in repeated else False
        if obj.confidence < min_confidence:
            continue
        facts.append(
            _object_facts(
                record,
                obj,
                masks[i],
                name=names[i],
                repeated=names[i] in repeated,
                use_box=use_box,
                occluded=i in occluded,
            )
        )
    return SceneFacts(
        image_id=record.image_id,
        width=record.width,
        height=record.height,
        fx=record.intrinsics.fx,
        fy=record.intrinsics.fy,
        cx=record.intrinsics.cx,
        cy=record.intrinsics.cy,
        camera=np.asarray(record.frame.translation, dtype=np.float64),
        objects=tuple(facts),
        n_low_confidence=len(objects) - len(facts),
    )


def _object_facts(
    record: SceneRecord,
    obj: ObjectRecord,
    mask: np.ndarray,
    *,
    name: str,
    repeated: bool,
    use_box: bool,
    occluded: bool,
) -> ObjectFacts:
    x0, y0, x1, y1 = obj.bbox
    point, box = None, None
    if repeated and use_box:
        box = (x0, y0, x1, y1)
        display = f"the {name} in the box [{x0}, {y0}, {x1}, {y1}]"
    elif repeated:
        point = interior_point(mask, obj.bbox)
        display = f"the {name} at ({point[0]}, {point[1]})"
    else:
        display = f"the {name}"
    length, width, height = obj.box.size
    return ObjectFacts(
        object_id=obj.object_id,
        label=obj.label,
        colour=obj.colour,
        base_name=name,
        name=display,
        point=point,
        box=box,
        center=obj.box.center,
        size=(length, width, height),
        distance_m=obj.center_distance_m,
        nearest_m=obj.nearest_distance_m,
        confidence=obj.confidence,
        bbox=(x0, y0, x1, y1),
        truncated=x0 <= 0 or y0 <= 0 or x1 >= record.width or y1 >= record.height,
        occluded=occluded,
        pixel_m=obj.center_distance_m / min(record.intrinsics.fx, record.intrinsics.fy),
        n_kept=obj.evidence.n_kept,
    )


def interior_point(mask: np.ndarray, bbox: Box2D) -> Point:
    """(x, y) of the mask pixel farthest from the mask's border (ties: first in row-major order).

    mask: (H, W) bool; bbox: its (x0, y0, x1, y1) box. A point deep inside is unambiguous even
    when the mask is drawn a pixel too large or small.
    """
    x0, y0, x1, y1 = bbox
    crop = np.pad(mask[y0:y1, x0:x1], 1)  # padded so that the image border counts as outside
    inside = ndimage.distance_transform_cdt(crop, metric="chessboard")
    row, col = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return int(x0 + col - 1), int(y0 + row - 1)


def occluded_objects(objects: tuple[ObjectRecord, ...], masks: list[np.ndarray]) -> set[int]:
    """Indices of objects whose mask touches or overlaps the mask of a nearer object.

    Two masks touch when a pixel of one is a 4-neighbour of a pixel of the other. "Nearer"
    compares the objects' nearest points (nearest_distance_m), the surface that would hide.
    Only pairs whose 2D boxes, grown by a pixel, meet are looked at, inside that meeting region
    (both pixels of a touching pair lie in it).
    """
    hidden = set()
    for i, j in itertools.combinations(range(len(objects)), 2):
        a, b = objects[i], objects[j]
        if a.nearest_distance_m == b.nearest_distance_m or (i in hidden and j in hidden):
            continue
        x0 = max(a.bbox[0], b.bbox[0]) - 1
        y0 = max(a.bbox[1], b.bbox[1]) - 1
        x1 = min(a.bbox[2], b.bbox[2]) + 1
        y1 = min(a.bbox[3], b.bbox[3]) + 1
        if x0 >= x1 or y0 >= y1:
            continue
        region = (slice(max(y0, 0), y1), slice(max(x0, 0), x1))
        if masks_touch(masks[i][region], masks[j][region]):
            hidden.add(j if a.nearest_distance_m < b.nearest_distance_m else i)
    return hidden


def masks_touch(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two (H, W) bool masks overlap or have 4-neighbouring pixels."""
    return bool(
        (a & b).any()
        or (a[:, 1:] & b[:, :-1]).any()
        or (a[:, :-1] & b[:, 1:]).any()
        or (a[1:] & b[:-1]).any()
        or (a[:-1] & b[1:]).any()
    )


def occluded_objects_naive(objects: tuple[ObjectRecord, ...], masks: list[np.ndarray]) -> set[int]:
    """Reference for `occluded_objects`: whole-image 4-neighbour dilation of every mask."""
    hidden = set()
    for i, j in itertools.permutations(range(len(objects)), 2):
        grown = ndimage.binary_dilation(masks[i], structure=ndimage.generate_binary_structure(2, 1))
        if (grown & masks[j]).any() and objects[i].nearest_distance_m < objects[j].nearest_distance_m:
            hidden.add(j)
    return hidden
