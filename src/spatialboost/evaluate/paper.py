"""The paper's published numbers (Tables 1 and 3) and the report that sets ours beside them.

    write_benchmark_report(metrics, family="clip", out_dir="reports/evaluate")  # report.md + metrics.png

Transcribed from ../shared/paper/spatialboost-paper.txt (the early draft): Table 1 "Results on
visual question answering" (LLaVA-1.5-7B with each vision encoder; SpatialRGPT-bench and
BLINK-bench accuracy, %; general VQA: VQAv2, GQA, MMBench accuracy in %, MME in points) and Table 3 "Results on dense prediction tasks" (linear probing of
frozen features: depth RMSE in metres, segmentation mIoU in %). Both use ViT-L/14 OpenCLIP and
DINOv2. Table 1 gives one MME number per row; at about 1510 it is the perception score
(LLaVA-1.5-7B reports perception 1510.7, cognition in the hundreds), so it stands beside our
`mme.perception`. The classification probes (ImageNet-1K, CIFAR-100) are in the draft's missing
Appendix D.2, so they have no paper row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialboost.evaluate.report import plot_metric_bars
from spatialboost.io import write_bytes_atomic


@dataclass(frozen=True)
class PaperRow:
    """One published number pair: the encoder alone and "+ SpatialBoost"."""

    source: str  # "Table 3, NYUd"
    encoder: str  # the paper's row: "OpenCLIP" or "DINOv2"
    benchmark: str  # our benchmark key
    metric: str  # our metric key
    baseline: float
    boosted: float


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("Table 1, SpatialRGPT-bench", "OpenCLIP", "spatialrgpt", "overall_acc", 13.3, 52.0),
    PaperRow("Table 1, BLINK-bench", "OpenCLIP", "blink", "relative_depth_acc", 51.6, 85.1),
    PaperRow("Table 1, SpatialRGPT-bench", "DINOv2", "spatialrgpt", "overall_acc", 18.8, 54.2),
    PaperRow("Table 1, BLINK-bench", "DINOv2", "blink", "relative_depth_acc", 55.2, 87.5),
    PaperRow("Table 1, VQAv2", "OpenCLIP", "vqav2", "accuracy", 77.8, 79.0),
    PaperRow("Table 1, GQA", "OpenCLIP", "gqa", "accuracy", 61.8, 65.6),
    PaperRow("Table 1, MMBench", "OpenCLIP", "mmbench", "circular_acc", 63.9, 67.7),
    PaperRow("Table 1, MME", "OpenCLIP", "mme", "perception", 1510.2, 1516.3),
    PaperRow("Table 1, VQAv2", "DINOv2", "vqav2", "accuracy", 75.2, 76.8),
    PaperRow("Table 1, GQA", "DINOv2", "gqa", "accuracy", 61.5, 62.5),
    PaperRow("Table 1, MMBench", "DINOv2", "mmbench", "circular_acc", 64.0, 67.4),
    PaperRow("Table 1, MME", "DINOv2", "mme", "perception", 1506.2, 1514.2),
    PaperRow("Table 3, NYUd", "OpenCLIP", "nyu", "depth_rmse", 0.56, 0.40),
    PaperRow("Table 3, KITTI", "OpenCLIP", "kitti", "depth_rmse", 3.66, 2.82),
    PaperRow("Table 3, ADE20k", "OpenCLIP", "ade20k", "seg_miou", 39.1, 40.0),
    PaperRow("Table 3, Pascal VOC", "OpenCLIP", "voc", "seg_miou", 70.8, 74.3),
    PaperRow("Table 3, NYUd", "DINOv2", "nyu", "depth_rmse", 0.38, 0.32),
    PaperRow("Table 3, KITTI", "DINOv2", "kitti", "depth_rmse", 2.78, 2.56),
    PaperRow("Table 3, ADE20k", "DINOv2", "ade20k", "seg_miou", 47.7, 49.2),
    PaperRow("Table 3, Pascal VOC", "DINOv2", "voc", "seg_miou", 82.1, 83.5),
)

PAPER_ENCODER = {"open_clip": "OpenCLIP", "clip": "OpenCLIP", "dinov2": "DINOv2"}
"""Our encoder family -> the paper's row. "clip" is LLaVA-1.5's own CLIP ViT-L/14-336, which
Table 1's LLaVA-1.5-7B row calls OpenCLIP."""

METRICS: dict[str, tuple[str, bool, bool]] = {
    "depth_rmse": ("RMSE (m)", False, False),
    "depth_absrel": ("AbsRel", False, False),
    "depth_delta1": ("δ1 (%)", True, True),
    "seg_miou": ("mIoU (%)", True, True),
    "seg_pixel_acc": ("pixel acc. (%)", True, True),
    "cls_top1": ("top-1 (%)", True, True),
    "relative_depth_acc": ("accuracy (%)", True, True),
    "qualitative_acc": ("qualitative acc. (%)", True, True),
    "quantitative_acc": ("quantitative acc. (%)", True, True),
    "overall_acc": ("accuracy, all items (%)", True, True),
}
"""metric -> (label, higher is better, shown in percent)."""

