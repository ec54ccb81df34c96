"""The evaluation report: metrics/evaluate.json structure, the markdown table, the plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.evaluate.comparison import accuracy_interval, compare, over_seeds, paired_interval
from spatialboost.evaluate.probe_metrics import depth_map_scores
from spatialboost.evaluate.report import (
    JSON_METRICS,
    METRICS,
    DepthExample,
    collect_metrics,
    markdown_table,
    metrics_json,
    plot_depth_examples,
    write_report,
)
from spatialboost.evaluate.vqa import SPATIALRGPT, VQAResult


def _results() -> dict:
    base = {
        "depth_rmse": {"mean": 0.56, "std": 0.02}, "depth_absrel": {"mean": 0.18, "std": 0.01},
        "depth_delta1": {"mean": 0.70, "std": 0.01}, "seg_miou": {"mean": 0.391, "std": 0.004},
        "cls_top1": {"mean": 0.80, "std": 0.003}, "vqa_relative_depth_acc": {"mean": 0.516, "std": 0.05},
        "vqa_quantitative_acc": {"mean": 0.133, "std": float("nan")},
    }  # fmt: skip
    boost = {
        "depth_rmse": {"mean": 0.40, "std": 0.03}, "depth_absrel": {"mean": 0.12, "std": 0.01},
        "depth_delta1": {"mean": 0.81, "std": 0.02}, "seg_miou": {"mean": 0.40, "std": 0.005},
        "cls_top1": {"mean": 0.79, "std": 0.004}, "vqa_relative_depth_acc": {"mean": 0.851, "std": 0.04},
    }  # fmt: skip
    return {"baseline": base, "boosted": boost}


def test_metrics_json_has_exactly_the_documented_structure() -> None:
    results = _results() | {"floor": {"depth_rmse": {"mean": 0.60, "std": 0.0}, "seg_miou": {"mean": 0.1, "std": 0.0}}}
    results["boosted"] = {k: {**v, "n": 3} for k, v in results["boosted"].items()}
    effects = compare(results["baseline"], results["boosted"], {"depth_rmse": False})
    out = metrics_json(results, effects)
    assert list(out) == ["baseline", "boosted", "floor", "effects"]
    for run in ("baseline", "boosted"):
        assert list(out[run]) == list(JSON_METRICS)
    assert all(set(summary) == {"mean", "std"} for summary in out["baseline"].values())
    assert out["boosted"]["depth_rmse"] == {"mean": 0.40, "std": 0.03, "n": 3}
    assert out["baseline"]["vqa_quantitative_acc"] == {"mean": 0.133, "std": None}  # NaN -> null
    assert out["boosted"]["vqa_quantitative_acc"] == {"mean": None, "std": None}  # missing -> null
    assert list(out["floor"]) == ["depth_rmse", "seg_miou"]  # a control: only the metrics it has
    assert "depth_delta1" not in out["boosted"]  # only the documented metrics
    assert out["effects"]["depth_rmse"]["verdict"] == "better"  # -0.16 against a seed std of 0.03
    json.dumps(out, allow_nan=False)
    with pytest.raises(ValueError, match="boosted"):
        metrics_json({"baseline": {}})


def test_markdown_table_reads_deltas_against_the_seed_spread() -> None:
    results = _results()
    results["boosted"] = {k: {**v, "n": 3} for k, v in results["boosted"].items()}
    results["control"] = {"depth_rmse": {"mean": 0.35, "std": 0.01, "n": 3}}
    higher = {"depth_rmse": False, "seg_miou": True, "cls_top1": True}
    table = markdown_table(results, compare(results["baseline"], results["boosted"], higher))
    header, *_ = table.splitlines()
    assert header.split("|")[2:6] == [" Baseline ", " Boosted ", " Depth-supervised control ", " Δ (boosted − baseline) "]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    depth = rows["Depth RMSE, all pixels (m) ↓"]
    assert "0.560 ± 0.020" in depth and "0.400 ± 0.030 (n=3)" in depth and "-0.160 | better" in depth
    assert "0.350 ± 0.010 (n=3)" in depth
    assert "+0.009 | no effect" in rows["Segmentation mIoU ↑"]  # 0.009 < 2 x 0.005
    assert "-0.010 | worse" in rows["Classification top-1 ↑"]  # 0.010 > 2 x 0.004
    assert rows["SpatialRGPT quantitative acc. ↑"].count("–") >= 2  # boosted missing: no delta
    one_seed = markdown_table(_results(), compare(_results()["baseline"], _results()["boosted"], higher))
    assert "not judged (one seed)" in one_seed


def test_compare_needs_the_paired_interval_to_exclude_zero_for_vqa() -> None:
    base = [1.0] * 50 + [0.0] * 50
    better = [[1.0] * 60 + [0.0] * 40] * 3  # +10 points on the same items, every seed
    interval = paired_interval(base, better)
    assert 0.0 < interval[0] < 0.1 < interval[1]
    summary = over_seeds([{"acc": 0.60}, {"acc": 0.61}, {"acc": 0.59}])
    assert summary["acc"] == pytest.approx({"mean": 0.60, "std": 0.01, "n": 3})
    effect = compare({"acc": {"mean": 0.50}}, summary, {"acc": True}, {"acc": interval})["acc"]
    assert effect.verdict == "better" and effect.delta == pytest.approx(0.10)
    noisy = compare({"acc": {"mean": 0.50}}, summary, {"acc": True}, {"acc": (-0.01, 0.2)})["acc"]
    assert noisy.verdict == "no effect"  # beyond the seed spread, but the items cannot tell
    low, high = accuracy_interval(better)
    assert low < 0.6 < high and high - low < 0.25


def test_collect_metrics_merges_probes_and_vqa() -> None:
    class FakeProbe:
        summary = {"depth_rmse": {"mean": 1.0, "std": 0.1}}

    records = tuple(
        {"group": "relative_depth", "benchmark": "blink_relative_depth", "qa_type": "multiple_choice", "correct": c}
        for c in (True, True, False, True)
    ) + tuple(
        {"group": "quant/width", "benchmark": SPATIALRGPT, "qa_type": "quantitative", "correct": c}
        for c in (True, False)
    )
    metrics = collect_metrics({"depth": FakeProbe()}, VQAResult({}, records), n_boot=200)
    assert metrics["depth_rmse"] == {"mean": 1.0, "std": 0.1}
    assert metrics["vqa_relative_depth_acc"]["mean"] == 0.75 and metrics["vqa_relative_depth_acc"]["std"] > 0
    assert metrics["vqa_quantitative_acc"]["mean"] == 0.5
    assert "vqa_qualitative_acc" not in metrics


def _examples(n: int) -> list[DepthExample]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    out = []
    for _ in range(n):
        gt = (2 + 6 * y / 48 + rng.normal(0, 0.1, (48, 64))).astype(np.float32)
        gt[:8] = 0  # sky: no ground truth
        image = (np.stack([x * 4 % 256, y * 5 % 256, np.full_like(x, 120)], -1)).astype(np.uint8)
        out.append(DepthExample(image, gt, np.full_like(gt, 5.0), gt + rng.normal(0, 0.3, gt.shape)))
    return out


def test_write_report_files(tmp_path: Path) -> None:
    paths = write_report(_results(), tmp_path / "report", _examples(2), notes="Demo profile, tiny encoder.")
    text = paths.markdown.read_text()
    assert "| Depth RMSE, all pixels (m) ↓ |" in text and "![metrics](metrics.png)" in text and "depth_examples.png" in text
    for png in (paths.bars, paths.depth):
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
            pixels = np.asarray(img.convert("RGB"))
        assert pixels.std() > 10  # not a blank canvas
    assert not list((tmp_path / "report").glob(".*.tmp"))
    no_depth = write_report(_results(), tmp_path / "plain")
    assert no_depth.depth is None and "depth_examples" not in no_depth.markdown.read_text()


def test_depth_figure_has_a_row_per_example(tmp_path: Path) -> None:
    sizes = []
    for n in (1, 3):
        with Image.open(plot_depth_examples(_examples(n), tmp_path / f"d{n}.png")) as img:
            sizes.append(img.size)
    assert sizes[0][0] == pytest.approx(sizes[1][0], rel=0.1) and sizes[1][1] > 2.2 * sizes[0][1]
    with pytest.raises(ValueError, match="no depth"):
        plot_depth_examples([], tmp_path / "e.png")


def test_every_depth_metric_a_probe_writes_has_a_label_and_its_direction() -> None:
    """absrel and RMSE fall when the encoder gets better, delta1 rises: on every pixel region."""
    truth = np.full((4, 4), 5.0)
    maps = depth_map_scores([truth * 1.1], {"": [truth], "objects": [truth], "near": [truth]}, (0.1, 80.0))
    assert len(maps) == 9
    for metric in maps:
        assert metric in METRICS, metric
        assert METRICS[metric][1] == metric.startswith("depth_delta1"), metric
