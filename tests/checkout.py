"""A fresh clone of this checkout for tests that run `dvc repro` in a temporary repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_checkout(dest: Path) -> None:
    """What a fresh clone holds: this checkout's tracked files as they are in the work tree,
    without the demo's results (its lock, params, metrics and reports) and DVC's own folder.
    Every stage dependency comes along (a new one, such as releases/, needs no test change)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if name.split("/")[0] in {".dvc", "metrics", "reports"} or name in {"dvc.lock", "params.yaml"}:
            continue
        if (ROOT / name).is_file():  # not deleted in the work tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
