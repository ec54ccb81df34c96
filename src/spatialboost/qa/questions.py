"""Pure question generators, one per level: facts in, candidate chains of typed questions out.

A `Question` is a turn before it is phrased: its type, value, tolerance and what it mentions.
Each generator returns *chains*: short lists of questions where the last one can quote the
answers of the others as its rationale (two depths, then "which point is closer"; two
distances, then "which object is in front"). The conversation assembler takes chains in order
until a level's turn budget is spent, so the order returned is the order of preference:
chains first, then single questions, each group shuffled with the caller's draws.

Margins (cfg.min_margin_m, cfg.min_margin_rel): a relation is asked only when its margin is
larger than both `min_margin_m` and `min_margin_rel` times the distance it is measured at;
otherwise it is skipped (counted in `Skips.margin`), never guessed. Same-named objects whose
2D boxes overlap heavily are never compared or listed together (`Skips.ambiguous`), and
objects cut by the image border are not compared at all (`Skips.truncated`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from spatialboost.qa.draws import Draws
from spatialboost.qa.facts import ObjectFacts, SceneFacts
from spatialboost.qa.probes import PixelProbe
from spatialboost.qa.tolerance import ToleranceModel
from spatialboost.qa.turns import LETTERS, AnswerType, Level, QuestionType, Value

AMBIGUOUS_IOU = 0.5
"""Same-named objects whose 2D boxes overlap more than this are not compared with each other."""

ANCHOR_OPTIONS = 2
"""Options of "which is closest to X": two, so that two distances and the question make a
chain of three turns (the paper's scene level has three)."""

CAMERA_OPTIONS = 4
"""Options of "which is closest to the camera" (at most)."""

MAX_POINT_PAIRS = 6
"""Decisive point pairs a scene offers (each a chain of three turns): plenty for the pixel
level's budget, and the pairs of 16 probes are not all worth phrasing."""

MAX_OBJECT_PAIRS = 6
"""Object pairs whose relations (object level) or distances (scene level) are offered, in
random order: enough for any turn budget, and cheaper than all 28 pairs of 8 objects."""

MAX_ANCHORS = 4
"""Anchors of "which is closest to X" chains a scene offers."""


@dataclass(frozen=True)
class Question:
    """A typed question before phrasing (fields as in turns.Turn).

    probes: the pixel probes a pixel-level question mentions. key: identity, so the assembler
    never asks the same thing twice.
    """

    level: Level
    qtype: QuestionType
    answer_type: AnswerType
    value: Value
    tolerance: float | tuple[float, ...] | None = None
    asked: str | None = None
    choices: tuple[str, ...] = ()
    object_ids: tuple[int, ...] = ()
    probes: tuple[PixelProbe, ...] = ()
    confidence: float = 1.0

    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.qtype, self.object_ids, tuple((p.x, p.y) for p in self.probes)))


Chain = list[Question]


@dataclass
class Skips:
    """Why candidates were not asked: counts per reason (see the module docstring)."""

    margin: int = 0
    ambiguous: int = 0
    truncated: int = 0
    not_measurable: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {
            "margin": self.margin,
            "ambiguous": self.ambiguous,
            "truncated": self.truncated,
            "not_measurable": self.not_measurable,
            **self.counts,
        }


@dataclass(frozen=True)
class Margins:
    """cfg.min_margin_m (metres) and cfg.min_margin_rel (fraction of the distance)."""

    min_m: float
    min_rel: float

    def decisive(self, margin: float, scale_m: float) -> bool:
        """|margin| exceeds both thresholds; scale_m is the distance the margin is measured at."""
        return abs(margin) > self.min_m and abs(margin) > self.min_rel * abs(scale_m)


def _bool_or_choice(draws: Draws, words: tuple[str, str], truth: str) -> tuple[AnswerType, Value, str | None, tuple]:
    """Half the relations are yes/no questions naming a random one of the two words (so about
    half say yes), half ask which of the two, listed in a random order. The draws do not depend
    on which word is true, so a mirrored scene asks the same question and gets the other answer."""
    if draws.flip():
        asked = words[0] if draws.flip() else words[1]
        return "bool", asked == truth, asked, ()
    return "choice", truth, None, words if draws.flip() else words[::-1]


def ambiguous(a: ObjectFacts, b: ObjectFacts) -> bool:
    """Same-named objects whose 2D boxes overlap more than AMBIGUOUS_IOU: not to be compared."""
    return a.base_name == b.base_name and box_iou(a.bbox, b.bbox) > AMBIGUOUS_IOU


# ---------------------------------------------------------------------------------------------
# Pixel level


