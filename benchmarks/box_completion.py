"""Amodal boxes on the world: box-size and distance errors before and after completion, and the
QA tolerances fitted from them.

    PYTHONPATH=src python benchmarks/box_completion.py   # writes benchmarks/results/box_completion.{json,md}

The world is the demo's (WorldConfig defaults: seed 0, 256 train + 64 test scenes, 128 px),
rendered into a temporary folder and read through the ground-truth extractor (`build_scene`,
default `extract.geometry`), so the boxes are measured exactly as the pipeline measures them.
Truth: each object's annotated box (`box_camera`), read by the checker's own code
(qa/checker.py `WorldTruth`): centre in the canonical frame, (length, width, height), camera
distance. Three extractions:

- visible: `extract.geometry.box_completion: visible`, the box of the visible points (before);
- prior: ground contact + the round-footprint prior, without the free-space check;
- amodal: the library's default (prior + free space: geometry/completion.py).

Errors are over every recorded object ("all") and over the objects the conversations ask
metric questions about ("measurable": neither cut by the border nor touching a nearer object,
qa/facts.py). The tolerance bands (qa/tolerance.py) are fitted on the *train* split's amodal
labels (`fit_tolerances`, 98% coverage per question type) and their coverage is reported on the
held-out test split; the library's constants must be what this fit gives (a difference is
printed). Finally the test split is synthesised and the checker (`check_output`) run, as the
`synthesize` stage does, to show the per-type label accuracy it reports.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.config import ExtractConfig, ObjectGeometryConfig, SynthesizeConfig, WorldConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract import scene as scene_module
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.pipeline import extract_shard
from spatialboost.extract.records import SceneRecord
from spatialboost.extract.scene import SceneFailure, build_scene, image_rng
from spatialboost.qa import synthesize
from spatialboost.qa.checker import WorldTruth, check_output
from spatialboost.qa.draws import scene_draws
from spatialboost.qa.facts import scene_facts
from spatialboost.qa.tolerance import ToleranceModel, fit_tolerances, label_errors, model_as_dict, within
from spatialboost.world import render_dataset

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1
VARIANTS = ("visible", "prior", "amodal")
DIMS = ("length", "width", "height")


@contextlib.contextmanager
def no_free_space() -> Iterator[None]:
    """`build_scene` without the free-space check (the prior alone)."""
    original = scene_module.free_space_test
    scene_module.free_space_test = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        scene_module.free_space_test = original


def geometry_of(variant: str) -> ObjectGeometryConfig:
    return ObjectGeometryConfig(box_completion="visible" if variant == "visible" else "amodal")


def extract_all(dataset: RGBDDataset, ids: list[str], variant: str) -> list[SceneRecord]:
    observer, geometry, records = GroundTruthObserver(dataset), geometry_of(variant), []
    context = no_free_space() if variant == "prior" else contextlib.nullcontext()
    with context:
        for image_id in ids:
            result = build_scene(observer.observe_one(image_id), geometry, image_rng(0, image_id))
            if not isinstance(result, SceneFailure):
                records.append(result)
    return records


def object_rows(dataset: RGBDDataset, records: list[SceneRecord]) -> list[dict[str, Any]]:
    """One row per recorded object: label, measurable, size errors (L, W, H), distance error."""
    rows = []
    for record in records:
        truth = WorldTruth(dataset, record.image_id)
        facts = scene_facts(record, scene_draws(0, record.image_id, ("names",))["names"])
        measurable = {obj.object_id: obj.measurable for obj in facts.objects}
        for obj in record.objects:
            true_size = np.array(truth.extents(obj.object_id))
            rows.append({
                "label": obj.label,
                "measurable": measurable.get(obj.object_id, False),
                "size_error": (np.array(obj.box.size) - true_size).tolist(),
                "distance_error": obj.center_distance_m - truth.camera_distance(obj.object_id),
                "min_extent": min(obj.box.size),
            })  # fmt: skip
    return rows


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    size = np.array([r["size_error"] for r in rows])
    dist = np.array([r["distance_error"] for r in rows])
    return {
        "n": len(rows),
        "size_median_abs_error_m": dict(zip(DIMS, np.median(np.abs(size), axis=0).round(4).tolist(), strict=True)),
        "size_median_signed_error_m": dict(zip(DIMS, np.median(size, axis=0).round(4).tolist(), strict=True)),
        "size_median_abs_error_all_dims_m": round(float(np.median(np.abs(size))), 4),
        "distance_median_abs_error_m": round(float(np.median(np.abs(dist))), 4),
        "distance_median_signed_error_m": round(float(np.median(dist)), 4),
        "distance_p90_abs_error_m": round(float(np.quantile(np.abs(dist), 0.9)), 4),
        "smallest_extent_m": round(float(min(r["min_extent"] for r in rows)), 4),
    }


def summarize_variant(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["measurable"]:
            by_label[r["label"]].append(r)
    return {
        "all": summarize_rows(rows),
        "measurable": summarize_rows([r for r in rows if r["measurable"]]),
        "measurable_by_label": {label: summarize_rows(rs) for label, rs in sorted(by_label.items())},
    }


def tolerance_errors(dataset: RGBDDataset, records: list[SceneRecord]) -> list:
    errors = []
    for record in records:
        facts = scene_facts(record, scene_draws(0, record.image_id, ("names",))["names"])
        errors += label_errors(facts, WorldTruth(dataset, record.image_id))
    return errors


def coverage(model: ToleranceModel, errors: list) -> dict[str, Any]:
    by_type: dict[str, list[bool]] = defaultdict(list)
    for err in errors:
        by_type[err.qtype].append(within(model, err))
    return {
        qtype: {"n": len(flags), "within": round(float(np.mean(flags)), 4)} for qtype, flags in sorted(by_type.items())
    }


def checker_on_test(dataset: RGBDDataset, variant: str, work: Path) -> dict[str, Any]:
    scenes = work / f"scenes-{variant}"
    context = no_free_space() if variant == "prior" else contextlib.nullcontext()
    with context:
        extract_shard(GroundTruthObserver(dataset), dataset.ids("test"), 0, ExtractConfig(geometry=geometry_of(variant)),
                      scenes, seed=0)  # fmt: skip
    cfg = SynthesizeConfig(output=str(work / f"qa-{variant}"), n_renderings=0)
    synthesize(scenes, cfg, image_root=dataset.root, progress=False)
    checked = check_output(cfg.output, dataset.root, max_examples=0)
    return {k: v for k, v in checked.items() if k != "disagreements"}


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Amodal boxes: box-size and distance errors on the world, before and after completion",
        "",
        f"{env['date']}, {env['platform']}, Python {env['python']}, numpy {env['numpy']}. "
        f"World: WorldConfig defaults (seed 0, {result['n_train']} train + {result['n_test']} test scenes, 128 px), "
        "ground-truth extractor, default `extract.geometry`. Errors: estimate - truth (the annotated box, "
        "read by qa/checker.py's `WorldTruth`). `python benchmarks/box_completion.py`.",
        "",
        "visible = box of the visible points (before); prior = ground contact + round-footprint prior; "
        "amodal = prior + free-space check (the default). measurable = the objects conversations ask metric "
        "questions about (qa/facts.py).",
        "",
        "| split | variant | objects | n | size median abs err L / W / H (m) | signed L / W / H (m) | distance median abs (m) | signed (m) | p90 (m) | smallest extent (m) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for split in ("train", "test"):
        for variant in VARIANTS:
            for subset in ("all", "measurable"):
                s = result["splits"][split][variant][subset]
                abs_ = " / ".join(f"{s['size_median_abs_error_m'][d]:.3f}" for d in DIMS)
                signed = " / ".join(f"{s['size_median_signed_error_m'][d]:+.3f}" for d in DIMS)
                lines.append(f"| {split} | {variant} | {subset} | {s['n']} | {abs_} | {signed} | "
                             f"{s['distance_median_abs_error_m']:.3f} | {s['distance_median_signed_error_m']:+.3f} | "
                             f"{s['distance_p90_abs_error_m']:.3f} | {s['smallest_extent_m']:.3f} |")  # fmt: skip
    lines += ["", "Per shape class (test split, measurable objects): size median abs err L / W / H and distance median abs err, m.", "",
              "| class | n | visible size | visible distance | amodal size | amodal distance |", "|---|---|---|---|---|---|"]  # fmt: skip
    test = result["splits"]["test"]
    for label, amodal in test["amodal"]["measurable_by_label"].items():
        visible = test["visible"]["measurable_by_label"].get(label, {"n": 0})

        def fmt(s: dict[str, Any]) -> tuple[str, str]:
            if not s.get("n"):
                return "-", "-"
            return " / ".join(
                f"{s['size_median_abs_error_m'][d]:.3f}" for d in DIMS
            ), f"{s['distance_median_abs_error_m']:.3f}"

        lines.append(f"| {label} | {amodal['n']} | {' | '.join(fmt(visible))} | {' | '.join(fmt(amodal))} |")
    fitted, shipped = result["tolerances"]["fitted_on_train"], result["tolerances"]["library"]
    lines += ["", f"Tolerances (qa/tolerance.py) fitted on the train split's amodal labels ({result['tolerances']['n_train_labels']} labels, "
              f"98% per question type): `{json.dumps(fitted)}`; the library ships `{json.dumps(shipped)}` "
              f"({'the same' if fitted == shipped else 'DIFFERENT: update qa/tolerance.py'}).", "",
              "| question type | train n | train within | test n | test within |", "|---|---|---|---|---|"]  # fmt: skip
    for qtype, train in result["tolerances"]["coverage_train"].items():
        held = result["tolerances"]["coverage_test"].get(qtype, {"n": 0, "within": float("nan")})
        lines.append(f"| {qtype} | {train['n']} | {train['within']:.3f} | {held['n']} | {held['within']:.3f} |")
    lines += ["", "The checker on the synthesised test split (what metrics/synthesize.json `checker` reports), shipped bands:", "",
              "| variant | type | n | within stated band | within 25% | median abs error (m) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for variant in ("visible", "amodal"):
        for qtype, stats in result["checker_test"][variant]["by_qtype"].items():
            if "median_abs_error_m" not in stats:
                continue
            med = stats["median_abs_error_m"]
            med_text = ", ".join(f"{k} {v:.3f}" for k, v in med.items()) if isinstance(med, dict) else f"{med:.3f}"
            pct = stats.get("within_25pct", stats.get("size_within_25pct"))
            pct_text = "-" if pct is None else f"{pct:.3f}"
            lines.append(f"| {variant} | {qtype} | {stats['n']} | {stats['rate']:.3f} | {pct_text} | {med_text} |")
    m_before, m_after = test["visible"]["measurable"], test["amodal"]["measurable"]
    lines += ["", "Verdict (test split, measurable objects): box width (the side along the view) median abs error "
              f"{m_before['size_median_abs_error_m']['width']:.3f} -> {m_after['size_median_abs_error_m']['width']:.3f} m, "
              f"largest per-dimension median {max(m_after['size_median_abs_error_m'].values()):.3f} m (target <= 0.10); "
              f"distance to the camera {m_before['distance_median_abs_error_m']:.3f} -> {m_after['distance_median_abs_error_m']:.3f} m "
              "(target <= 0.05); no extent below one pixel."]  # fmt: skip
    return "\n".join(lines) + "\n" + NOTES


NOTES = """
## Why this completion

