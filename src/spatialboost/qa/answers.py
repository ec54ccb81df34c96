"""Phrasing typed questions into turns, with answers that quote earlier answers as rationale.

    writer = TurnWriter(facts, NumberFormat("m", 1), draws)
    turns = [writer.write(question) for question in questions]   # forward order

The writer remembers what the conversation has already said (a depth at a point, an object's
distance or 3D box, the distance between two objects), as the numbers were rendered. A later
answer whose conclusion follows from those numbers says so: "The red cube is 2.1 m away and the
blue sphere 3.4 m, so the red cube is in front of the blue sphere." It quotes only numbers whose
rendered (rounded) values still show the conclusion, and lists the quoted turns in
`Turn.rationale`. Without them the answer is a plain statement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spatialboost.qa.draws import Draws
from spatialboost.qa.facts import ObjectFacts, SceneFacts
from spatialboost.qa.phrasing import (
    ASKED_TO,
    BOX_FRAME_NOTE,
    MARKED_QUESTIONS,
    QUESTIONS,
    NumberFormat,
    capitalize,
    indefinite,
    join_words,
)
from spatialboost.qa.questions import Question
from spatialboost.qa.turns import LETTERS, Box2D, Point, Turn

STATEMENT_WORDS = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
    "in front of": "in front of",
    "behind": "behind",
}
"""A relation value as a statement says it ("a is to the left of b")."""

CAPTION_KINDS = ("caption_inventory", "caption_left_to_right", "caption_near_to_far", "caption_sizes")
"""Caption turns, in the order they are appended (cfg.caption_turns takes the first n)."""


@dataclass(frozen=True)
class Said:
    """Something an earlier turn said: its index, the value rounded as rendered (in the unit;
    a tuple for box centres) and its text."""

    index: int
    value: Any
    text: str


@dataclass
class _Text:
    """A turn's words and the earlier turns its answer quotes."""

    question: str
    answer: str
    rationale: list[int] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)  # points the rationale quotes


def turn_evidence(objects: list[ObjectFacts]) -> dict[str, Any]:
    """What a turn rests on: the least kept-point count of its objects, and whether all of them
    were fully visible (not truncated, not occluded)."""
    if not objects:
        return {}
    return {"min_points": min(o.n_kept for o in objects), "fully_visible": all(o.measurable for o in objects)}


