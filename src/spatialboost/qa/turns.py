"""Typed turns: every question and answer of a conversation, with what it claims in SI units.

A `Turn` carries its rendered text (what the LVLM is trained on) beside the typed claim (what a
checker can verify): level, question type, answer type, value, unit, tolerance, the objects,
points and 2D boxes it mentions, and the evidence the answer rests on.

Value semantics per question type (`object_ids`, `points` in role order):

    level    qtype               answer   value                         roles
    pixel    point_depth         number   z-depth at points[0], m       points: (p,)
    pixel    point_closer        choice   "A"/"B": the nearer point     points: (A, B)
                                 bool     is A `asked` ("closer"/"farther") than B
    object   object_distance     number   camera to box centre, m       ids: (a,)
    object   object_height       number   box height, m                 ids: (a,)
    object   object_box          box      (cx, cy, cz, length, width, height), m, canonical frame
    object   left_right          choice   "left"/"right": a relative to b            ids: (a, b)
                                 bool     is a `asked` ("left"/"right") of b
    object   above_below         choice   "above"/"below" (box-centre heights)       ids: (a, b)
                                 bool     is a `asked` ("above"/"below") b
    object   front_behind        choice   "in front of"/"behind" (centre distances)  ids: (a, b)
                                 bool     is a `asked` ("in front of"/"behind") b
    scene    distance_between    number   box centre to box centre, m                ids: (a, b)
    scene    closest_to          choice   "A"/"B"/...: the option nearest the anchor ids: (anchor, *options)
    scene    farthest_from       choice   "A"/"B"/...: the option farthest from it   ids: (anchor, *options)
    scene    closest_to_camera   choice   "A"/"B"/...: the option nearest the camera ids: (*options)
    caption  caption_*           text     None or an ordering of object ids (not checked)

Canonical frame: x right, y forward, z up (gravity-aligned), origin on the ground below the
camera (extract/records.py). Object distances are between oriented-box centres; point depths
are z-depths from the depth map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA_VERSION = 1
"""Written on every sidecar line; bump on any change of a field's meaning."""

Level = Literal["pixel", "object", "scene", "caption"]
AnswerType = Literal["bool", "choice", "number", "box", "text"]
QuestionType = Literal[
    "point_depth",
    "point_closer",
    "object_distance",
    "object_height",
    "object_box",
    "left_right",
    "above_below",
    "front_behind",
    "distance_between",
    "closest_to",
    "farthest_from",
    "closest_to_camera",
    "caption_inventory",
    "caption_left_to_right",
    "caption_near_to_far",
    "caption_sizes",
]
LEVELS: tuple[Level, ...] = ("pixel", "object", "scene", "caption")
LETTERS = "ABCDEFGH"
"""Labels of listed options (points or objects), in the order the question lists them."""

Value = bool | str | float | tuple[float, ...] | tuple[int, ...] | None
Point = tuple[int, int]
"""(x, y) = (column, row), pixels."""
Box2D = tuple[int, int, int, int]
"""(x0, y0, x1, y1), pixels, x1 and y1 exclusive."""


@dataclass(frozen=True)
class Turn:
    """One question and its answer.

    question, answer: rendered text (the answer includes its rationale, when it has one).
    value: the claim in SI units (see the module table); unit: the unit the numbers were
    rendered in ("m", "cm", "ft", "in"; None for bool/choice/text). tolerance: metres, a float
    for numbers, one per component for boxes; None otherwise. asked: the relation a yes/no
    question names; choices: the option labels of a choice question, as listed.
    object_ids, points, boxes: what the turn mentions (in role order), including the points and
    2D boxes that tell same-named objects apart. rationale: indices (in forward order) of the
    earlier turns the answer's reasoning quotes. confidence: the lowest extraction confidence of
    the objects it rests on; evidence: a few numbers behind it (see conversation.turn_evidence).
    """

    level: Level
    qtype: QuestionType
    question: str
    answer: str
    answer_type: AnswerType
    value: Value
    unit: str | None = None
    tolerance: float | tuple[float, ...] | None = None
    asked: str | None = None
    choices: tuple[str, ...] = ()
    object_ids: tuple[int, ...] = ()
    points: tuple[Point, ...] = ()
    boxes: tuple[Box2D, ...] = ()
    rationale: tuple[int, ...] = ()
    confidence: float = 1.0
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, fields in declaration order; `Turn.from_dict` reads it back."""
        return {
            "level": self.level,
            "qtype": self.qtype,
            "question": self.question,
            "answer": self.answer,
            "answer_type": self.answer_type,
            "value": list(self.value) if isinstance(self.value, tuple) else self.value,
            "unit": self.unit,
            "tolerance": list(self.tolerance) if isinstance(self.tolerance, tuple) else self.tolerance,
            "asked": self.asked,
            "choices": list(self.choices),
            "object_ids": list(self.object_ids),
            "points": [list(p) for p in self.points],
            "boxes": [list(b) for b in self.boxes],
            "rationale": list(self.rationale),
            "confidence": self.confidence,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Turn:
        """Inverse of `to_dict` (lists back to tuples)."""
        value = raw["value"]
        tolerance = raw.get("tolerance")
        return cls(
            level=raw["level"],
            qtype=raw["qtype"],
            question=raw["question"],
            answer=raw["answer"],
            answer_type=raw["answer_type"],
            value=tuple(value) if isinstance(value, list) else value,
            unit=raw.get("unit"),
            tolerance=tuple(tolerance) if isinstance(tolerance, list) else tolerance,
            asked=raw.get("asked"),
            choices=tuple(raw.get("choices", ())),
            object_ids=tuple(raw.get("object_ids", ())),
            points=tuple(tuple(p) for p in raw.get("points", ())),  # type: ignore[misc]
            boxes=tuple(tuple(b) for b in raw.get("boxes", ())),  # type: ignore[misc]
            rationale=tuple(raw.get("rationale", ())),
            confidence=float(raw.get("confidence", 1.0)),
            evidence=dict(raw.get("evidence", {})),
        )
