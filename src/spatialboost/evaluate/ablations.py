"""Ablations: one set of pipeline variants, compared in one table.

A set is one params key and its values (`ablations.sets` in params.yaml, e.g. synthesize.order
over forward / reversed / shuffled / single_turn). Each value is one run of the whole pipeline
through `dvc exp run -S key=value` (flows/ablations.py does that); this module only says which
variants a set has and turns their metrics files into the comparison:

    for variant in variants(cfg, ["turn_order"]):
        ...run it, read metrics/evaluate.json and metrics/train.json...
        rows.append(VariantResult(variant, evaluate_json, train_json))
    paths = write_ablation_report(rows, "reports/ablations")    # turn_order.md / .json / .png

The table gives every variant's boosted metrics (mean ± std over the probe seeds, item bootstrap
for VQA) and its difference to the baseline encoder, and checks the paper's ablation claims
(CLAIMS) on the numbers: a claim is "met" or "missed", never assumed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from spatialboost.config import SpatialBoostConfig
from spatialboost.evaluate.comparison import SPREAD_FACTOR
from spatialboost.evaluate.report import JSON_METRICS, METRICS, save_figure
from spatialboost.io import write_bytes_atomic, write_json_atomic


@dataclass(frozen=True)
class Variant:
    """One run of a set: `key=value`, plus the set's common overrides."""

    set_name: str
    key: str
    value: Any
    overrides: tuple[str, ...]  # what `dvc exp run -S` gets, in order

    @property
    def label(self) -> str:
        return format_value(self.value)

    @property
    def exp_name(self) -> str:
        """A DVC experiment name: letters, digits and dashes."""
        text = f"{self.set_name}-{self.label}".lower().replace("_", "-").replace(".", "p")
        return "".join(c if c.isalnum() or c == "-" else "-" for c in text)


