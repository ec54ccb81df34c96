"""The `evaluate` stage's entry point: baseline vs boosted VLM, probes + spatial VQA + report.

    metrics = evaluate_pipeline(cfg)["metrics"]   # {"baseline": {...}, "boosted": {...}}

The baseline is cfg.train.init (the VLM the boost stage started from), the boosted model is
cfg.train.output/vlm. Both encoders are probed frozen on the same world splits with the same
seeds and head grid; both VLMs answer the same benchmark items, so the comparison is fair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialboost.config import SpatialBoostConfig
from spatialboost.evaluate.benchmarks import evaluate_benchmarks, free_device_memory, load_eval_model
from spatialboost.evaluate.comparison import accuracy_interval, compare, over_seeds, paired_interval
from spatialboost.evaluate.demo_bench import DemoBenchOptions, DemoBenchPaths, write_demo_benches
from spatialboost.evaluate.features import cached_features, encoder_fingerprint
from spatialboost.evaluate.head_grid import ProbeOptions
from spatialboost.evaluate.probes import ProbeResult, probe_encoder
from spatialboost.evaluate.readers import SampleSet, read_world
from spatialboost.evaluate.report import METRICS, VQA_KEYS, collect_metrics, depth_examples, metrics_json, write_report
from spatialboost.evaluate.vqa import (
    VQAItem,
    VQAResult,
    read_blink,
    read_spatialrgpt,
    run_vqa_batched,
    vlm_batch_answer_fn,
)
from spatialboost.io import write_json_atomic
from spatialboost.skipping import mark_skipped

RUNS = {"baseline": "init", "boosted": "output"}


@dataclass(frozen=True)
class RunOutcome:
    """One model's probe results and VQA result, plus what the depth figure needs."""

    probes: dict[str, ProbeResult]
    floor: ProbeResult | None  # the position-only depth floor on this encoder's patch grid
    vqa: VQAResult
    encoder: Any
    fingerprint: str


def model_folder(cfg: SpatialBoostConfig, run: str) -> Path:
    """The VLM folder of `run`: "baseline" = train.init, "boosted" = train.output/vlm."""
    if run == "baseline":
        return Path(cfg.train.init)
    if run == "boosted":
        return Path(cfg.train.output) / "vlm"
    raise ValueError(f"unknown run {run!r}; known: {list(RUNS)}")


def probe_options(cfg: SpatialBoostConfig) -> ProbeOptions:
    """The probe grid of cfg.evaluate."""
    ev = cfg.evaluate
    return ProbeOptions(
        learning_rates=ev.learning_rates,
        epochs=ev.epochs,
        seeds=ev.seeds,
        threads=ev.probe_threads,
        solver=ev.probe_solver,
        near_depth_m=ev.near_depth_m,
    )


def benchmark_items(paths: DemoBenchPaths, max_items: int | None) -> list[VQAItem]:
    """BLINK Relative_Depth + SpatialRGPT-bench items, each benchmark capped at max_items."""
    blink = read_blink(paths.blink)
    spatial = read_spatialrgpt(paths.spatialrgpt, paths.image_root)
    return blink[:max_items] + spatial[:max_items]


def evaluate_model(
    cfg: SpatialBoostConfig, folder: Path, train: SampleSet, test: SampleSet, items: list[VQAItem]
) -> RunOutcome:
    """Frozen-feature probes of the VLM's encoder, then its batched greedy answers to `items`.

    The VLM runs on cfg.device in the training precision; its language model is freed before
    returning (the encoder stays for the depth figure).
    """
    vlm, tokenizer = load_eval_model(cfg, folder)
    fingerprint = encoder_fingerprint(vlm.encoder)
    probes = probe_encoder(
        vlm.encoder,
        train=train,
        test=test,
        tasks=cfg.evaluate.tasks,
        options=probe_options(cfg),
        cache_dir=cfg.evaluate.cache_dir,
        fingerprint=fingerprint,
    )
    floor = probes.pop("floor", None)
    answer = vlm_batch_answer_fn(vlm, tokenizer, cfg.evaluate.max_new_tokens)
    vqa = run_vqa_batched(answer, items, cfg.evaluate.vqa_batch_size)
    encoder = vlm.encoder
    del answer, vlm, tokenizer  # the language model goes; the encoder stays for the depth figure
    free_device_memory()
    return RunOutcome(probes, floor, vqa, encoder, fingerprint)


def _depth_figure(cfg: SpatialBoostConfig, test: SampleSet, outcomes: dict[str, RunOutcome]) -> list:
    """Depth-probe examples of the first test images, or [] without a depth probe."""
    n = cfg.evaluate.n_depth_examples
    if n == 0 or any("depth" not in o.probes for o in outcomes.values()):
        return []
    samples = [test[i] for i in range(min(n, len(test)))]
    heads = []
    for outcome in (outcomes["baseline"], outcomes["boosted"]):
        feats = cached_features(
            outcome.encoder,
            test.ids,
            test.image,
            cache_dir=cfg.evaluate.cache_dir,
            dataset=f"{test.name}/{test.split}",
            fingerprint=outcome.fingerprint,
        )
        heads.append((outcome.probes["depth"].head, feats))
    return depth_examples(samples, outcomes["boosted"].encoder.preprocess, heads[0], heads[1])


def trained_folders(cfg: SpatialBoostConfig) -> dict[str, list[Path]]:
    """The VLM folders the train stage wrote, per kind: "boosted" (train.seed first, then the
    replicates) and "control" (the depth-supervised control, when train.control)."""
    from spatialboost.train.stage import planned_runs

    out: dict[str, list[Path]] = {"boosted": [], "control": []}
    for run in planned_runs(cfg.train):
        out["control" if run.objective == "depth" else "boosted"].append(Path(run.output) / "vlm")
    return out


