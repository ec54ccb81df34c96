"""Spatial VQA through any answerer, scored by rules (no LLM judge): BLINK Relative_Depth and
SpatialRGPT-bench.

    items = read_blink("BLINK/Relative_Depth/val-00000-of-00001.parquet") + read_spatialrgpt(
        "SpatialRGPT-Bench_v1.json", image_root="omni3d/datasets")
    result = run_vqa(vlm_answer_fn(vlm, tokenizer), items)   # any (image, question) -> text
    result.metrics["relative_depth_acc"], result.metrics["quantitative_acc"]

Published formats read here (field names checked against the benchmarks' own code):
    BLINK (HF dataset BLINK-Benchmark/BLINK, config Relative_Depth, parquet): columns idx
        ("val_Relative_Depth_1"), question, sub_task, image_1 (struct {bytes, path}),
        image_2..image_4 (null here), choices (list of str), answer ("(A)"; "hidden" on the test
        split: such rows are skipped), prompt (question + choices: what the model is asked).
        The same rows as JSON / JSONL are read too (image_1 then a struct or a path relative to
        the file).
    SpatialRGPT-bench (SpatialRGPT-Bench_v1.json: a JSON list; JSONL accepted): id, image_info
        {file_path (relative to the image root), height, width}, text_q (the question with
        "Region [k]" names), qa_info {type: qualitative | quantitative, category:
        "left_predicate", "tall_choice", "distance_data", ...}, conversations
        ([{from: human, value}, {from: gpt, value: the reference answer}]), bbox ([[x1, y1, x2,
        y2], ...] per region), optional rle. The reference answer is a sentence ("The height of
        Region [1] is 10.0 inches."): its metres are parsed by the same rules as predictions.

Scoring rules (every answer is first normalised, `normalize_answer`: Unicode NFKC, so that
full-width "（Ａ）" reads "(A)"; chat and special tokens such as "<s>", "</s>", "<|im_end|>",
"[/INST]" and a leading "ASSISTANT:" removed; markdown emphasis dropped):
    BLINK: the chosen option is read from "(A)", "point A", "A is closer", "B is farther", a
        bare "A" or "A is ...", "the first" / "the second"; exact match with the answer's letter.
        A refusal ("it is not possible to determine which point is closer", "I cannot tell",
        "both are equally far") is no answer, even when it names the options.
    Qualitative predicates (yes/no): a leading yes/correct/indeed or no/incorrect/not, else the
        relation word (or its opposite: left/right, above/below, behind/front, tall/short,
        big/small, wide/thin) with a "not" before it; both sides parsed alike, correct when they
        agree. Choices: the candidate (a "Region [k]" or an object name from the question's
        "X or Y") nearest the first relation word, switched when the word is the opposite one.
    Quantitative: a number with a unit (m, cm, mm, km, in, ft, yd, feet + inches, 5'2") ->
        metres; a unitless number counts as metres. Correct when 0.75 gt <= pred <= 1.25 gt;
        relative error |pred - gt| / gt over parsed answers. Direction ("2 o'clock"): within one
        hour. An answer no rule reads is wrong (and counted in "unparsed").
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

BLINK_RELATIVE_DEPTH = "blink_relative_depth"
SPATIALRGPT = "spatialrgpt"

AnswerFn = Callable[[np.ndarray, str], str]
"""(image (H, W, 3) uint8, question) -> free-text answer."""


def decode_item_image(item_id: str, image_bytes: bytes | None, image_path: str | None) -> np.ndarray:
    """A benchmark item's image, from its embedded bytes or its file: (H, W, 3) uint8 RGB."""
    source = io.BytesIO(image_bytes) if image_bytes is not None else image_path
    if source is None:
        raise ValueError(f"item {item_id} has no image")
    with Image.open(source) as img:
        return np.array(img.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True, kw_only=True)
