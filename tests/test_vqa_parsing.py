"""Rule-based answer parsing on free text as real LVLMs write it (evaluate/vqa.py).

The corpus (tests/data/blink_relative_depth_answers.json) holds the forms the issue #13 review
found our parser missing against BLINK's LLM-matched extraction: full-width parentheses
"（A）", a leading "<s> A", a bare "A is", and refusals that name the options; plus the forms it
already read, so that no fix breaks another.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from spatialboost.evaluate.vqa import (
    BLINK_RELATIVE_DEPTH,
    VQAItem,
    is_refusal,
    normalize_answer,
    parse_choice,
    parse_choice_region,
    parse_distance_m,
    parse_relative_depth,
    parse_yes_no,
    score_item,
)

CORPUS = json.loads((Path(__file__).parent / "data" / "blink_relative_depth_answers.json").read_text(encoding="utf-8"))
CASES = CORPUS["cases"]


def test_the_corpus_covers_the_reported_forms() -> None:
    forms = Counter(case["form"] for case in CASES)
    assert len(CASES) >= 60
    for form in ("full-width parentheses", "leading special token", "letter and verb", "refusal naming the options"):
        assert forms[form] >= 1, form
    assert sum(case["expected"] is None for case in CASES) >= 15  # refusals and non-answers are a real share


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['form']}" for i, c in enumerate(CASES)])
def test_relative_depth_answers_parse_as_blink_would(case: dict) -> None:
    assert parse_relative_depth(case["answer"]) == case["expected"], case["answer"]


def test_corpus_scores_exactly_through_score_item() -> None:
    """The scorer counts a refusal as unparsed and wrong, never as a choice."""
    scored = [
        score_item(
            VQAItem(
                id=str(i),
                benchmark=BLINK_RELATIVE_DEPTH,
                question="Which point is closer?",
                answer="(A)",
                qa_type="multiple_choice",
                category="Relative_Depth",
            ),
            case["answer"],
        )
        for i, case in enumerate(CASES)
    ]
    for case, score in zip(CASES, scored, strict=True):
        assert score.parsed == (case["expected"] is not None), case["answer"]
        assert score.correct == (case["expected"] == "A"), case["answer"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("（Ａ）", "(A)"), ("<s> A</s>", "A"), ("<|im_start|>assistant\nB<|im_end|>", "B"), ("[INST] x [/INST] B", "x B"),
        ("ASSISTANT: **B**", "B"), ("  two\n\nlines  ", "two lines"), ("１．５ m", "1.5 m"),
    ],
)  # fmt: skip
def test_normalize_answer(raw: str, clean: str) -> None:
    assert normalize_answer(raw) == clean


def test_refusals_are_no_answer_for_every_parser() -> None:
    refusal = "I'm sorry, it is not possible to determine that from the image."
    assert is_refusal(refusal) and not is_refusal("Point A is closer.")
    assert parse_choice(refusal) is None and parse_relative_depth(refusal) is None
    assert parse_yes_no(refusal, "left") is None
    assert parse_choice_region(refusal, ("Region [0]", "Region [1]"), "left") is None
    assert parse_yes_no("It is not possible to tell, but yes, it is to the left.", "left") is True


def test_full_width_and_tokens_reach_the_other_parsers() -> None:
    assert parse_yes_no("<s> Yes, Region [0] is to the left.", "left") is True
    assert parse_distance_m("<s> １．５ meters</s>") == pytest.approx(1.5)
    assert parse_choice("（B）", ("A", "B")) == "B"
    assert parse_choice("A point on the table.") is None  # an article, not option A
