"""What every stage entry point shares: argument parsing, the task runner, the metrics file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.settings import get_current_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from spatialboost.config import ConfigError, OrchestrationConfig, load_config

NEEDS_SERVER = (
    "orchestration.task_runner={runner} runs tasks in worker processes, which need a running Prefect server "
    "(under the ephemeral API each worker would start its own and leave it behind). Run the pipeline with "
    "`python -m flows.pipeline` (it starts one server for every stage), or start one with "
    "`prefect server start --host 127.0.0.1 --port 4200` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


class RunnerUnavailable(RuntimeError):
    """The configured task runner cannot be built here (a missing extra, or no Prefect server)."""


def task_runner(cfg: OrchestrationConfig) -> TaskRunner[Any]:
    """The Prefect task runner `orchestration` asks for; Dask and Ray are imported only when asked for.

    A local cluster gets `max_workers` single-threaded worker processes: the shard tasks are
    CPU-bound Python, so processes (not threads) are what run them in parallel.
    """
    if cfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    if cfg.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as err:
            raise RunnerUnavailable(
                f"orchestration.task_runner=dask needs the `dask` extra (prefect-dask): pip install -e '.[dask]' ({err})"
            ) from None
        if cfg.address:
            return DaskTaskRunner(address=cfg.address)
        # No dashboard: every run would try to bind port 8787, which another run may hold.
        cluster = {"n_workers": cfg.max_workers, "processes": True, "threads_per_worker": 1, "dashboard_address": None}
        return DaskTaskRunner(cluster_kwargs=cluster)
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as err:
        raise RunnerUnavailable(
            f"orchestration.task_runner=ray needs the `ray` extra (prefect-ray + ray, about 240 MB): "
            f"pip install -e '.[ray]' ({err})"
        ) from None
    if cfg.address:
        return RayTaskRunner(address=cfg.address)
    return RayTaskRunner(init_kwargs={"num_cpus": cfg.max_workers})


def require_prefect_server(cfg: OrchestrationConfig) -> None:
    """Dask and Ray workers must report to a real Prefect API: refuse to start without one."""
    if cfg.task_runner != "threads" and not get_current_settings().api.url:
        raise RunnerUnavailable(NEEDS_SERVER.format(runner=cfg.task_runner))


def run_stage(flow: Flow[..., Any], description: str, argv: list[str] | None = None, fan_out: bool = False) -> Any:
    """Parse `--params` / `--set`, validate the config, and run `flow`.

    Only fan-out stages (`fan_out=True`: many independent shard tasks) use the configured runner;
    the others run their few tasks on threads, where a cluster would only add start-up time.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        "-S",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a params value (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.params, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    orchestration = cfg.orchestration if fan_out else OrchestrationConfig(max_workers=cfg.orchestration.max_workers)
    try:
        require_prefect_server(orchestration)
        runner = task_runner(orchestration)
    except RunnerUnavailable as err:
        parser.exit(2, f"error: {err}\n")
    configured: Callable[..., Any] = flow.with_options(task_runner=runner)
    return configured(params=args.params, overrides=args.overrides)