class VQAItem:
    """One benchmark question; the image is decoded on demand (`image()`)."""

    id: str
    benchmark: str  # BLINK_RELATIVE_DEPTH or SPATIALRGPT
    question: str  # the text the model is asked
    answer: str  # reference: "(A)" (BLINK) or the reference sentence (SpatialRGPT)
    qa_type: str  # "multiple_choice" (BLINK), "qualitative" or "quantitative"
    category: str  # BLINK sub_task or SpatialRGPT qa_info.category
    image_path: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # (x1, y1, x2, y2) pixels per region

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8."""
        return decode_item_image(self.id, self.image_bytes, self.image_path)


# --- answer parsing ------------------------------------------------------------------------------

_ORDINALS = {"first": 0, "former": 0, "second": 1, "latter": 1}
_LEXICON: dict[str, tuple[str, ...]] = {
    "left": ("left", "leftmost"),
    "right": ("right", "rightmost"),
    "above": ("above", "higher", "over", "top", "up"),
    "below": ("below", "lower", "under", "beneath", "underneath", "down"),
    "behind": ("behind", "farther", "further", "back", "far"),
    "front": ("front", "closer", "nearer", "near", "close"),
    "tall": ("tall", "taller", "tallest"),
    "short": ("short", "shorter", "shortest"),
    "big": ("big", "bigger", "biggest", "large", "larger", "largest"),
    "small": ("small", "smaller", "smallest", "tiny", "little"),
    "wide": ("wide", "wider", "widest", "broad", "broader"),
    "thin": ("thin", "thinner", "thinnest", "narrow", "narrower", "slim"),
}
_OPPOSITE = {"left": "right", "above": "below", "behind": "front", "tall": "short", "big": "small", "wide": "thin"}
_OPPOSITE.update({v: k for k, v in list(_OPPOSITE.items())})
_YES = {"yes", "yeah", "yep", "correct", "indeed", "true", "affirmative", "absolutely", "certainly", "definitely"}
_NO = {"no", "nope", "incorrect", "false", "not", "negative", "wrong", "isn't", "isnt", "nah"}
_NEGATIONS = {"not", "never", "isn't", "isnt", "aren't", "doesn't", "no"}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> list[tuple[str, int]]:
    """(lower-case word, character offset) pairs; "n't" stays attached ("isn't")."""
    return [(m.group(), m.start()) for m in _WORD.finditer(text.lower().replace("’", "'"))]


_SPECIAL_TOKENS = re.compile(
    r"<\|[^|<>\s]{1,40}\|>"  # <|im_end|>, <|endoftext|>, <|eot_id|>, <|assistant|>
    r"|</?s>|<pad>|<unk>|<eos>|<bos>|<image>|<end_of_turn>|<start_of_turn>(?:model|user)?"
    r"|\[/?INST\]|<</?SYS>>",
    re.IGNORECASE,
)
_ROLE_PREFIX = re.compile(r"^\s*(?:assistant|gpt|model)\s*(?::|\n)\s*", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(?:not\s+(?:possible|able)|impossible|unable|cannot|can\s*not|can't|couldn't|could\s+not)\s+"
    r"(?:to\s+)?(?:be\s+)?(?:determin|tell|say|know|judge|decid|answer|conclud|infer|identif|see|discern|assess)"
    r"|\bno\s+way\s+to\s+(?:tell|know|determine)"
    r"|\b(?:not\s+enough|insufficient)\s+(?:information|context|detail)"
    r"|^\s*(?:both|the\s+two)\s+(?:points?\s+)?(?:are|appear|seem|look)\s+(?:to\s+be\s+)?(?:at\s+)?(?:the\s+same|equally|equidistant)"
    r"|^\s*neither\b|\beither\s+(?:point\s+)?[AB]\s+or\s+(?:point\s+)?[AB]\b"
    r"|^\s*(?:i'?m\s+sorry|sorry|i\s+apologi[sz]e)\b",
    re.IGNORECASE,
)


def normalize_answer(text: str) -> str:
    """A model's free-text answer made comparable: NFKC (full-width "（Ａ）" -> "(A)", curly quotes
    kept), chat and special tokens removed, a leading role label ("ASSISTANT:") and markdown
    emphasis (*, _, `) dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text or "")
    text = _SPECIAL_TOKENS.sub(" ", text).strip()
    text = _ROLE_PREFIX.sub("", text)
    text = re.sub(r"[*_`]+", "", text)
    return " ".join(text.split())


def is_refusal(text: str) -> bool:
    """The answer declines to choose (cannot tell, not enough information, both the same)."""
    return _after_refusal(normalize_answer(text)) is None