Single-view 3D methods complete what one camera cannot see with a prior: Cube R-CNN / Omni3D
regress the whole box (depth of its centre included) from a learned, class-conditioned prior;
symmetry-based amodal completion mirrors the seen half. We need nothing learned and no class
table (a label prior would only be as good as the label, and the world's classes are not a real
vocabulary), so we use the two assumptions that hold for any object resting on the ground: it
rests on the ground (the box reaches down to it), and its footprint is centrally symmetric about a
vertical axis, placed where a round footprint tangent to both silhouette rays and the nearest
point would have it. That placement is exact for round and square footprints at any yaw, with
perspective (D = d / (1 - sin alpha)), and it needs only the silhouette's azimuths and the nearest
point, which real-image extraction has as well (SAM 2 mask + Depth Pro depth + the RANSAC ground).
A free-space check then pulls the axis nearer when the mirrored far side would stand where the
camera sees the background (a box whose top is in view shows its back edge).

Alternatives measured during development with a throwaway harness on the same train split
(measurable objects; not rerun by this script), against the prior's 0.049 m width and 0.021 m
distance errors:
- the axis at the mean depth of the silhouette's extreme-azimuth points: width 0.132 m, distance
  0.104 m. A tangent point's depth is at the mercy of rasterisation (a pixel's half-width at a
  tangent moves its depth by sqrt(r * pixel)).