def pixel_chains(
    probes: Sequence[PixelProbe],
    facts: SceneFacts,
    *,
    margins: Margins,
    tol: ToleranceModel,
    draws: Draws,
    skips: Skips,
    focus: Sequence[int] = (),
) -> list[Chain]:
    """Depth at a point; which of two points is closer (chained after both depths).

    Only probes on askable objects are used; probes on `focus` objects come first, so the
    object-level turns can quote them. Two points are compared when both their depths and their
    ranges (camera-centre distances) order them the same way by a decisive margin; the first
    MAX_POINT_PAIRS decisive pairs are offered.
    """
    askable = {obj.object_id: obj for obj in facts.objects}
    usable = [p for p in probes if p.object_id in askable]
    usable = sorted(draws.shuffled(usable), key=lambda p: p.object_id not in focus)
    depth_q = {(p.x, p.y): point_depth(p, askable[p.object_id], tol) for p in usable}
    chains, singles = [], []
    for a, b in itertools.combinations(usable, 2):
        if len(chains) == MAX_POINT_PAIRS:
            break
        if (a.x, a.y) == (b.x, b.y):
            continue
        closer = point_closer(a, b, askable, margins, draws)
        if closer is None:
            skips.margin += 1
            continue
        first, second = closer.probes
        chains.append([depth_q[(first.x, first.y)], depth_q[(second.x, second.y)], closer])
        singles.append([closer])
    singles += [[q] for q in depth_q.values()]
    return chains + draws.shuffled(singles)


def point_depth(probe: PixelProbe, obj: ObjectFacts, tol: ToleranceModel) -> Question:
    return Question(
        level="pixel",
        qtype="point_depth",
        answer_type="number",
        value=probe.depth_m,
        tolerance=tol.point_depth(probe.depth_m, obj.confidence),
        object_ids=(probe.object_id,),
        probes=(probe,),
        confidence=obj.confidence,
    )


def point_closer(
    a: PixelProbe, b: PixelProbe, askable: dict[int, ObjectFacts], margins: Margins, draws: Draws
) -> Question | None:
    """Which of two points is closer, or None when the depths or ranges are too close to call."""
    depth_margin, range_margin = b.depth_m - a.depth_m, b.range_m - a.range_m
    if (depth_margin > 0) != (range_margin > 0) or not (
        margins.decisive(depth_margin, min(a.depth_m, b.depth_m))
        and margins.decisive(range_margin, min(a.range_m, b.range_m))
    ):
        return None
    if draws.flip():
        a, b = b, a  # which point is A is random: "A" answers about half the time
    a_closer = a.depth_m < b.depth_m
    confidence = min(askable[a.object_id].confidence, askable[b.object_id].confidence)
    if draws.flip():
        asked = "closer" if draws.flip() else "farther"
        value: Value = a_closer == (asked == "closer")
        return Question(
            level="pixel",
            qtype="point_closer",
            answer_type="bool",
            value=value,
            asked=asked,
            object_ids=(a.object_id, b.object_id),
            probes=(a, b),
            confidence=confidence,
        )
    return Question(
        level="pixel",
        qtype="point_closer",
        answer_type="choice",
        value="A" if a_closer else "B",
        choices=("A", "B"),
        object_ids=(a.object_id, b.object_id),
        probes=(a, b),
        confidence=confidence,
    )


# ---------------------------------------------------------------------------------------------
# Object level


def object_chains(
    facts: SceneFacts,
    pairs: Sequence[tuple[ObjectFacts, ObjectFacts]],
    margins: Margins,
    tol: ToleranceModel,
    draws: Draws,
    skips: Skips,
) -> list[Chain]:
    """3D box, height, distance of one object; left/right, above/below, in front/behind of two.

    pairs: candidate pairs in random order (`candidate_pairs`); the first MAX_OBJECT_PAIRS are
    used. Chains: two distances then "in front or behind"; two boxes then "left or right" or
    "above or below". Metric questions only about measurable objects (facts.py).
    """
    measurable = [o for o in facts.objects if o.measurable]
    skips.not_measurable += len(facts.objects) - len(measurable)
    # one question object per (kind, object): chains that share an object share its question
    boxes = {o.object_id: object_box(o, tol) for o in measurable}
    distances = {o.object_id: object_distance(o, tol) for o in measurable}
    chains: list[Chain] = []
    singles: list[Chain] = [[q] for q in (*boxes.values(), *distances.values())]
    singles += [[object_height(o, tol)] for o in measurable]
    for a, b in pairs[:MAX_OBJECT_PAIRS]:
        for relation in (left_right, above_below, front_behind):
            question = relation(a, b, margins, draws)
            if question is None:
                skips.margin += 1
                continue
            singles.append([question])
            if a.measurable and b.measurable:
                first = distances if question.qtype == "front_behind" else boxes
                chains.append([first[a.object_id], first[b.object_id], question])
    return draws.shuffled(chains) + draws.shuffled(singles)