def _after_refusal(text: str) -> str | None:
    """The normalised answer, None when it is a refusal; when a refusal is followed by "but" /
    "however" ("I cannot see B well, but A is closer"), what follows it."""
    refusal = _REFUSAL.search(text)
    if refusal is None:
        return text
    turn = re.search(r"\b(?:but|however|though|although|still)\b", text[refusal.end() :], flags=re.IGNORECASE)
    return None if turn is None else text[refusal.end() + turn.end() :]


def parse_choice(text: str, letters: Sequence[str] = ("A", "B")) -> str | None:
    """The option letter a free-text answer picks, or None.

    Rules in order, on the normalised answer: a parenthesised letter "(A)" (only one distinct);
    a refusal is no answer; "point/option/answer/choice A"; the whole answer a letter ("A",
    "B."); a leading letter and a verb ("A is", "B appears"); "A." / "A:" first; "the first" /
    "the second".
    """
    options = "".join(letters)
    found = {m.upper() for m in re.findall(rf"\(([{options}])\)", normalize_answer(text), flags=re.IGNORECASE)}
    if len(found) == 1:
        return found.pop()
    text = _after_refusal(normalize_answer(text))  # type: ignore[assignment]
    if text is None or _names_every_option(text, letters):
        return None
    keyword = re.search(rf"\b(?i:point|option|answer|choice)(?i: is)?\s*:?\s*\(?([{options}])\b", text) or re.search(
        rf"\b(?i:point|option)\s+([{options.lower()}])\b(?![-'])", text
    )  # the letter is upper case, except right after "point" / "option" ("point a is closer")
    if keyword:
        return keyword.group(1).upper()
    bare = re.fullmatch(rf"\s*\(?([{options}])\)?\s*[.:,!)]?\s*", text)
    if bare:
        return bare.group(1).upper()
    verb = re.match(rf"\s*([{options}])\s+(?:is|are|was|appears?|seems?|looks?|would|should|must)\b", text)
    if verb:  # "A is" (a cut-off answer); "A point ..." is an article, not a choice
        return verb.group(1)
    leading = re.match(rf"\s*([{options}])\s*[.:,)]\s", text + " ")  # "A. The point on the table"
    if leading:
        return leading.group(1)
    for word, _ in _words(text):
        if word in _ORDINALS and _ORDINALS[word] < len(letters):
            return letters[_ORDINALS[word]]
    return None


def _names_every_option(text: str, letters: Sequence[str]) -> bool:
    """ "A or B", "A and B", "either A or B": the answer lists the options instead of choosing."""
    joined = "|".join(letters)
    return re.search(rf"\b(?:{joined})\s*(?:or|and|/|,)\s*(?:point\s+)?(?:{joined})\b", text) is not None


