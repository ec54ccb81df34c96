"""Build the manifest (one line per readable image) and the quarantine list (one per rejected file).

Every ref the source lists ends up in exactly one of the two files, so
n_ok + n_quarantined == number of refs; a bad file never stops the run. What the source does
not list (a file outside `data.extensions`, a symlinked folder) is counted by reason in
`skipped`. Both files are written to a temporary name beside the target and renamed into
place, so a crash never leaves a partial manifest behind, and a run first removes the
temporaries a killed run left (`.manifest.jsonl.<pid>.tmp`, as the shard writers do).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialboost.config import DataConfig
from spatialboost.data.decode import decode_image
from spatialboost.data.records import BadImage, ImageLimits, ImageRef, ManifestEntry, QuarantineEntry, Reason
from spatialboost.data.sources import ImageSource, open_source
from spatialboost.io import open_text_atomic, remove_stale_temporaries_of


@dataclass(frozen=True)
class ManifestReport:
    """Counts of one manifest run; by_reason maps a quarantine reason code to its count,
    skipped a reason the source did not list a file to its count."""

    n_ok: int
    n_quarantined: int
    by_reason: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_total(self) -> int:
        return self.n_ok + self.n_quarantined

    def as_dict(self) -> dict[str, Any]:
        """Plain counts, as written to metrics/manifest.json."""
        return {"n_ok": self.n_ok, "n_quarantined": self.n_quarantined, "n_total": self.n_total,
                "by_reason": dict(self.by_reason), "n_skipped": sum(self.skipped.values()),
                "skipped_by_reason": dict(self.skipped)}


def inspect_ref(source: ImageSource, ref: ImageRef, limits: ImageLimits) -> ManifestEntry | QuarantineEntry:
    """Read, hash and fully decode one ref; the manifest line or the quarantine line it earns."""
    if ref.size is not None and ref.size > limits.max_file_bytes:
        # Listed size already too large: do not download it.
        detail = f"{ref.size} bytes > max_file_bytes {limits.max_file_bytes}"
        return QuarantineEntry(ref.id, ref.uri, Reason.FILE_TOO_LARGE.value, detail, sha256=None, size=ref.size)
    try:
        data = source.read_bytes(ref, max_bytes=limits.max_file_bytes)
    except BadImage as bad:
        return QuarantineEntry(ref.id, ref.uri, bad.reason.value, bad.detail, sha256=None, size=ref.size)
    digest = hashlib.sha256(data).hexdigest()
    try:
        pixels = decode_image(data, limits)  # (H, W, 3) uint8
    except BadImage as bad:
        return QuarantineEntry(ref.id, ref.uri, bad.reason.value, bad.detail, sha256=digest, size=len(data))
    height, width = pixels.shape[:2]
    return ManifestEntry(ref.id, ref.uri, digest, len(data), width=width, height=height)


def build_manifest(
    source: ImageSource,
    limits: ImageLimits,
    manifest_path: str | os.PathLike[str],
    quarantine_path: str | os.PathLike[str],
    progress: bool = True,
) -> ManifestReport:
    """Inspect every ref of `source`; write manifest and quarantine JSONL atomically; return counts."""
    by_reason: Counter[str] = Counter()
    n_ok = 0
    for path in (manifest_path, quarantine_path):
        remove_stale_temporaries_of(path)
    with open_text_atomic(Path(manifest_path)) as manifest, open_text_atomic(Path(quarantine_path)) as quarantine:
        for ref in tqdm(source.refs(), desc="manifest", unit="img", disable=not progress):
            entry = inspect_ref(source, ref, limits)
            if isinstance(entry, ManifestEntry):
                manifest.write(entry.to_json() + "\n")
                n_ok += 1
            else:
                quarantine.write(entry.to_json() + "\n")
                by_reason[entry.reason] += 1
    return ManifestReport(
        n_ok=n_ok,
        n_quarantined=sum(by_reason.values()),
        by_reason=dict(sorted(by_reason.items())),
        skipped=dict(getattr(source, "skipped", {})),
    )


def run_manifest_stage(cfg: DataConfig, progress: bool = False) -> dict[str, Any]:
    """The `manifest` stage, what `spatialboost data manifest` and flows/manifest.py both run:
    data.manifest and data.quarantine written; returns metrics/manifest.json."""
    return build_manifest_for(cfg, progress).as_dict()


def manifest_preflight(cfg: DataConfig) -> str | None:
    """The user's mistakes, as one line, before the stage starts (None: ready)."""
    from spatialboost.data.sources import source_problem

    return cfg.watch_problem() or source_problem(cfg)


def build_manifest_for(cfg: DataConfig, progress: bool = True) -> ManifestReport:
    """The manifest stage's entry point: `build_manifest` over the source and limits `cfg` names."""
    return build_manifest(open_source(cfg), ImageLimits.from_config(cfg), cfg.manifest, cfg.quarantine, progress)


def read_manifest(path: str | os.PathLike[str]) -> list[ManifestEntry]:
    """The entries of a manifest file, in order."""
    with open(path, encoding="utf-8") as handle:
        return [ManifestEntry.from_json(line) for line in handle if line.strip()]


def read_quarantine(path: str | os.PathLike[str]) -> list[QuarantineEntry]:
    """The entries of a quarantine file, in order."""
    with open(path, encoding="utf-8") as handle:
        return [QuarantineEntry.from_json(line) for line in handle if line.strip()]