def candidate_pairs(facts: SceneFacts, draws: Draws, skips: Skips) -> list[tuple[ObjectFacts, ObjectFacts]]:
    """Unordered pairs of askable objects in random order, each in random role order (a, b).

    Skipped: same-named pairs whose 2D boxes overlap more than AMBIGUOUS_IOU (ambiguous), and
    pairs with an object cut by the image border (truncated): the part outside the image can
    move its centre by more than any margin.
    """
    objects = facts.objects
    pairs = []
    for a, b in itertools.combinations(objects, 2):
        flip = draws.flip()
        if ambiguous(a, b):
            skips.ambiguous += 1
            continue
        if a.truncated or b.truncated:
            skips.truncated += 1
            continue
        pairs.append((b, a) if flip else (a, b))
    return draws.shuffled(pairs)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) pixel boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _relation(
    qtype: QuestionType,
    a: ObjectFacts,
    b: ObjectFacts,
    *,
    margin: float,
    scale_m: float,
    words: tuple[str, str],
    margins: Margins,
    draws: Draws,
) -> Question | None:
    """margin > 0 means words[0] holds for a relative to b."""
    if not margins.decisive(margin, scale_m):
        return None
    answer_type, value, asked, choices = _bool_or_choice(draws, words, words[0] if margin > 0 else words[1])
    return Question(
        level="object",
        qtype=qtype,
        answer_type=answer_type,
        value=value,
        asked=asked,
        choices=choices,
        object_ids=(a.object_id, b.object_id),
        confidence=min(a.confidence, b.confidence),
    )


def left_right(a: ObjectFacts, b: ObjectFacts, margins: Margins, draws: Draws) -> Question | None:
    """Canonical x of the box centres; the margin is judged at the pair's mean distance."""
    scale = (a.distance_m + b.distance_m) / 2
    return _relation(
        "left_right",
        a,
        b,
        margin=b.center[0] - a.center[0],
        scale_m=scale,
        words=("left", "right"),
        margins=margins,
        draws=draws,
    )


def above_below(a: ObjectFacts, b: ObjectFacts, margins: Margins, draws: Draws) -> Question | None:
    """Canonical z of the box centres (heights), judged at the pair's mean distance."""
    scale = (a.distance_m + b.distance_m) / 2
    return _relation(
        "above_below",
        a,
        b,
        margin=a.center[2] - b.center[2],
        scale_m=scale,
        words=("above", "below"),
        margins=margins,
        draws=draws,
    )


def front_behind(a: ObjectFacts, b: ObjectFacts, margins: Margins, draws: Draws) -> Question | None:
    """Camera-to-centre distances, judged at the nearer one."""
    scale = min(a.distance_m, b.distance_m)
    return _relation(
        "front_behind",
        a,
        b,
        margin=b.distance_m - a.distance_m,
        scale_m=scale,
        words=("in front of", "behind"),
        margins=margins,
        draws=draws,
    )


def object_distance(obj: ObjectFacts, tol: ToleranceModel) -> Question:
    return Question(
        level="object",
        qtype="object_distance",
        answer_type="number",
        value=obj.distance_m,
        tolerance=tol.object_distance(obj),
        object_ids=(obj.object_id,),
        confidence=obj.confidence,
    )


def object_height(obj: ObjectFacts, tol: ToleranceModel) -> Question:
    return Question(
        level="object",
        qtype="object_height",
        answer_type="number",
        value=obj.size[2],
        tolerance=tol.object_height(obj),
        object_ids=(obj.object_id,),
        confidence=obj.confidence,
    )


def object_box(obj: ObjectFacts, tol: ToleranceModel) -> Question:
    value = (*obj.center, *obj.size)
    return Question(
        level="object",
        qtype="object_box",
        answer_type="box",
        value=value,
        tolerance=tol.object_box(obj),
        object_ids=(obj.object_id,),
        confidence=obj.confidence,
    )


# ---------------------------------------------------------------------------------------------
# Scene level


def scene_chains(
    facts: SceneFacts,
    pairs: Sequence[tuple[ObjectFacts, ObjectFacts]],
    *,
    margins: Margins,
    tol: ToleranceModel,
    draws: Draws,
    skips: Skips,
    focus: Sequence[int] = (),
) -> list[Chain]:
    """Distances between objects; which object is closest to / farthest from another, or to the camera.

    pairs: candidate pairs (`candidate_pairs`): the first MAX_OBJECT_PAIRS measurable ones get a
    distance question. Chains: the anchor's distances to two objects, then which of them is
    closest (or farthest); up to MAX_ANCHORS anchors, those among `focus` (objects already talked
    about) first.
    """
    objects = [o for o in facts.objects if not o.truncated]  # see candidate_pairs
    distance = DistanceQuestions(tol)
    singles: list[Chain] = [[q] for a, b in pairs[:MAX_OBJECT_PAIRS] if (q := distance(a, b)) is not None]
    chains, anchored = anchor_chains(objects, distance, margins=margins, draws=draws, skips=skips, focus=focus)
    singles += [[question] for question in anchored]
    camera = closest_to_camera(objects, margins, draws, skips)
    if camera is not None:
        singles.append([camera])
    ordered_chains = sorted(draws.shuffled(chains), key=lambda c: c[-1].object_ids[0] not in focus)
    return ordered_chains + draws.shuffled(singles)


