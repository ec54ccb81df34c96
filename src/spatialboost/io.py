"""Atomic file writes: the one way the pipeline puts an artefact on disk.

A file is written under a temporary name in its own folder and renamed into place
(`os.replace` is atomic on POSIX within a file system), so a killed process never leaves a
partial file under the final name. Crash leftovers are named `.<name>.<pid>.tmp` and are
removed by `remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(fileobj)` under a temporary name, then rename it into place.

    Protects readers from partial files after a crashed process (not from power loss: no fsync).
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace `path` with `data`."""
    write_atomic(path, lambda f: f.write(data))


def write_json_atomic(path: str | os.PathLike[str], record: Any) -> None:
    """Atomically write `record` as indented JSON with a trailing newline (stable bytes)."""
    write_bytes_atomic(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())


@contextlib.contextmanager
def open_text_atomic(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """A text file handle whose content appears at `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete temporaries a crashed writer left in `folder`; returns how many."""
    stale = list(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def nonblank_lines(path: str | os.PathLike[str]) -> list[str]:
    """The non-blank lines of a UTF-8 text file (JSONL records), newlines kept."""
    with open(path, encoding="utf-8") as handle:
        return [line for line in handle if line.strip()]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
