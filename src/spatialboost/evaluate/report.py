"""The evaluation report of one run: baseline vs boosted, mean ± std per metric.

    results = {"baseline": collect_metrics(base_probes, base_vqa), "boosted": collect_metrics(...)}
    write_json_atomic("metrics/evaluate.json", metrics_json(results))
    examples = depth_examples(test[:4], encoder.preprocess, (base_head, base_feats), (boost_head, boost_feats))
    paths = write_report(results, "reports/evaluate", examples)   # report.md + PNGs

`Results` maps a run name ("baseline", "boosted") to {metric: {"mean", "std"}}. Probe metrics
carry the seed std; VQA metrics the item-bootstrap std (greedy decoding has no seed).
Plots use matplotlib's Agg canvas directly (no pyplot state).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spatialboost.evaluate.comparison import SPREAD_FACTOR, Effect
from spatialboost.evaluate.features import FeatureSet, crop_to_view, view_box
from spatialboost.evaluate.head_grid import FittedHead
from spatialboost.evaluate.probes import ProbeResult
from spatialboost.evaluate.readers import Sample
from spatialboost.evaluate.vqa import VQAResult
from spatialboost.io import write_bytes_atomic
from spatialboost.models.preprocess import ImagePreprocess

Summary = dict[str, float | None]  # {"mean", "std"}
Results = Mapping[str, Mapping[str, Summary]]

RUNS = ("baseline", "boosted")
CONTROLS = ("floor", "control")
"""Runs reported beside the two when present: floor = the position-only depth probe (what the
patch position alone predicts); control = the boost's adapter supervised by depth directly
(train.control: what this encoder can absorb from this data at all)."""
JSON_METRICS = (
    "depth_rmse_objects", "depth_rmse_near", "depth_rmse", "depth_absrel_objects", "depth_absrel",
    "seg_miou", "cls_top1", "cls_majority", "vqa_relative_depth_acc", "vqa_quantitative_acc",
)  # fmt: skip
"""The metrics of metrics/evaluate.json, in order (headline depth: object pixels, then near pixels)."""

METRICS: dict[str, tuple[str, bool]] = {
    "depth_rmse_objects": ("Depth RMSE, object pixels (m)", False),
    "depth_rmse_near": ("Depth RMSE, pixels < 15 m (m)", False),
    "depth_rmse": ("Depth RMSE, all pixels (m)", False),
    "depth_absrel_objects": ("Depth AbsRel, object pixels", False),
    "depth_absrel": ("Depth AbsRel", False),
    "depth_absrel_near": ("Depth AbsRel, pixels < 15 m", False),
    "depth_delta1_objects": ("Depth δ1, object pixels", True),
    "depth_delta1_near": ("Depth δ1, pixels < 15 m", True),
    "depth_delta1": ("Depth δ1", True),
    "seg_miou": ("Segmentation mIoU", True),
    "seg_pixel_acc": ("Segmentation pixel acc.", True),
    "cls_top1": ("Classification top-1", True),
    "cls_majority": ("Classification: majority-class rate", True),
    "vqa_relative_depth_acc": ("BLINK relative depth acc.", True),
    "vqa_qualitative_acc": ("SpatialRGPT qualitative acc.", True),
    "vqa_quantitative_acc": ("SpatialRGPT quantitative acc.", True),
    "vqa_spatialrgpt_acc": ("SpatialRGPT overall acc.", True),
}
"""metric -> (label, higher is better); the order of tables and plots."""

VQA_KEYS = {
    "relative_depth_acc": "vqa_relative_depth_acc",
    "qualitative_acc": "vqa_qualitative_acc",
    "quantitative_acc": "vqa_quantitative_acc",
    "spatialrgpt_acc": "vqa_spatialrgpt_acc",
}


def collect_metrics(
    probes: Mapping[str, ProbeResult] | None = None, vqa: VQAResult | None = None, n_boot: int = 1000
) -> dict[str, Summary]:
    """One run's {metric: {"mean", "std"}} from its probe results and VQA result."""
    out: dict[str, Summary] = {}
    for result in (probes or {}).values():
        out.update(result.summary)
    if vqa is not None:
        summary = vqa.summary(n_boot)
        out.update({name: summary[key] for key, name in VQA_KEYS.items() if key in summary})
    return out