def format_value(value: Any) -> str:
    """A params value as `-S` writes it (YAML flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def variants(cfg: SpatialBoostConfig, set_names: Sequence[str] | None = None) -> list[Variant]:
    """The variants of the named sets (all sets when None), in the order params.yaml lists them."""
    sets = cfg.ablations.sets
    unknown = [name for name in set_names or () if name not in sets]
    if unknown:
        raise ValueError(f"unknown ablation set(s) {unknown}; params.yaml has {sorted(sets)}")
    out = []
    for name in set_names or list(sets):
        ((key, values),) = sets[name].items()
        out += [Variant(name, key, v, (f"{key}={format_value(v)}", *cfg.ablations.common)) for v in values]
    return out


@dataclass(frozen=True)
class VariantResult:
    """A finished variant: its metrics/evaluate.json and metrics/train.json."""

    variant: Variant
    evaluate: Mapping[str, Mapping[str, Mapping[str, float | None]]]  # {"baseline"|"boosted": {metric: {"mean", "std"}}}
    train: Mapping[str, Any]
    error: str | None = None  # why the variant's run failed (its metrics are then empty)


CLAIMS: dict[str, list[tuple[str, str, str, str]]] = {
    # set -> (description, metric, variant that should win, what it is compared with: "others" or a value)
    "turn_order": [
        ("forward order ≥ reversed and shuffled on relative-depth VQA", "vqa_relative_depth_acc", "forward", "others"),
        ("forward order ≤ reversed and shuffled on object depth-probe RMSE", "depth_rmse_objects", "forward", "others"),
    ],
    "adapter": [
        ("dual-channel keeps classification closer to the baseline than full fine-tuning", "cls_top1", "dual_channel", "full"),
    ],
}


def _mean(result: VariantResult, run: str, metric: str) -> float | None:
    value = result.evaluate.get(run, {}).get(metric, {}).get("mean")
    return None if value is None or not math.isfinite(value) else float(value)


def _delta(result: VariantResult, metric: str) -> float | None:
    boosted, baseline = _mean(result, "boosted", metric), _mean(result, "baseline", metric)
    return None if boosted is None or baseline is None else boosted - baseline


def _std(result: VariantResult, metric: str) -> float:
    value = result.evaluate.get("boosted", {}).get(metric, {}).get("std")
    return 0.0 if value is None or not math.isfinite(value) else float(value)


def check_claims(results: Sequence[VariantResult]) -> list[dict[str, Any]]:
    """The CLAIMS of the results' set, each with the numbers and a verdict: "met" when the winner
    is better than every other by more than twice their combined seed std, "missed" when some
    other is better by that much, "no difference beyond the seed spread" otherwise, "not run"
    without the variants. With one seed (std 0) any difference decides, and the report says so."""
    if not results:
        return []
    set_name = results[0].variant.set_name
    by_label = {r.variant.label: r for r in results if not r.error}
    checks = []
    for description, metric, winner, versus in CLAIMS.get(set_name, []):
        others = [label for label in by_label if label != winner] if versus == "others" else [versus]
        if winner not in by_label or not all(o in by_label for o in others) or not others:
            checks.append({"claim": description, "metric": metric, "verdict": "not run"})
            continue
        higher_better = METRICS[metric][1]
        if metric == "cls_top1":  # "preserves": the smaller drop from the baseline wins
            score = {label: _delta(r, metric) for label, r in by_label.items()}
        else:
            score = {label: _mean(r, "boosted", metric) for label, r in by_label.items()}
        if any(score[label] is None for label in (winner, *others)):
            checks.append({"claim": description, "metric": metric, "verdict": "not run"})
            continue
        sign = 1.0 if higher_better else -1.0
        margins = {o: sign * (score[winner] - score[o]) for o in others}  # > 0: the winner is better
        spread = {o: SPREAD_FACTOR * math.hypot(_std(by_label[winner], metric), _std(by_label[o], metric)) for o in others}
        if all(margins[o] > spread[o] for o in others):
            verdict = "met"
        elif any(margins[o] < -spread[o] for o in others):
            verdict = "missed"
        else:
            verdict = "no difference beyond the seed spread"
        checks.append(
            {
                "claim": description,
                "metric": metric,
                "verdict": verdict,
                "values": {label: score[label] for label in [winner, *others]},
                "spread": {o: spread[o] for o in others},
            }
        )
    return checks


def _cell(result: VariantResult, metric: str) -> str:
    boosted = result.evaluate.get("boosted", {}).get(metric, {})
    mean, std, base = boosted.get("mean"), boosted.get("std"), _mean(result, "baseline", metric)
    if mean is None:
        return "–"
    delta = f" ({mean - base:+.3f})" if base is not None else ""
    return f"{mean:.3f} ± {std or 0.0:.3f}{delta}"


def ablation_table(results: Sequence[VariantResult]) -> str:
    """Markdown: one row per variant, boosted mean ± std (Δ to the baseline encoder) per metric."""
    if not results:
        raise ValueError("no variant results")
    key = results[0].variant.key
    head = [f"`{key}`", "train loss (first → final)", *(f"{METRICS[m][0]} {'↑' if METRICS[m][1] else '↓'}" for m in JSON_METRICS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.error:
            lines.append("| " + " | ".join([r.variant.label, f"failed: {r.error}", *("–" for _ in JSON_METRICS)]) + " |")
            continue
        loss = "–"
        if r.train.get("first_loss") is not None and r.train.get("final_loss") is not None:
            loss = f"{r.train['first_loss']:.3f} → {r.train['final_loss']:.3f}"
        lines.append("| " + " | ".join([r.variant.label, loss, *(_cell(r, m) for m in JSON_METRICS)]) + " |")
    base = next((r for r in results if not r.error), results[0])
    lines.append(
        "| baseline encoder | – | "
        + " | ".join(
            f"{_mean(base, 'baseline', m):.3f}" if _mean(base, "baseline", m) is not None else "–" for m in JSON_METRICS
        )
        + " |"
    )
    return "\n".join(lines) + "\n"


def plot_ablation(results: Sequence[VariantResult], path: str | Path) -> Path:
    """One panel per metric: a bar per variant (boosted mean ± std), the baseline as a dashed line."""
    results = [r for r in results if not r.error] or list(results)
    metrics = [m for m in JSON_METRICS if any(_mean(r, "boosted", m) is not None for r in results)]
    cols = min(3, len(metrics)) or 1
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows))
    labels = [r.variant.label for r in results]
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        means = [_mean(r, "boosted", metric) or 0.0 for r in results]
        stds = [r.evaluate.get("boosted", {}).get(metric, {}).get("std") or 0.0 for r in results]
        ax.bar(labels, means, yerr=stds, capsize=4, color="#1f77b4")
        base = next((b for b in (_mean(r, "baseline", metric) for r in results) if b is not None), None)
        if base is not None:
            ax.axhline(base, color="#8c8c8c", linestyle="--", linewidth=1, label="baseline")
        label, higher_better = METRICS[metric]
        ax.set_title(f"{label} {'↑' if higher_better else '↓'}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.margins(y=0.2)
    fig.suptitle(f"Ablation {results[0].variant.set_name} ({results[0].variant.key}); dashed: baseline encoder", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def write_ablation_report(results: Sequence[VariantResult], out_dir: str | Path) -> dict[str, Path]:
    """<out_dir>/<set>.md (table, claims, plot), <set>.json (every number), <set>.png."""
    if not results:
        raise ValueError("no variant results")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = results[0].variant.set_name
    claims = check_claims(results)
    png = plot_ablation(results, out / f"{name}.png")
    lines = [f"# Ablation `{name}`: `{results[0].variant.key}`", "",
             "Each row is one `dvc exp run -S` of the whole pipeline; cells are the boosted encoder's",
             "mean ± std over its training seeds (train.replicate_seeds) and, in brackets, the difference to",
             "the baseline encoder. A claim is met only beyond twice the seeds' combined std.", "",
             ablation_table(results)]  # fmt: skip
    if claims:
        lines += ["| claim | verdict | values |", "|---|---|---|"]
        for c in claims:
            values = ", ".join(f"{k}: {v:+.3f}" if "cls" in c["metric"] else f"{k}: {v:.3f}" for k, v in c.get("values", {}).items())
            lines.append(f"| {c['claim']} | {c['verdict']} | {values or '–'} |")
        lines.append("")
    lines.append(f"![{name}]({png.name})")
    md = out / f"{name}.md"
    write_bytes_atomic(md, ("\n".join(lines) + "\n").encode())
    payload = {
        "set": name,
        "key": results[0].variant.key,
        "variants": [{"value": r.variant.value, "overrides": list(r.variant.overrides), "evaluate": r.evaluate,
                      "train": dict(r.train), "error": r.error} for r in results],  # fmt: skip
        "claims": claims,
    }
    js = out / f"{name}.json"
    write_json_atomic(js, json.loads(json.dumps(payload, default=str)))
    return {"md": md, "json": js, "png": png}
