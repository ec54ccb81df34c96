"""Spatial VQA: rule-based answer parsing, the BLINK / SpatialRGPT-bench readers on fixtures in
their published formats, run_vqa, the VLM adapter, and the demo benchmarks made from the world."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from spatialboost.config import WorldConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.evaluate.demo_bench import (
    BLINK_SCHEMA,
    DemoBenchOptions,
    write_demo_benches,
    write_demo_blink,
)
from spatialboost.evaluate.vqa import (
    BLINK_RELATIVE_DEPTH,
    SPATIALRGPT,
    VQAItem,
    bootstrap_summary,
    candidates_of,
    parse_choice_region,
    parse_clock,
    parse_distance_m,
    parse_relative_depth,
    parse_yes_no,
    read_blink,
    read_spatialrgpt,
    run_vqa,
    score_item,
    vlm_answer_fn,
)

# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("(A)", "A"), ("(B) B is closer", "B"), ("A", "A"), ("B.", "B"), ("point A", "A"),
        ("Point B is closer to the camera.", "B"), ("The answer is (A).", "A"), ("The answer is B", "B"),
        ("B is farther away, so A.", "A"), ("A is not closer than B", "B"), ("the first one", "A"),
        ("The second point.", "B"), ("I think point a is closer", "A"), ("A. It sits on the table", "A"),
        ("A is closer", "A"), ("a point near the table", None), ("I cannot tell.", None), ("", None),
    ],
)  # fmt: skip
def test_parse_relative_depth(text: str, letter: str | None) -> None:
    assert parse_relative_depth(text) == letter


@pytest.mark.parametrize(
    ("text", "metres"),
    [
        ("1.5 meters", 1.5), ("150 cm", 1.5), ("3 feet 2 inches", 0.9652), ("about 2m", 2.0),
        ("5'2\"", 1.5748), ("It is 1.5 to 2 m away.", 1.75), ("The height of Region [1] is 10.0 inches.", 0.254),
        ("Region [0] and Region [1] are 11.4 meters apart.", 11.4), ("22.32 feet.", 6.803136),
        ("two metres", 2.0), ("1,200 mm", 1.2), ("0.5", 0.5), ("a 2-meter gap", 2.0), ("1 m 20 cm", 1.2),
        ("It is 77.56 centimeters wide.", 0.7756), ("3 yards", 2.7432), ("no idea", None),
        ("around the 2 o'clock direction", None),
    ],
)  # fmt: skip
def test_parse_distance_m(text: str, metres: float | None) -> None:
    value = parse_distance_m(text)
    assert value == pytest.approx(metres) if metres is not None else value is None


def test_parse_clock_and_unitless_policy() -> None:
    assert parse_clock("Region [0] will find Region [1] around the 11 o'clock direction.") == 11
    assert parse_clock("at 13 o'clock") is None
    assert parse_distance_m("0.5", default_unit=None) is None


# SpatialRGPT's own judge examples (scripts/srgpt/eval/prompt_templates), with their marks
@pytest.mark.parametrize(
    ("answer", "response", "mark"),
    [
        (
            "Yes, Region [0] is to the left of Region [1].",
            "Indeed, Region [0] is positioned on the left side of Region [1].",
            1,
        ),
        (
            "Correct, you'll find Region [0] to the left of Region [1].",
            "Yes, Region [0] is to the left of Region [1].",
            1,
        ),
        (
            "Indeed, Region [0] is positioned on the left side of Region [1].",
            "In fact, Region [0] is to the right of Region [1].",
            0,
        ),
        (
            "Incorrect, Region [0] is not on the left side of Region [1].",
            "Correct, you'll find Region [0] to the left of Region [1].",
            0,
        ),
        (
            "Incorrect, Region [0] is not on the left side of Region [1].",
            "In fact, Region [0] is to the right of Region [1].",
            1,
        ),
    ],
)
def test_left_predicate_judge_examples(answer: str, response: str, mark: int) -> None:
    item = VQAItem(
        id="x",
        benchmark=SPATIALRGPT,
        question="Is Region [0] to the left of Region [1]?",
        answer=answer,
        qa_type="qualitative",
        category="left_predicate",
    )
    assert score_item(item, response).correct == bool(mark)


@pytest.mark.parametrize(
    ("category", "question", "answer", "response", "mark"),
    [
        ("tall_choice", "Who is taller, Region [0] or Region [1]?", "With more height is Region [0].",
         "Standing taller between the two is Region [1].", 0),
        ("right_choice", "Between Region [0] and Region [1], which one appears on the right side from the viewer's "
         "perspective?", "From the viewer's perspective, Region [1] appears more on the right side.", "Region [1].", 1),
        ("front_choice", "Which is in front, Region [0] or Region [1]?", "Positioned in front is Region [1].",
         "Region [1] is more forward.", 1),
        ("above_choice", "Which is above, Region [0] or Region [1]?", "Region [1] is above.",
         "Region [0] is higher up.", 0),
        ("left_choice", "Which is more to the left, the red cube or the blue cone?", "The red cube is more to the left.",
         "The blue cone is to the right of the red cube.", 1),
    ],
)  # fmt: skip
def test_choice_judge_examples(category: str, question: str, answer: str, response: str, mark: int) -> None:
    item = VQAItem(
        id="x", benchmark=SPATIALRGPT, question=question, answer=answer, qa_type="qualitative", category=category
    )
    assert score_item(item, response).correct == bool(mark)


def test_yes_no_and_choice_helpers() -> None:
    assert parse_yes_no("The red cube is not behind the blue cone.", "behind") is False
    assert parse_yes_no("It is in front of it.", "behind") is False
    assert parse_yes_no("Hmm.", "behind") is None
    cands = candidates_of("Which is more to the left, the red cube or the blue cone?")
    assert cands == ("the red cube", "the blue cone")
    assert parse_choice_region("the second one", cands, "left") == 1
    assert parse_choice_region("Neither.", cands, "left") is None


def test_quantitative_scoring_bounds_and_units() -> None:
    item = VQAItem(
        id="q",
        benchmark=SPATIALRGPT,
        question="How wide is Region [0]?",
        answer="Region [0] is 1.02 meters wide.",
        qa_type="quantitative",
        category="width_data",
    )
    assert score_item(item, "It is 1.27 m wide.").correct  # 1.245 < 1.25 * 1.02 = 1.275
    assert not score_item(item, "It is 1.3 m wide.").correct
    assert score_item(item, "about 77 cm").correct  # 0.77 >= 0.765
    assert not score_item(item, "76 cm").correct
    assert score_item(item, "2.17 meters").rel_error == pytest.approx(1.15 / 1.02)
    miss = score_item(item, "I don't know")
    assert not miss.correct and not miss.parsed and miss.rel_error is None
    direction = VQAItem(
        id="d",
        benchmark=SPATIALRGPT,
        question="If you are at Region [0], where will you find Region [1]?",
        answer="Region [0] will find Region [1] around the 12 o'clock direction.",
        qa_type="quantitative",
        category="direction",
    )
    assert score_item(direction, "around the 1 o'clock direction").correct
    assert not score_item(direction, "at 2 o'clock").correct


# --- readers on fixtures in the published formats -------------------------------------------------


def _png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _blink_row(idx: str, answer: str, sub_task: str = "Relative_Depth") -> dict:
    return {
        "idx": idx, "question": "Which point is closer to the camera?", "sub_task": sub_task,
        "image_1": {"bytes": _png_bytes((10, 20, 30)), "path": f"{idx}.jpg"}, "image_2": None, "image_3": None,
        "image_4": None, "choices": ["A is closer", "B is closer"], "answer": answer,
        "prompt": "Two points are circled on the image, labeled by A and B beside each circle. Which point is closer "
                  "to the camera?\nSelect from the following choices.\n(A) A is closer\n(B) B is closer",
        "explanation": "",
    }  # fmt: skip


def test_read_blink_parquet_and_json(tmp_path: Path) -> None:
    rows = [_blink_row("val_Relative_Depth_1", "(B)"), _blink_row("val_Relative_Depth_2", "(A)"),
            _blink_row("test_Relative_Depth_1", "hidden"), _blink_row("val_Counting_1", "(C)", "Counting")]  # fmt: skip
    folder = tmp_path / "BLINK/Relative_Depth"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=BLINK_SCHEMA), folder / "val-00000-of-00001.parquet")
    items = read_blink(tmp_path / "BLINK")
    assert [i.id for i in items] == ["val_Relative_Depth_1", "val_Relative_Depth_2"]
    assert items[0].answer == "(B)" and items[0].question.startswith("Two points are circled")
    assert items[0].image().shape == (16, 24, 3) and tuple(items[0].image()[0, 0]) == (10, 20, 30)

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "img.png")
    plain = {"idx": "val_Relative_Depth_9", "question": "Which point is closer to the camera?",
             "image_1": "img.png", "choices": ["A is closer", "B is closer"], "answer": "(A)"}  # fmt: skip
    (tmp_path / "rows.jsonl").write_text(json.dumps(plain) + "\n")
    (item,) = read_blink(tmp_path / "rows.jsonl")
    assert item.question.endswith("(A) A is closer\n(B) B is closer") and item.image().shape == (8, 8, 3)


def _srgpt_rows() -> list[dict]:
    def row(i, q, a, qtype, category, boxes):
        return {
            "id": f"srgpt-{i}", "image_info": {"file_path": "omni3d/img.png", "height": 16, "width": 24},
            "text_q": q, "qa_info": {"type": qtype, "category": category},
            "conversations": [{"from": "human", "value": "<image>\n" + q.replace("Region [0]", "<mask>")},
                              {"from": "gpt", "value": a}],
            "bbox": boxes, "rle": [],
        }  # fmt: skip

    return [
        row(0, "Is Region [0] to the left of Region [1]?", "Yes, Region [0] is to the left of Region [1].",
            "qualitative", "left_predicate", [[1, 1, 8, 8], [12, 2, 20, 10]]),
        row(1, "What is the height of Region [0]?", "The height of Region [0] is 10.0 inches.", "quantitative",
            "height_data", [[2, 2, 10, 12]]),
        row(2, "How far apart are Region [0] and Region [1]?", "Region [0] and Region [1] are 2.2 meters apart.",
            "quantitative", "distance_data", [[1, 1, 8, 8], [12, 2, 20, 10]]),
        row(3, "Which is taller, Region [0] or Region [1]?", "Region [1] is taller.", "qualitative", "tall_choice",
            [[1, 1, 8, 8], [12, 2, 20, 10]]),
    ]  # fmt: skip


def test_read_spatialrgpt_json_and_jsonl_then_run_vqa(tmp_path: Path) -> None:
    (tmp_path / "omni3d").mkdir()
    Image.new("RGB", (24, 16), (200, 200, 200)).save(tmp_path / "omni3d/img.png")
    rows = _srgpt_rows()
    (tmp_path / "SpatialRGPT-Bench_v1.json").write_text(json.dumps(rows))
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_spatialrgpt(tmp_path / "SpatialRGPT-Bench_v1.json", tmp_path)
    assert items == read_spatialrgpt(tmp_path / "bench.jsonl", tmp_path)
    assert [i.category for i in items] == ["left_predicate", "height_data", "distance_data", "tall_choice"]
    assert items[1].answer == "The height of Region [0] is 10.0 inches." and items[0].boxes[1] == (12, 2, 20, 10)

    answers = {
        items[0].question: "No, it is on the right.",  # wrong
        items[1].question: "About 27 cm.",  # 0.27 vs 0.254: right
        items[2].question: "3 meters",  # 3 vs 2.2: wrong (> 2.75)
        items[3].question: "Region [1].",  # right
    }
    seen = []

    def answer_fn(image: np.ndarray, question: str) -> str:
        seen.append(bool((image != 200).any()))  # anything drawn on the plain grey image?
        return answers[question]

    result = run_vqa(answer_fn, items)
    m = result.metrics
    assert m["spatialrgpt_acc"] == 0.5 and m["qualitative_acc"] == 0.5 and m["quantitative_acc"] == 0.5
    assert m["quant/height_acc"] == 1.0 and m["quant/direct_distance_acc"] == 0.0
    assert m["quantitative_rel_err"] == pytest.approx(np.mean([abs(0.27 - 0.254) / 0.254, 0.8 / 2.2]))
    assert m["qual/left/right_acc"] == 0.0 and m["qual/tall/short_acc"] == 1.0 and m["unparsed"] == 0
    assert all(seen)  # "Region [k]" questions get their boxes drawn
    assert len(result.records) == 4 and result.records[2]["rel_error"] == pytest.approx(0.8 / 2.2)
    run_vqa(answer_fn, items, mark_regions=False)
    assert not any(seen[4:])


def test_bootstrap_summary_is_seeded() -> None:
    flags = [True] * 30 + [False] * 10
    a, b = bootstrap_summary(flags, seed=1), bootstrap_summary(flags, seed=1)
    assert a == b and a["mean"] == 0.75 and 0.03 < a["std"] < 0.12


# --- demo benchmarks from the world -----------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spatialboost.world import render_dataset

    root = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(n_train=0, n_test=16, width=96, height=72, objects_per_scene=(3, 6), seed=7,
                      object_distance_m=(2.0, 9.0))  # fmt: skip
    render_dataset(cfg, root, progress=False)
    return root


def test_demo_blink_points_truth_balance_and_markers(world: Path, tmp_path: Path) -> None:
    dataset = RGBDDataset(world)
    path = tmp_path / "blink.parquet"
    truths = write_demo_blink(dataset, path, "test", DemoBenchOptions(blink_per_image=2))
    items = read_blink(path)
    assert len(items) == len(truths) >= 24
    letters = Counter(item.answer for item in items)
    assert abs(letters["(A)"] - letters["(B)"]) <= 1
    for item, truth in zip(items, truths, strict=True):
        depth = dataset.depth(truth.image_id)
        da, db = depth[truth.point_a[1], truth.point_a[0]], depth[truth.point_b[1], truth.point_b[0]]
        assert (da, db) == (truth.depth_a, truth.depth_b) and max(da, db) / min(da, db) >= 1.1
        assert item.answer == ("(A)" if da < db else "(B)")
        image, clean = item.image(), dataset.rgb(truth.image_id)
        changed = np.any(image != clean, axis=-1)
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 20 and np.hypot(xs - truth.point_a[0], ys - truth.point_a[1]).min() < 6
    assert [item.id for item in items] == [t.idx for t in truths]
    oracle = iter(f"Point {'A' if t.depth_a < t.depth_b else 'B'} is closer." for t in truths)
    result = run_vqa(lambda image, question: next(oracle), items)
    assert result.metrics["relative_depth_acc"] == 1.0 and result.metrics["unparsed"] == 0


def test_demo_spatialrgpt_reads_back_and_an_oracle_scores_everything(world: Path, tmp_path: Path) -> None:
    paths = write_demo_benches(world, tmp_path / "bench", "test", DemoBenchOptions(spatial_per_image=6))
    assert paths.blink.is_file() and (paths.image_root / "images").is_dir()
    items = read_spatialrgpt(paths.spatialrgpt, paths.image_root)
    assert len(items) >= 60
    categories = Counter(i.category for i in items)
    assert len(categories) >= 15 and {"distance_data", "width_data", "left_choice"} <= set(categories)
    rows = json.loads(paths.spatialrgpt.read_text())
    assert set(rows[0]) == {"id", "image_info", "text_q", "qa_info", "conversations", "bbox"}
    yes = sum(r["conversations"][1]["value"].startswith("Yes") for r in rows if "predicate" in r["qa_info"]["category"])
    no = sum(r["conversations"][1]["value"].startswith("No") for r in rows if "predicate" in r["qa_info"]["category"])
    assert yes > 0 and no > 0 and abs(yes - no) <= max(4, (yes + no) // 2)

    references = iter(item.answer for item in items)
    oracle = run_vqa(lambda image, question: next(references), items)  # the reference answers score perfectly
    assert oracle.metrics["spatialrgpt_acc"] == 1.0 and oracle.metrics["unparsed"] == 0
    assert oracle.metrics["quantitative_rel_err"] == 0.0
    flipped = [
        score_item(i, "Yes." if i.answer.startswith("No") else "No.") for i in items if "predicate" in i.category
    ]
    assert not any(s.correct for s in flipped)
    assert items[0].image().shape == (72, 96, 3)


def test_vlm_answer_fn_runs_a_tiny_vlm_on_the_demo(world: Path, tmp_path: Path) -> None:
    from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    vlm = tiny_vlm(tokenizer, family="clip")
    paths = write_demo_benches(world, tmp_path / "bench", "test", DemoBenchOptions(max_images=3, spatial_per_image=2))
    items = read_blink(paths.blink) + read_spatialrgpt(paths.spatialrgpt, paths.image_root)
    result = run_vqa(vlm_answer_fn(vlm, tokenizer, max_new_tokens=8), items)
    assert len(result.records) == len(items) and all(isinstance(r["prediction"], str) for r in result.records)
    assert 0.0 <= result.metrics["relative_depth_acc"] <= 1.0
    assert {r["benchmark"] for r in result.records} == {BLINK_RELATIVE_DEPTH, SPATIALRGPT}