def parse_relative_depth(text: str) -> str | None:
    """ "A" or "B": which point the answer says is closer to the camera (BLINK Relative_Depth)."""
    explicit = {m.upper() for m in re.findall(r"\(([AB])\)", normalize_answer(text), flags=re.IGNORECASE)}
    if len(explicit) == 1:
        return explicit.pop()
    text = _after_refusal(normalize_answer(text))  # type: ignore[assignment]
    if text is None:
        return None
    comparative = re.search(r"\b(?:(?i:point)\s+)?([AB])\b[^.?!]{0,20}?\b(?i:(closer|nearer|farther|further))\b", text)
    if comparative:
        letter = comparative.group(1).upper()
        negated = re.search(r"\bnot\b|n't\b", comparative.group(0), flags=re.IGNORECASE) is not None
        farther = comparative.group(2).lower() in ("farther", "further")
        return letter if farther == negated else ("B" if letter == "A" else "A")
    return parse_choice(text)
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_UNITS: dict[str, float] = {
    "km": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0, "kilometre": 1000.0, "kilometres": 1000.0,
    "m": 1.0, "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0,
    "cm": 0.01, "centimeter": 0.01, "centimeters": 0.01, "centimetre": 0.01, "centimetres": 0.01,
    "mm": 0.001, "millimeter": 0.001, "millimeters": 0.001, "millimetre": 0.001, "millimetres": 0.001,
    "yd": 0.9144, "yard": 0.9144, "yards": 0.9144,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "'": 0.3048, "′": 0.3048,
    "in": 0.0254, "inch": 0.0254, "inches": 0.0254, '"': 0.0254, "″": 0.0254, "''": 0.0254,
}  # fmt: skip
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_UNIT_WORDS = sorted((u for u in _UNITS if u.isalpha() and u != "in"), key=len, reverse=True)
_UNIT = "|".join([*_UNIT_WORDS, r"in(?![a-z])(?!\s+[a-z])", "''", "'", '"', "″", "′"])
_QUANTITY = re.compile(
    rf"(?:(?P<low>{_NUM})\s*(?:-|–|to)\s*)?(?P<value>{_NUM})\s*-?\s*(?P<unit>{_UNIT})(?![a-z])", re.IGNORECASE
)
_REGION = re.compile(r"\bregion\s*\[?\s*\d+\s*\]?", re.IGNORECASE)
_CLOCK = re.compile(r"\b(\d{1,2})\s*(?::00)?\s*o\s*['’]?\s*clock", re.IGNORECASE)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def parse_distance_m(text: str, default_unit: str | None = "m") -> float | None:
    """The first length in the text, in metres; None when there is none.

    "1.5 meters" -> 1.5, "150 cm" -> 1.5, "3 feet 2 inches" -> 0.9652, "5'2\"" -> 1.5748,
    "about 2m" -> 2.0, "1.5 to 2 m" -> 1.75 (a range gives its middle). Consecutive quantities in
    decreasing units (feet then inches, metres then centimetres) add up. Without any unit the
    first number counts in `default_unit` (None: no answer). "Region [k]" and "N o'clock" are
    not lengths.
    """
    clean = _CLOCK.sub(" ", _REGION.sub(" ", normalize_answer(text).replace("’", "'").replace("”", '"')))
    clean = re.sub(
        r"\b(" + "|".join(_NUMBER_WORDS) + r")\b",
        lambda m: _NUMBER_WORDS[m.group().lower()],
        clean,
        flags=re.IGNORECASE,
    )
    matches = list(_QUANTITY.finditer(clean))
    if not matches:
        plain = re.search(_NUM, clean)
        return None if plain is None or default_unit is None else _number(plain.group()) * _UNITS[default_unit]
    first = matches[0]
    value = _number(first.group("value"))
    if first.group("low"):
        value = (value + _number(first.group("low"))) / 2
    total, unit = value * _UNITS[first.group("unit").lower()], _UNITS[first.group("unit").lower()]
    end = first.end()
    for nxt in matches[1:]:  # "3 feet 2 inches", "1 m 20 cm", "5'2\""
        gap = clean[end : nxt.start()].strip().lower()
        nxt_unit = _UNITS[nxt.group("unit").lower()]
        if gap not in ("", ",", "and") or nxt_unit >= unit or nxt.group("low"):
            break
        total, unit, end = total + _number(nxt.group("value")) * nxt_unit, nxt_unit, nxt.end()
    return total


def parse_clock(text: str) -> int | None:
    """The clock direction (1..12) of "... around the 2 o'clock direction", or None."""
    match = _CLOCK.search(normalize_answer(text))
    if match is None or not 1 <= int(match.group(1)) <= 12:
        return None
    return int(match.group(1))


def relation_of(category: str) -> str | None:
    """The relation word a SpatialRGPT category asks about: "left_predicate" -> "left"."""
    head = category.split("_")[0].lower()
    return head if head in _LEXICON else None


def parse_yes_no(text: str, relation: str) -> bool | None:
    """Whether the answer affirms `relation` ("left", "tall", ...) of the first region, or None
    (also for a refusal)."""
    text = _after_refusal(normalize_answer(text))  # type: ignore[assignment]
    if text is None:
        return None
    words = _words(text)
    if not words:
        return None
    if words[0][0] in _YES:
        return True
    if words[0][0] in _NO:
        return False
    for i, (word, _) in enumerate(words):
        side = True if word in _LEXICON[relation] else False if word in _LEXICON[_OPPOSITE[relation]] else None
        if side is not None:
            negated = any(w in _NEGATIONS or w.endswith("n't") for w, _ in words[max(0, i - 4) : i])
            return side != negated
    return None


