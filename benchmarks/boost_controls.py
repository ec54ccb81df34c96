"""Probe trained VLM folders beside the baseline and the position-only floor (the demo's controls).

    python benchmarks/boost_controls.py --label depth-control-640 models/exp/depth_w2048_s640/vlm
    python benchmarks/boost_controls.py --params exp.yaml --vqa --label boost-marks models/x/vlm [more folders]

Each folder is probed exactly as the evaluate stage probes (closed-form ridge heads on frozen
patch tokens, the colour-of-the-largest-object label; `-S` overrides apply on top), on the
demo world's train/test splits; with --vqa it also answers the demo benches. The baseline is
train.init of the params; the floor is the position-only depth probe on its patch grid. Several
folders under one label are summarised as mean ± std (seeds).

Each run adds (or replaces) one entry keyed by --label in results/boost_controls.json, with the
command, machine and date, and rewrites results/boost_controls.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from spatialboost.config import load_config
from spatialboost.evaluate.comparison import over_seeds
from spatialboost.evaluate.demo_bench import DemoBenchOptions, write_demo_benches
from spatialboost.evaluate.readers import read_world
from spatialboost.evaluate.report import collect_metrics
from spatialboost.evaluate.run import benchmark_items, evaluate_model
from spatialboost.runtime import torch_threads

RESULTS = Path(__file__).resolve().parent / "results"
DEMO_PROBES = ["evaluate.probe_solver=ridge", "evaluate.world_label=colour"]
COLUMNS = ("depth_rmse_objects", "depth_rmse_near", "depth_rmse", "seg_miou", "cls_top1", "cls_majority",
           "vqa_relative_depth_acc", "vqa_qualitative_acc", "vqa_quantitative_acc")  # fmt: skip


def measure(params: str, overrides: list[str], folders: list[str], vqa: bool) -> dict[str, Any]:
    """{"baseline", "floor", "runs": [per folder], "summary": mean ± std over the folders}."""
    cfg = load_config(params, [*DEMO_PROBES, *overrides])
    ev = cfg.evaluate
    train, test = (read_world(cfg.world.root, split, label=ev.world_label) for split in ("train", ev.split))
    items = []
    if vqa:
        paths = write_demo_benches(cfg.world.root, ev.bench_dir, ev.split, DemoBenchOptions(seed=cfg.seed))
        items = benchmark_items(paths, ev.max_vqa_items)
    baseline = evaluate_model(cfg, Path(cfg.train.init), train, test, items)

    def means(outcome: Any) -> dict[str, float]:
        summary = collect_metrics(outcome.probes, outcome.vqa if vqa else None)
        return {k: v["mean"] for k, v in summary.items() if v.get("mean") is not None}

    runs = [means(evaluate_model(cfg, Path(folder), train, test, items)) for folder in folders]
    floor = {k: v["mean"] for k, v in collect_metrics({"floor": baseline.floor}).items()}
    return {"baseline": means(baseline), "floor": floor, "runs": runs, "summary": over_seeds(runs)}


def write_markdown(entries: dict[str, Any]) -> None:
    lines = [
        "# Probing trained encoders beside the controls",
        "",
        "`python benchmarks/boost_controls.py` (module docstring). Closed-form ridge probes on frozen patch tokens of",
        "the demo world's test split; depth RMSE in metres on object pixels, pixels < 15 m and all pixels; the",
        "classification label is the colour of the largest object (cls_majority: always answering the most common",
        "one). Several folders under one label: mean ± std over them (training seeds).",
        "",
    ]
    for label, entry in entries.items():
        lines += [f"## {label}", "", f"{entry['date']}, {entry['machine']}. `{entry['command']}`", ""]
        if entry.get("note"):
            lines += [entry["note"], ""]
        header = ["run", *[c for c in COLUMNS if c in entry["baseline"] or c in entry["summary"]]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, values in (("position-only floor", entry["floor"]), ("baseline", entry["baseline"])):
            lines.append("| " + " | ".join([name, *(f"{values[c]:.3f}" if c in values else "–" for c in header[1:])]) + " |")
        cells = [f"{entry['summary'][c]['mean']:.3f} ± {entry['summary'][c]['std']:.3f}" if c in entry["summary"] else "–"
                 for c in header[1:]]  # fmt: skip
        lines += ["| " + " | ".join([f"{label} (n={len(entry['runs'])})", *cells]) + " |", ""]
    (RESULTS / "boost_controls.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="VLM folders (SpatialVLM.save) to probe")
    parser.add_argument("--label", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--vqa", action="store_true", help="also answer the demo benches (minutes)")
    parser.add_argument("--note", default="", help="one line on what the folders are")
    args = parser.parse_args()
    with torch_threads(1):
        result = measure(args.params, args.set, args.folders, args.vqa)
    path = RESULTS / "boost_controls.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[args.label] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, torch {torch.__version__}, 1 thread",
        "command": shlex.join(["python", "benchmarks/boost_controls.py", *sys.argv[1:]]),
        "note": args.note,
        "folders": args.folders,
        **result,
    }
    path.write_text(json.dumps(entries, indent=1) + "\n")
    write_markdown(entries)
    print(json.dumps({k: entries[args.label][k] for k in ("baseline", "floor", "summary")}, indent=1))


if __name__ == "__main__":
    main()
