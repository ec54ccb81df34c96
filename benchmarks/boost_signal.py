"""Does the boost reach the encoder? Gates, Attn+ drift, feature change and the depth probe by region.

    python benchmarks/boost_signal.py                                   # params.yaml: train.init vs train.output/vlm
    python benchmarks/boost_signal.py --boosted models/x/vlm --label lr=1e-3   # another boosted VLM, same baseline

The evaluate stage reports one depth RMSE over every pixel with ground truth, and the world's ground
runs out to 50 m, so far ground near the horizon dominates that figure. This script scores the same
linear depth probe (evaluate's options and seeds) on three regions of the test images: all pixels,
pixels closer than --near metres, and object pixels only; beside it a probe that sees no image at
all, only each patch's position (the mean training log-depth of that patch): what features add
over the scene layout. It also measures how far the boost moved the encoder: the gates alpha,
Attn+'s weights relative to Attn's, and the test features relative to the baseline's.

Each run adds (or replaces) one entry, keyed by --label, in results/boost_signal.json and rewrites
results/boost_signal.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatialboost.config import load_config
from spatialboost.evaluate.features import cached_features, crop_to_view, encoder_fingerprint, view_box
from spatialboost.evaluate.probe_metrics import depth_metrics, upsample_bilinear
from spatialboost.evaluate.probe_targets import PatchTargets, depth_patch_target
from spatialboost.evaluate.probes import depth_probe
from spatialboost.evaluate.readers import SampleSet, read_world
from spatialboost.evaluate.run import probe_options
from spatialboost.models.dual_channel import dual_channel_layers, is_dual_channel
from spatialboost.runtime import torch_threads
from spatialboost.train.stage import load_initial_model

RESULTS = Path(__file__).resolve().parent / "results"


def view_truth(samples: SampleSet, encoder: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(depth, object mask) per sample, cut to the encoder's view like the evaluate stage does."""
    depths, objects = [], []
    for sample in samples:
        box = view_box(encoder.preprocess, *sample.image.shape[:2])
        depths.append(crop_to_view(sample.depth, box, 0.0))
        objects.append(crop_to_view(sample.seg, box, 0) > 0)  # seg: 0 ground, >0 object class, <0 sky
    return depths, objects


def regions(depths: list[np.ndarray], objects: list[np.ndarray], near: float) -> dict[str, list[np.ndarray]]:
    """Test depth maps with everything outside the region set to 0 (= no ground truth)."""
    return {
        "all": depths,
        f"depth<{near:g}m": [np.where(d < near, d, 0.0) for d in depths],
        "objects": [np.where(m, d, 0.0) for d, m in zip(depths, objects, strict=True)],
    }


def position_only(train_targets: PatchTargets, depths: list[np.ndarray], depth_range: tuple) -> dict[str, float]:
    """Metrics of predicting each patch's mean training log-depth, whatever the image."""
    values, weight = train_targets.values, train_targets.fraction
    mean_log = (values * weight).sum(0) / np.maximum(weight.sum(0), 1e-9)  # (h, w)
    per_image = [depth_metrics(np.exp(upsample_bilinear(mean_log[..., None], d.shape)[..., 0]), d, depth_range)
                 for d in depths]  # fmt: skip
    per_image = [m for m in per_image if m]
    return {f"depth_{k}": float(np.mean([m[k] for m in per_image])) for k in per_image[0]}


def drift(vlm: Any) -> dict[str, Any]:
    """Gates alpha per layer and Attn+'s relative weight change; empty for an encoder without Attn+."""
    if not is_dual_channel(vlm.encoder):
        return {}
    alphas, changes = [], []
    for layer in dual_channel_layers(vlm.encoder):
        alphas.append(torch.sigmoid(layer.gate.detach().float()))
        num = sum(float((p.detach() - q).float().norm() ** 2) for p, q in
                  zip(layer.attn_plus.parameters(), layer.attn.parameters(), strict=True))  # fmt: skip
        den = sum(float(q.float().norm() ** 2) for q in layer.attn.parameters())
        changes.append((num / den) ** 0.5)
    return {
        "alpha_mean_per_layer": [float(a.mean()) for a in alphas],
        "alpha_min_per_layer": [float(a.min()) for a in alphas],
        "attn_plus_relative_change_per_layer": changes,
    }