def candidates_of(question: str) -> tuple[str, ...]:
    """The two things a choice question compares: its "Region [k]"s, else "X or Y" / "between X and Y"."""
    regions = list(dict.fromkeys(m.group().strip() for m in _REGION.finditer(question)))
    if len(regions) >= 2:
        return tuple(regions)
    match = re.search(r"(?:,|:)\s*(.+?)\s+or\s+(.+?)\s*\?", question) or re.search(
        r"between\s+(.+?)\s+and\s+(.+?)\s*[,?]", question, flags=re.IGNORECASE
    )
    return (match.group(1).strip(), match.group(2).strip()) if match else ()


def _mentions(text: str, candidate: str) -> list[int]:
    """Character offsets where the answer mentions a candidate (articles and case ignored)."""
    region = re.fullmatch(r"region\s*\[?\s*(\d+)\s*\]?", candidate.strip(), flags=re.IGNORECASE)
    if region:
        pattern = rf"\bregion\s*\[?\s*{region.group(1)}\s*\]?(?!\d)"
    else:
        core = re.sub(r"^(?:the|a|an)\s+", "", candidate.strip(), flags=re.IGNORECASE)
        pattern = r"\b" + r"\s+".join(map(re.escape, core.split())) + r"\b"
    return [m.start() for m in re.finditer(pattern, text, flags=re.IGNORECASE)]


def parse_choice_region(text: str, candidates: Sequence[str], relation: str | None) -> int | None:
    """Index of the candidate the answer picks as the most `relation` (e.g. "left"), or None
    (also for a refusal)."""
    text = _after_refusal(normalize_answer(text))  # type: ignore[assignment]
    if text is None:
        return None
    positions = [(pos, k) for k, c in enumerate(candidates) for pos in _mentions(text, c)]
    if not positions:
        ordinal = next((_ORDINALS[w] for w, _ in _words(text) if w in _ORDINALS), None)
        return ordinal if ordinal is not None and ordinal < len(candidates) else None
    positions.sort()
    hit = None
    if relation is not None:
        vocab = {w: True for w in _LEXICON[relation]} | {w: False for w in _LEXICON[_OPPOSITE[relation]]}
        hit = next(((pos, vocab[w]) for w, pos in _words(text) if w in vocab), None)
    if hit is None:  # no relation word: the answer names its pick first ("Region [1].")
        return positions[0][1]
    word_pos, same_side = hit
    before = [k for pos, k in positions if pos < word_pos]
    chosen = before[-1] if before else next(k for pos, k in positions if pos > word_pos)
    if same_side or len(candidates) != 2:
        return chosen
    return 1 - chosen


# --- scoring -------------------------------------------------------------------------------------

QUALITATIVE_GROUPS = (
    ("tall", "tall/short"), ("short", "tall/short"), ("left", "left/right"), ("right", "left/right"),
    ("below", "below/above"), ("above", "below/above"), ("behind", "behind/front"), ("front", "behind/front"),
    ("big", "big/small"), ("small", "big/small"), ("wide", "wide/thin"), ("thin", "wide/thin"),
)  # fmt: skip
QUANTITATIVE_GROUPS = {
    "vertical_distance_data": "vertical_distance",
    "horizontal_distance_data": "horizontal_distance",
    "distance_data": "direct_distance",
    "width_data": "width",
    "height_data": "height",
    "direction": "direction",
    "camera_distance_data": "camera_distance",  # demo extension: distance from the camera
}


@dataclass(frozen=True)
class ItemScore:
    """How one prediction scored."""

    group: str  # "relative_depth", "qual/left/right", "quant/width", ...
    correct: bool
    parsed: bool  # a rule could read the prediction
    rel_error: float | None = None  # quantitative distances only


def qualitative_group(category: str) -> str:
    for word, group in QUALITATIVE_GROUPS:
        if word in category:
            return group
    raise ValueError(f"unknown SpatialRGPT qualitative category {category!r}")


