"""Words for typed questions: templates (several per question type), units and rounding.

    fmt = NumberFormat("cm", decimals=1)
    fmt.length(2.137)          # "210 cm": metres get `decimals`, other units as fine or finer
    QUESTIONS["left_right"]["choice"]   # >= 3 templates, one picked per question (qa.draws)

Templates are `str.format` strings with named fields: {a}, {b} (object names), {x}, {y}
(a point), {ax}, {ay}, {bx}, {by} (points A and B); with drawn marks (MARKED_QUESTIONS) {p}, {a}, {b}
are mark labels, {asked} (the relation a yes/no question
names; {asked_to}: "closer to" / "farther from"), {first}, {second} (the two options of a
choice), {options} / {options_and} (the listed objects, joined by "or" / "and"), {anchor}. Answers are built in
conversation.py from the sentence fragments here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

UNITS_PER_METRE = {"m": 1.0, "cm": 100.0, "ft": 1.0 / 0.3048, "in": 1.0 / 0.0254}


@dataclass(frozen=True)
class NumberFormat:
    """Renders metres in `unit` with rounding.

    decimals: decimals of a value in metres; another unit gets `decimals - floor(log10(units
    per metre))`, so no unit is coarser than metres: with decimals 1, steps of 0.1 m, 10 cm,
    0.1 ft and 1 in (negative decimals round to tens).
    """

    unit: str
    decimals: int
    unit_decimals: int = field(init=False)
    _scale: float = field(init=False, repr=False)
    _pattern: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.unit not in UNITS_PER_METRE:
            raise ValueError(f"unknown unit {self.unit!r}; known: {', '.join(UNITS_PER_METRE)}")
        scale = UNITS_PER_METRE[self.unit]
        object.__setattr__(self, "_scale", scale)
        object.__setattr__(self, "unit_decimals", self.decimals - math.floor(math.log10(scale)))
        object.__setattr__(self, "_pattern", f"{{:.{max(self.unit_decimals, 0)}f}}")

    def rounded(self, value_m: float) -> float:
        """The value in `unit`, rounded as rendered."""
        value = round(value_m * self._scale, self.unit_decimals)
        return 0.0 if value == 0 else value  # no "-0.0"

    def number(self, value_m: float) -> str:
        """The number alone: "2.1", "210", "-0.4"."""
        return self.show(self.rounded(value_m))

    def show(self, rounded: float) -> str:
        """A value already in `unit` and rounded (see `rounded`), as text."""
        return self._pattern.format(rounded)

    def length(self, value_m: float) -> str:
        """Number and unit: "2.1 m", "210 cm"."""
        return f"{self.number(value_m)} {self.unit}"

    def extent(self, value_m: float) -> str:
        """A size (> 0) as a number that never reads 0: one that rounds to zero at `decimals`
        gets the decimals of its first significant digit ("0.04" m, "4" cm), not "0"."""
        rounded = self.rounded(value_m)
        if rounded != 0 or value_m <= 0:
            return self.show(rounded)
        digits = -math.floor(math.log10(value_m * self._scale))
        return f"{round(value_m * self._scale, digits):.{max(digits, 0)}f}"


def capitalize(text: str) -> str:
    """First letter upper case, the rest untouched ("the red cube ..." -> "The red cube ...")."""
    return text[:1].upper() + text[1:]


def indefinite(name: str) -> str:
    """The name with its indefinite article: "a red cube", "an orange cone", "an ellipsoid"."""
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def join_words(items: list[str], conjunction: str = "and") -> str:
    """Words joined as in a sentence: "x", "x and y", "x, y and z"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "point_depth": {
        "number": (
            "What is the depth at pixel ({x}, {y})?",
            "How deep is the surface at the point ({x}, {y})?",
            "Estimate the depth of the point ({x}, {y}) in the image.",
            "How far from the camera plane is the point at ({x}, {y})?",
        ),
    },
    "point_closer": {
        "choice": (
            "Point A is at ({ax}, {ay}) and point B at ({bx}, {by}). Which point is closer to the camera?",
            "Which is nearer to the camera: point A ({ax}, {ay}) or point B ({bx}, {by})?",
            "Of the points A = ({ax}, {ay}) and B = ({bx}, {by}), which one is closer to the camera?",
        ),
        "bool": (
            "Is the point ({ax}, {ay}) {asked_to} the camera than the point ({bx}, {by})?",
            "Is the point at ({ax}, {ay}) {asked} than the point at ({bx}, {by})?",
            "Compared with ({bx}, {by}), is the point ({ax}, {ay}) {asked_to} the camera?",
        ),
    },
    "object_distance": {
        "number": (
            "How far is {a} from the camera?",
            "What is the distance between the camera and {a}?",
            "How far away is {a}?",
        ),
    },
    "object_height": {
        "number": (
            "How tall is {a}?",
            "What is the height of {a}?",
            "How high is {a} from its bottom to its top?",
        ),
    },
    "object_box": {
        "box": (
            "What is the 3D bounding box of {a}?",
            "Give the 3D box of {a}: its centre and its size.",
            "Describe the bounding cube of {a}.",
        ),
    },
    "left_right": {
        "choice": (
            "Is {a} to the {first} or to the {second} of {b}?",
            "Relative to {b}, is {a} on the {first} or on the {second}?",
            "From the camera's view, is {a} {first} or {second} of {b}?",
        ),
        "bool": (
            "Is {a} to the {asked} of {b}?",
            "Is {a} on the {asked} side of {b}?",
            "From the camera's view, is {a} {asked} of {b}?",
        ),
    },
    "above_below": {
        "choice": (
            "Is {a} {first} or {second} {b}?",
            "Is the centre of {a} {first} or {second} that of {b}?",
            "Compared with {b}, is {a} {first} or {second} it?",
        ),
        "bool": (
            "Is {a} {asked} {b}?",
            "Is the centre of {a} {asked} that of {b}?",
            "Does {a} sit {asked} {b}?",
        ),
    },
    "front_behind": {
        "choice": (
            "Is {a} {first} or {second} {b}?",
            "Seen from the camera, is {a} {first} {b} or {second} it?",
            "Relative to {b}, is {a} {first} or {second} it?",
        ),
        "bool": (
            "Is {a} {asked} {b}?",
            "Seen from the camera, is {a} {asked} {b}?",
            "Would you say {a} is {asked} {b}?",
        ),
    },
    "distance_between": {
        "number": (
            "How far apart are {a} and {b}?",
            "What is the distance between {a} and {b}?",
            "How far is {a} from {b}?",
        ),
    },
    "closest_to": {
        "choice": (
            "Which is closest to {anchor}: {options}?",
            "Of {options_and}, which object is nearest to {anchor}?",
            "Which of these is closest to {anchor}: {options}?",
        ),
    },
    "farthest_from": {
        "choice": (
            "Which is farthest from {anchor}: {options}?",
            "Of {options_and}, which object is the farthest from {anchor}?",
            "Which of these lies farthest from {anchor}: {options}?",
        ),
    },
    "closest_to_camera": {
        "choice": (
            "Which is closest to the camera: {options}?",
            "Of {options_and}, which object is nearest to the camera?",
            "Which of these is the closest to the viewer: {options}?",
        ),
    },
    "caption_inventory": {
        "text": ("What objects are in the image?", "Describe the scene.", "List the objects you can see."),
    },
    "caption_left_to_right": {
        "text": (
            "Describe the layout of the objects from left to right.",
            "Name the objects in order from left to right.",
            "How are the objects arranged from left to right?",
        ),
    },
    "caption_near_to_far": {
        "text": (
            "Order the objects from nearest to farthest.",
            "Which objects are near and which are far?",
            "List the objects by their distance from the camera.",
        ),
    },
    "caption_sizes": {
        "text": (
            "Which object is the tallest, and which the shortest?",
            "Compare the heights of the objects.",
            "How tall are the objects?",
        ),
    },
}

MARKED_QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "point_depth": {
        "number": (
            "What is the depth at point {p}?",
            "How deep is the surface at the marked point {p}?",
            "Estimate the depth of point {p} in the image.",
            "How far from the camera plane is point {p}?",
        ),
    },
    "point_closer": {
        "choice": (
            "Which point is closer to the camera, {a} or {b}?",
            "Which is nearer to the camera: point {a} or point {b}?",
            "Of the marked points {a} and {b}, which one is closer to the camera?",
        ),
        "bool": (
            "Is point {a} {asked_to} the camera than point {b}?",
            "Is point {a} {asked} than point {b}?",
            "Compared with point {b}, is point {a} {asked_to} the camera?",
        ),
    },
}
"""The pixel-level templates when points are drawn marks (synthesize.point_refs = marks): {p},
{a}, {b} are mark labels ("A", "B")."""
"""Question templates per question type and answer type (>= 3 each)."""

ASKED_TO = {"closer": "closer to", "farther": "farther from"}
"""A point comparison with its preposition."""

BOX_FRAME_NOTE = "x right, y forward, z up, from the ground below the camera"
"""The canonical frame as the 3D-box answers explain it."""
