"""The synthesis stage over the extraction's scene shards: resumable shards of conversations.

Layout of the output folder (cfg.output):

    shard-00000.llava.json      LLaVA conversations of QA shard 0 (formats.py)
    shard-00000.parquet         the same, as a parquet `datasets` loads
    shard-00000.quarantine.jsonl  one QuarantineRecord (stage "synthesize") per scene of shard 0
                                that gave no conversation, with its reason (QAQuarantineReason)
    shard-00000.jsonl           the typed sidecar: one line per conversation; written last
    params.json                 the settings and the input shards' sha256 the shards were made
                                with; any change makes every shard stale
    conversations.json          all shards' LLaVA conversations in one list (finalize)
    stats.json, stats.png       statistics of the whole set (report.py)
    samples/<id>.png            sample conversations drawn on their images
    manifest.json               schema version, params, every shard's files with sha256 and
                                counts, totals; written last

A QA shard is cfg.shard_size consecutive scenes of the input shards (scene-shard order, then
line order). Its sidecar is renamed into place last, so its existence marks the shard
complete, and a rerun skips complete shards. A conversation depends only on (cfg, its scene
record, its depth map), so every shard's bytes are the same whichever run or worker made it.

Depth: every scene's depth map is the one the extraction stored beside the record (its
`depth_map`: extract/depth_maps.py), whatever the image source (world, folder, S3): one way in.
Every scene ends in exactly one of two files: a conversation with a turn of each of
cfg.required_levels, or a quarantine record saying why not (no stored depth, a damaged depth
map, no question at all, no turn of a required level). No conversation is ever empty.

    summary = run_synthesize_stage(cfg)    # the stage: `spatialboost synthesize` and flows/synthesize.py
    summary = synthesize("data/scenes", cfg.synthesize, image_root="data/world")   # any scenes (tests)

The folder is one of shards.py's resumable outputs, under its one rule. For fan-out: `shards =
plan(...)`, `prepare_output(cfg, shards)` once, `synthesize_shard` per shard (any order, any
worker), then `finalize_and_summarize(cfg, shards, image_root, counts)`.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from tqdm import tqdm

from spatialboost.config import SpatialBoostConfig, SynthesizeConfig
from spatialboost.extract.depth_maps import DepthMapError, DepthMaps
from spatialboost.extract.records import QuarantineRecord, SceneRecord
from spatialboost.io import nonblank_lines, open_text_atomic, remove_stale_temporaries, sha256_file, write_json_atomic
from spatialboost.qa.conversation import Conversation, missing_levels, ordered, synthesize_conversation
from spatialboost.qa.formats import (
    image_reference,
    llava_record,
    read_jsonl,
    sidecar_record,
    write_jsonl,
    write_llava_json,
    write_parquet,
)
from spatialboost.qa.report import conversation_stats, write_sample_png, write_stats_png
from spatialboost.qa.turns import SCHEMA_VERSION
from spatialboost.shards import PARAMS_NAME, ShardedOutput, numbered_shards

SCENE_SHARD = re.compile(r"^shard-(\d{5})\.jsonl$")
"""Scene-record shards of the extraction stage (its quarantine files do not match)."""

MANIFEST_NAME = "manifest.json"
SAMPLES_DIR = "samples"
NOT_PARAMS = {"output", "n_renderings"}
"""SynthesizeConfig fields that change no byte of a shard."""


class QAQuarantineReason(str, enum.Enum):
    """Why a scene gave no conversation. The value is the code in the quarantine records;
    a missing level gives "no_<level>_turns" (`missing_level_reason`)."""

    NO_DEPTH = "no_depth"  # the record points at no stored depth map, and pixel turns are required
    DEPTH_UNREADABLE = "depth_unreadable"  # the stored map is missing, damaged or not the record's
    NO_QUESTIONS = "no_questions"  # not one spatial question could be asked about the scene


def missing_level_reason(level: str) -> str:
    """The quarantine code of a conversation without a turn of `level` ("no_scene_turns")."""
    return f"no_{level}_turns"


@dataclass(frozen=True)
class SceneSlice:
    """Lines [start, stop) of one scene-record shard file."""

    path: str
    start: int
    stop: int


@dataclass(frozen=True)
class QAShard:
    """One unit of synthesis: the scenes of `sources`, in order, written as shard `index`."""

    index: int
    sources: tuple[SceneSlice, ...]

    @property
    def n_scenes(self) -> int:
        return sum(s.stop - s.start for s in self.sources)


def scene_shard_files(scene_shards_dir: str | os.PathLike[str]) -> list[Path]:
    """The extraction's shard-NNNNN.jsonl files, in shard order."""
    folder = Path(scene_shards_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of scene shards")
    return sorted(p for p in folder.iterdir() if SCENE_SHARD.match(p.name))


def plan(scene_shards_dir: str | os.PathLike[str], cfg: SynthesizeConfig) -> list[QAShard]:
    """QA shards of cfg.shard_size consecutive scenes over every scene shard (reads line counts)."""
    shards: list[QAShard] = []
    current: list[SceneSlice] = []
    room = cfg.shard_size
    for path in scene_shard_files(scene_shards_dir):
        n_lines = len(nonblank_lines(path))
        start = 0
        while start < n_lines:
            stop = min(n_lines, start + room)
            current.append(SceneSlice(str(path), start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                shards.append(QAShard(len(shards), tuple(current)))
                current, room = [], cfg.shard_size
    if current:
        shards.append(QAShard(len(shards), tuple(current)))
    return shards


def shard_paths(out_dir: str | os.PathLike[str], index: int) -> dict[str, Path]:
    """The four files of QA shard `index`: llava, parquet, quarantine, sidecar (the completion
    marker, written last)."""
    return dict(zip(("llava", "parquet", "quarantine", "sidecar"), qa_shards(out_dir).unit_files(index), strict=True))


def synthesis_params(
    cfg: SynthesizeConfig, shards: list[QAShard], image_root: str | os.PathLike[str] | None
) -> dict[str, Any]:
    """Everything that decides a shard's bytes: settings, image root and the inputs' sha256."""
    inputs = sorted({s.path for shard in shards for s in shard.sources})
    return {
        "schema_version": SCHEMA_VERSION,
        "synthesize": cfg.model_dump(mode="json", exclude=NOT_PARAMS),
        "image_root": None if image_root is None else os.path.abspath(image_root),
        "inputs": {Path(p).name: sha256_file(Path(p)) for p in inputs},
    }


QA_SHARD_SUFFIXES = (".llava.json", ".parquet", ".quarantine.jsonl", ".jsonl")
"""The four files of a QA shard, in the order they are written: the typed sidecar last (the marker)."""


def qa_shards(out_dir: str | os.PathLike[str]) -> ShardedOutput:
    """The synthesis output folder as shards.py's resumable shards."""
    return numbered_shards(out_dir, QA_SHARD_SUFFIXES)


def prepare_output(cfg: SynthesizeConfig, shards: list[QAShard], image_root: str | os.PathLike[str] | None) -> None:
    """Make cfg.output safe to resume from (shards.py's rule: shards of other params, or past the
    plan, are removed) and write params.json; the output must not be the scene shards' folder."""
    inputs = {Path(s.path).parent.resolve() for shard in shards for s in shard.sources}
    if Path(cfg.output).resolve() in inputs:
        raise ValueError(f"{cfg.output}: the output folder must not be the folder of the scene shards")
    qa_shards(cfg.output).prepare(range(len(shards)), synthesis_params(cfg, shards, image_root))


def shard_is_complete(cfg: SynthesizeConfig, shard: QAShard) -> bool:
    """True when the shard's sidecar (written last) exists."""
    return qa_shards(cfg.output).is_complete(shard.index)


def read_scenes(shard: QAShard) -> list[SceneRecord]:
    """The scene records of a shard, in order."""
    return [record for record, _ in read_scenes_with_folder(shard)]


def read_scenes_with_folder(shard: QAShard) -> list[tuple[SceneRecord, Path]]:
    """(scene record, the folder of its scene shard) for every scene of a shard, in order: a
    record's depth_map.file is relative to that folder."""
    scenes = []
    for source in shard.sources:
        path = Path(source.path)
        scenes += [(SceneRecord.from_json(line), path.parent) for line in nonblank_lines(path)[source.start : source.stop]]
    return scenes


def scene_conversation(
    record: SceneRecord, scenes_dir: str | os.PathLike[str], cfg: SynthesizeConfig, depth_maps: DepthMaps
) -> Conversation | QuarantineRecord:
    """The forward conversation of one scene, read with its stored depth map, or the quarantine
    record that says why the scene has none (QAQuarantineReason, or no turn of a required level)."""

    def quarantine(reason: str, detail: str) -> QuarantineRecord:
        return QuarantineRecord(
            id=record.image_id, uri=record.image_uri, stage="synthesize", reason=reason, detail=detail
        )

    depth = None
    if record.depth_map is not None:
        try:
            depth = depth_maps.read(scenes_dir, record)
        except DepthMapError as err:
            return quarantine(QAQuarantineReason.DEPTH_UNREADABLE.value, str(err))
    elif "pixel" in cfg.required_levels:
        detail = "the scene record points at no stored depth map (made by an older extractor, or in memory)"
        return quarantine(QAQuarantineReason.NO_DEPTH.value, detail)
    conversation = synthesize_conversation(record, cfg, depth=depth)
    if not conversation.spatial_turns:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(conversation.skipped.items()) if n) or "nothing"
        detail = f"{len(conversation.objects)} askable of {len(record.objects)} objects; skipped: {skipped}"
        return quarantine(QAQuarantineReason.NO_QUESTIONS.value, detail)
    missing = missing_levels(conversation, cfg.required_levels)
    if missing:
        levels = ", ".join(f"{level} {n}" for level, n in conversation.levels.items())
        detail = f"no {missing[0]}-level question could be asked ({len(conversation.objects)} askable objects; turns: {levels})"
        return quarantine(missing_level_reason(missing[0]), detail)
    return conversation


def synthesize_shard(
    shard: QAShard,
    cfg: SynthesizeConfig,
    image_root: str | os.PathLike[str] | None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the four files of one shard (skipped when already complete); returns its counts."""
    paths = shard_paths(cfg.output, shard.index)
    if shard_is_complete(cfg, shard):
        counts = _counts(read_jsonl(paths["sidecar"]), read_jsonl(paths["quarantine"]))
        return {"index": shard.index, "skipped": True, **counts}
    llava, sidecar, quarantined = [], [], []
    depth_maps = DepthMaps()
    scenes = read_scenes_with_folder(shard)
    for record, folder in tqdm(scenes, desc=f"qa shard {shard.index}", unit="scene", disable=not progress):
        conversation = scene_conversation(record, folder, cfg, depth_maps)
        if isinstance(conversation, QuarantineRecord):
            quarantined.append(json.loads(conversation.to_json()))
            continue
        image = image_reference(record.image_uri, image_root)
        for conv_id, turns in ordered(conversation, cfg.order, cfg.seed):
            llava.append(llava_record(conv_id, image, turns, conversation.marks_of(turns)))
            sidecar.append(sidecar_record(conv_id, image, cfg.order, conversation, turns))
    depth_maps.close()
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    write_llava_json(paths["llava"], llava)
    write_parquet(paths["parquet"], llava, sidecar)
    write_jsonl(paths["quarantine"], quarantined)
    write_jsonl(paths["sidecar"], sidecar)
    return {"index": shard.index, "skipped": False, **_counts(sidecar, quarantined)}


def _counts(sidecar: list[dict[str, Any]], quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "n_scenes": len({r["image_id"] for r in sidecar}),
        "n_conversations": len(sidecar),
        "n_turns": sum(len(r["turns"]) for r in sidecar),
        "n_quarantined": len(quarantined),
        "quarantine_by_reason": dict(sorted(Counter(r["reason"] for r in quarantined).items())),
    }


def _sum_counts(counts: list[dict[str, Any]]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for c in counts:
        reasons.update(c["quarantine_by_reason"])
    keys = ("n_scenes", "n_conversations", "n_turns", "n_quarantined")
    return {**{k: sum(c[k] for c in counts) for k in keys}, "quarantine_by_reason": dict(sorted(reasons.items()))}


def finalize(
    cfg: SynthesizeConfig, shards: list[QAShard], image_root: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Merge the shards (conversations.json), write stats.json/.png, cfg.n_renderings sample
    renderings and manifest.json (last). Every shard must be complete. Returns the manifest."""
    out_dir = Path(cfg.output)
    sidecar: list[dict[str, Any]] = []
    shard_counts: list[dict[str, Any]] = []
    entries = []
    with open_text_atomic(out_dir / "conversations.json") as merged:
        merged.write("[")
        first = True
        for shard in shards:
            paths = shard_paths(out_dir, shard.index)
            if not shard_is_complete(cfg, shard):
                raise FileNotFoundError(
                    f"{out_dir}: shard {shard.index} is not complete ({paths['sidecar'].name} missing)"
                )
            records = read_jsonl(paths["sidecar"])
            sidecar += records
            for record in json.loads(paths["llava"].read_text(encoding="utf-8")):
                merged.write(("\n" if first else ",\n") + json.dumps(record, ensure_ascii=False))
                first = False
            shard_counts.append(_counts(records, read_jsonl(paths["quarantine"])))
            entries.append(
                {
                    "index": shard.index,
                    **{name: path.name for name, path in paths.items()},
                    **{f"{name}_sha256": sha256_file(path) for name, path in paths.items()},
                    **shard_counts[-1],
                }
            )
        merged.write("\n]\n")
    stats = conversation_stats(sidecar)
    write_json_atomic(out_dir / "stats.json", stats)
    write_stats_png(out_dir / "stats.png", stats)
    n_samples = write_samples(out_dir / SAMPLES_DIR, sidecar, cfg.n_renderings, image_root)
    params_path = out_dir / PARAMS_NAME
    manifest = {
        "format": "spatialboost-qa",
        "schema_version": SCHEMA_VERSION,
        "params": json.loads(params_path.read_text()) if params_path.exists() else None,
        "n_shards": len(shards),
        "shards": entries,
        "totals": _sum_counts(shard_counts),
        "n_samples": n_samples,
    }
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return manifest


def write_samples(
    folder: Path, sidecar: list[dict[str, Any]], n: int, image_root: str | os.PathLike[str] | None
) -> int:
    """samples/<id>.png for n conversations spread evenly over the sidecar; returns how many."""
    if n <= 0 or not sidecar:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    picks = sorted({int(round(i)) for i in np.linspace(0, len(sidecar) - 1, min(n, len(sidecar)))})
    for i in picks:
        record = sidecar[i]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", record["id"])
        write_sample_png(folder / f"{name}.png", load_image(record["image"], image_root), record)
    return len(picks)


def load_image(image: str, image_root: str | os.PathLike[str] | None) -> np.ndarray | None:
    """(H, W, 3) uint8 of a sidecar `image` (a path under image_root, or a file:// uri); None
    when it cannot be read (the sample is drawn on grey)."""
    from PIL import Image, ImageOps

    parsed = urlparse(image)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "":
        path = Path(image_root or ".") / image
    else:
        return None
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))  # as the extraction saw it
    except OSError:
        return None


def synthesize(
    scene_shards_dir: str | os.PathLike[str],
    cfg: SynthesizeConfig,
    image_root: str | os.PathLike[str] | None,
    *,
    run_shards: Callable[[list[QAShard]], list[dict[str, Any]]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Synthesise every scene of scene_shards_dir into cfg.output (resumable); returns the summary:
    counts, quarantine by reason, shards skipped and the balance figures.

    run_shards: runs the planned shards, one count each in plan order: the flow submits one
    Prefect task per shard; default here, one after the other.
    """
    shards = plan(scene_shards_dir, cfg)
    prepare_output(cfg, shards, image_root)
    if run_shards is None:
        planned = tqdm(shards, desc="synthesize", unit="shard", disable=not progress)
        reports = [synthesize_shard(shard, cfg, image_root) for shard in planned]
    else:
        reports = run_shards(shards)
    return finalize_and_summarize(cfg, shards, image_root, reports)


def synthesize_preflight(cfg: SpatialBoostConfig) -> str | None:
    """A missing extraction output, as one line, before the stage starts (None: ready)."""
    if not Path(cfg.extract.output).is_dir():
        return f"extract.output: {cfg.extract.output} does not exist (run the extract stage first: dvc repro extract)"
    return None


def run_synthesize_stage(
    cfg: SpatialBoostConfig,
    *,
    run_shards: Callable[[list[QAShard]], list[dict[str, Any]]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The `synthesize` stage, what `spatialboost synthesize` and flows/synthesize.py both run: the
    extraction's scenes (synthesize), then, with ground truth at hand (data.source world), every
    answer recomputed from the world's own truth. Returns metrics/synthesize.json."""
    from spatialboost.qa.checker import check_output

    start = time.perf_counter()
    metrics = synthesize(cfg.extract.output, cfg.synthesize, cfg.data.uri, run_shards=run_shards, progress=progress)
    if cfg.data.source == "world" and cfg.extract.backend == "ground_truth":
        checked = check_output(cfg.synthesize.output, cfg.data.uri, max_examples=5)
        metrics["checker"] = {key: value for key, value in checked.items() if key != "examples"}
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return metrics


def finalize_and_summarize(
    cfg: SynthesizeConfig, shards: list[QAShard], image_root: str | os.PathLike[str] | None, reports: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write the run's merged outputs (finalize) and return the summary for metrics/synthesize.json:
    counts, shards skipped and the balance figures."""
    manifest = finalize(cfg, shards, image_root)
    stats = json.loads((Path(cfg.output) / "stats.json").read_text())
    return {
        "n_shards": len(shards),
        "n_shards_skipped": sum(r["skipped"] for r in reports),
        **manifest["totals"],
        "order": cfg.order,
        "levels": stats["levels"],
        "yes_fraction": stats["yes_no"]["yes_fraction"],
        "A_fraction": stats["letters"]["A_fraction"],
        "with_rationale_fraction": stats["with_rationale"]["fraction"],
        "skipped": stats["skipped"],
    }
