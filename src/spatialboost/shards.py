"""The resumable output of a fan-out stage (world, extract, synthesize): one protocol, one rule.

A stage writes its output folder as *units* (an image of the world, a shard of scene records, a
shard of conversations), each a few files written atomically (spatialboost.io), one of them the
unit's marker, renamed into place last. The rule is the same for every stage:

1. `prepare(planned)` runs once, before any unit is written: it removes crash temporaries and the
   old manifest; when `params.json` differs from this run's params (everything that decides a
   unit's bytes besides its name), every unit on disk is stale and removed, and so is every unit
   the plan no longer has; then it writes `params.json`.
2. A unit is complete when its marker exists: a rerun skips it (resume) and writes the others whole.
3. The stage writes its manifest last, once every planned unit is complete.

Each unit's bytes depend only on the params and the unit, so a resumed run, or units written by
other workers in any order, give the same bytes as one uninterrupted run.

    out = numbered_shards(root, suffixes=(".quarantine.jsonl", ".jsonl"))   # the marker last
    out.prepare(range(n_shards), params)
    todo = [i for i in range(n_shards) if not out.is_complete(i)]
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialboost.io import remove_stale_temporaries, write_json_atomic

PARAMS_NAME = "params.json"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ShardedOutput:
    """A stage's output folder of resumable units (see the module docstring): its layout.

    unit_files: the files of a unit, its marker last. on_disk: every unit file present under the
    root, as (unit, path). manifests: what the stage writes last (removed by `prepare`). folders:
    sub-folders the units' files live in (created; their crash temporaries removed).
    """

    root: Path
    unit_files: Callable[[Any], tuple[Path, ...]]
    on_disk: Callable[[Path], Iterator[tuple[Hashable, Path]]]
    manifests: tuple[str, ...] = (MANIFEST_NAME,)
    folders: tuple[str, ...] = ()

    def prepare(self, planned: Iterable[Hashable], params: dict[str, Any]) -> None:
        """Make the folder safe to resume from (rule 1) for a run of `params`; write params.json."""
        for folder in (self.root, *(self.root / name for name in self.folders)):
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder)
        for name in self.manifests:
            (self.root / name).unlink(missing_ok=True)
        keep = set(planned) if self.recorded_params() == params else set()
        for unit, path in list(self.on_disk(self.root)):
            if unit not in keep:
                path.unlink()
        write_json_atomic(self.root / PARAMS_NAME, params)

    def is_complete(self, unit: Hashable) -> bool:
        """Rule 2: the unit's marker (its last file) exists."""
        return self.unit_files(unit)[-1].exists()

    def recorded_params(self) -> dict[str, Any] | None:
        """The params the units on disk were made with (params.json), or None."""
        path = self.root / PARAMS_NAME
        return json.loads(path.read_text()) if path.is_file() else None


def numbered_shards(root: str | Path, suffixes: Sequence[str]) -> ShardedOutput:
    """Units numbered 0, 1, ...: shard `i` is the files shard-<i:05d><suffix> in `root`, one per
    suffix, the last suffix the marker (extract: records, synthesize: the typed sidecar)."""
    root = Path(root)
    pattern = re.compile(r"^shard-(\d{5})(" + "|".join(re.escape(s) for s in suffixes) + r")$")

    def unit_files(index: int) -> tuple[Path, ...]:
        return tuple(root / f"shard-{index:05d}{suffix}" for suffix in suffixes)

    def on_disk(folder: Path) -> Iterator[tuple[Hashable, Path]]:
        for path in sorted(folder.glob("shard-*")):
            match = pattern.match(path.name)
            if match:
                yield int(match.group(1)), path

    return ShardedOutput(root, unit_files, on_disk)
