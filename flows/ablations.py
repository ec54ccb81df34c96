"""Ablations: every variant of a set is one `dvc exp run -S key=value` of the whole pipeline
(only the stages the change reaches rerun), then one comparison table per set.

    python -m flows.ablations                          # every set in params.yaml `ablations.sets`
    python -m flows.ablations --only turn_order        # one set (repeatable)
    python -m flows.ablations --list                   # the variants, without running them
    python -m flows.ablations --fresh                  # rerun variants that already have an experiment

Reports go to `ablations.output` (<set>.md / .json / .png). Each variant is also a DVC
experiment (`dvc exp show`) and an MLflow run of the `register` stage (no encoder version is
registered: `ablations.common` sets registry.enabled=false). One `prefect server` serves the
runner and every stage (flows/pipeline.py `prefect_api`). The workspace (params.yaml,
dvc.lock, the metrics files and the outputs) is put back as it was when the set ends, errors
and Ctrl-C included.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger

from flows.pipeline import prefect_api
from spatialboost.config import ConfigError, apply_overrides, load_config
from spatialboost.evaluate.ablations import VariantResult, variants, write_ablation_report
from tasks.ablations import exp_run, finished_experiments, restore_files, restore_workspace, snapshot_files

REPO = Path(__file__).resolve().parents[1]


@flow(name="ablations")
def ablations_flow(
    only: list[str] | None = None, params: str = "params.yaml", repo: str = str(REPO), fresh: bool = False
) -> dict[str, Any]:
    """Run the variants of the chosen sets one after another; returns {set: report paths}.

    A variant with a finished DVC experiment of the same name and exactly its params is not run
    again (an interrupted set resumes); fresh=True runs every variant. A failed variant is
    reported with its error and the set goes on.
    """
    logger = get_run_logger()
    cfg = load_config(Path(repo) / params)
    todo = variants(cfg, only)
    metrics_dir = cfg.orchestration.metrics_dir
    tracked = [params, "dvc.lock", *sorted(str(p.relative_to(repo)) for p in (Path(repo) / metrics_dir).glob("*.json"))]
    snapshot = snapshot_files(repo, tracked)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    earlier = [] if fresh else finished_experiments(repo)
    raw = yaml.safe_load(snapshot[params] or b"") or {}
    results: dict[str, list[VariantResult]] = {}
    try:
        for i, variant in enumerate(todo, 1):
            expected = apply_overrides(raw, list(variant.overrides))
            done = next(
                (
                    e
                    for e in earlier
                    if e["name"].startswith(f"{variant.exp_name}-")
                    and e["params"] == expected
                    and e["metrics"].get("evaluate")
                    and e["metrics"].get("train")
                ),
                None,
            )
            if done is not None:
                logger.info("variant %d/%d: %s: reusing experiment %s", i, len(todo), variant.label, done["name"])
                metrics = done["metrics"]
            else:
                logger.info("variant %d/%d: %s", i, len(todo), " ".join(variant.overrides))
                restore_files(repo, {params: snapshot[params]})  # -S edits params.yaml: each variant starts from the original
                try:
                    metrics = exp_run(repo, list(variant.overrides), f"{variant.exp_name}-{stamp}", metrics_dir)
                except RuntimeError as err:  # one failed variant is a row of the table, not the end of the set
                    logger.error("variant %s failed: %s", variant.label, err)
                    results.setdefault(variant.set_name, []).append(VariantResult(variant, {}, {}, error=_last_line(err)))
                    continue
            results.setdefault(variant.set_name, []).append(VariantResult(variant, metrics["evaluate"], metrics["train"]))
    finally:
        restore_workspace(repo, snapshot)
    out = Path(repo) / cfg.ablations.output
    return {name: {k: str(v) for k, v in write_ablation_report(rows, out).items()} for name, rows in results.items()}


def _last_line(err: Exception) -> str:
    """The stage's exception line (e.g. "ValueError: ...") if the output has one, else its last line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b:?", line) and not line.startswith("ERROR")]
    return (raised or lines or [type(err).__name__])[-1][:300]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--only", action="append", default=None, metavar="SET", help="run only this set (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--fresh", action="store_true", help="rerun variants that already have a finished experiment")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(REPO / args.params)
        todo = variants(cfg, args.only)
    except (ConfigError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    if args.list:
        for v in todo:
            print(f"{v.set_name:12s} dvc exp run {' '.join(f'-S {o}' for o in v.overrides)}")
        return
    with prefect_api():  # one Prefect server for the runner and every stage of every variant
        reports = ablations_flow(only=args.only, params=args.params, fresh=args.fresh)
    for name, paths in reports.items():
        print(f"{name}: {paths['md']}")


if __name__ == "__main__":
    main()