BENCHMARK_NAMES = {
    "nyu": "NYUd v2", "kitti": "KITTI", "ade20k": "ADE20K", "voc": "Pascal VOC 2012", "imagenet": "ImageNet-1K",
    "cifar100": "CIFAR-100", "blink": "BLINK Relative_Depth (val)", "spatialrgpt": "SpatialRGPT-bench",
}  # fmt: skip
"""The benchmarks of the main comparison table; general VQA has its own (GENERAL_COLUMNS)."""

GENERAL_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("VQAv2", "vqav2", "accuracy", True),
    ("GQA", "gqa", "accuracy", True),
    ("MMBench", "mmbench", "circular_acc", True),
    ("MME", "mme", "perception", False),
    ("MME cognition", "mme", "cognition", False),
)
"""Table 1's general-VQA columns: (header, benchmark, metric, shown in percent); MME in points.
MME cognition is ours only (the paper's MME column is perception)."""

GENERAL_NAMES = {"vqav2": "VQAv2 (val2014)", "gqa": "GQA (test-dev balanced)", "mmbench": "MMBench (CircularEval)",
                 "mme": "MME"}  # fmt: skip


def paper_row(family: str, benchmark: str, metric: str) -> PaperRow | None:
    """The paper's number pair for this encoder family, benchmark and metric, if it published one."""
    encoder = PAPER_ENCODER.get(family)
    return next((r for r in PAPER_ROWS if (r.encoder, r.benchmark, r.metric) == (encoder, benchmark, metric)), None)


def _value(summary: Mapping[str, Any] | None, percent: bool, with_std: bool = True) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else 3
    text = f"{summary['mean'] * scale:.{digits}f}"
    if with_std and summary.get("std") is not None:
        text += f" ± {summary['std'] * scale:.{digits}f}"
    return text


