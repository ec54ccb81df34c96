"""General VQA (Table 1's VQAv2, GQA, MMBench, MME): the official scorers on hand-checked cases,
the readers on fixtures in the released formats (written here, tmp_path), and the batched
generation path with the tiny VLM, offline."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spatialboost.evaluate.fixtures import write_gqa, write_mmbench, write_mme, write_vqav2
from spatialboost.evaluate.general_vqa import (
    GQA,
    MMBENCH,
    MME,
    SHORT_ANSWER_PROMPT,
    VQAV2,
    GeneralVQAItem,
    gqa_correct,
    mmbench_choice,
    mme_subtask_scores,
    mme_totals,
    mme_yes_no,
    normalize_vqa_answer,
    read_gqa,
    read_mmbench,
    read_mme,
    read_vqav2,
    run_general_vqa,
    vqav2_accuracy,
)

# --- VQAv2 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_said", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqav2_accuracy_averages_min_matches_over_3_across_the_leave_one_out_subsets(n_said: int, expected: float) -> None:
    # 2 of 10: the 8 subsets without a "cat" hold 2 cats (2/3), the 2 without one hold 1 (1/3): (8*2/3 + 2/3)/10 = 0.6
    answers = ["cat"] * n_said + ["dog"] * (10 - n_said)
    assert vqav2_accuracy("cat", answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "normalised"),
    [
        ("Two", "2"),  # number words to digits
        ("The dog.", "dog"),  # article dropped, final period removed
        ("a red car", "red car"),
        ("dont", "don't"),  # contractions restored
        ("yes!", "yes"),  # "!" not next to a space: replaced by a space, then split away
        ("1,000", "1000"),  # a digit,digit comma: every mark deleted
        ("3.5", "3.5"),  # a period before a digit stays
        ("t-shirt", "t shirt"),
        ("black, white", "black white"),  # ", " : the comma deleted
        ("  Yes\n", "yes"),
    ],
)
def test_vqav2_answer_normalisation(prediction: str, normalised: str) -> None:
    assert normalize_vqa_answer(prediction) == normalised


def test_vqav2_humans_answers_are_processed_only_when_they_disagree() -> None:
    assert vqav2_accuracy("Two", ["2"] * 10) == 1.0 and vqav2_accuracy("the dog.", ["dog"] * 10) == 1.0
    # mixed answers: punctuation processed on both sides, "t-shirt" == "t shirt" (3 of 10 -> 0.9)
    assert vqav2_accuracy("T-shirt", ["t-shirt"] * 3 + ["shirt"] * 7) == pytest.approx(0.9)
    # unanimous answers are compared as they are, as the official script does: the processed prediction misses
    assert vqav2_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0


# --- GQA -----------------------------------------------------------------------------------------------


def test_gqa_is_exact_match_on_the_normalised_answer() -> None:
    assert gqa_correct("Yes.", "yes") and gqa_correct("  Red ", "red")
    assert not gqa_correct("the cone", "cone") and not gqa_correct("cones", "cone")


# --- MMBench -------------------------------------------------------------------------------------------

OPTIONS = (("A", "cube"), ("B", "sphere"), ("C", "cone"), ("D", "cylinder"))


@pytest.mark.parametrize(
    ("prediction", "choice"),
    [
        ("A", "A"),
        ("B.", "B"),
        ("(C)", "C"),
        ("The answer is D", "D"),
        ("I think C. cone", "C"),
        ("A cube", "A"),  # two words: the lone "A" is the choice
        ("A sphere is the largest", "B"),  # "A" may be an article: the option's text decides
        ("sphere", "B"),
        ("cube or sphere", None),  # two options' texts: no choice
        ("I cannot tell", None),
        ("E", "E"),  # MMBench looks for A-E whatever the options: a wrong choice, not "unread"
    ],
)
def test_mmbench_choice_extraction(prediction: str, choice: str | None) -> None:
    assert mmbench_choice(prediction, OPTIONS) == choice


def test_mmbench_tsv_with_circular_copies_and_image_references(tmp_path: Path) -> None:
    items, from_file = read_mmbench(write_mmbench(tmp_path / "mmbench_dev_20230712.tsv", np.random.default_rng(0)))
    assert from_file and [i.id for i in items] == ["0", "1000000", "2000000", "3000000", "1", "1000001"]
    assert {i.group for i in items} == {"0", "1"} and items[1].image().shape == (48, 64, 3)  # image by reference
    q = items[1]  # copy 1: letter j shows option j + 1, the answer moves with its text
    assert q.options == (("A", "sphere"), ("B", "cone"), ("C", "cylinder"), ("D", "cube")) and q.answers == ("D",)
    assert q.question.splitlines() == ["What shape is the largest object?", "A. sphere", "B. cone", "C. cylinder",
                                       "D. cube", "Answer with the option's letter from the given choices directly."]  # fmt: skip
    assert items[4].question.startswith("Look at the sky.\nIs the scene indoors or outdoors?\nA. indoors\nB. outdoors\n")
    assert items[4].options == (("A", "indoors"), ("B", "outdoors"))  # empty C / D: absent


def test_mmbench_tsv_without_copies_gets_its_rotations_and_skips_rows_without_answers(tmp_path: Path) -> None:
    path = write_mmbench(tmp_path / "plain.tsv", np.random.default_rng(0), circular=False)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    rows.append({**rows[0], "index": "7", "answer": ""})  # a test-split row: no answer, not scored
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    items, from_file = read_mmbench(tmp_path)  # the folder's one .tsv
    assert not from_file and [i.id for i in items] == ["0", "1000000", "2000000", "3000000", "1", "1000001"]
    rotated = {i.id: (i.options, i.answers) for i in items}
    assert rotated["2000000"] == ((("A", "cone"), ("B", "cylinder"), ("C", "cube"), ("D", "sphere")), ("C",))
    assert rotated["1000001"] == ((("A", "outdoors"), ("B", "indoors")), ("A",))


def test_mmbench_circular_eval_counts_a_question_only_when_every_copy_is_right(tmp_path: Path) -> None:
    items, _ = read_mmbench(write_mmbench(tmp_path / "mmbench.tsv", np.random.default_rng(0)))
    truth = {"0": "cube", "1": "outdoors"}

    def by_text(images, questions):  # answers the right option's letter wherever the options are
        out = []
        for q in questions:
            item = next(i for i in items if i.question == q)
            out.append(next(letter for letter, text in item.options if text == truth[item.group]))
        return out

    right = run_general_vqa(by_text, items, batch_size=4)
    assert right.metrics["circular_acc"] == 1.0 and right.metrics["vanilla_acc"] == 1.0
    always_a = run_general_vqa(lambda images, questions: ["A"] * len(questions), items, batch_size=4)
    # question 0: only its first copy has the answer at A; question 1: only its second copy
    assert always_a.metrics["circular_acc"] == 0.0 and always_a.metrics["vanilla_acc"] == 0.5
    assert always_a.metrics["n_questions"] == 2 and always_a.summary()["circular_acc"]["mean"] == 0.0
    assert always_a.metrics["circular_acc/scene"] == 0.0


# --- MME -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "label"),
    [("Yes", "yes"), ("No.", "no"), ("yes, there are two", "yes"), ("Not at all", "no"), ("There are two", "other"),
     ("", "other"), ("  NO ", "no")],
)  # fmt: skip
def test_mme_yes_no_reading(prediction: str, label: str) -> None:
    assert mme_yes_no(prediction) == label


def test_mme_acc_acc_plus_and_the_perception_and_cognition_sums() -> None:
    def records(subtask: str, correct: list[tuple[bool, bool]]) -> list[dict]:
        return [{"category": subtask, "group": f"{subtask}/{k}", "correct": c} for k, pair in enumerate(correct) for c in pair]

    rows = (records("count", [(True, True), (True, False)]) + records("artwork", [(True, True), (True, True)])
            + records("code_reasoning", [(False, False), (False, False)]))  # fmt: skip
    subtasks = mme_subtask_scores(rows)
    # count: acc 3/4, acc+ 1/2 (one image with both right) -> 100 (0.75 + 0.5) = 125
    assert subtasks["count"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0, "n_images": 2.0}
    assert subtasks["artwork"]["score"] == 200.0 and subtasks["code_reasoning"]["score"] == 0.0
    totals = mme_totals(subtasks)
    assert totals["perception"] == 325.0 and totals["cognition"] == 0.0
    assert totals["perception_acc"] == pytest.approx(0.875) and totals["perception_acc_plus"] == pytest.approx(0.75)


def test_mme_release_layouts_both_read(tmp_path: Path) -> None:
    root = write_mme(tmp_path / "MME_Benchmark_release_version" / "MME_Benchmark", np.random.default_rng(0))
    items = read_mme(root.parent)  # the release folder or its MME_Benchmark/
    assert len(items) == 12 and [i.category for i in items[::4]] == ["count", "artwork", "code_reasoning"]
    art = [i for i in items if i.category == "artwork"]
    assert art[0].image_path.endswith("artwork/images/00001.jpg") and art[2].image_path.endswith("00002.png")
    assert art[0].answers == ("Yes",) and art[1].answers == ("No",) and art[0].group == art[1].group == "artwork/00001"
    assert art[0].question == f"Is this artwork a painting? Please answer yes or no.\n{SHORT_ANSWER_PROMPT}"
    (root / "count" / "00001.txt").write_text("Are there two objects?\tMaybe\n")
    with pytest.raises(ValueError, match=r"count/00001\.txt line 1"):
        read_mme(root)


def test_mme_run_scores_per_subtask(tmp_path: Path) -> None:
    items = read_mme(write_mme(tmp_path / "MME", np.random.default_rng(0)))
    result = run_general_vqa(lambda images, questions: ["Yes"] * len(questions), items, batch_size=5)
    # every image: "Yes" right on its first question, wrong on its second -> acc 0.5, acc+ 0 -> 50 per subtask
    assert result.metrics["score/count"] == 50.0 and result.metrics["perception"] == 100.0
    assert result.metrics["cognition"] == 50.0 and result.metrics["perception_acc_plus"] == 0.0
    summary = result.summary(n_boot=200)
    assert summary["perception"]["mean"] == 100.0 and summary["perception"]["std"] == 0.0  # every image alike
    assert set(summary) == {"perception", "cognition", "perception_acc", "perception_acc_plus", "cognition_acc",
                            "cognition_acc_plus"}  # fmt: skip


# --- VQAv2 and GQA files -------------------------------------------------------------------------------


def test_vqav2_and_gqa_files_read_with_their_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vqa = read_vqav2(write_vqav2(tmp_path / "VQAv2", rng))
    assert [i.id for i in vqa] == ["42000", "42001", "73002"] and vqa[0].benchmark == VQAV2
    assert vqa[0].image_path.endswith("val2014/COCO_val2014_000000000042.jpg") and vqa[0].image().shape == (48, 64, 3)
    assert len(vqa[2].answers) == 10 and vqa[2].category == "number"
    assert vqa[0].question == f"What colour is the sky?\n{SHORT_ANSWER_PROMPT}"
    moved = read_vqav2(tmp_path / "VQAv2", image_root=tmp_path / "coco" / "val2014")
    assert moved[0].image_path == str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000000042.jpg")
    gqa = read_gqa(write_gqa(tmp_path / "GQA", rng))
    assert [i.answers for i in gqa] == [("yes",), ("red",), ("cone",)] and gqa[2].category == "choose"
    assert gqa[0].image_path.endswith("images/n161313.jpg") and gqa[0].benchmark == GQA

    def answers(*replies: str):
        by_question = {item.question: reply for item, reply in zip(vqa, replies, strict=True)}
        return lambda images, questions: [by_question[q] for q in questions]

    result = run_general_vqa(answers("Blue.", "yes", "3"), vqa, batch_size=3)
    assert result.metrics["accuracy/other"] == 1.0 and result.metrics["accuracy/number"] == pytest.approx(1.0)
    assert result.metrics["accuracy"] == pytest.approx(1.0)  # 4 of 10 said "3": min(1, 3/3) in every subset
    half = run_general_vqa(answers("grey", "no", "2"), vqa, batch_size=2)  # 2 of 10, 0 of 10, 6 of 10
    assert half.metrics["accuracy"] == pytest.approx((0.6 + 0.0 + 1.0) / 3)
    json.dumps(list(half.records))  # records are plain JSON


def test_one_benchmark_per_run() -> None:
    items = [GeneralVQAItem("1", MMBENCH, "q", ("A",), "1", "c"), GeneralVQAItem("2", MME, "q", ("Yes",), "2", "c")]
    with pytest.raises(ValueError, match="one benchmark at a time"):
        run_general_vqa(lambda images, questions: ["A"] * len(questions), items)


# --- the batched generation path with the tiny VLM, offline ----------------------------------------------


def test_tiny_vlm_answers_mme_through_the_batched_generation_path(tmp_path: Path) -> None:
    from spatialboost.evaluate.vqa import vlm_batch_answer_fn
    from spatialboost.runtime import torch_threads
    from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer

    items = read_mme(write_mme(tmp_path / "MME", np.random.default_rng(0)))
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    vlm = tiny_vlm(tokenizer, family="clip").eval()
    with torch_threads(1):
        answer = vlm_batch_answer_fn(vlm, tokenizer, max_new_tokens=4)
        batched = run_general_vqa(answer, items, batch_size=5)
        single = run_general_vqa(answer, items[:3], batch_size=1)
    assert len(batched.records) == 12 and all(isinstance(r["prediction"], str) for r in batched.records)
    assert [r["prediction"] for r in single.records] == [r["prediction"] for r in batched.records[:3]]
    assert 0.0 <= batched.metrics["perception"] <= 400.0 and 0.0 <= batched.metrics["cognition"] <= 200.0
    assert np.isfinite(batched.summary(n_boot=50)["perception"]["std"])


def test_mmbench_images_are_the_tsv_base64(tmp_path: Path) -> None:
    path = write_mmbench(tmp_path / "m.tsv", np.random.default_rng(0), circular=False)
    with path.open(encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f, delimiter="\t"))
    items, _ = read_mmbench(path)
    assert items[0].image_bytes == base64.b64decode(first["image"])


# --- wiring: layout errors and group-preserving caps --------------------------------------------------------


def _spec(name: str, **fields):
    from spatialboost.config import load_config

    return getattr(load_config("configs/paper.yaml", [f"evaluate.benchmarks.{name}={json.dumps(fields)}"]).evaluate.benchmarks, name)


def test_missing_files_and_images_are_one_line_naming_the_key(tmp_path: Path) -> None:
    from spatialboost.evaluate.benchmarks import BenchmarkLayoutError, read_general_vqa_benchmark

    root = write_vqav2(tmp_path / "VQAv2", np.random.default_rng(0))
    with pytest.raises(BenchmarkLayoutError, match=r"^evaluate\.benchmarks\.vqav2: 2 of 2 images not found, e\.g\. .*"
                                                   r"COCO_val2014_000000000042\.jpg \(set evaluate\.benchmarks\.vqav2\.image_root\?\)$"):  # fmt: skip
        read_general_vqa_benchmark("vqav2", _spec("vqav2", path=str(root), image_root=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkLayoutError, match=r"^evaluate\.benchmarks\.gqa\.path: .* not in the released layout: "
                                                   r".*testdev_balanced_questions\.json not found$"):  # fmt: skip
        read_general_vqa_benchmark("gqa", _spec("gqa", path=str(tmp_path / "empty")))
    with pytest.raises(BenchmarkLayoutError, match=r"evaluate\.benchmarks\.mme\.path: no mme items"):
        read_general_vqa_benchmark("mme", _spec("mme", path=str(tmp_path / "empty")))


def test_caps_keep_circular_copies_and_image_pairs_whole(tmp_path: Path) -> None:
    from spatialboost.evaluate.benchmarks import _resolve_general

    rng = np.random.default_rng(0)
    mmbench = write_mmbench(tmp_path / "MMBench" / "mmbench_dev_20230712.tsv", rng)
    items, info = _resolve_general("mmbench", _spec("mmbench", path=str(mmbench), max_items=1), seed=0)
    assert len({i.group for i in items}) == 1 and len(items) in (2, 4)  # one question, all its copies
    assert info["n_test"] == 1 and info["available_test"] == 2 and info["full_protocol"] is False
    assert info["protocol"] == "mmbench-circular/mmbench_dev_20230712"
    mme = write_mme(tmp_path / "MME", rng)
    items, info = _resolve_general("mme", _spec("mme", path=str(mme), max_items=3), seed=0)
    assert len(items) == 6 and all(sum(i.group == j.group for j in items) == 2 for i in items)
    assert (info["n_test"], info["available_test"], info["unit"]) == (3, 6, "images")
