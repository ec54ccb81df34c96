"""The paper-comparison report: the right published row per encoder, units and deltas."""

from __future__ import annotations

from pathlib import Path

from spatialboost.evaluate.paper import (
    PAPER_ROWS,
    comparison_markdown,
    general_vqa_markdown,
    paper_row,
    write_benchmark_report,
)

METRICS = {
    "baseline": {"nyu": {"depth_rmse": {"mean": 0.61, "std": 0.01}}, "ade20k": {"seg_miou": {"mean": 0.388, "std": 0.002}},
                 "cifar100": {"cls_top1": {"mean": 0.7, "std": 0.0}}},
    "boosted": {"nyu": {"depth_rmse": {"mean": 0.52, "std": 0.02}}, "ade20k": {"seg_miou": {"mean": 0.395, "std": 0.003}},
                "cifar100": {"cls_top1": {"mean": None, "std": None}}},
    "protocol": {"nyu": {"protocol": "dinov2-linear-depth/nyu-eigen", "source": "x/y z.py", "n_train": 10, "available_train": 10,
                         "n_test": 654, "available_test": 654, "expected_test": 654, "full_protocol": True}},
}  # fmt: skip


def test_paper_rows_per_family() -> None:
    assert paper_row("clip", "nyu", "depth_rmse").baseline == 0.56  # LLaVA-1.5's CLIP: the OpenCLIP row
    assert paper_row("dinov2", "voc", "seg_miou").boosted == 83.5
    assert paper_row("siglip", "nyu", "depth_rmse") is None
    assert paper_row("clip", "mme", "perception").boosted == 1516.3 and paper_row("dinov2", "gqa", "accuracy").baseline == 61.5
    assert paper_row("dinov2", "mme", "cognition") is None  # Table 1's one MME number is perception
    assert len({(r.encoder, r.benchmark, r.metric) for r in PAPER_ROWS}) == len(PAPER_ROWS) == 20


def test_comparison_table_units_deltas_and_missing_values() -> None:
    rows = {
        line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
        for line in comparison_markdown(METRICS, "open_clip").splitlines()[2:]
    }
    nyu, ade, cifar = rows["NYUd v2/RMSE (m) ↓"], rows["ADE20K/mIoU (%) ↑"], rows["CIFAR-100/top-1 (%) ↑"]
    assert "0.610 ± 0.010" in nyu and "-0.090 (better)" in nyu and "| 0.56 | 0.4 | Table 3, NYUd |" in nyu
    assert "38.8 ± 0.2" in ade and "+0.7 (better)" in ade and "| 39.1 | 40 |" in ade  # mIoU in percent, as the paper
    assert "| 70.0 ± 0.0 | – | – | – | – | – |" in cifar  # no boosted value, no paper row


def test_write_benchmark_report(tmp_path: Path) -> None:
    text = write_benchmark_report(METRICS, "dinov2", tmp_path).read_text()
    assert (
        "| 0.38 | 0.32 | Table 3, NYUd |" in text
        and "| NYUd v2 | dinov2-linear-depth/nyu-eigen | 10 of 10 | 654 of 654 (protocol: 654) | yes |" in text
    )
    assert (tmp_path / "metrics.png").is_file()


GENERAL = {
    "baseline": {"vqav2": {"accuracy": {"mean": 0.7612, "std": 0.002}}, "mmbench": {"circular_acc": {"mean": 0.6, "std": 0.01}},
                 "mme": {"perception": {"mean": 1400.25, "std": 12.0}, "cognition": {"mean": 300.0, "std": 9.0}}},
    "boosted": {"vqav2": {"accuracy": {"mean": 0.7701, "std": 0.002}}, "mmbench": {"circular_acc": {"mean": None, "std": None}},
                "mme": {"perception": {"mean": 1410.75, "std": 11.0}, "cognition": {"mean": 290.0, "std": 9.0}}},
}  # fmt: skip


def test_general_vqa_table_is_laid_out_like_table_1() -> None:
    lines = general_vqa_markdown(GENERAL, "open_clip").splitlines()
    assert lines[0] == "| Model | Vision encoder | VQAv2 | MMBench | MME | MME cognition |"  # GQA not run: no column
    assert lines[2] == "| LLaVA-1.5-7B (paper) | OpenCLIP | 77.8 | 63.9 | 1510.2 | – |"
    assert lines[3] == "| + SpatialBoost (paper) | OpenCLIP | 79.0 | 67.7 | 1516.3 | – |"
    assert lines[4] == "| ours: baseline | `open_clip` | 76.1 ± 0.2 | 60.0 ± 1.0 | 1400.2 ± 12.0 | 300.0 ± 9.0 |"
    assert lines[5] == "| ours: + SpatialBoost | `open_clip` | 77.0 ± 0.2 | – | 1410.8 ± 11.0 | 290.0 ± 9.0 |"
    assert lines[6] == "| ours: Δ | | +0.9 | – | +10.5 | -10.0 |"
    assert general_vqa_markdown(METRICS, "dinov2") == ""  # no general benchmark: no table
    assert "| — (no paper row) |" in general_vqa_markdown(GENERAL, "siglip")


def test_report_has_the_general_vqa_section_only_when_run(tmp_path: Path) -> None:
    with_general = write_benchmark_report({**METRICS, "baseline": {**METRICS["baseline"], **GENERAL["baseline"]},
                                           "boosted": {**METRICS["boosted"], **GENERAL["boosted"]}}, "clip", tmp_path / "a")  # fmt: skip
    text = with_general.read_text()
    assert "## General VQA (Table 1)" in text and "| 77.8 | 63.9 | 1510.2 |" in text
    assert "| VQAv2" not in comparison_markdown(GENERAL, "clip")  # not repeated in the main table
    assert "## General VQA" not in write_benchmark_report(METRICS, "clip", tmp_path / "b").read_text()
