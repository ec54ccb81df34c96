"""The scheduled pipeline: `dvc repro` (or `dvc exp run -S ...`) in the repository, then
`dvc push` when a remote is configured. Each DVC stage runs its own flow, which shows up in
Prefect as its own run.

    python -m flows.pipeline                       # run once, now
    python -m flows.pipeline --serve               # create the deployment and serve it (cron)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow

from spatialboost.config import load_config
from tasks.dvc import dvc_push, dvc_repro

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "scheduled"


@flow(name="spatialboost-pipeline")
def pipeline_flow(overrides: list[str] | None = None, push: bool = True, repo: str = str(REPO)) -> dict[str, Any]:
    """Reproduce the pipeline with params overrides (`section.key=value`), then push outputs."""
    output = dvc_repro(repo, list(overrides or []))
    pushed = dvc_push(repo) if push else False
    return {"pushed": pushed, "reproduced": "up to date" not in output.lower(), "overrides": list(overrides or [])}


def serve(cron: str, overrides: list[str] | None = None) -> None:
    """Create (or update) the `spatialboost-pipeline/scheduled` deployment and run its schedule."""
    pipeline_flow.serve(
        name=DEPLOYMENT,
        cron=cron,
        parameters={"overrides": list(overrides or []), "push": True},
        description="SpatialBoost end to end through DVC; trigger from the Prefect UI with overrides.",
        tags=["spatialboost"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="serve the scheduled deployment instead of running once")
    parser.add_argument("--params", default="params.yaml", help="params file whose orchestration.schedule_cron is used")
    parser.add_argument("--cron", default=None, help="schedule of the deployment (default: orchestration.schedule_cron)")
    parser.add_argument("--set", "-S", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="params override passed to `dvc exp run -S` (repeatable)")
    parser.add_argument("--no-push", action="store_true", help="do not push to the DVC remote")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.cron or load_config(args.params).orchestration.schedule_cron, args.overrides)
    else:
        pipeline_flow(overrides=args.overrides, push=not args.no_push)


if __name__ == "__main__":
    main()
