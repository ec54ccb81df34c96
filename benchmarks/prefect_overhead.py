"""Prefect's own cost per DVC stage: ephemeral API per stage vs one `prefect server` for the run.

    .venv/bin/python benchmarks/prefect_overhead.py     # writes benchmarks/results/prefect_overhead.{json,md}

Everything runs in a temporary copy of this working tree (git clone + the uncommitted changes),
so the repository's own data/, metrics/ and .prefect/ are never touched. Measured, each as a
fresh process the way `dvc repro` starts a stage, on the `world` stage with a few images:

  library    `python -m spatialboost.cli world render` (config + the library call, no Prefect)
  ephemeral  `python -m flows.world`, no PREFECT_API_URL: Prefect starts a temporary API server
  server     `python -m flows.world` against one running `prefect server` (PREFECT_API_URL set)

and, once each, a 4-stage `dvc repro synthesize` (world, manifest, extract, synthesize) both
ways, the second inside flows.pipeline.prefect_api() (server start-up included), and
`python -m flows.pipeline` on a one-stage repo (its fixed cost: server start-up + the pipeline's
own flow run). Best of --repeats per single-stage measurement: a shared machine only slows runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
DEMO_STAGES = ("world", "manifest", "extract", "synthesize", "bootstrap", "train", "evaluate", "register")


def working_tree_copy(dest: Path) -> Path:
    """A git clone of REPO with the working tree's uncommitted changes (and new files) on top."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source, target = REPO / name, dest / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():  # deleted in the working tree
            target.unlink()
    return dest