def comparison_markdown(metrics: Mapping[str, Any], family: str) -> str:
    """One table: per benchmark and metric, ours (baseline, boosted, Δ) beside the paper's row."""
    encoder = PAPER_ENCODER.get(family, "—")
    lines = [
        f"| Benchmark | Metric | Ours: baseline | Ours: boosted | Δ | Paper ({encoder}) | Paper (+ SpatialBoost) | Source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    benchmarks = [b for b in BENCHMARK_NAMES if b in metrics.get("boosted", {}) or b in metrics.get("baseline", {})]
    for bench in benchmarks:
        names = list(metrics.get("boosted", {}).get(bench) or metrics.get("baseline", {}).get(bench) or {})
        for metric in names:
            label, higher, percent = METRICS.get(metric, (metric, True, False))
            base = metrics.get("baseline", {}).get(bench, {}).get(metric)
            boost = metrics.get("boosted", {}).get(bench, {}).get(metric)
            delta = "–"
            if base and boost and base.get("mean") is not None and boost.get("mean") is not None:
                d = (boost["mean"] - base["mean"]) * (100.0 if percent else 1.0)
                better = "better" if (d > 0) == higher and d != 0 else "worse" if d != 0 else "same"
                delta = f"{d:+.{1 if percent else 3}f} ({better})"
            row = paper_row(family, bench, metric)
            paper = (f"{row.baseline:g}", f"{row.boosted:g}", row.source) if row else ("–", "–", "–")
            arrow = "↑" if higher else "↓"
            lines.append(
                f"| {BENCHMARK_NAMES[bench]} | {label} {arrow} | {_value(base, percent)} | "
                f"{_value(boost, percent)} | {delta} | {paper[0]} | {paper[1]} | {paper[2]} |"
            )
    return "\n".join(lines) + "\n"


def _general_cell(summary: Mapping[str, Any] | None, percent: bool) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{summary['mean'] * scale:.1f}"
    return text + (f" ± {summary['std'] * scale:.1f}" if summary.get("std") is not None else "")


def general_vqa_markdown(metrics: Mapping[str, Any], family: str) -> str:
    """Table 1's general-VQA columns laid out as the paper's rows: the paper's LLaVA-1.5-7B with
    this encoder and + SpatialBoost, then ours (baseline, boosted, Δ). "" when none was run."""
    ran = {bench for run in ("baseline", "boosted") for bench in metrics.get(run, {})}
    columns = [c for c in GENERAL_COLUMNS if c[1] in ran]
    if not columns:
        return ""
    encoder = PAPER_ENCODER.get(family)
    lines = ["| Model | Vision encoder | " + " | ".join(c[0] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]  # fmt: skip
    for label, which in (("LLaVA-1.5-7B (paper)", "baseline"), ("+ SpatialBoost (paper)", "boosted")):
        cells = []
        for _, bench, metric, _ in columns:
            row = paper_row(family, bench, metric)
            cells.append(f"{getattr(row, which):.1f}" if row else "–")
        lines.append(f"| {label} | {encoder or '— (no paper row)'} | " + " | ".join(cells) + " |")
    for run, label in (("baseline", "ours: baseline"), ("boosted", "ours: + SpatialBoost")):
        cells = [_general_cell(metrics.get(run, {}).get(bench, {}).get(metric), pct) for _, bench, metric, pct in columns]
        lines.append(f"| {label} | `{family}` | " + " | ".join(cells) + " |")
    deltas = []
    for _, bench, metric, percent in columns:
        base = metrics.get("baseline", {}).get(bench, {}).get(metric) or {}
        boost = metrics.get("boosted", {}).get(bench, {}).get(metric) or {}
        if base.get("mean") is None or boost.get("mean") is None:
            deltas.append("–")
        else:
            deltas.append(f"{(boost['mean'] - base['mean']) * (100.0 if percent else 1.0):+.1f}")
    lines.append("| ours: Δ | | " + " | ".join(deltas) + " |")
    return "\n".join(lines) + "\n"


def protocol_markdown(protocol: Mapping[str, Mapping[str, Any]]) -> str:
    """The protocol, sizes and caps of every benchmark; capped runs are marked as such."""
    lines = [
        "| Benchmark | Protocol | Train images | Test images | Full protocol | Source |",
        "|---|---|---|---|---|---|",
    ]
    for bench, info in protocol.items():
        train = f"{info['n_train']} of {info['available_train']}" if "n_train" in info else "–"
        test = f"{info['n_test']} of {info['available_test']}"
        if info.get("unit"):
            test += f" {info['unit']}"
        if info.get("expected_test") is not None:
            test += f" (protocol: {info['expected_test']})"
        full = "yes" if info["full_protocol"] else "**no: capped or incomplete, not comparable to the paper**"
        name = BENCHMARK_NAMES.get(bench) or GENERAL_NAMES.get(bench, bench)
        lines.append(f"| {name} | {info['protocol']} | {train} | {test} | {full} | {info['source']} |")
    return "\n".join(lines) + "\n"


def _general_section(metrics: Mapping[str, Any], family: str) -> list[str]:
    """The general-VQA table and how to read it, or nothing when no general benchmark ran."""
    table = general_vqa_markdown(metrics, family)
    if not table:
        return []
    return [
        "## General VQA (Table 1)", "",
        "VQAv2, GQA and MMBench in %, MME in points (perception: 10 subtasks, max 2000; cognition: 4, max 800). "
        "Ours: mean ± bootstrap std over questions (MMBench: circular questions; MME: images). Not the paper's "
        "splits everywhere: VQAv2 is val2014 scored locally by the official script (the paper: test-dev on the "
        "EvalAI server), MMBench is the TSV configured (dev), its choices read by MMBench's rules without the GPT "
        "judge (an answer they cannot read is wrong). Scorers: src/spatialboost/evaluate/general_vqa.py.", "",
        table,
    ]  # fmt: skip


def write_benchmark_report(metrics: Mapping[str, Any], family: str, out_dir: str | Path) -> Path:
    """report.md (our numbers beside the paper's, the protocols) and metrics.png under out_dir."""
    out_dir = Path(out_dir)
    runs = [run for run in ("baseline", "boosted") if run in metrics]
    flat = {
        run: {
            f"{bench}/{metric}": summary for bench, values in metrics[run].items() for metric, summary in values.items()
        }
        for run in runs
    }
    text = [
        "# SpatialBoost evaluation on the paper's benchmarks", "",
        f"Encoder family `{family}`; paper rows: {PAPER_ENCODER.get(family, 'none (the paper has no row for it)')}. "
        "Ours: mean ± std (probes over seeds, VQA over an item bootstrap). Paper numbers are transcribed from "
        "the draft's Table 1 and Table 3 (evaluate/paper.py). The paper does not say how its single "
        "SpatialRGPT-bench number averages; ours pools all items (qualitative and quantitative).", "",
        comparison_markdown(metrics, family), *_general_section(metrics, family),
        "## Protocols", "", protocol_markdown(metrics.get("protocol", {})),
        "Protocols and their deviations from the references: src/spatialboost/evaluate/protocols.py.", "",
    ]  # fmt: skip
    if any(flat[run] for run in runs):
        plot_metric_bars(flat, out_dir / "metrics.png")
        text += ["![metrics](metrics.png)", ""]
    markdown = out_dir / "report.md"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(markdown, "\n".join(text).encode())
    return markdown
