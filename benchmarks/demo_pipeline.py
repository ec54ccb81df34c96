"""The README's first command from a fresh clone: venv + `dvc repro` of the whole demo, timed.

    python benchmarks/demo_pipeline.py                 # clones HEAD into a temporary folder
    python benchmarks/demo_pipeline.py --keep /tmp/x   # keep the clone (its venv, data, models)

Steps, each timed: `git clone` of this repository's HEAD; `bash scripts/setup.sh` (the venv:
what a first `bash scripts/demo.sh` spends before its first stage); `bash scripts/demo.sh` (the
pipeline through `python -m flows.pipeline`, one Prefect server); `bash scripts/demo.sh` again
(DVC finds nothing to do). Per stage: the wall time between the stage starts in the pipeline's
log (Prefect and DVC included) and the library time the stage's flow records in metrics/*.json.
Writes results/demo_pipeline.json and .md; the clone's metrics/evaluate.json goes in the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STAGE_START = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) .*Running stage '([\w-]+)'")
FINISHED = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) .*Task run 'dvc-repro-\w+' - Finished in state")


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    """Seconds `cmd` took; its output appended to `log`; raises when it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "VIRTUAL_ENV"}
    start = time.perf_counter()
    with open(log, "ab") as out:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True)
    return round(time.perf_counter() - start, 1)


def _seconds(match: re.Match[str]) -> float:
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])


def stage_walls(log_text: str) -> dict[str, float]:
    """Wall seconds per stage from the pipeline log: one stage's start to the next one's (the last
    stage to the end of `dvc repro`)."""
    starts = [(m[4], _seconds(m)) for m in map(STAGE_START.match, log_text.splitlines()) if m]
    ends = [_seconds(m) for m in map(FINISHED.match, log_text.splitlines()) if m]
    if not starts or not ends:
        return {}
    bounds = [t for _, t in starts[1:]] + [ends[-1]]
    return {name: round((end - begin) % 86400, 1) for (name, begin), end in zip(starts, bounds, strict=True)}


def library_seconds(clone: Path) -> dict[str, float | None]:
    """The seconds each stage's flow recorded for its library work (metrics/<stage>.json)."""
    out = {}
    for path in sorted((clone / "metrics").glob("*.json")):
        record = json.loads(path.read_text())
        out[path.stem] = record.get("wall_s", record.get("seconds"))
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# The demo pipeline from a fresh clone",
        "",
        f"{r['date']}, {r['machine']['platform']}, {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, "
        f"commit {r['commit']}. Command: `python benchmarks/demo_pipeline.py` (git clone, then the README's "
        "`bash scripts/demo.sh`, then the same again).",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| **total: venv + the whole pipeline** | **{r['wall_s_total_including_venv']}** "
        f"({r['wall_s_total_including_venv'] / 60:.1f} min) |",
        f"| venv creation and install (`scripts/setup.sh`) | {r['setup_s']} |",
        f"| `bash scripts/demo.sh` (one Prefect server, `dvc repro` of every stage) | {r['pipeline_s']} |",
        f"| second `bash scripts/demo.sh` (nothing to do) | {r['second_run_s']} |",
        "",
        "| stage | wall s (log, Prefect + DVC included) | library s (the flow's own timer) |",
        "|---|---|---|",
    ]
    for stage, wall in r["stage_wall_s"].items():
        lines.append(f"| {stage} | {wall} | {r['stage_library_s'].get(stage) or '-'} |")
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="clone here and keep it (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="spatialboost-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    clone, log = folder / "spatialboost", folder / "demo.log"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        clone_s = timed(["git", "clone", "--quiet", str(REPO), str(clone)], folder, log)
        setup_s = timed(["bash", "scripts/setup.sh"], clone, log)
        pipeline_log = folder / "pipeline.log"
        pipeline_s = timed(["bash", "scripts/demo.sh"], clone, pipeline_log)
        second_s = timed(["bash", "scripts/demo.sh"], clone, log)
        library_s = library_seconds(clone)
        result = {
            "benchmark": "demo_pipeline_fresh_clone",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": commit,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "clone_s": clone_s,
            "setup_s": setup_s,
            "pipeline_s": pipeline_s,
            "wall_s_total_including_venv": round(setup_s + pipeline_s, 1),
            "second_run_s": second_s,
            "stage_wall_s": stage_walls(pipeline_log.read_text(errors="replace")),
            "stage_library_s": library_s,
            "stage_compute_s_inside_flows": library_s,  # the key benchmarks/prefect_overhead.py reads
            "evaluate": json.loads((clone / "metrics" / "evaluate.json").read_text()),
        }
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "demo_pipeline.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