- the prior capped by the object's height (depth <= max(height, visible depth)): width 0.068 m,
  distance 0.042 m: a yawed cube is sqrt(2) deeper along the view than it is tall.
- the silhouette widened by half a pixel on each side: width 0.045 m, distance 0.028 m (distance worse).

Where it errs: elongated footprints. Seen end on, the prior makes a capsule or ellipsoid too
shallow unless its top is in view; seen broadside, too deep unless the free space shows its back
(per-class table above: capsule and ellipsoid carry the largest errors). That tail is what the
wide extent bands of qa/tolerance.py cover.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "world"
        render_dataset(WorldConfig(n_train=args.n_train, n_test=args.n_test), root, progress=False)
        dataset = RGBDDataset(root)
        splits: dict[str, dict[str, Any]] = {}
        amodal_records: dict[str, list[SceneRecord]] = {}
        for split in ("train", "test"):
            ids = sorted(dataset.ids(split))
            splits[split] = {}
            for variant in VARIANTS:
                records = extract_all(dataset, ids, variant)
                splits[split][variant] = summarize_variant(object_rows(dataset, records))
                if variant == "amodal":
                    amodal_records[split] = records
            print(split, json.dumps({v: splits[split][v]["measurable"] for v in VARIANTS}), file=sys.stderr)
        train_errors = tolerance_errors(dataset, amodal_records["train"])
        test_errors = tolerance_errors(dataset, amodal_records["test"])
        fitted = fit_tolerances(train_errors)
        checker = {variant: checker_on_test(dataset, variant, Path(tmp)) for variant in ("visible", "amodal")}
    result = {
        "schema_version": SCHEMA_VERSION,
        "environment": {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "n_train": args.n_train,
        "n_test": args.n_test,
        "splits": splits,
        "tolerances": {
            "n_train_labels": len(train_errors),
            "fitted_on_train": model_as_dict(fitted),
            "library": model_as_dict(ToleranceModel()),
            "coverage_train": coverage(ToleranceModel(), train_errors),
            "coverage_test": coverage(ToleranceModel(), test_errors),
        },
        "checker_test": checker,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "box_completion.json").write_text(json.dumps(result, indent=2, default=list) + "\n")
    (args.out / "box_completion.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
