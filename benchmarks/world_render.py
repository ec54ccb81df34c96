"""Throughput of the procedural world renderer, single process, on the demo config.

    PYTHONPATH=src python benchmarks/world_render.py            # writes benchmarks/results/world_render.{json,md}

Two numbers per resolution: `render` (sample + ray cast + annotate one scene in memory) and
`dataset` (render_dataset end to end: the same plus PNG/npy/JSON writes, index and metadata).
Each is the best of --repeats runs, since a shared machine only ever slows a run down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from spatialboost.config import WorldConfig
from spatialboost.world import annotation, render_scene, sample_scene, scene_rng
from spatialboost.world.dataset import render_dataset

RESULTS = Path(__file__).resolve().parent / "results"


def time_render(cfg: WorldConfig, n_images: int) -> dict[str, float]:
    """Images per second of sample + render + annotate, and the mean objects per scene."""
    n_objects = 0
    start = time.perf_counter()
    for i in range(n_images):
        scene = sample_scene(cfg, scene_rng(cfg, "train", i))
        annotation(scene, render_scene(scene, cfg.width, cfg.height), f"train-{i:06d}")
        n_objects += len(scene.objects)
    seconds = time.perf_counter() - start
    return {"images_per_s": n_images / seconds, "seconds": seconds, "mean_objects": n_objects / n_images}


def time_dataset(cfg: WorldConfig, n_images: int) -> dict[str, float]:
    """Images per second of render_dataset into a fresh temporary folder."""
    cfg = cfg.model_copy(update={"n_train": n_images, "n_test": 0})
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        render_dataset(cfg, Path(root), progress=False)
        seconds = time.perf_counter() - start
    return {"images_per_s": n_images / seconds, "seconds": seconds}


def best_of(repeats: int, measure) -> dict[str, float]:
    """The fastest of `repeats` calls of measure() (a dict with images_per_s), with all rates."""
    runs = [measure() for _ in range(repeats)]
    best = max(runs, key=lambda r: r["images_per_s"])
    return {**best, "all_images_per_s": [r["images_per_s"] for r in runs]}


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_1min": os.getloadavg()[0],
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# World renderer throughput",
        "",
        f"{result['date']}, {m['platform']}, {m['cpu_count']} CPUs (1-min load {m['load_average_1min']:.1f} at start),",
        f"Python {m['python']}, numpy {m['numpy']}. Single process, demo config (2-8 objects per scene).",
        "`render` = sample + ray cast + annotate in memory; `dataset` = `render_dataset` end to end (files",
        f"written atomically to a temporary folder). Best of {result['repeats']} runs each.",
        "",
        "| size | images | render img/s | dataset img/s | mean objects |",
        "|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        lines.append(
            f"| {row['width']}x{row['height']} | {row['n_images']} | {row['render']['images_per_s']:.1f} "
            f"| {row['dataset']['images_per_s']:.1f} | {row['render']['mean_objects']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images per resolution")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine()  # before the load we add ourselves
    runs = []
    for size in (128, 256):
        cfg = WorldConfig(width=size, height=size)
        render_scene(sample_scene(cfg, scene_rng(cfg, "warmup", 0)), size, size)
        runs.append(
            {
                "width": size,
                "height": size,
                "n_images": args.images,
                "render": best_of(args.repeats, lambda cfg=cfg: time_render(cfg, args.images)),
                "dataset": best_of(args.repeats, lambda cfg=cfg: time_dataset(cfg, args.images)),
            }
        )
        print(f"{size}x{size}: {runs[-1]['render']['images_per_s']:.1f} img/s render, "
              f"{runs[-1]['dataset']['images_per_s']:.1f} img/s dataset")  # fmt: skip
    result = {
        "benchmark": "world_render",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "repeats": args.repeats,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "world_render.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "world_render.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
