"""Throughput of the spatial QA synthesis, single process, on ground-truth world scenes.

    PYTHONPATH=src python benchmarks/qa_synthesis.py                 # writes benchmarks/results/qa_synthesis.{json,md}
    PYTHONPATH=src python benchmarks/qa_synthesis.py --acceptance    # + the independent checker's rates

Scenes: the world's test split at the demo defaults (128x128, 2-8 objects), through the
ground-truth extractor, held in memory as JSON lines with their depth maps (so disk reads are
not timed). Conversations per second per core, one process, four ways:

- `conversation`: scene record (already parsed) + pixel probes drawn from its depth map ->
  typed, phrased forward conversation (10 turns);
- `conversation_no_depth`: the same without a depth map (no probes; the pixel turns go to the
  other levels);
- `end_to_end`: JSON line -> SceneRecord (pydantic) -> conversation -> LLaVA record and typed
  sidecar serialised to JSON strings (what a shard writer does, minus the disk);
- `shards`: the pipeline's shard work (`plan`, `prepare_output`, `synthesize_shard` per shard:
  depth maps read from the extraction's stored archive, LLaVA JSON, parquet, quarantine and
  sidecar written), into a temporary
  folder; `finalize` (merged JSON, statistics and their PNG, manifest) is a one-off, timed once
  in wall seconds (`finalize_wall_s`).

Rates are CPU time of this process (`time.process_time`) and the best of --repeats runs: the
machine is shared and other work only ever slows a run down. The wall-clock rate is listed too.
With --acceptance the pipeline's sidecar is checked by `qa.checker` against the world's
annotations and depth maps, with the extractor's default settings (the test suite subsamples
objects to 1000 points to stay fast).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spatialboost.config import ExtractConfig, SynthesizeConfig, WorldConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.depth_maps import depth_map_ref, encode_depth, write_depth_archive
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.records import SceneRecord
from spatialboost.extract.scene import build_scene, image_rng
from spatialboost.qa import (
    finalize,
    ordered,
    plan,
    prepare_output,
    synthesize_conversation,
    synthesize_shard,
)
from spatialboost.qa.checker import check_sidecar
from spatialboost.qa.formats import llava_record, read_jsonl, sidecar_record
from spatialboost.qa.pipeline import shard_paths
from spatialboost.world import render_dataset

RESULTS = Path(__file__).resolve().parent / "results"


def world_scenes(root: Path, n: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """Render n test scenes, extract them with the default ground-truth settings; returns the
    scene records as JSON lines and the depth maps by image id."""
    render_dataset(WorldConfig(n_train=0, n_test=n), root, progress=False)
    dataset = RGBDDataset(root)
    observer = GroundTruthObserver(dataset)
    geometry = ExtractConfig().geometry
    lines, depths = [], {}
    for image_id in dataset.ids("test"):
        observation = observer.observe_one(image_id)
        record = build_scene(observation, geometry, image_rng(0, image_id))
        if isinstance(record, SceneRecord):
            lines.append(record.to_json())
            depths[image_id] = observation.depth
    return lines, depths


def write_scene_shard(folder: Path, lines: list[str], depths: dict[str, np.ndarray]) -> None:
    """Scene shard 0 as the extraction writes it: records pointing at their stored depth maps."""
    payloads, with_refs = {}, []
    for line in lines:
        record = SceneRecord.from_json(line)
        payload = encode_depth(depths[record.image_id])
        ref = depth_map_ref("shard-00000.depth.zip", payload)
        payloads[ref.sha256] = payload
        with_refs.append(record.model_copy(update={"depth_map": ref}).to_json())
    write_depth_archive(folder / "shard-00000.depth.zip", payloads)
    (folder / "shard-00000.jsonl").write_text("".join(line + "\n" for line in with_refs))


def timed(run: Callable[[], int], repeats: int) -> dict[str, float]:
    """Best of `repeats` runs of run() (returns conversations made): rates per CPU second and wall second."""
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        n = run()
        runs.append((n / (time.process_time() - cpu), n / (time.perf_counter() - wall), n))
    best = max(runs)
    return {
        "conversations_per_cpu_s": round(best[0], 1),
        "conversations_per_wall_s": round(best[1], 1),
        "conversations": best[2],
        "all_per_cpu_s": [round(r[0], 1) for r in runs],
    }


def measure(lines: list[str], depths: dict[str, np.ndarray], root: Path, repeats: int, acceptance: bool) -> dict:
    cfg = SynthesizeConfig()
    records = [SceneRecord.from_json(line) for line in lines]

    def conversations(with_depth: bool) -> int:
        for record in records:
            synthesize_conversation(record, cfg, depth=depths[record.image_id] if with_depth else None)
        return len(records)

    def end_to_end() -> int:
        for line in lines:
            record = SceneRecord.from_json(line)
            conversation = synthesize_conversation(record, cfg, depth=depths[record.image_id])
            for conv_id, turns in ordered(conversation, cfg.order, cfg.seed):
                json.dumps(llava_record(conv_id, "rgb/x.png", turns), ensure_ascii=False)
                json.dumps(sidecar_record(conv_id, "rgb/x.png", cfg.order, conversation, turns), ensure_ascii=False)
        return len(lines)

    results = {
        "phases_ms_per_conversation": phases(lines, depths, repeats),
        "conversation": timed(lambda: conversations(True), repeats),
        "conversation_no_depth": timed(lambda: conversations(False), repeats),
        "end_to_end": timed(end_to_end, repeats),
    }
    with tempfile.TemporaryDirectory() as tmp:
        scenes = Path(tmp) / "scenes"
        scenes.mkdir()
        write_scene_shard(scenes, lines, depths)
        out = Path(tmp) / "qa"
        pipeline_cfg = cfg.model_copy(update={"output": str(out), "n_renderings": 0, "caption_turns": 2})

        def shards() -> int:
            for path in out.glob("shard-*"):
                path.unlink()  # rerun everything, not a resume
            planned = plan(scenes, pipeline_cfg)
            prepare_output(pipeline_cfg, planned, root)
            return sum(synthesize_shard(s, pipeline_cfg, root)["n_conversations"] for s in planned)

        results["shards"] = timed(shards, repeats)
        start = time.perf_counter()
        finalize(pipeline_cfg, plan(scenes, pipeline_cfg), root)
        results["finalize_wall_s"] = round(time.perf_counter() - start, 2)
        if acceptance:
            sidecar = [
                r for shard in plan(scenes, pipeline_cfg) for r in read_jsonl(shard_paths(out, shard.index)["sidecar"])
            ]
            rates = check_sidecar(sidecar, RGBDDataset(root))
            results["acceptance"] = {k: v for k, v in rates.items() if k != "disagreements"}
            results["acceptance"]["disagreements"] = rates["disagreements"][:5]
    return results


def phases(lines: list[str], depths: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    """CPU milliseconds per conversation of each step of `end_to_end` (best of `repeats` runs)."""
    from spatialboost.qa.answers import CAPTION_KINDS, TurnWriter
    from spatialboost.qa.conversation import plan_questions, scene_streams
    from spatialboost.qa.facts import scene_facts
    from spatialboost.qa.phrasing import NumberFormat
    from spatialboost.qa.probes import pixel_probes
    from spatialboost.qa.tolerance import ToleranceModel

    cfg, tol = SynthesizeConfig(), ToleranceModel()
    names = ("parse", "streams", "masks", "facts", "probes", "plan", "write", "serialise")
    best = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):
        spent = dict.fromkeys(names, 0.0)
        for line in lines:
            clock = [time.process_time()]
            record = SceneRecord.from_json(line)
            clock.append(time.process_time())
            streams = scene_streams(cfg.seed, record.image_id)
            clock.append(time.process_time())
            masks = [obj.mask.decode() for obj in record.objects]
            clock.append(time.process_time())
            facts = scene_facts(record, streams["words"], cfg.min_confidence, masks)
            clock.append(time.process_time())
            probes = pixel_probes(depths[record.image_id], record, streams["probes"], 2, cfg.min_confidence, masks)
            clock.append(time.process_time())
            questions, _, _ = plan_questions(facts, probes, cfg, tol, streams["plan"])
            clock.append(time.process_time())
            writer = TurnWriter(facts, NumberFormat(streams["words"].choice(cfg.units), cfg.decimals), streams["words"])
            turns = [writer.write(q) for q in questions] + [
                writer.caption(k) for k in CAPTION_KINDS[: cfg.caption_turns]
            ]
            clock.append(time.process_time())
            json.dumps([t.to_dict() for t in turns], ensure_ascii=False)
            json.dumps([{"from": "gpt", "value": t.answer} for t in turns], ensure_ascii=False)
            clock.append(time.process_time())
            for name, a, b in zip(names, clock[:-1], clock[1:], strict=True):
                spent[name] += b - a
        best = {name: min(best[name], spent[name]) for name in names}
    return {name: round(1e3 * best[name] / len(lines), 3) for name in names}


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Spatial QA synthesis throughput",
        "",
        f"{report['date']}, {m['platform']}, {m['cpus']} CPUs (1-min load {m['load_1min_at_start']} at start),",
        f"Python {m['python']}, numpy {m['numpy']}. One process; {report['scenes']} world test scenes",
        "(128x128, 2-8 objects) through the ground-truth extractor (default settings); 10 spatial turns",
        f"per conversation. Conversations per CPU second of the process (best of {report['repeats']}), and per wall second.",
        "",
        "| what | conv / CPU s | conv / wall s |",
        "|---|---|---|",
    ]
    for name, row in report["results"].items():
        if isinstance(row, dict) and "conversations_per_cpu_s" in row:
            lines.append(f"| {name} | {row['conversations_per_cpu_s']} | {row['conversations_per_wall_s']} |")
    lines += [
        "",
        "- conversation: parsed scene record + depth map -> typed, phrased conversation (probes included)",
        "- conversation_no_depth: the same without a depth map (no pixel probes)",
        "- end_to_end: JSON line -> record -> conversation -> LLaVA and sidecar JSON strings",
        "- shards: plan + prepare_output + synthesize_shard (stored depth maps read from disk, four files per shard)",
        f"- finalize (merged JSON, stats JSON + PNG, manifest; once per run): {report['results']['finalize_wall_s']} s wall",
    ]
    phases_ms = report["results"]["phases_ms_per_conversation"]
    lines += [
        "",
        "CPU milliseconds per conversation, by step (end_to_end, best of the runs): "
        + ", ".join(f"{name} {ms}" for name, ms in phases_ms.items())
        + f"; total {round(sum(phases_ms.values()), 3)}.",
    ]
    acceptance = report["results"].get("acceptance")
    if acceptance:
        lines += [
            "",
            f"Independent check on {acceptance['images']} scenes: bool/choice answers agreeing "
            f"{acceptance['choice_bool']['agree']}/{acceptance['choice_bool']['n']} "
            f"({acceptance['choice_bool']['rate']:.4f}), numeric answers within tolerance "
            f"{acceptance['numeric']['agree']}/{acceptance['numeric']['n']} ({acceptance['numeric']['rate']:.4f}).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200, help="world test scenes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--acceptance", action="store_true", help="also run the independent checker")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "scenes": None,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "world"
        lines, depths = world_scenes(root, args.scenes)
        report["scenes"] = len(lines)
        report["results"] = measure(lines, depths, root, args.repeats, args.acceptance)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qa_synthesis.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "qa_synthesis.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
