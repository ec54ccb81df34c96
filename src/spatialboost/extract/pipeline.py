"""The extraction stage over a whole manifest: shards of scene records, resumable, deterministic.

Layout of the output folder (cfg.extract.output):

    shard-00000.quarantine.jsonl   one QuarantineRecord per image of shard 0 that failed
    shard-00000.depth.zip          the depth map each record of shard 0 was measured on (PNG-16
                                   log-depth, content-addressed; extract/depth_maps.py)
    shard-00000.jsonl              one SceneRecord per image of shard 0 that succeeded
    ...
    params.json                    what the shards were made with; other params on a rerun
                                   make every shard stale
    manifest.json                  schema version, params, every shard's files with sha256 and
                                   counts, totals, quarantine counts by reason; written last
    overlays/<id>.png              masks, labels, projected 3D boxes and depth, for a sample

The folder is one of shards.py's resumable outputs, under its one rule: params.json is written
before any shard, with everything that decides a shard's bytes (the settings, the seed, the data
uri and the planned shards' ids); a shard's records file is renamed into place last (after its
quarantine file and its depth archive), so its existence means the shard is complete; a rerun
with other params removes every shard first. A killed run never leaves a partial shard visible
and a rerun resumes at the missing shards. Each image's randomness comes from
`image_rng(seed, id)`, so a shard's bytes do not depend on which run (or which worker) made it:
same inputs, identical bytes.

    summary = run_extract_stage(cfg)          # the stage: `spatialboost extract` and flows/extract.py
    counts = extract_images(cfg, ids, observer)   # the same for any ids and observer (tests, benchmarks)

The flow runs each shard as a Prefect task (`run_shards`): plan_extraction, then
extract_planned_shard per shard (any order, any worker), then finish_extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialboost.config import ExtractConfig, SpatialBoostConfig
from spatialboost.data.manifest import read_manifest
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.depth_maps import (
    depth_map_ref,
    encode_depth,
    write_depth_archive,
)
from spatialboost.extract.factory import shared_observer
from spatialboost.extract.protocols import Observation, ObservationFailure, ObservationSource
from spatialboost.extract.records import SCHEMA_VERSION, QuarantineRecord, SceneRecord
from spatialboost.extract.scene import SceneFailure, build_scene, image_rng
from spatialboost.io import nonblank_lines, open_text_atomic, remove_stale_temporaries, sha256_file, write_json_atomic
from spatialboost.shards import PARAMS_NAME, ShardedOutput, numbered_shards

MANIFEST_NAME = "manifest.json"
OVERLAY_DIR = "overlays"
SHARD_SUFFIXES = (".quarantine.jsonl", ".depth.zip", ".jsonl")
"""The three files of a shard, in the order they are written: the records file last (the marker)."""
NOT_PARAMS = {"output", "n_overlays"}
"""ExtractConfig fields that change no byte of a shard."""


@dataclass(frozen=True)
class ShardReport:
    """What one shard holds. by_reason: quarantine counts by reason code."""

    index: int
    n_images: int
    n_records: int
    n_quarantined: int
    n_objects: int
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardContent:
    """What one shard's files hold: records (each pointing at its depth map), quarantine
    records, and the encoded depth maps by sha256 (the depth archive's members)."""

    records: list[SceneRecord]
    quarantined: list[QuarantineRecord]
    depth_maps: dict[str, bytes]


def records_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """shard-NNNNN.jsonl: the scene records of shard `index`; its existence marks the shard complete."""
    return Path(out_dir) / f"shard-{index:05d}.jsonl"


def quarantine_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """shard-NNNNN.quarantine.jsonl: the quarantine records of shard `index`."""
    return Path(out_dir) / f"shard-{index:05d}.quarantine.jsonl"


def depth_archive_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """shard-NNNNN.depth.zip: the depth maps the records of shard `index` were measured on."""
    return Path(out_dir) / f"shard-{index:05d}.depth.zip"


def manifest_ids(manifest: str | os.PathLike[str]) -> list[str]:
    """The ids of a data manifest (data.manifest), in order: images the data stage accepted."""
    return [entry.id for entry in read_manifest(manifest)]


def plan_shards(ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """`ids` in consecutive chunks of `shard_size` (the last may be shorter); ids must be unique."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ids = list(ids)
    repeated = sorted(image_id for image_id, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"{len(repeated)} ids appear more than once, e.g. {repeated[0]!r}")
    return [ids[start : start + shard_size] for start in range(0, len(ids), shard_size)]


def extract_shard(
    observer: ObservationSource,
    ids: Sequence[str],
    shard_index: int,
    cfg: ExtractConfig,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
) -> ShardReport:
    """Observe `ids` (one batch), build their scenes and write the shard's three files.

    Every id ends in exactly one of two: a scene record (its depth map in the depth archive) or
    a quarantine record. The quarantine file and the depth archive are written first, the
    records file last (all atomically).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    content = extract_records(observer, ids, cfg, seed=seed, depth_file=depth_archive_path(out_dir, shard_index).name)
    records, quarantined = content.records, content.quarantined
    with open_text_atomic(quarantine_path(out_dir, shard_index)) as handle:
        handle.writelines(record.to_json() + "\n" for record in quarantined)
    write_depth_archive(depth_archive_path(out_dir, shard_index), content.depth_maps)
    with open_text_atomic(records_path(out_dir, shard_index)) as handle:
        handle.writelines(record.to_json() + "\n" for record in records)
    return ShardReport(
        index=shard_index,
        n_images=len(ids),
        n_records=len(records),
        n_quarantined=len(quarantined),
        n_objects=sum(len(record.objects) for record in records),
        by_reason=dict(sorted(Counter(record.reason for record in quarantined).items())),
    )


def extract_records(
    observer: ObservationSource,
    ids: Sequence[str],
    cfg: ExtractConfig,
    *,
    seed: int = 0,
    depth_file: str = "shard-00000.depth.zip",
) -> ShardContent:
    """Scene and quarantine records of `ids`, in id order, and the encoded depth map of every
    record (which points at it in the archive `depth_file`), without writing anything."""
    observations = observer.observe(list(ids))
    if len(observations) != len(ids):
        raise RuntimeError(f"observer returned {len(observations)} results for {len(ids)} ids")
    content = ShardContent([], [], {})
    for image_id, item in zip(ids, observations, strict=True):
        result = scene_or_failure(item, cfg, seed)
        if isinstance(result, SceneFailure):
            content.quarantined.append(
                QuarantineRecord(id=image_id, uri=item.uri, reason=result.reason, detail=result.detail)
            )
            continue
        assert isinstance(item, Observation)  # an observer failure never gives a scene
        payload = encode_depth(item.depth)  # the map the scene was measured on
        ref = depth_map_ref(depth_file, payload)
        content.depth_maps[ref.sha256] = payload
        content.records.append(result.model_copy(update={"depth_map": ref}))
    return content


def scene_or_failure(
    item: Observation | ObservationFailure, cfg: ExtractConfig, seed: int
) -> SceneRecord | SceneFailure:
    """The scene of one observer result, or the failure (the observer's or the geometry's)."""
    if isinstance(item, ObservationFailure):
        return SceneFailure(item.reason, item.detail)
    return build_scene(
        item,
        cfg.geometry,
        image_rng(seed, item.image_id),
        min_objects=cfg.min_objects,
        min_focal_px=cfg.depth.min_focal_px,
        max_focal_px=cfg.depth.max_focal_px,
    )


def finalize(out_dir: str | os.PathLike[str], n_shards: int) -> dict[str, Any]:
    """Write manifest.json over shards 0 .. n_shards - 1 (all must be complete); returns it.

    The manifest has no timestamps: the same shards give the same bytes.
    """
    out_dir = Path(out_dir)
    shards = []
    by_reason: Counter[str] = Counter()
    for index in range(n_shards):
        records, quarantine = records_path(out_dir, index), quarantine_path(out_dir, index)
        depth = depth_archive_path(out_dir, index)
        if not records.exists() or not quarantine.exists() or not depth.exists():
            raise FileNotFoundError(f"{out_dir}: shard {index} is not complete ({records.name} missing)")
        record_lines, quarantine_lines = nonblank_lines(records), nonblank_lines(quarantine)
        reasons = Counter(QuarantineRecord.from_json(line).reason for line in quarantine_lines)
        by_reason += reasons
        shards.append(
            {
                "index": index,
                "records": records.name,
                "records_sha256": sha256_file(records),
                "quarantine": quarantine.name,
                "quarantine_sha256": sha256_file(quarantine),
                "depth": depth.name,
                "depth_sha256": sha256_file(depth),
                "depth_bytes": depth.stat().st_size,
                "n_records": len(record_lines),
                "n_quarantined": len(quarantine_lines),
                "n_objects": sum(len(SceneRecord.from_json(line).objects) for line in record_lines),
                "by_reason": dict(sorted(reasons.items())),
            }
        )
    keys = ("n_records", "n_quarantined", "n_objects", "depth_bytes")
    totals = {key: sum(shard[key] for shard in shards) for key in keys}
    params_path = out_dir / PARAMS_NAME
    manifest = {
        "format": "spatialboost-scenes",
        "schema_version": SCHEMA_VERSION,
        "params": json.loads(params_path.read_text()) if params_path.exists() else None,
        "n_shards": n_shards,
        "shards": shards,
        "totals": {"n_images": totals["n_records"] + totals["n_quarantined"], **totals},
        "quarantine_by_reason": dict(sorted(by_reason.items())),
    }
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return manifest


def scene_shards(out_dir: str | os.PathLike[str]) -> ShardedOutput:
    """The extraction's output folder as shards.py's resumable shards."""
    return numbered_shards(out_dir, SHARD_SUFFIXES)


def extraction_params(cfg: SpatialBoostConfig, shards: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Everything that decides a shard's bytes besides its index: written to params.json."""
    return {
        "schema_version": SCHEMA_VERSION,
        "seed": cfg.seed,
        "backend": cfg.extract.backend,
        "data_uri": cfg.data.uri,
        "extract": cfg.extract.model_dump(mode="json", exclude=NOT_PARAMS),
        "shards_sha256": hashlib.sha256(json.dumps([list(shard) for shard in shards]).encode()).hexdigest(),
    }


def plan_extraction(cfg: SpatialBoostConfig, ids: Sequence[str]) -> list[list[str]]:
    """The shards of `ids`, with the output folder made safe to resume from (shards.py's rule:
    shards of other params, or past the plan, are removed)."""
    shards = plan_shards(ids, cfg.extract.shard_size)
    scene_shards(cfg.extract.output).prepare(range(len(shards)), extraction_params(cfg, shards))
    return shards


def extract_planned_shard(
    cfg: SpatialBoostConfig, index: int, ids: Sequence[str], observer: ObservationSource | None = None
) -> ShardReport | None:
    """Write shard `index` of the plan unless it is complete (resume: None).

    observer: default the one of this process (`shared_observer`), built from the config once.
    """
    if scene_shards(cfg.extract.output).is_complete(index):
        return None
    observer = observer or shared_observer(cfg.extract, cfg.data, cfg.device)
    return extract_shard(observer, ids, index, cfg.extract, cfg.extract.output, seed=cfg.seed)


def finish_extraction(
    cfg: SpatialBoostConfig, ids: Sequence[str], n_shards: int, observer: ObservationSource | None = None
) -> dict[str, Any]:
    """Write the manifest and cfg.extract.n_overlays sample overlays; returns the run's totals."""
    manifest = finalize(cfg.extract.output, n_shards)
    n_overlays = 0
    if cfg.extract.n_overlays > 0:
        observer = observer or shared_observer(cfg.extract, cfg.data, cfg.device)
        n_overlays = write_sample_overlays(observer, Path(cfg.extract.output), ids, n_shards, cfg.extract.n_overlays)
    return {**manifest["totals"], "quarantine_by_reason": manifest["quarantine_by_reason"], "n_overlays": n_overlays}


def extraction_accuracy(cfg: SpatialBoostConfig, split: str = "test") -> dict[str, Any]:
    """Pair distances, relations and ground-plane angles of `split` against the world's own truth."""
    from spatialboost.extract.accuracy import evaluate_dataset

    ids = RGBDDataset(cfg.data.uri).ids(split)
    return evaluate_dataset(cfg.data.uri, ids, cfg.extract.geometry, seed=cfg.seed, min_objects=cfg.extract.min_objects)


def extract_images(
    cfg: SpatialBoostConfig,
    ids: Sequence[str],
    observer: ObservationSource | None = None,
    *,
    run_shards: Callable[[list[list[str]]], list[ShardReport | None]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Every id into cfg.extract.output (resuming at the missing shards), then the manifest and the
    overlays; returns the counts.

    observer: default one per process, built from the config. run_shards: runs the planned shards,
    one report each (None = skipped as complete) in plan order: the flow submits one Prefect task
    per shard; default here, one after the other.
    """
    shards = plan_extraction(cfg, ids)
    if run_shards is None:
        planned = tqdm(list(enumerate(shards)), desc="extract", unit="shard", disable=not progress)
        reports = [extract_planned_shard(cfg, index, shard, observer) for index, shard in planned]
    else:
        reports = run_shards(shards)
    totals = finish_extraction(cfg, ids, len(shards), observer)
    return {
        "backend": cfg.extract.backend,
        **totals,
        "n_shards": len(shards),
        "n_shards_skipped": sum(report is None for report in reports),
    }


def extract_preflight(cfg: SpatialBoostConfig) -> str | None:
    """The user's mistakes, as one line, before the stage starts (None: ready): a source or a data
    manifest that is not there."""
    from spatialboost.data.sources import source_problem

    problem = cfg.data.watch_problem()
    if problem is None and not Path(cfg.data.manifest).is_file():
        problem = f"data.manifest: {cfg.data.manifest} does not exist (run the manifest stage first: dvc repro manifest)"
    return problem or source_problem(cfg.data)


def run_extract_stage(
    cfg: SpatialBoostConfig,
    *,
    run_shards: Callable[[list[list[str]]], list[ShardReport | None]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The `extract` stage, what `spatialboost extract` and flows/extract.py both run: the data
    manifest's images (extract_images), then, with ground truth at hand (data.source world), the
    test split measured against it. Returns metrics/extract.json."""
    start = time.perf_counter()
    metrics = extract_images(cfg, manifest_ids(cfg.data.manifest), run_shards=run_shards, progress=progress)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    if cfg.data.source == "world" and cfg.extract.backend == "ground_truth":
        metrics["accuracy"] = extraction_accuracy(cfg)
    return metrics


def overlay_sample(ids: Sequence[str], n: int) -> list[str]:
    """n ids spread evenly over `ids` (first and last included), in order."""
    if n <= 0 or not ids:
        return []
    if n >= len(ids):
        return list(ids)
    step = (len(ids) - 1) / max(n - 1, 1)
    return [ids[int(i * step + 0.5)] for i in range(n)]


def write_sample_overlays(observer: ObservationSource, out_dir: Path, ids: Sequence[str], n_shards: int, n: int) -> int:
    """overlays/<id>.png for an even sample of `n` recorded ids (quarantined ones have no boxes to
    draw); the sampled images are observed again. Returns how many were written."""
    from spatialboost.extract.overlay import write_overlay

    wanted = set(overlay_sample(ids, n * 4))  # some of the sample may be quarantined
    records: dict[str, SceneRecord] = {}
    for index in range(n_shards):
        for line in nonblank_lines(records_path(out_dir, index)):
            record = SceneRecord.from_json(line)
            if record.image_id in wanted:
                records[record.image_id] = record
    chosen = overlay_sample([image_id for image_id in ids if image_id in records], n)
    if not chosen:
        return 0
    folder = out_dir / OVERLAY_DIR
    folder.mkdir(exist_ok=True)
    remove_stale_temporaries(folder)
    written = 0
    for image_id, item in zip(chosen, observer.observe(chosen), strict=True):
        if isinstance(item, Observation):
            write_overlay(folder / f"{_file_name(image_id)}.png", item, records[image_id])
            written += 1
    return written


def _file_name(image_id: str) -> str:
    """An id as a file name: folder-source ids are relative paths ("sub/a.jpg")."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", image_id)