def small_params(clone: Path, n_train: int) -> None:
    """Shrink the demo's first stages so that one run costs seconds of library work."""
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["world"].update(n_train=n_train, n_test=max(1, n_train // 4), shard_size=max(1, n_train // 2))
    params["extract"].update(shard_size=max(1, n_train // 2), n_overlays=1)
    params["synthesize"].update(shard_size=max(1, n_train // 2), n_renderings=1)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stage_env(clone: Path, api_url: str | None) -> dict[str, str]:
    """The environment scripts/env.sh gives a stage, inside the clone; PREFECT_API_URL only if given."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{clone / 'src'}{os.pathsep}{clone}",  # the clone's code, not the editable install's
        PREFECT_HOME=str(clone / ".prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_LOGGING_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of one command; raises with its output tail when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return round(seconds, 2)


def world_stage(clone: Path, how: str, api_url: str | None) -> float:
    """One fresh `world` run (its output removed first) the `how` way."""
    shutil.rmtree(clone / "data" / "world", ignore_errors=True)
    if how == "library":
        cmd = [sys.executable, "-m", "spatialboost.cli", "world", "render", "--no-progress"]
    else:
        cmd = [sys.executable, "-m", "flows.world"]
    return timed(cmd, clone, stage_env(clone, api_url if how == "server" else None))


def dag(clone: Path, api_url: str | None) -> float:
    """`dvc repro --force synthesize` from nothing: 4 stages, each its own `python -m flows.<stage>`
    (forced, or the second run would restore every output from DVC's cache instead of running)."""
    for name in ("data", "metrics"):
        shutil.rmtree(clone / name, ignore_errors=True)
    cmd = [str(BIN / "dvc"), "repro", "--force", "synthesize"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=clone, env=stage_env(clone, api_url), capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 2)
    ran = [stage for stage in DEMO_STAGES[:4] if f"Running stage '{stage}'" in proc.stdout]
    if proc.returncode != 0 or len(ran) != 4:
        raise RuntimeError(f"{' '.join(cmd)} ran {ran}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds


def fresh_server_startup(home: Path) -> float:
    """Seconds until a `prefect server` on an empty PREFECT_HOME is healthy (database created)."""
    from flows.pipeline import _free_port, _stop, _wait_healthy

    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/api", server, timeout=180)
        return round(time.perf_counter() - start, 2)
    finally:
        _stop(server)


def one_stage_repo(root: Path) -> Path:
    """A DVC repo with one stage that does not use Prefect: `python -m flows.pipeline` on it costs
    exactly the server start-up, the pipeline's own flow run and a `dvc repro`."""
    repo = root / "one-stage"
    repo.mkdir()
    (repo / "params.yaml").write_text("noop:\n  n: 1\n")
    stage = {"cmd": "python -c \"open('out.txt', 'w').write('ok')\"", "params": ["noop"], "outs": ["out.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"noop": stage}}))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
        [*git, "commit", "-qm", "x"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return repo


def demo_reference() -> dict[str, Any]:
    """The fresh-clone demo's measured total and stage seconds (benchmarks/results/demo_pipeline.json,
    the flows' own timers), and the stage seconds of the working tree's latest run (metrics/*.json)."""
    demo = json.loads((RESULTS / "demo_pipeline.json").read_text())
    stage_s = demo["stage_compute_s_inside_flows"]
    latest: dict[str, float | None] = {}
    for stage in DEMO_STAGES:
        path = REPO / "metrics" / f"{stage}.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        latest[stage] = record.get("wall_s", record.get("seconds"))
    return {
        "stage_compute_s": stage_s,
        "timed_compute_s": round(sum(v for v in stage_s.values() if v), 1),
        "fresh_clone_total_s": demo["wall_s_total_including_venv"],
        "fresh_clone_date": demo["date"],
        "working_tree_metrics_s": latest,
    }


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or platform.machine())  # fmt: skip
    import prefect

    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    clone = working_tree_copy(work / "repo")
    small_params(clone, args.n_train)
    # prefect_api() reads PREFECT_HOME of this process: point it into the clone before importing prefect.
    os.environ.update(PREFECT_HOME=str(clone / ".prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(REPO))
    from flows.pipeline import prefect_api

    fresh_startup = fresh_server_startup(work / "fresh-prefect-home")
    print(f"prefect server on an empty PREFECT_HOME healthy after {fresh_startup} s", flush=True)
    runs: dict[str, list[float]] = {"library": [], "ephemeral": [], "server": []}
    world_stage(clone, "library", None)  # warm the page cache and the .pyc files
    for how in ("library", "ephemeral"):
        for _ in range(args.repeats):
            runs[how].append(world_stage(clone, how, None))
            print(f"world via {how}: {runs[how][-1]} s", flush=True)
    dag_s: dict[str, float] = {}
    if args.dag:
        dag_s["ephemeral"] = dag(clone, None)
        print(f"dvc repro synthesize, ephemeral API per stage: {dag_s['ephemeral']} s", flush=True)
    start = time.perf_counter()
    with prefect_api() as api_url:
        startup = round(time.perf_counter() - start, 2)
        print(f"prefect server healthy after {startup} s", flush=True)
        for _ in range(args.repeats):
            runs["server"].append(world_stage(clone, "server", api_url))
            print(f"world via server: {runs['server'][-1]} s", flush=True)
        if args.dag:
            dag_s["server_stages"] = dag(clone, api_url)
    if args.dag:
        dag_s["server_total"] = round(dag_s["server_stages"] + startup, 2)
        print(f"dvc repro synthesize, one server: {dag_s['server_total']} s ({startup} s start-up)", flush=True)
    env = stage_env(clone, None)
    pipeline_s = timed([sys.executable, "-m", "flows.pipeline", "--no-push", "--repo", str(one_stage_repo(work))],
                       clone, env)  # fmt: skip
    print(f"python -m flows.pipeline on a one-stage repo: {pipeline_s} s", flush=True)

    best = {how: min(values) for how, values in runs.items()}
    ephemeral_overhead = round(best["ephemeral"] - best["library"], 2)
    server_overhead = round(best["server"] - best["library"], 2)
    demo = demo_reference()
    n = len(DEMO_STAGES)
    saved = round(n * (ephemeral_overhead - server_overhead) - pipeline_s, 1)
    return {
        "stage": f"world, {args.n_train} train + {max(1, args.n_train // 4)} test images",
        "repeats": args.repeats,
        "runs_s": runs,
        "best_s": best,
        "median_s": {how: statistics.median(values) for how, values in runs.items()},
        "per_stage_overhead_s": {"ephemeral": ephemeral_overhead, "server": server_overhead},
        "server_startup_s": startup,
        "server_startup_empty_home_s": fresh_startup,
        "pipeline_fixed_cost_s": pipeline_s,
        "dag_4_stages_s": dag_s,
        "demo": demo,
        "projection_8_stages": {
            "ephemeral_overhead_s": round(n * ephemeral_overhead, 1),
            "server_overhead_s": round(n * server_overhead + pipeline_s, 1),
            "saved_s": saved,
            "ephemeral_share_of_fresh_clone_total": round(n * ephemeral_overhead / demo["fresh_clone_total_s"], 3),
            "ephemeral_share_of_compute_plus_overhead": round(
                n * ephemeral_overhead / (demo["timed_compute_s"] + n * ephemeral_overhead), 3
            ),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    m, r = result["machine"], result["result"]
    p, d = r["projection_8_stages"], r["demo"]
    dag_s = r["dag_4_stages_s"]
    lines = [
        "# Prefect's own cost per DVC stage",
        "",
        f"{result['date']}, {m['platform']}, {m['cpu_count']} CPUs ({m['cpu_model']}; 1-min load "
        f"{m['load_average_1min']} at start), Python {m['python']}, Prefect {m['prefect']}.",
        f"Command: `{result['command']}` (a temporary clone of the working tree; nothing in the repository is touched).",
        f"Stage measured: {r['stage']}, each run a fresh process as `dvc repro` starts it; best of {r['repeats']} "
        "(all runs in the JSON).",
        "",
        "| how the stage runs | wall s (best) | median | Prefect's cost over the library call |",
        "|---|---|---|---|",
        f"| library only (`python -m spatialboost.cli world render`) | {r['best_s']['library']} "
        f"| {r['median_s']['library']} | - |",
        f"| flow, ephemeral API (no PREFECT_API_URL: today's `dvc repro`) | {r['best_s']['ephemeral']} "
        f"| {r['median_s']['ephemeral']} | {r['per_stage_overhead_s']['ephemeral']} |",
        f"| flow, one running `prefect server` (PREFECT_API_URL) | {r['best_s']['server']} "
        f"| {r['median_s']['server']} | {r['per_stage_overhead_s']['server']} |",
        "",
        f"`prefect server` start-up (healthy): {r['server_startup_s']} s on the existing database, "
        f"{r['server_startup_empty_home_s']} s on an empty PREFECT_HOME (creates and migrates the database; a "
        "fresh clone's first ephemeral API pays the same). `python -m flows.pipeline` on a one-stage repo (server "
        f"start-up + the pipeline's own flow run + `dvc repro` + stop): {r['pipeline_fixed_cost_s']} s.",
    ]
    if dag_s:
        lines += [
            "",
            f"Measured on 4 stages (`dvc repro --force synthesize` from nothing: world, manifest, extract, synthesize): "
            f"{dag_s['ephemeral']} s with an ephemeral API per stage, {dag_s['server_total']} s with one server "
            f"({r['server_startup_s']} s of it start-up).",
        ]
    compute = ", ".join(f"{k} {v}" for k, v in d["stage_compute_s"].items() if v)
    lines += [
        "",
        "## Projection for the 8-stage demo",
        "",
        f"The fresh-clone demo (benchmarks/results/demo_pipeline.json, {d['fresh_clone_date']}) took "
        f"{d['fresh_clone_total_s']} s including the venv (about 5-6 min of it); its stages timed by their flows: "
        f"{compute}; sum {d['timed_compute_s']} s (manifest, evaluate and register record no timer; the "
        "working tree's latest metrics/*.json are in the JSON).",
        "",
        f"- ephemeral API per stage: 8 x {r['per_stage_overhead_s']['ephemeral']} = {p['ephemeral_overhead_s']} s of "
        f"Prefect overhead, {p['ephemeral_share_of_fresh_clone_total']:.0%} of the fresh-clone total and "
        f"{p['ephemeral_share_of_compute_plus_overhead']:.0%} of (timed compute + that overhead);",
        f"- one server for the run (`python -m flows.pipeline`): 8 x {r['per_stage_overhead_s']['server']} + "
        f"{r['pipeline_fixed_cost_s']} = {p['server_overhead_s']} s;",
        f"- saved per demo run: about {p['saved_s']} s.",
        "",
        result["verdict"],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per single-stage measurement; the best is kept")
    parser.add_argument("--n-train", type=int, default=8, help="world train images of the measured stage")
    parser.add_argument("--no-dag", dest="dag", action="store_false", help="skip the 4-stage `dvc repro` runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="prefect-overhead-") as work:
        result = measure(args, Path(work))
    saved = result["projection_8_stages"]["saved_s"]
    verdict = (
        f"Verdict: one server for the whole run is faster by about {saved} s per demo run; "
        "scripts/demo.sh runs the demo through `python -m flows.pipeline`."
        if saved > 0
        else f"Verdict: one server costs {-saved} s more than the ephemeral APIs it replaces; "
        "scripts/demo.sh keeps plain `dvc repro`."
    )
    record = {
        "benchmark": "prefect_overhead",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/prefect_overhead.py", *sys.argv[1:]]),
        "machine": info,
        "result": result,
        "verdict": verdict,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefect_overhead.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "prefect_overhead.md").write_text(markdown(record))
    print(verdict)


if __name__ == "__main__":
    main()