class DistanceQuestions:
    """The distance question of a pair of measurable objects, one per pair: chains that share a
    pair share its question (None for a pair with an unmeasurable object)."""

    def __init__(self, tol: ToleranceModel) -> None:
        self.tol = tol
        self.asked: dict[frozenset[int], Question] = {}

    def __call__(self, a: ObjectFacts, b: ObjectFacts) -> Question | None:
        if not (a.measurable and b.measurable):
            return None
        key = frozenset((a.object_id, b.object_id))
        if key not in self.asked:
            self.asked[key] = distance_between(a, b, self.tol)
        return self.asked[key]


def anchor_chains(
    objects: Sequence[ObjectFacts],
    distance: DistanceQuestions,
    *,
    margins: Margins,
    draws: Draws,
    skips: Skips,
    focus: Sequence[int] = (),
) -> tuple[list[Chain], list[Question]]:
    """(chains, questions): for up to MAX_ANCHORS anchors (`focus` objects first), which of
    ANCHOR_OPTIONS other objects is closest to (or farthest from) it; a chain when the anchor's
    distances to all of them can be asked (they come first)."""
    chains: list[Chain] = []
    questions: list[Question] = []
    for anchor in sorted(draws.shuffled(objects), key=lambda o: o.object_id not in focus):
        if len(questions) == MAX_ANCHORS:
            break
        pool = [o for o in objects if o is not anchor]
        others = [pool[i] for i in draws.distinct(len(pool), ANCHOR_OPTIONS)]
        if len(others) < 2:
            continue
        if any(ambiguous(p, q) for p, q in itertools.combinations([anchor, *others], 2)):
            skips.ambiguous += 1
            continue
        qtype = "closest_to" if draws.flip() else "farthest_from"
        question = extreme_choice(qtype, anchor, others, margins, draws)
        if question is None:
            skips.margin += 1
            continue
        questions.append(question)
        steps = [distance(anchor, o) for o in others]
        if all(step is not None for step in steps):
            chains.append([*steps, question])  # type: ignore[list-item]
    return chains, questions


def closest_to_camera(objects: Sequence[ObjectFacts], margins: Margins, draws: Draws, skips: Skips) -> Question | None:
    """Which of up to CAMERA_OPTIONS objects (no two ambiguous) is closest to the camera; None
    when fewer than two can be listed or no winner is decisive."""
    options: list[ObjectFacts] = []
    for obj in draws.shuffled(objects):
        if len(options) < CAMERA_OPTIONS and not any(ambiguous(obj, o) for o in options):
            options.append(obj)
    if len(options) < 2:
        return None
    question = extreme_choice("closest_to_camera", None, options, margins, draws)
    if question is None:
        skips.margin += 1
    return question


def distance_between(a: ObjectFacts, b: ObjectFacts, tol: ToleranceModel) -> Question:
    value = math.dist(a.center, b.center)
    return Question(
        level="scene",
        qtype="distance_between",
        answer_type="number",
        value=value,
        tolerance=tol.distance_between(a, b, value),
        object_ids=(a.object_id, b.object_id),
        confidence=min(a.confidence, b.confidence),
    )


def extreme_choice(
    qtype: QuestionType,
    anchor: ObjectFacts | None,
    options: Sequence[ObjectFacts],
    margins: Margins,
    draws: Draws,
) -> Question | None:
    """closest_to / farthest_from the anchor, or closest_to_camera (anchor None), among options.

    Asked only when the winner beats the runner-up by a decisive margin (judged at the winner's
    distance). The value is the winner's letter in the listed (random) order.
    """
    options = draws.shuffled(list(options))
    if anchor is None:
        distances = [o.distance_m for o in options]
    else:
        distances = [math.dist(o.center, anchor.center) for o in options]
    ranked = sorted(range(len(options)), key=distances.__getitem__, reverse=qtype == "farthest_from")
    best, runner_up = ranked[0], ranked[1]
    if not margins.decisive(distances[runner_up] - distances[best], distances[best]):
        return None
    ids = tuple(o.object_id for o in options)
    members = options if anchor is None else [anchor, *options]
    return Question(
        level="scene",
        qtype=qtype,
        answer_type="choice",
        value=LETTERS[best],
        choices=tuple(LETTERS[: len(options)]),
        object_ids=ids if anchor is None else (anchor.object_id, *ids),
        confidence=min(o.confidence for o in members),
    )