def item_scores(vqa: VQAResult, group: str) -> dict[str, float]:
    """{item id: 1.0 / 0.0} of one VQA group (relative_depth, qualitative, quantitative, spatialrgpt)."""
    return {r["id"]: float(r["correct"]) for r in vqa.records
            if r["group"] == group or r.get("qa_type") == group or (group == "spatialrgpt" and r["benchmark"] == "spatialrgpt")}  # fmt: skip


def vqa_intervals(baseline: VQAResult, boosted: list[VQAResult]) -> dict[str, tuple[float, float]]:
    """{metric: paired 95% interval of Δ} for every VQA accuracy (items both models answered)."""
    out = {}
    for key, metric in VQA_KEYS.items():
        group = key.removesuffix("_acc")
        base = item_scores(baseline, group)
        runs = [item_scores(v, group) for v in boosted]
        ids = sorted(set(base).intersection(*runs)) if runs else []
        if ids:
            out[metric] = paired_interval([base[i] for i in ids], [[run[i] for i in ids] for run in runs])
    return out


def evaluate_pipeline(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Probe and quiz the baseline and every boosted run; probe the controls; write the benches,
    the report and the VQA records.

    Runs: baseline = train.init; boosted = the train stage's boost runs (one per seed); control =
    its depth-supervised runs (train.control), probed only; floor = the position-only depth probe.
    Boosted and control metrics are means over their seeds, and every baseline -> boosted
    difference gets a verdict against the seed spread (evaluate/comparison.py).

    Returns {"metrics": the metrics/evaluate.json structure ({"baseline", "boosted", "floor",
    "control": {metric: {"mean", "std"[, "n"]}}, "effects": {metric: verdict}}), "detail": {run:
    {probe choices, raw VQA metrics}}, "report": path of report.md}.
    """
    ev = cfg.evaluate
    if ev.benchmarks.configured():  # the paper's benchmarks: no world scenes needed
        # bench_dir is a DVC output of the stage in every profile: say why it holds no benches
        mark_skipped(
            ev.bench_dir,
            "evaluate",
            "evaluate.benchmarks is set: the paper's benchmarks are read where "
            "they are; no demo benchmarks are written from world scenes",
        )
        return evaluate_benchmarks(cfg, {run: model_folder(cfg, run) for run in RUNS}, probe_options(cfg))
    train, test = (read_world(cfg.world.root, split, label=ev.world_label) for split in ("train", ev.split))
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"evaluate: the world at {cfg.world.root} has {len(train)} train and {len(test)} {ev.split} scenes "
            "and no evaluate.benchmarks path is set: nothing to probe (set world.n_train / n_test or evaluate.benchmarks)"
        )
    paths = write_demo_benches(cfg.world.root, ev.bench_dir, ev.split, DemoBenchOptions(seed=cfg.seed))
    items = benchmark_items(paths, ev.max_vqa_items)
    folders = trained_folders(cfg)
    baseline = evaluate_model(cfg, Path(cfg.train.init), train, test, items)
    boosted = [evaluate_model(cfg, folder, train, test, items) for folder in folders["boosted"]]
    control = [evaluate_model(cfg, folder, train, test, []) for folder in folders["control"]]
    results: dict[str, dict[str, Any]] = {
        "baseline": collect_metrics(baseline.probes, baseline.vqa),
        "boosted": over_seeds([_means(collect_metrics(o.probes, o.vqa)) for o in boosted]),
    }
    if baseline.floor is not None:
        results["floor"] = collect_metrics({"floor": baseline.floor})
    if control:
        results["control"] = over_seeds([_means(collect_metrics(o.probes)) for o in control])
    higher = {metric: better for metric, (_, better) in METRICS.items()}
    effects = compare(results["baseline"], results["boosted"], higher, vqa_intervals(baseline.vqa, [o.vqa for o in boosted]))
    metrics = metrics_json(results, effects)
    blink = [list(item_scores(o.vqa, "relative_depth").values()) for o in boosted]
    if blink and blink[0]:
        metrics["boosted"]["vqa_relative_depth_acc"]["interval95"] = list(accuracy_interval(blink))
    out = Path(ev.output)
    notes = (f"{len(test)} {ev.split} images, {len(items)} VQA items; boosted: {len(boosted)} training seed(s), "
             f"control: {len(control)}.")  # fmt: skip
    report = write_report(
        results,
        out,
        _depth_figure(cfg, test, {"baseline": baseline, "boosted": boosted[0]}),
        notes=notes,
        effects=effects,
    )
    named = {"baseline": baseline, **{f"boosted-{i}": o for i, o in enumerate(boosted)},
             **{f"control-{i}": o for i, o in enumerate(control)}}  # fmt: skip
    detail = {
        run: {"probe_heads": {t: list(r.chosen) for t, r in o.probes.items()}, "vqa": o.vqa.metrics,
              "probes": _means(collect_metrics(o.probes))}  # fmt: skip
        for run, o in named.items()
    }
    for run, o in named.items():
        if o.vqa.records:
            write_json_atomic(out / f"vqa_{run}.json", {"metrics": o.vqa.metrics, "records": list(o.vqa.records)})
    return {"metrics": metrics, "detail": detail, "report": str(report.markdown)}


def _means(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {metric: value["mean"] for metric, value in summary.items() if value.get("mean") is not None}
