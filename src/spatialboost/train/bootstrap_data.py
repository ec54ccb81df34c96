"""The bootstrap stage's data: what is in a world image, said without any geometry.

Everything here is semantic: which shape classes and colours are visible, captions listing
them in a fixed (class, colour) order, non-spatial questions (colour, shape, count, presence)
and referring points ("What is at the point (40, 71)?" -> "The point (40, 71) is on the red
cube."), the region-level data of LLaVA-1.5's instruction mix: the LLM learns to look up the
image tokens of a point given as pixel coordinates, which the boost stage's pixel-level turns
ask of it once it is frozen. Points appear only in questions; no depth, distance or size ever
reaches the bootstrap models: that is what the boost stage has to teach the encoder.

    objects = visible_objects(annotation, min_pixels=30)        # [("cube", "red"), ...]
    targets = multilabel_targets(objects)                        # (15,) 0/1 float32
    record = caption_record("rgb/train-000001.png", objects, rng)
    points = referring_points(instances, depth, annotation, rng, n=4, min_pixels=30)   # [(x, y, "the red cube"), ...]
    record, asked = instruct_record("rgb/train-000001.png", objects, rng, n_questions=3, points=points)

Randomness only through the passed `np.random.Generator`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from spatialboost.config import SHAPE_CLASSES
from spatialboost.models.tokenizer import SYSTEM_PROMPT
from spatialboost.qa.phrasing import BOX_FRAME_NOTE, MARKED_QUESTIONS, QUESTIONS, UNITS_PER_METRE
from spatialboost.qa.turns import LETTERS
from spatialboost.world.scene import COLOURS

COLOUR_NAMES = tuple(COLOURS)
LABELS = (*SHAPE_CLASSES, *COLOUR_NAMES)
"""The encoder's multi-label targets: 7 shape classes, then 8 colours."""

Obj = tuple[str, str]  # (shape class, colour)
Point = tuple[int, int, str]  # (x, y) pixel column and row, what is there: "the red cube", "the ground", "the sky"
BACKGROUND = ("the ground", "the sky")

CAPTION_PROMPTS = (
    "Describe the image briefly.",
    "What objects are in the image?",
    "List the objects you can see.",
    "Give a short caption of the scene.",
)
RELATION_WORDS = ("left", "right", "above", "below", "in front of", "behind", "closer", "farther", "nearest", "farthest")
COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def visible_objects(annotation: dict[str, Any], min_pixels: int) -> list[Obj]:
    """(class, colour) of the objects with at least `min_pixels` visible pixels, in LABELS order."""
    objects = [(o["label"], o["colour"]) for o in annotation["objects"] if o["pixel_count"] >= min_pixels]
    return sorted(objects, key=lambda o: (SHAPE_CLASSES.index(o[0]), COLOUR_NAMES.index(o[1])))


def multilabel_targets(objects: Iterable[Obj]) -> np.ndarray:
    """(len(LABELS),) float32: 1 for every shape class and every colour present."""
    target = np.zeros(len(LABELS), np.float32)
    for label, colour in objects:
        target[LABELS.index(label)] = 1.0
        target[LABELS.index(colour)] = 1.0
    return target


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def caption(objects: Sequence[Obj]) -> str:
    """"A red cube, a blue sphere and an orange cone." (objects in LABELS order)."""
    if not objects:
        return "An empty scene."
    text = _join([f"{_article(colour)} {colour} {label}" for label, colour in objects])
    return text[0].upper() + text[1:] + "."


def llava(image: str | None, turns: Sequence[tuple[str, str]], record_id: str) -> dict[str, Any]:
    """A LLaVA record; the image token opens the first question when there is an image."""
    messages = []
    for i, (question, answer) in enumerate(turns):
        prefix = "<image>\n" if i == 0 and image is not None else ""
        messages += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
    record: dict[str, Any] = {"id": record_id, "conversations": messages}
    if image is not None:
        record["image"] = image
    return record