def metrics_json(results: Results, effects: Mapping[str, Effect] | None = None) -> dict[str, dict[str, Any]]:
    """{"baseline": {metric: {"mean", "std"}}, "boosted": {...}} over JSON_METRICS exactly, then
    the controls present (only the metrics they have), and "effects": {metric: Effect} when given.

    A run summarised over seeds also carries "n" (its number of seeds). A metric a run lacks is
    {"mean": None, "std": None}; NaN becomes None (JSON has no NaN).
    """
    missing = [run for run in RUNS if run not in results]
    if missing:
        raise ValueError(f"results need runs {list(RUNS)}, missing {missing}")

    def clean(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else float(value)

    def entry(summary: Mapping[str, float | None]) -> dict[str, Any]:
        out: dict[str, Any] = {k: clean(summary.get(k)) for k in ("mean", "std")}
        if summary.get("n") is not None:
            out["n"] = int(summary["n"])  # type: ignore[arg-type]
        return out

    runs = [*RUNS, *(run for run in CONTROLS if run in results)]
    out: dict[str, dict[str, Any]] = {
        run: {metric: entry(results[run].get(metric, {})) for metric in JSON_METRICS if run in RUNS or metric in results[run]}
        for run in runs
    }
    if effects is not None:
        out["effects"] = {m: effects[m].to_dict() for m in JSON_METRICS if m in effects}
    return out


def _metrics_in(results: Results) -> list[str]:
    present = {m for run in RUNS for m in results.get(run, {})}
    return [m for m in METRICS if m in present] + sorted(present - set(METRICS))


def _fmt(summary: Summary | None) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    text = f"{summary['mean']:.3f} ± {summary.get('std') or 0.0:.3f}"
    return text + (f" (n={int(summary['n'])})" if summary.get("n", 1) > 1 else "")


def markdown_table(results: Results, effects: Mapping[str, Effect] | None = None) -> str:
    """| metric | floor | baseline | boosted | control | Δ | verdict |: mean ± std per run (the
    boosted and control runs over seeds, n = seeds), Δ = boosted - baseline, and the verdict of
    evaluate/comparison.py (an effect only beyond the seed spread). Control columns appear when
    the results have them; without `effects` the verdict says only which way Δ points."""
    controls = [run for run in CONTROLS if run in results]
    names = {"floor": "Position-only floor", "control": "Depth-supervised control"}
    header = ["Metric", *(names[c] for c in controls if c == "floor"), "Baseline", "Boosted",
              *(names[c] for c in controls if c != "floor"), "Δ (boosted − baseline)", "Verdict"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in _metrics_in(results):
        label, higher_better = METRICS.get(metric, (metric, True))
        base, boost = results.get("baseline", {}).get(metric), results.get("boosted", {}).get(metric)
        delta, verdict = "–", "–"
        if base and boost and base.get("mean") is not None and boost.get("mean") is not None:
            d = boost["mean"] - base["mean"]
            delta = f"{d:+.3f}"
            if effects is not None and metric in effects:
                effect = effects[metric]
                verdict = effect.verdict
                if effect.interval is not None:
                    verdict += f" (95% CI of Δ {effect.interval[0]:+.3f} … {effect.interval[1]:+.3f})"
            else:
                verdict = "higher" if d > 0 else "lower" if d < 0 else "same"
        cells = [f"{label} {'↑' if higher_better else '↓'}"]
        cells += [_fmt(results[c].get(metric)) for c in controls if c == "floor"]
        cells += [_fmt(base), _fmt(boost)]
        cells += [_fmt(results[c].get(metric)) for c in controls if c != "floor"]
        lines.append("| " + " | ".join([*cells, delta, verdict]) + " |")
    return "\n".join(lines) + "\n"


def save_figure(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def plot_metric_bars(results: Results, path: str | Path) -> Path:
    """One panel per metric: baseline and boosted bars with ±std error bars."""
    metrics = _metrics_in(results)
    if not metrics:
        raise ValueError("no metrics to plot")
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
    colours = {"floor": "#d9d9d9", "baseline": "#8c8c8c", "boosted": "#1f77b4", "control": "#ff7f0e"}
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        label, higher_better = METRICS.get(metric, (metric, True))
        order = ("floor", "baseline", "boosted", "control")
        runs = [r for r in order if results.get(r, {}).get(metric, {}).get("mean") is not None]
        means = [results[r][metric]["mean"] for r in runs]
        stds = [results[r][metric].get("std") or 0.0 for r in runs]
        ax.bar(runs, means, yerr=stds, capsize=6, color=[colours[r] for r in runs])
        for x, (m, s) in enumerate(zip(means, stds, strict=True)):
            ax.annotate(f"{m:.3f}", (x, m + s), ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{label} {'↑' if higher_better else '↓'}", fontsize=9)
        ax.margins(y=0.2)
        ax.tick_params(labelsize=8)
    fig.suptitle("Baseline vs boosted beside the controls (mean ± std)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, Path(path))


@dataclass(frozen=True)
class DepthExample:
    """One test image for the depth figure; all maps (H, W) metres at the image's size, gt 0 = none."""

    image: np.ndarray  # (H, W, 3) uint8, the encoder's view
    gt: np.ndarray
    baseline: np.ndarray
    boosted: np.ndarray


def depth_examples(
    samples: Sequence[Sample],
    preprocess: ImagePreprocess,
    baseline: tuple[FittedHead, FeatureSet],
    boosted: tuple[FittedHead, FeatureSet],
) -> list[DepthExample]:
    """DepthExamples of `samples` (with depth), cut to the encoder's view.

    baseline, boosted: (the depth probe's head, features holding the samples' ids), e.g.
    (result["depth"].head, cached_features(...)) of each encoder.
    """
    examples = []
    for sample in samples:
        if sample.depth is None:
            raise ValueError(f"sample {sample.id} has no depth")
        box = view_box(preprocess, *sample.image.shape[:2])
        gt = crop_to_view(sample.depth, box, 0.0)
        maps = [
            head.depth_maps(feats.subset([feats.ids.index(sample.id)]), [gt.shape])[0]
            for head, feats in (baseline, boosted)
        ]
        examples.append(DepthExample(crop_to_view(sample.image, box, 0), gt, maps[0], maps[1]))
    return examples


def plot_depth_examples(examples: Sequence[DepthExample], path: str | Path) -> Path:
    """Rows of image | ground truth | baseline probe | boosted probe, one colour scale per row."""
    if not examples:
        raise ValueError("no depth examples to plot")
    fig = Figure(figsize=(11, 2.7 * len(examples)))
    titles = ("image", "ground truth", "baseline probe", "boosted probe")
    for r, ex in enumerate(examples):
        valid = ex.gt > 0
        lo, hi = np.percentile(ex.gt[valid], [2, 98]) if valid.any() else (0.0, 1.0)
        for c, panel in enumerate((ex.image, np.ma.masked_where(~valid, ex.gt), ex.baseline, ex.boosted)):
            ax = fig.add_subplot(len(examples), 4, 4 * r + c + 1)
            if c == 0:
                ax.imshow(panel)
            else:
                im = ax.imshow(panel, cmap="magma_r", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
            if c > 1 and valid.any():
                rmse = float(np.sqrt(np.mean((panel[valid] - ex.gt[valid]) ** 2)))
                ax.set_xlabel(f"RMSE {rmse:.2f} m", fontsize=8)
        fig.colorbar(im, ax=fig.axes[-3:], fraction=0.02, pad=0.01, label="metres")
    return save_figure(fig, Path(path))


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    bars: Path
    depth: Path | None


def write_report(
    results: Results,
    out_dir: str | Path,
    depth_examples: Sequence[DepthExample] = (),
    title: str = "SpatialBoost evaluation",
    notes: str = "",
    effects: Mapping[str, Effect] | None = None,
) -> ReportPaths:
    """report.md (table + figures) and the PNGs it shows, under out_dir."""
    out_dir = Path(out_dir)
    bars = plot_metric_bars(results, out_dir / "metrics.png")
    depth = plot_depth_examples(depth_examples, out_dir / "depth_examples.png") if depth_examples else None
    legend = (
        "Mean ± std. Boosted and control: over their training seeds (n); baseline and floor are one model each "
        "(probes are closed-form or seeded heads, VQA greedy: ± is the probe-seed or item-bootstrap std). "
        f"Verdict: an effect only when |Δ| > {SPREAD_FACTOR:g} x the boosted seeds' std and, for VQA, the paired "
        "item-bootstrap 95% interval of Δ excludes 0 (evaluate/comparison.py); else \"no effect\"."
    )
    text = [f"# {title}", "", markdown_table(results, effects), legend, ""]
    if notes:
        text += [notes, ""]
    text += ["![metrics](metrics.png)", ""]
    if depth is not None:
        text += ["![depth examples](depth_examples.png)", ""]
    markdown = out_dir / "report.md"
    write_bytes_atomic(markdown, "\n".join(text).encode())
    return ReportPaths(markdown, bars, depth)