class TurnWriter:
    """Writes the turns of one conversation, in forward order (see the module docstring)."""

    def __init__(self, facts: SceneFacts, fmt: NumberFormat, draws: Draws, point_refs: str = "coordinates") -> None:
        if point_refs not in ("coordinates", "marks"):
            raise ValueError(f"point_refs must be 'coordinates' or 'marks', got {point_refs!r}")
        self.facts = facts
        self.fmt = fmt
        self.draws = draws
        self.point_refs = point_refs
        self.marks: dict[Point, str] = {}  # point -> its mark label, in order of first mention (marks only)
        self.said: dict[tuple, Said] = {}
        self.depths_on: dict[int, list[tuple[int, int]]] = {}  # object id -> probed points said
        self.n_written = 0
        self._objects = {obj.object_id: obj for obj in facts.objects}

    def write(self, question: Question) -> Turn:
        """The turn of `question`: text, rationale and the typed claim."""
        text = getattr(self, f"_{question.qtype}")(question)
        objects = [self._objects[i] for i in question.object_ids]
        points: list[Point] = [(p.x, p.y) for p in question.probes] + text.points
        boxes: list[Box2D] = []
        words = text.question + " " + text.answer
        for obj in objects:  # the points and boxes that tell same-named objects apart, when named
            if obj.name not in words:
                continue
            if obj.point is not None and obj.point not in points:
                points.append(obj.point)
            if obj.box is not None and obj.box not in boxes:
                boxes.append(obj.box)
        turn = Turn(
            level=question.level,
            qtype=question.qtype,
            question=text.question,
            answer=text.answer,
            answer_type=question.answer_type,
            value=question.value,
            unit=self.fmt.unit if question.answer_type in ("number", "box") else None,
            tolerance=question.tolerance,
            asked=question.asked,
            choices=question.choices,
            object_ids=question.object_ids,
            points=tuple(points),
            boxes=tuple(boxes),
            rationale=tuple(sorted(set(text.rationale))),
            confidence=round(question.confidence, 6),
            evidence=turn_evidence(objects),
        )
        self.n_written += 1
        return turn

    def _template(self, question: Question) -> str:
        table = MARKED_QUESTIONS if self.point_refs == "marks" and question.qtype in MARKED_QUESTIONS else QUESTIONS
        return self.draws.choice(table[question.qtype][question.answer_type])

    def _label(self, x: int, y: int) -> str:
        """The mark label of a point, given at its first mention (A, B, ...)."""
        if (x, y) not in self.marks:
            if len(self.marks) == len(LETTERS):
                raise ValueError(f"a conversation can mark at most {len(LETTERS)} points")
            self.marks[(x, y)] = LETTERS[len(self.marks)]
        return self.marks[(x, y)]

    def _at(self, x: int, y: int) -> str:
        """How the text names a point after "at": "(x, y)", or "point A" when points are marks."""
        return f"point {self._label(x, y)}" if self.point_refs == "marks" else f"({x}, {y})"

    def _the_point(self, x: int, y: int) -> str:
        """The point as a noun phrase: "the point (x, y)", or "point A"."""
        return f"point {self._label(x, y)}" if self.point_refs == "marks" else f"the point ({x}, {y})"

    def _remember(self, key: tuple, value_m: float) -> Said:
        said = Said(self.n_written, self.fmt.rounded(value_m), self.fmt.length(value_m))
        self.said.setdefault(key, said)
        return said

    # -- pixel level --------------------------------------------------------------------------

    def _point_depth(self, q: Question) -> _Text:
        p = q.probes[0]
        said = self._remember(("depth", p.x, p.y), p.depth_m)
        self.depths_on.setdefault(p.object_id, []).append((p.x, p.y))
        label = self._label(p.x, p.y) if self.point_refs == "marks" else None
        question = self._template(q).format(x=p.x, y=p.y, p=label)
        if self.draws.flip():
            return _Text(
                question,
                f"{capitalize(self._the_point(p.x, p.y))} lies on {self._objects[p.object_id].name}; its depth is {said.text}.",
            )
        return _Text(question, f"The depth at {self._at(p.x, p.y)} is {said.text}.")

    def _point_closer(self, q: Question) -> _Text:
        a, b = q.probes
        asked_to = ASKED_TO.get(q.asked or "", "")
        a_closer = a.depth_m < b.depth_m
        if self.point_refs == "marks":  # options listed in label order; the answer names the closer mark
            la, lb = self._label(a.x, a.y), self._label(b.x, b.y)
            first, second = sorted((la, lb)) if q.answer_type == "choice" else (la, lb)
            question = self._template(q).format(a=first, b=second, asked=q.asked, asked_to=asked_to)
            name_a, name_b, letters = f"point {la}", f"point {lb}", (la, lb)
        else:
            question = self._template(q).format(ax=a.x, ay=a.y, bx=b.x, by=b.y, asked=q.asked, asked_to=asked_to)
            letters = ("A", "B")
            if q.answer_type == "choice":
                name_a, name_b = "point A", "point B"
            else:
                name_a, name_b = f"the point ({a.x}, {a.y})", f"the point ({b.x}, {b.y})"
        said_a, said_b = self.said.get(("depth", a.x, a.y)), self.said.get(("depth", b.x, b.y))
        reason, rationale = "", []
        if said_a and said_b and said_a.value != said_b.value and (said_a.value < said_b.value) == a_closer:
            reason = f"{name_a} is {said_a.text} deep and {name_b} {said_b.text}, so "
            rationale = [said_a.index, said_b.index]
        if q.answer_type == "choice":
            winner = letters[0] if a_closer else letters[1]
            answer = f"{reason}point {winner} is closer." if reason else f"Point {winner} is closer to the camera."
        else:
            verdict = "yes" if q.value else "no"
            relation = "closer to" if a_closer else "farther from"
            answer = f"{reason}{verdict}: {name_a} is {relation} the camera than {name_b}."
        return _Text(question, capitalize(answer), rationale)

    # -- object level -------------------------------------------------------------------------

    def _object_distance(self, q: Question) -> _Text:
        obj = self._objects[q.object_ids[0]]
        said = self._remember(("distance", obj.object_id), obj.distance_m)
        question = self._template(q).format(a=obj.name)
        for x, y in self.depths_on.get(obj.object_id, []):
            depth = self.said[("depth", x, y)]
            if depth.value < said.value:
                answer = (
                    f"{capitalize(self._the_point(x, y))} on {obj.name} is {depth.text} deep; "
                    f"the centre of {obj.name} is farther, {said.text} away."
                )
                return _Text(question, capitalize(answer), [depth.index], [(x, y)])
        return _Text(question, capitalize(f"{obj.name} is {said.text} away."))

    def _object_height(self, q: Question) -> _Text:
        obj = self._objects[q.object_ids[0]]
        question = self._template(q).format(a=obj.name)
        return _Text(question, capitalize(f"{obj.name} is {self.fmt.extent(obj.size[2])} {self.fmt.unit} tall."))

    def _object_box(self, q: Question) -> _Text:
        obj = self._objects[q.object_ids[0]]
        cx, cy, cz, length, width, height = q.value  # type: ignore[misc]
        xyz = ", ".join(self.fmt.number(c) for c in (cx, cy, cz))
        center = Said(self.n_written, tuple(self.fmt.rounded(c) for c in (cx, cy, cz)), f"({xyz}) {self.fmt.unit}")
        self.said.setdefault(("box", obj.object_id), center)
        size = " x ".join(self.fmt.extent(s) for s in (length, width, height))  # never "130 x 0 x 140 cm"
        answer = (
            f"{capitalize(obj.name)} is centred at {center.text} ({BOX_FRAME_NOTE}) and measures "
            f"{size} {self.fmt.unit} (length x width x height)."
        )
        return _Text(self._template(q).format(a=obj.name), answer)

    def _left_right(self, q: Question) -> _Text:
        return self._pair_relation(q, axis=0, words=("left", "right"))

    def _above_below(self, q: Question) -> _Text:
        return self._pair_relation(q, axis=2, words=("above", "below"))

    def _front_behind(self, q: Question) -> _Text:
        return self._pair_relation(q, axis=None, words=("in front of", "behind"))

    def _pair_relation(self, q: Question, axis: int | None, words: tuple[str, str]) -> _Text:
        """left_right (axis 0: x), above_below (axis 2: z), front_behind (axis None: distances)."""
        a, b = (self._objects[i] for i in q.object_ids)
        if q.answer_type == "choice":
            truth = str(q.value)
        else:
            truth = q.asked if q.value else (words[1] if q.asked == words[0] else words[0])
        first, second = q.choices if q.choices else ("", "")
        question = self._template(q).format(a=a.name, b=b.name, asked=q.asked, first=first, second=second)
        statement = f"{a.name} is {STATEMENT_WORDS[str(truth)]} {b.name}"
        reason, rationale = self._relation_reason(a, b, axis, truth == words[0])
        if q.answer_type == "bool":
            verdict = "yes" if q.value else "no"
            answer = f"{reason}{verdict}, {statement}." if reason else f"{capitalize(verdict)}, {statement}."
        else:
            answer = f"{reason}{statement}."
        return _Text(question, capitalize(answer), rationale)

    def _relation_reason(
        self, a: ObjectFacts, b: ObjectFacts, axis: int | None, positive: bool
    ) -> tuple[str, list[int]]:
        """The clause "<numbers said before>, so " when their rendered values show the relation, else ""."""
        if axis is None:  # in front of = nearer to the camera
            said_a, said_b = self.said.get(("distance", a.object_id)), self.said.get(("distance", b.object_id))
            if not (said_a and said_b) or said_a.value == said_b.value or (said_a.value < said_b.value) != positive:
                return "", []
            return f"{a.name} is {said_a.text} away and {b.name} {said_b.text}, so ", [said_a.index, said_b.index]
        said_a, said_b = self.said.get(("box", a.object_id)), self.said.get(("box", b.object_id))
        if not (said_a and said_b):
            return "", []
        va, vb = said_a.value[axis], said_b.value[axis]
        holds = va < vb if axis == 0 else va > vb  # left of: smaller x; above: larger z
        if va == vb or holds != positive:
            return "", []
        coordinate, unit = ("x" if axis == 0 else "z"), self.fmt.unit
        text = (
            f"the centre of {a.name} is at {coordinate} = {self.fmt.show(va)} {unit} and that "
            f"of {b.name} at {self.fmt.show(vb)} {unit}, so "
        )
        return text, [said_a.index, said_b.index]

    # -- scene level --------------------------------------------------------------------------

    def _distance_between(self, q: Question) -> _Text:
        a, b = (self._objects[i] for i in q.object_ids)
        said = self._remember(("pair", frozenset(q.object_ids)), float(q.value))  # type: ignore[arg-type]
        question = self._template(q).format(a=a.name, b=b.name)
        box_a, box_b = self.said.get(("box", a.object_id)), self.said.get(("box", b.object_id))
        if box_a and box_b:
            answer = f"{a.name} is centred at {box_a.text} and {b.name} at {box_b.text}, so they are {said.text} apart."
            return _Text(question, capitalize(answer), [box_a.index, box_b.index])
        return _Text(question, capitalize(f"{a.name} and {b.name} are {said.text} apart."))

    def _closest_to(self, q: Question) -> _Text:
        return self._extreme(q, closest=True)

    def _farthest_from(self, q: Question) -> _Text:
        return self._extreme(q, closest=False)

    def _closest_to_camera(self, q: Question) -> _Text:
        return self._extreme(q, closest=True)

    def _extreme(self, q: Question, closest: bool) -> _Text:
        """closest_to / farthest_from an anchor object, or closest_to_camera."""
        anchor = None if q.qtype == "closest_to_camera" else self._objects[q.object_ids[0]]
        options = [self._objects[i] for i in (q.object_ids if anchor is None else q.object_ids[1:])]
        winner = options[LETTERS.index(str(q.value))]
        target = "the camera" if anchor is None else anchor.name
        names = [o.name for o in options]
        question = self._template(q).format(
            anchor=target, options=join_words(names, "or"), options_and=join_words(names)
        )
        statement = f"{winner.name} is the {'closest to' if closest else 'farthest from'} {target}"
        if anchor is None:
            said = [self.said.get(("distance", o.object_id)) for o in options]
        else:
            said = [self.said.get(("pair", frozenset((anchor.object_id, o.object_id)))) for o in options]
        known = [s for s in said if s is not None]
        if len(known) == len(options):
            values = [s.value for s in known]
            best = min(values) if closest else max(values)
            if values.count(best) == 1 and values.index(best) == options.index(winner):
                away = "away" if anchor is None else f"from {anchor.name}"
                parts = [f"{o.name} is {s.text}" for o, s in zip(options, known, strict=True)]
                answer = f"{join_words(parts)} {away}, so {statement}."
                return _Text(question, capitalize(answer), [s.index for s in known])
        return _Text(question, capitalize(f"{statement}."))

    # -- captions -----------------------------------------------------------------------------

    def caption(self, kind: str) -> Turn:
        """A caption turn about all askable objects (one of CAPTION_KINDS). Typed as text; value
        is the objects' order the caption gives (ids)."""
        objects = list(self.facts.objects)
        question = self.draws.choice(QUESTIONS[kind]["text"])
        if kind == "caption_inventory":
            order, answer = objects, inventory(objects)
        elif kind == "caption_left_to_right":
            order = sorted(objects, key=lambda o: o.center[0])
            answer = f"From left to right: {join_words([o.name for o in order])}."
        elif kind == "caption_near_to_far":
            order = sorted(objects, key=lambda o: o.distance_m)
            answer = f"From nearest to farthest: {join_words([f'{o.name} ({self.fmt.length(o.distance_m)})' for o in order])}."
        else:
            order = sorted(objects, key=lambda o: -o.size[2])
            answer = f"The tallest is {order[0].name}, {self.fmt.extent(order[0].size[2])} {self.fmt.unit} tall" if order else ""
            if len(order) > 1:
                answer += f"; the shortest is {order[-1].name}, {self.fmt.extent(order[-1].size[2])} {self.fmt.unit}"
            answer = f"{answer}." if order else inventory(objects)
        turn = Turn(
            level="caption",
            qtype=kind,
            question=question,
            answer=capitalize(answer),
            answer_type="text",  # type: ignore[arg-type]
            value=tuple(o.object_id for o in order),
            object_ids=tuple(o.object_id for o in objects),
            confidence=round(min((o.confidence for o in objects), default=1.0), 6),
        )
        self.n_written += 1
        return turn


def inventory(objects: list[ObjectFacts]) -> str:
    """The inventory sentence: "There are three objects: a red cube and two blue spheres." """
    if not objects:
        return "I cannot name any object in this image with confidence."
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.base_name] = counts.get(obj.base_name, 0) + 1
    items = [indefinite(name) if n == 1 else f"{count_word(n)} {name}s" for name, n in counts.items()]
    if len(objects) == 1:
        return f"There is one object: {items[0]}."
    return f"There are {count_word(len(objects))} objects: {join_words(items)}."


def count_word(n: int) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[n] if n < len(words) else str(n)