def score_item(item: VQAItem, prediction: str) -> ItemScore:
    """Score one prediction against the item's reference with the rules above."""
    if item.benchmark == BLINK_RELATIVE_DEPTH:
        gt, pred = parse_choice(item.answer), parse_relative_depth(prediction)
        if gt is None:
            raise ValueError(f"{item.id}: cannot read the reference answer {item.answer!r}")
        return ItemScore("relative_depth", pred == gt, pred is not None)
    if item.qa_type == "quantitative":
        return _score_quantitative(item, prediction)
    return _score_qualitative(item, prediction)


def _score_quantitative(item: VQAItem, prediction: str) -> ItemScore:
    if item.category not in QUANTITATIVE_GROUPS:
        raise ValueError(f"{item.id}: unknown quantitative category {item.category!r}")
    group = "quant/" + QUANTITATIVE_GROUPS[item.category]
    if item.category == "direction":
        gt, pred = parse_clock(item.answer), parse_clock(prediction)
        if gt is None:
            raise ValueError(f"{item.id}: no clock direction in the reference {item.answer!r}")
        if pred is None:
            return ItemScore(group, False, False)
        diff = abs(gt - pred) % 12
        return ItemScore(group, min(diff, 12 - diff) <= 1, True)
    gt, pred = parse_distance_m(item.answer), parse_distance_m(prediction)
    if gt is None or gt <= 0:
        raise ValueError(f"{item.id}: no positive length in the reference {item.answer!r}")
    if pred is None:
        return ItemScore(group, False, False)
    return ItemScore(group, 0.75 * gt <= pred <= 1.25 * gt, True, abs(pred - gt) / gt)


def _score_qualitative(item: VQAItem, prediction: str) -> ItemScore:
    group = "qual/" + qualitative_group(item.category)
    relation = relation_of(item.category)
    if "choice" in item.category:
        candidates = candidates_of(item.question)
        if len(candidates) < 2:
            raise ValueError(f"{item.id}: cannot find the compared regions in {item.question!r}")
        gt, pred = (parse_choice_region(t, candidates, relation) for t in (item.answer, prediction))
    else:
        if relation is None:
            raise ValueError(f"{item.id}: no relation word in category {item.category!r}")
        gt, pred = parse_yes_no(item.answer, relation), parse_yes_no(prediction, relation)
    if gt is None:
        raise ValueError(f"{item.id}: cannot read the reference answer {item.answer!r}")
    return ItemScore(group, pred == gt, pred is not None)


def vqa_metrics(items: Sequence[VQAItem], scores: Sequence[ItemScore]) -> dict[str, float]:
    """Accuracies in [0, 1] per benchmark, type and group, mean relative errors, counts."""
    out: dict[str, float] = {}
    by: dict[str, list[ItemScore]] = defaultdict(list)
    for item, score in zip(items, scores, strict=True):
        by[score.group].append(score)
        if item.benchmark == SPATIALRGPT:
            by[item.qa_type].append(score)
            by["spatialrgpt"].append(score)
    for key, group in sorted(by.items()):
        out[f"{key}_acc"] = float(np.mean([s.correct for s in group]))
        out[f"{key}_n"] = float(len(group))
        errors = [s.rel_error for s in group if s.rel_error is not None]
        if errors:
            out[f"{key}_rel_err"] = float(np.mean(errors))
    out["unparsed"] = float(sum(not s.parsed for s in scores))
    return out