def caption_record(image: str, objects: Sequence[Obj], rng: np.random.Generator) -> dict[str, Any]:
    """One align-phase conversation: a caption prompt and the caption."""
    prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
    return llava(image, [(prompt, caption(objects))], f"caption-{image}")


def nonspatial_questions(objects: Sequence[Obj], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Every askable (question, answer, kind) about an image, shuffled; kinds: count, presence,
    colour (of a class present exactly once), shape (of a colour present exactly once), choice
    (the colour question as two lettered options, answered "(A)" or "(B)")."""
    n = len(objects)
    count_answer = f"There {'is' if n == 1 else 'are'} {n} object{'' if n == 1 else 's'}."
    questions = [("How many objects are there?", count_answer, "count")]
    labels = [label for label, _ in objects]
    colours = [colour for _, colour in objects]
    asked = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
    present = asked in labels
    answer = f"Yes, there is {_article(asked)} {asked}." if present else f"No, there is no {asked}."
    questions.append((f"Is there {_article(asked)} {asked}?", answer, "presence"))
    for label, colour in objects:
        if labels.count(label) == 1:
            questions.append((f"What colour is the {label}?", f"The {label} is {colour}.", "colour"))
            questions.append(_choice_question(f"What colour is the {label}?", colour, COLOUR_NAMES, rng))
        if colours.count(colour) == 1:
            questions.append((f"What shape is the {colour} object?", f"The {colour} object is {_article(label)} {label}.", "shape"))
    order = rng.permutation(len(questions))
    return [questions[i] for i in order]


def _choice_question(question: str, truth: str, options: Sequence[str], rng: np.random.Generator) -> tuple[str, str, str]:
    """A two-option multiple-choice turn answered with its letter, in the prompt format of BLINK
    and LLaVA-1.5's multiple-choice data: "...\nSelect from the following choices.\n(A) red\n(B) blue" -> "(A)"."""
    wrong = [o for o in options if o != truth]
    other = wrong[int(rng.integers(len(wrong)))]
    first_is_truth = bool(rng.integers(2))
    a, b = (truth, other) if first_is_truth else (other, truth)
    prompt = f"{question}\nSelect from the following choices.\n(A) {a}\n(B) {b}"
    return prompt, "(A)" if first_is_truth else "(B)", "choice"


def referring_points(
    instances: np.ndarray,
    depth: np.ndarray,
    annotation: dict[str, Any],
    rng: np.random.Generator,
    n: int,
    min_pixels: int,
) -> list[Point]:
    """n points of an image and what each lies on: two in three on a visible object (one with
    at least min_pixels pixels, chosen uniformly), the rest anywhere else (ground or sky).

    instances: (H, W) instance ids (0 = ground or sky); depth: (H, W) metres, 0 = sky (used
    only to tell ground from sky); annotation: the world's, with each object's instance_id.
    """
    names = {o["instance_id"]: f"the {o['colour']} {o['label']}" for o in annotation["objects"]
             if o["pixel_count"] >= min_pixels}  # fmt: skip
    background = np.flatnonzero(instances.ravel() == 0)
    points = []
    for _ in range(n):
        on_object = bool(names) and (len(background) == 0 or rng.random() < 2 / 3)
        if on_object:
            instance = list(names)[int(rng.integers(len(names)))]
            pixels = np.flatnonzero(instances.ravel() == instance)
        else:
            pixels = background
        if len(pixels) == 0:
            continue
        y, x = divmod(int(pixels[int(rng.integers(len(pixels)))]), instances.shape[1])
        what = names[instance] if on_object else BACKGROUND[0 if depth[y, x] > 0 else 1]
        points.append((x, y, what))
    return points


def point_questions(
    points: Sequence[Point], rng: np.random.Generator, marks: bool = False, labels: str = LETTERS
) -> list[tuple[str, str, str]]:
    """A referring question per point, kind "point": what is there, or which colour it has.

    marks: the points are drawn on the image as labelled marks (data/marks.py), the i-th labelled
    LETTERS[i], and the text names them "point A" (synthesize.point_refs = marks), else by pixel
    coordinates."""
    questions = []
    for i, (x, y, what) in enumerate(points):
        at, the_point = (f"point {labels[i]}", f"point {labels[i]}") if marks else (f"({x}, {y})", f"the point ({x}, {y})")
        if marks and rng.random() < 1 / 3:  # where a mark is: its pixel coordinates, read from the image (RefCOCO-style)
            questions.append((f"Where is {at} in the image?", f"Point {labels[i]} is at ({x}, {y}).", "point_where"))
        elif what not in BACKGROUND and rng.random() < 0.5:  # an object, "the red cube": ask its colour
            colour = what.split()[1]
            questions.append((f"What colour is the object at {at}?", f"The object at {at} is {colour}.", "point"))
        else:
            questions.append((f"What is at {the_point}?", f"{the_point[:1].upper()}{the_point[1:]} is on {what}.", "point"))
    if marks and len(points) >= 2:  # two marks compared in the image plane (GQA-style 2D relations; no depth)
        (xa, ya, _), (xb, yb, _) = points[:2]
        axis = int(rng.integers(2))
        gap = (ya - yb, xa - xb)[axis]
        if abs(gap) >= 8:
            words = (("higher", "lower"), ("further left", "further right"))[axis]
            first = words[0] if gap < 0 else words[1]
            questions.append(
                (
                    f"Is point A {words[0]} or {words[1]} in the image than point B?",
                    f"Point A is {first} in the image than point B.",
                    "point_relation",
                )
            )
    return questions


def mark_record(image: str, point: Point, rng: np.random.Generator, index: int) -> dict[str, Any]:
    """A single-turn conversation about one marked point, labelled A or B at random: the image is
    the only place its answer can come from (in a multi-turn conversation earlier answers give
    it away), so the LLM learns to find a mark among the image tokens (RefCOCO-style records)."""
    label = "AB"[int(rng.integers(2))]
    ((question, answer, _),) = point_questions([point], rng, marks=True, labels=label)
    record = llava(image, [(question, answer)], f"mark-{index}-{image}")
    record["marks"] = [{"label": label, "x": point[0], "y": point[1]}]
    return record


def point_marks(points: Sequence[Point]) -> list[dict[str, Any]]:
    """The marks to draw for `point_questions(points, marks=True)`: [{label, x, y}]."""
    return [{"label": LETTERS[i], "x": x, "y": y} for i, (x, y, _) in enumerate(points)]


def instruct_record(
    image: str,
    objects: Sequence[Obj],
    rng: np.random.Generator,
    n_questions: int,
    points: Sequence[Point] = (),
    marks: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """One instruct-phase conversation of up to n_questions non-spatial turns (one per kind
    first, so every kind is practised) and a referring turn per point, in random order; and
    the turns asked. marks: points are drawn marks ("point A"), the record lists them."""
    candidates = nonspatial_questions(objects, rng)
    first_of_kind = {}
    for q in candidates:
        first_of_kind.setdefault(q[2], q)
    rest = [q for q in candidates if q not in first_of_kind.values()]
    turns = (list(first_of_kind.values()) + rest)[:n_questions]
    if points:
        turns += point_questions(points, rng, marks)
        turns = [turns[i] for i in rng.permutation(len(turns))]
    record = llava(image, [(q, a) for q, a, _ in turns], f"instruct-{image}")
    if marks and points:
        record["marks"] = point_marks(points)
    return record, turns


# --- text-only language conversations ------------------------------------------------------------


def language_record(rng: np.random.Generator, index: int) -> dict[str, Any]:
    """A text-only conversation that states a spatial fact and asks it back.

    The answer is in the question, so it teaches the LLM the *language* of spatial answers
    (numbers with units, relation words) and copying, never a visual fact (LLaVA-1.5's
    instruction mix has text-only conversations too). The boost stage, with the LLM frozen,
    then only has to put the facts into the image tokens.
    """
    a, b = _random_name(rng), _random_name(rng)
    while b == a:
        b = _random_name(rng)
    unit = ("m", "cm")[int(rng.integers(2))]
    value = float(rng.uniform(0.2, 12.0))
    number = f"{value:.1f} m" if unit == "m" else f"{round(value * UNITS_PER_METRE['cm'] / 10) * 10:.0f} cm"
    kind = int(rng.integers(4))
    if kind == 0:
        fact, question, answer = f"The {a} is {number} away.", f"How far away is the {a}?", f"The {a} is {number} away."
    elif kind == 1:
        fact = f"The {a} and the {b} are {number} apart."
        question, answer = f"How far apart are the {a} and the {b}?", f"The {a} and the {b} are {number} apart."
    elif kind == 2:
        first, second = (("left", "right"), ("above", "below"))[int(rng.integers(2))]
        truth = (first, second)[int(rng.integers(2))]
        phrase = f"to the {truth} of" if truth in ("left", "right") else truth
        fact = f"The {a} is {phrase} the {b}."
        question, answer = f"Is the {a} {first} or {second} the {b}?", f"The {a} is {phrase} the {b}."
    else:
        near, far = (a, b) if rng.integers(2) else (b, a)
        fact = f"The {near} is closer to the camera than the {far}."
        question, answer = f"Which is closer to the camera, the {a} or the {b}?", f"The {near} is closer to the camera."
    return llava(None, [(f"{fact} {question}", answer)], f"language-{index:06d}")


def _random_name(rng: np.random.Generator) -> str:
    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    return f"{colour} {SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]}"


# --- the tokenizer's corpus ---------------------------------------------------------------------------


def template_texts(rng: np.random.Generator, n_fills: int = 4) -> list[str]:
    """The spatial QA templates (qa.phrasing.QUESTIONS) filled with random names, points,
    numbers and units, plus the answer vocabulary: what the boost stage's conversations say."""
    texts = []
    for by_answer in (*QUESTIONS.values(), *MARKED_QUESTIONS.values()):
        for templates in by_answer.values():
            for template in templates:
                for _ in range(n_fills):
                    texts.append(template.format_map(_Fillers(_fillers(rng))))
    numbers = [f"{v:.1f} {u}" for v, u in zip(rng.uniform(0, 15, 200), rng.choice(list(UNITS_PER_METRE), 200), strict=True)]
    numbers += [f"({int(x)}, {int(y)})" for x, y in rng.integers(0, 128, (100, 2))]
    words = [*RELATION_WORDS, BOX_FRAME_NOTE, *COUNT_WORDS, "metres", "meters", "centimeters", "feet", "inches"]
    return texts + [" ".join(numbers), " ".join(words)]


def _fillers(rng: np.random.Generator) -> dict[str, str]:
    names = [f"the {_random_name(rng)}" for _ in range(3)]
    coords = {k: str(int(v)) for k, v in zip(("x", "y", "ax", "ay", "bx", "by"), rng.integers(0, 128, 6), strict=True)}
    return {
        "a": names[0], "b": names[1], "anchor": names[2], "options": f"{names[0]}, {names[1]} or {names[2]}",
        "asked": str(rng.choice(["closer", "farther", "left", "right", "above", "below", "in front of", "behind"])),
        "first": "left", "second": "right", "p": str(rng.choice(list(LETTERS[:3]))), **coords,
    }  # fmt: skip


class _Fillers(dict):
    """Template fields; a field qa.phrasing adds later gets a plain word instead of a KeyError."""

    def __missing__(self, key: str) -> str:
        return "closer to"


def tokenizer_corpus(records: Iterable[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    """Texts the bootstrap tokenizer is trained on: the system prompt, every conversation turn
    it will train on, and the spatial templates' vocabulary."""
    texts = [SYSTEM_PROMPT] * 50 + ["USER: ASSISTANT:"] * 50
    for record in records:
        texts.extend(turn["value"].replace("<image>\n", "") for turn in record["conversations"])
    return texts + template_texts(rng)
