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
import stat
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


class NotARegularFile(OSError):
    """A path that names a directory, FIFO, socket or device instead of a file; `kind` says which."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(f"{os.fspath(path)}: a {kind}, not a regular file")
        self.filename, self.kind = os.fspath(path), kind


class FileTooLarge(OSError):
    """A file with more than the allowed bytes (only max_bytes + 1 of them were read)."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        super().__init__(f"{os.fspath(path)}: more than {max_bytes} bytes")
        self.filename, self.max_bytes = os.fspath(path), max_bytes


def file_kind(mode: int) -> str:
    """What an st_mode is, in words ("regular file", "FIFO", "socket", ...)."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):  # fmt: skip
        if test(mode):
            return name
    return "special file"


def read_regular_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file (symlinks followed), at most max_bytes of them.

    Never blocks on a FIFO or a device: the path is opened non-blocking and checked with fstat
    on the open descriptor (no race between a check and the open) before a byte is read.
    Raises NotARegularFile, FileTooLarge (past max_bytes), or the OSError of the open.
    """
    mode = os.stat(path).st_mode  # a socket cannot even be opened: say what it is
    if not stat.S_ISREG(mode):
        raise NotARegularFile(path, file_kind(mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, file_kind(mode))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLarge(path, max_bytes)
    return data


def remove_stale_temporaries_of(path: str | os.PathLike[str]) -> int:
    """Delete the temporaries of one file (`.<name>.<pid>.tmp` beside it) whose writer process is
    gone; returns how many. Safe beside a live writer, unlike `remove_stale_temporaries`."""
    path = Path(path)
    removed = 0
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid_text = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _process_alive(int(pid_text)):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def glob_escape(name: str) -> str:
    """`name` with glob's special characters made literal."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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


def write_stage_metrics(metrics_dir: str | os.PathLike[str], stage: str, metrics: dict[str, Any]) -> Path:
    """`metrics` as `<metrics_dir>/<stage>.json` (atomically): the stage's DVC metrics file, written
    the same by its flow and by its `spatialboost` command."""
    path = Path(metrics_dir) / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, metrics)
    return path
