"""The robot-learning report: the behaviour-cloning table laid out like the paper's Table 2, and a
plot of success rate per task (matplotlib's Agg canvas, no pyplot state).

    write_robot_report(metrics, per_task, protocol, "reports/robot", paper_encoder="DINOv2")
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spatialboost.io import write_bytes_atomic

PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    # encoder -> domain -> (mean, std), success % (return for DMControl); "+ SpatialBoost" rows under "<encoder> + SpatialBoost"
    "OpenCLIP": {"Adroit": (50.8, 3.3), "MetaWorld": (75.7, 1.9), "DMControl": (58.9, 2.0), "TriFinger": (64.8, 0.7)},
    "OpenCLIP + SpatialBoost": {
        "Adroit": (53.8, 3.7),
        "MetaWorld": (84.0, 2.2),
        "DMControl": (67.9, 1.6),
        "TriFinger": (68.7, 0.4),
    },
    "DINOv2": {"Adroit": (36.8, 3.5), "MetaWorld": (62.6, 1.8), "DMControl": (48.4, 1.4), "TriFinger": (62.3, 0.4)},
    "DINOv2 + SpatialBoost": {
        "Adroit": (50.1, 3.0),
        "MetaWorld": (66.5, 2.1),
        "DMControl": (55.0, 1.9),
        "TriFinger": (67.2, 1.2),
    },
}
"""The paper's Table 2 (../shared/paper, "Results on vision-based robot learning"): imitation
learning on frozen ViT-L/14 representations, 4 CortexBench domains."""

RUN_LABELS = {
    "floor": "floor (blind: proprioception only)",
    "baseline": "baseline encoder",
    "boosted": "boosted encoder",
}
COLOURS = {"floor": "#bbbbbb", "baseline": "#4c72b0", "boosted": "#dd8452"}


def _cell(summary: Mapping[str, float] | None) -> str:
    if not summary:
        return "–"
    return f"{summary['mean']:.1f} ± {summary['std']:.1f}" if summary.get("n", 1) > 1 else f"{summary['mean']:.1f}"


def _verdict(effect: Mapping[str, Any] | None) -> str:
    if not effect:
        return "–"
    return f"{effect['verdict']} (Δ {effect['delta']:+.1f})"


def success_plot(metrics: Mapping[str, Any]) -> bytes:
    """PNG: success rate per task and over tasks, one bar per run with its seed std."""
    scopes = [*metrics["tasks"], "MetaWorld (mean)"]
    tables = [*metrics["tasks"].values(), metrics["metaworld"]]
    runs = [r for r in RUN_LABELS if r in metrics["metaworld"]]
    fig = Figure(figsize=(1.6 + 1.5 * len(scopes), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(runs)
    x = np.arange(len(scopes))
    for i, run in enumerate(runs):
        means = [t[run]["mean"] for t in tables]
        stds = [t[run]["std"] for t in tables]
        ax.bar(
            x + (i - (len(runs) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            color=COLOURS[run],
            label=RUN_LABELS[run],
        )
    ax.set_xticks(x, [s.replace("-v3", "") for s in scopes], rotation=15, fontsize=8)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    ax.set_title("MetaWorld behaviour cloning on frozen features (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_robot_report(
    metrics: Mapping[str, Any],
    per_task: Mapping[str, Any],
    protocol: Mapping[str, Any],
    out_dir: str | Path,
    paper_encoder: str | None = None,
) -> Path:
    """report.md + success.png in out_dir; the paper's Table 2 rows beside ours when paper_encoder is given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "success.png", success_plot(metrics))
    tasks = list(metrics["tasks"])
    runs = [r for r in RUN_LABELS if r in metrics["metaworld"]]
    n_seeds = len(protocol["seeds"])
    lines = [
        "# Robot learning: behaviour cloning on frozen features (CortexBench protocol)",
        "",
        f"MetaWorld, success rate (%) of the best of the evaluations, mean ± std over {n_seeds} seeds "
        f"({protocol['demos']} expert demonstrations per task, {protocol['eval_episodes']} evaluation episodes of "
        f"{protocol['horizon']} steps every {protocol['eval_every']} of {protocol['epochs']} epochs, "
        f"{protocol['image_size']} px frames from the `{protocol['camera']}` camera, FLARE over "
        f"{protocol['history']} embeddings + proprioception, MLP {tuple(protocol['hidden_sizes'])}).",
        "A difference is an effect only beyond 2x the larger seed std.",
        "",
        "| run | " + " | ".join(t.replace("-v3", "") for t in tasks) + " | MetaWorld (mean) |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for run in runs:
        cells = [_cell(metrics["tasks"][t].get(run)) for t in tasks] + [_cell(metrics["metaworld"].get(run))]
        lines.append(f"| {RUN_LABELS[run]} | " + " | ".join(cells) + " |")
    verdicts = [_verdict(metrics["verdict"].get(t)) for t in tasks] + [_verdict(metrics["verdict"].get("metaworld"))]
    lines += ["| boosted vs baseline | " + " | ".join(verdicts) + " |", "", "![success per task](success.png)", ""]
    finals = {run: np.mean([np.mean([r["final"] for r in per_task[t][run]]) for t in tasks]) for run in runs}
    lines += [
        "Without selecting the best evaluation (the last one only), mean over tasks and seeds: "
        + ", ".join(f"{run} {value:.1f}" for run, value in finals.items())
        + ".",
        "",
    ]
    if metrics.get("released"):
        lines += [
            "## CortexBench's released demonstrations (offline)",
            "",
            "Held-out action MSE of the behaviour-cloning policy (last 20% of the demonstrations), mean ± std over "
            "seeds. Not CortexBench's score: rolling these domains out needs their simulators (mj_envs, dm_control, "
            "trifinger_simulation), not installed here. Lower is better.",
            "",
            "| domain / task | " + " | ".join(RUN_LABELS[r] for r in runs) + " |",
            "|---|" + "---|" * len(runs),
        ]
        for domain, by_task in metrics["released"].items():
            for task, by_run in by_task.items():
                cells = [f"{by_run[r]['mean']:.4f} ± {by_run[r]['std']:.4f}" if r in by_run else "–" for r in runs]
                lines.append(f"| {domain} / {task} | " + " | ".join(cells) + " |")
        lines.append("")
    if paper_encoder in ("OpenCLIP", "DINOv2"):
        lines += [
            f"## Beside the paper (Table 2, {paper_encoder} ViT-L/14)",
            "",
            "| | Adroit | MetaWorld | DMControl | TriFinger |",
            "|---|---|---|---|---|",
        ]
        for row in (paper_encoder, f"{paper_encoder} + SpatialBoost"):
            lines.append(
                f"| paper: {row} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in PAPER_TABLE2[row].values()) + " |"
            )
        for run in ("baseline", "boosted"):
            if run in metrics["metaworld"]:
                lines.append(
                    f"| ours: {RUN_LABELS[run]} | not run | {_cell(metrics['metaworld'][run])} | not run | not run |"
                )
        lines.append("")
    path = out / "report.md"
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path