def bootstrap_summary(flags: Sequence[bool | float], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """{"mean", "std"} of a per-item score; std = bootstrap std of the mean over items (seeded).

    Greedy decoding is deterministic, so VQA has no seed variance; the item-resampling std is
    the uncertainty reported beside the probes' seed std.
    """
    values = np.asarray(flags, dtype=np.float64)
    if values.size == 0:
        return {"mean": float("nan"), "std": float("nan")}
    rng = np.random.default_rng(seed)
    # resamples drawn in chunks of about 4M indices (VQAv2 val: 214K items x 1000 would be 1.7 GB);
    # the generator's stream is the same as one (n_boot, n) draw, so are the numbers
    rows = max(1, min(n_boot, 4_000_000 // values.size))
    means = np.concatenate([
        values[rng.integers(0, values.size, size=(min(rows, n_boot - start), values.size))].mean(axis=1)
        for start in range(0, n_boot, rows)
    ])  # fmt: skip
    return {"mean": float(values.mean()), "std": float(means.std(ddof=1))}


# --- running a model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VQAResult:
    """Metrics over all items and one record per item (id, question, answer, prediction, score)."""

    metrics: dict[str, float]
    records: tuple[dict[str, Any], ...]

    def summary(self, n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
        """{"<group>_acc": {"mean", "std"}} with bootstrap std, for every group in the records."""
        groups: dict[str, list[bool]] = defaultdict(list)
        for r in self.records:
            groups[r["group"]].append(r["correct"])
            if r["benchmark"] == SPATIALRGPT:
                groups[r["qa_type"]].append(r["correct"])
                groups[SPATIALRGPT].append(r["correct"])  # all items, as vqa_metrics' spatialrgpt_acc
        return {f"{g}_acc": bootstrap_summary(flags, n_boot, seed) for g, flags in sorted(groups.items())}


def draw_regions(image: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """The image with each box outlined and labelled "Region [k]" (how a LLaVA-style model sees them)."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    colours = ((255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 200, 0))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        colour = colours[k % len(colours)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=max(1, round(min(pil.size) / 160)))
        draw.text((x1 + 2, y1 + 1), f"Region [{k}]", fill=colour)
    return np.array(pil)


BatchAnswerFn = Callable[[Sequence[np.ndarray], Sequence[str]], list[str]]
"""(images, questions) -> one free-text answer per question, in order."""


def run_vqa(answer_fn: AnswerFn, items: Iterable[VQAItem], mark_regions: str | bool = "auto") -> VQAResult:
    """Ask `answer_fn(image, question)` every item and score the answers.

    mark_regions: draw the item's boxes labelled "Region [k]" on the image: True, False, or
    "auto" (when the question names a "Region [k]", as SpatialRGPT-bench's text_q does).
    """

    def one_at_a_time(images: Sequence[np.ndarray], questions: Sequence[str]) -> list[str]:
        return [answer_fn(image, question) for image, question in zip(images, questions, strict=True)]

    return run_vqa_batched(one_at_a_time, items, 1, mark_regions)


def run_vqa_batched(
    answer_batch: BatchAnswerFn, items: Iterable[VQAItem], batch_size: int = 8, mark_regions: str | bool = "auto"
) -> VQAResult:
    """`run_vqa` asking `batch_size` items per call of `answer_batch(images, questions)`."""
    items = list(items)
    predictions = ask_batched(answer_batch, items, batch_size, lambda item: _shown_image(item, mark_regions))
    scores, records = [], []
    for item, prediction in zip(items, predictions, strict=True):
        score = score_item(item, prediction)
        scores.append(score)
        records.append(
            {
                "id": item.id,
                "benchmark": item.benchmark,
                "qa_type": item.qa_type,
                "category": item.category,
                "question": item.question,
                "answer": item.answer,
                "prediction": prediction,
                "group": score.group,
                "correct": score.correct,
                "parsed": score.parsed,
                "rel_error": score.rel_error,
            }
        )
    return VQAResult(vqa_metrics(items, scores), tuple(records))


def ask_batched(
    answer_batch: BatchAnswerFn, items: Sequence[Any], batch_size: int, image_of: Callable[[Any], np.ndarray]
) -> list[str]:
    """Every item's answer, in order: `batch_size` (image_of(item), item.question) pairs per call of
    `answer_batch` (the one generation path of every VQA benchmark, spatial and general)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictions: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        answers = answer_batch([image_of(item) for item in batch], [item.question for item in batch])
        if len(answers) != len(batch):
            raise ValueError(f"the answerer returned {len(answers)} answers for {len(batch)} questions")
        predictions.extend(answers)
    return predictions


def _shown_image(item: VQAItem, mark_regions: str | bool) -> np.ndarray:
    image = item.image()
    draw = bool(item.boxes) and (mark_regions is True or (mark_regions == "auto" and _REGION.search(item.question)))
    return draw_regions(image, item.boxes) if draw else image


def vlm_answer_fn(vlm: Any, tokenizer: Any, max_new_tokens: int = 64) -> AnswerFn:
    """Greedy answers of a SpatialVLM: the question as one LLaVA user turn with the image."""
    batch = vlm_batch_answer_fn(vlm, tokenizer, max_new_tokens)

    def answer(image: np.ndarray, question: str) -> str:
        return batch([image], [question])[0]

    return answer


def vlm_batch_answer_fn(vlm: Any, tokenizer: Any, max_new_tokens: int = 64) -> BatchAnswerFn:
    """Batched greedy answers of a SpatialVLM: prompts left-padded into one batch.

    Left padding with an attention mask (SpatialVLM.generate re-pads the expanded sequences on
    the left), so every row's answer is the one it gets alone (tests/test_vqa_batched.py).
    """
    import torch

    from spatialboost.models.tokenizer import build_generation_prompt

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def answer(images: Sequence[np.ndarray], questions: Sequence[str]) -> list[str]:
        device = next(vlm.parameters()).device
        rows = [build_generation_prompt([{"role": "user", "content": q}], tokenizer) for q in questions]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, length - len(row) :], mask[i, length - len(row) :] = row, 1
        pixels = vlm.encoder.preprocess(list(images))
        with torch.inference_mode():
            new_tokens = vlm.generate(
                ids.to(device), pixel_values=pixels, attention_mask=mask.to(device), max_new_tokens=max_new_tokens
            )
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]

    return answer


# --- benchmark readers ---------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file, a JSON list (or {split: [rows]}) or a JSONL file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):  # {"val": [...]} like BLINK's saved outputs
        data = [row for rows in data.values() for row in rows]
    return list(data)


def read_blink(path: str | Path, sub_task: str = "Relative_Depth", split: str | None = None) -> list[VQAItem]:
    """BLINK rows of `sub_task` from a parquet / JSON / JSONL file (or a folder of them, e.g. a
    snapshot of BLINK-Benchmark/BLINK: `<sub_task>/val-00000-of-00001.parquet`).

    The model is asked `prompt` (question + choices) when present, else question + the choices
    as "(A) ..." lines. Rows whose answer is "hidden" (the test split) are skipped; with `split`
    ("val") only rows whose idx is "<split>_..." ("val_Relative_Depth_1") are read.
    """
    path = Path(path)
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".json", ".jsonl")) if path.is_dir() else [path]
    )
    items = []
    for file in files:
        for row in _rows(file):
            if row.get("sub_task", sub_task) != sub_task or str(row.get("answer", "")).lower() == "hidden":
                continue
            if split is not None and not str(row["idx"]).startswith(f"{split}_"):
                continue
            image_bytes, image_path = _blink_image(row.get("image_1"), file.parent)
            question = row.get("prompt") or _with_choices(row["question"], row.get("choices") or [])
            items.append(
                VQAItem(
                    id=str(row["idx"]),
                    benchmark=BLINK_RELATIVE_DEPTH,
                    question=question,
                    answer=str(row["answer"]),
                    qa_type="multiple_choice",
                    category=sub_task,
                    image_path=image_path,
                    image_bytes=image_bytes,
                )
            )
    return items


def _blink_image(value: Any, folder: Path) -> tuple[bytes | None, str | None]:
    """HF image struct {bytes, path} or a path string -> (bytes, path)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        value = value.get("path")
    if not value:
        raise ValueError("a BLINK row without image_1")
    return None, str(folder / value)


def _with_choices(question: str, choices: Sequence[str]) -> str:
    lines = [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)]
    return "\n".join([question, "Select from the following choices.", *lines]) if lines else question


def read_spatialrgpt(path: str | Path, image_root: str | Path) -> list[VQAItem]:
    """SpatialRGPT-bench rows (JSON list or JSONL); images at image_root / image_info.file_path."""
    items = []
    for row in _rows(Path(path)):
        info, qa = row["image_info"], row["qa_info"]
        conversations = row["conversations"]
        reference = next(turn["value"] for turn in conversations if turn.get("from") in ("gpt", "assistant"))
        question = row.get("text_q") or re.sub(r"<image>\s*", "", conversations[0]["value"]).strip()
        boxes = tuple(tuple(float(v) for v in box) for box in row.get("bbox") or [])
        items.append(
            VQAItem(
                id=str(row["id"]),
                benchmark=SPATIALRGPT,
                question=question,
                answer=reference,
                qa_type=qa["type"],
                category=qa["category"],
                image_path=str(Path(image_root) / info["file_path"]),
                boxes=boxes,
            )
        )
    return items
