"""What every stage entry point shares: argument parsing, the task runner, the metrics file."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prefect import Flow, Task
from prefect.futures import as_completed
from prefect.settings import get_current_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from tqdm import tqdm

from spatialboost.config import ConfigError, OrchestrationConfig, SpatialBoostConfig, load_config
from spatialboost.errors import describe_error, exit_code

NEEDS_SERVER = (
    "orchestration.task_runner={runner} runs tasks in worker processes, which need a running Prefect server "
    "(under the ephemeral API each worker would start its own and leave it behind). Run the pipeline with "
    "`python -m flows.pipeline` (it starts one server for every stage), or start one with "
    "`prefect server start --host 127.0.0.1 --port 4200` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


class RunnerUnavailable(RuntimeError):
    """The configured task runner cannot be built here (a missing extra, or no Prefect server)."""


def task_runner(cfg: OrchestrationConfig, gpus: Sequence[str] = ()) -> TaskRunner[Any]:
    """The Prefect task runner `orchestration` asks for; Dask and Ray are imported only when asked for.

    A local cluster gets `max_workers` single-threaded worker processes: the shard tasks are
    CPU-bound Python, so processes (not threads) are what run them in parallel.
    gpus: the GPUs (CUDA device ids) a GPU stage spreads a local cluster over, one per worker:
    each Dask worker process sees only its own (CUDA_VISIBLE_DEVICES, as dask-cuda does), Ray is
    told how many there are and each task asks for one (`task_resources`). () = CPU workers.
    """
    if gpus and cfg.task_runner != "threads" and not cfg.address and cfg.max_workers > len(gpus):
        raise RunnerUnavailable(
            f"orchestration.max_workers={cfg.max_workers} worker processes but {len(gpus)} GPUs visible: "
            f"one GPU per worker, so set max_workers to at most {len(gpus)}"
        )
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
        if gpus:
            return DaskTaskRunner(cluster_class=local_gpu_cluster, cluster_kwargs={"gpus": list(gpus[: cfg.max_workers])})
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
    init = {"num_cpus": cfg.max_workers} | ({"num_gpus": min(len(gpus), cfg.max_workers)} if gpus else {})
    return RayTaskRunner(init_kwargs=init)


def submit_shards(task: Task[..., Any], cfg: Any, jobs: Sequence[tuple[Any, ...]], desc: str) -> list[Any]:
    """Run `task(cfg, *job)` for every job on the flow's task runner, all at once; the results in
    job order (a progress bar counts them as they finish)."""
    futures = [task.submit(cfg, *job) for job in jobs]
    for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="shard"):
        pass
    return [future.result() for future in futures]


def local_gpu_cluster(gpus: Sequence[str]) -> Any:
    """A local Dask cluster of one single-threaded worker process per GPU; worker `gpu-<id>` sees
    only that GPU (CUDA_VISIBLE_DEVICES, set before the worker process starts), so a model loaded
    on "cuda" in that worker lands on its own GPU. No dashboard (port 8787 may be taken)."""
    from distributed import Nanny, Scheduler, SpecCluster

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False, "dashboard_address": None}}
    workers = {
        f"gpu-{gpu}": {"cls": Nanny, "options": {"host": "127.0.0.1", "nthreads": 1, "dashboard": False,
                                                  "env": {"CUDA_VISIBLE_DEVICES": str(gpu)}}}
        for gpu in gpus
    }  # fmt: skip
    return SpecCluster(workers=workers, scheduler=scheduler)


def visible_gpus(device: str) -> list[str]:
    """The CUDA device ids a GPU stage may use: [] unless `device` (auto | cpu | cuda) resolves to
    CUDA; the ids CUDA_VISIBLE_DEVICES lists when it is set, else 0..count-1."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


@contextlib.contextmanager
def task_resources(cfg: OrchestrationConfig, device: str) -> Iterator[None]:
    """Around task submissions of a GPU stage: on Ray each task asks for one GPU (Ray then sets
    its CUDA_VISIBLE_DEVICES) when device is cuda, or auto with a GPU here; Dask workers already
    own one GPU each, threads share the process's."""
    if cfg.task_runner != "ray" or not (device == "cuda" or visible_gpus(device)):
        yield
        return
    from prefect_ray.context import remote_options

    with remote_options(**gpu_task_options()):
        yield


def gpu_task_options() -> dict[str, Any]:
    """Ray remote options of one GPU stage task."""
    return {"num_gpus": 1}


def require_prefect_server(cfg: OrchestrationConfig) -> None:
    """Dask and Ray workers must report to a real Prefect API: refuse to start without one."""
    if cfg.task_runner != "threads" and not get_current_settings().api.url:
        raise RunnerUnavailable(NEEDS_SERVER.format(runner=cfg.task_runner))


class _NoTraceback(logging.Filter):
    """Prefect logs a failed task with its traceback; the stage ends in one line saying why
    (errors.describe_error), so the log keeps the message and drops the traceback (--debug keeps it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.msg = f"{record.getMessage()} ({record.exc_info[0].__name__ if record.exc_info[0] else 'error'})"
            record.args, record.exc_info, record.exc_text = None, None, None
        record.msg = str(record.msg).split("\nTraceback (most recent call last):")[0]
        return True


def _log_failures_without_tracebacks() -> None:
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoTraceback) for f in handler.filters):
                handler.addFilter(_NoTraceback())


def run_stage(
    flow: Flow[..., Any],
    description: str,
    argv: list[str] | None = None,
    fan_out: bool = False,
    check: Callable[[SpatialBoostConfig], str | None] | None = None,
    uses_gpu: bool = False,
) -> Any:
    """Parse `--params` / `--set`, validate the config, and run `flow`.

    Only fan-out stages (`fan_out=True`: many independent shard tasks) use the configured runner;
    the others run their few tasks on threads, where a cluster would only add start-up time.
    uses_gpu: the stage's tasks run models on `device`: a local cluster gets one GPU per worker.
    check: what the stage needs beyond a valid config, as one line (None = ready), checked
    before the flow starts so that a user's mistake is an error line, not a flow traceback.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--debug", action="store_true", help="on failure, show the traceback instead of one line")
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
    problem = check(cfg) if check is not None else None
    if problem:
        parser.exit(2, f"error: {problem}\n")
    orchestration = cfg.orchestration if fan_out else OrchestrationConfig(max_workers=cfg.orchestration.max_workers)
    try:
        require_prefect_server(orchestration)
        runner = task_runner(orchestration, visible_gpus(cfg.device) if fan_out and uses_gpu else ())
    except RunnerUnavailable as err:
        parser.exit(2, f"error: {err}\n")
    configured: Callable[..., Any] = flow.with_options(task_runner=runner)
    debug = args.debug or os.environ.get("SPATIALBOOST_DEBUG", "") not in ("", "0")
    if not debug:
        _log_failures_without_tracebacks()
    try:
        return configured(params=args.params, overrides=args.overrides)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - a failed stage ends in one line naming its cause
        if debug:
            raise
        parser.exit(exit_code(err), f"error: {flow.name}: {describe_error(err)}\n")