def probe_regions(
    cfg: Any, folder: Path, train: SampleSet, test: SampleSet, near: float
) -> tuple[dict[str, Any], Any]:
    """Probe results by region and drift of the VLM in `folder`, and its test features."""
    vlm, _ = load_initial_model(folder)
    vlm.eval()
    encoder, options = vlm.encoder, probe_options(cfg)
    fingerprint = encoder_fingerprint(encoder)
    ftrain, ftest = (
        cached_features(
            encoder,
            s.ids,
            s.image,
            cache_dir=cfg.evaluate.cache_dir,
            dataset=f"{s.name}/{s.split}",
            fingerprint=fingerprint,
        )
        for s in (train, test)
    )
    depth_range = train.depth_range or (1e-3, float("inf"))
    train_depths, _ = view_truth(train, encoder)
    pairs = [depth_patch_target(d, ftrain.grid, depth_range) for d in train_depths]
    targets = PatchTargets("log_depth", np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
    test_depths, test_objects = view_truth(test, encoder)
    out: dict[str, Any] = {"probe": {}, "position_only": {}, "drift": drift(vlm)}
    with torch_threads(options.threads):
        # depth_probe fits and scores in one call: each region refits the same seeded heads (seconds here)
        for name, depths in regions(test_depths, test_objects, near).items():
            result = depth_probe(
                ftrain, targets, test=ftest, test_depths=depths, options=options, depth_range=depth_range
            )
            out["probe"][name] = result.summary
            out["position_only"][name] = position_only(targets, depths, depth_range)
    return out, ftest


def feature_change(base: Any, boosted: Any) -> dict[str, float]:
    """Relative Frobenius change of the test patch tokens, and their mean cosine similarity."""
    dim = base.patch_tokens.shape[-1]
    a, b = base.patch_tokens.reshape(-1, dim), boosted.patch_tokens.reshape(-1, dim)  # (B*h*w, D) each
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"relative_change": float(np.linalg.norm(b - a) / np.linalg.norm(a)), "mean_cosine": float(cos.mean())}


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Does the boost reach the encoder?",
        "",
        "`python benchmarks/boost_signal.py` (module docstring: what each column means). Depth probe: evaluate's",
        "linear head grid and seeds on frozen patch tokens, RMSE in metres (mean ± std over seeds), scored on",
        "three regions of the test images; `position only` predicts each patch's mean training depth.",
        "",
    ]
    for label, entry in data["runs"].items():
        lines += [f"## {label}", "", f"{entry['date']}, {entry['machine']}. Boosted VLM: `{entry['boosted']}`.", ""]
        if entry.get("note"):
            lines += [entry["note"], ""]
        lines += ["| depth RMSE (m) | position only | baseline | boosted | boosted - baseline |", "|---|---|---|---|---|"]
        for region in entry["baseline"]["probe"]:
            b, o = entry["baseline"]["probe"][region]["depth_rmse"], entry["boosted_results"]["probe"][region]["depth_rmse"]
            pos = entry["baseline"]["position_only"][region]["depth_rmse"]
            lines.append(f"| {region} | {pos:.3f} | {b['mean']:.3f} ± {b['std']:.3f} | {o['mean']:.3f} ± {o['std']:.3f} "
                         f"| {o['mean'] - b['mean']:+.3f} ({(o['mean'] - b['mean']) / b['mean']:+.1%}) |")  # fmt: skip
        d, fc = entry["boosted_results"]["drift"], entry["feature_change"]
        lines += ["", f"Test patch tokens, boosted vs baseline: relative change {fc['relative_change']:.3f}, "
                  f"mean cosine {fc['mean_cosine']:.4f}."]  # fmt: skip
        if d:
            lines.append("Gates alpha (mean / min) per layer: " + ", ".join(
                f"{m:.3f}/{n:.3f}" for m, n in zip(d["alpha_mean_per_layer"], d["alpha_min_per_layer"], strict=True)
            ) + "; Attn+ weights vs Attn, relative change per layer: "
              + ", ".join(f"{c:.3f}" for c in d["attn_plus_relative_change_per_layer"]) + ".")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--baseline", type=Path, default=None, help="default: train.init")
    parser.add_argument("--boosted", type=Path, default=None, help="default: train.output/vlm")
    parser.add_argument("--label", default="demo")
    parser.add_argument("--note", default="", help="one line on how the boosted VLM was trained")
    parser.add_argument("--near", type=float, default=15.0, help="metres: the near region's bound")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cfg = load_config(args.params)
    baseline = args.baseline or Path(cfg.train.init)
    boosted = args.boosted or Path(cfg.train.output) / "vlm"
    train, test = read_world(cfg.world.root, "train"), read_world(cfg.world.root, cfg.evaluate.split)
    base, fbase = probe_regions(cfg, baseline, train, test, args.near)
    boost, fboost = probe_regions(cfg, boosted, train, test, args.near)
    entry = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {torch.get_num_threads()} torch threads",
        "note": args.note,
        "baseline_folder": str(baseline),
        "boosted": str(boosted),
        "baseline": base,
        "boosted_results": boost,
        "feature_change": feature_change(fbase, fboost),
    }
    path = args.out / "boost_signal.json"
    data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    data["runs"][args.label] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "boost_signal.md").write_text(markdown(data))
    print(markdown({"runs": {args.label: entry}}))


if __name__ == "__main__":
    main()
