"""GPU stages on a cluster: each local Dask worker process sees its own GPU, Ray tasks ask for one.

Checked on CPU: the worker environment and resources the runner is built with, and a real local
Dask cluster whose workers report the CUDA_VISIBLE_DEVICES they were started with.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import pytest
import torch
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from flows._stage import (
    RunnerUnavailable,
    gpu_task_options,
    local_gpu_cluster,
    run_stage,
    task_resources,
    task_runner,
    visible_gpus,
)
from spatialboost.config import OrchestrationConfig


def test_dask_local_cluster_gets_one_gpu_per_worker() -> None:
    from prefect_dask import DaskTaskRunner

    runner = task_runner(OrchestrationConfig(task_runner="dask", max_workers=2), gpus=["0", "1", "2"])
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_class is local_gpu_cluster and runner.cluster_kwargs == {"gpus": ["0", "1"]}
    cpu = task_runner(OrchestrationConfig(task_runner="dask", max_workers=2))
    assert cpu.cluster_class is None and cpu.cluster_kwargs["n_workers"] == 2  # CPU stages: unchanged
    remote = task_runner(OrchestrationConfig(task_runner="dask", address="tcp://10.0.0.5:8786"), gpus=["0"])
    assert remote.address == "tcp://10.0.0.5:8786" and remote.cluster_kwargs == {}  # its workers are the cluster's
    threads = task_runner(OrchestrationConfig(max_workers=3), gpus=["0"])
    assert isinstance(threads, ThreadPoolTaskRunner)  # threads share the process's GPU


def test_more_local_workers_than_gpus_is_refused() -> None:
    with pytest.raises(RunnerUnavailable, match="max_workers=4 worker processes but 2 GPUs visible"):
        task_runner(OrchestrationConfig(task_runner="dask", max_workers=4), gpus=["0", "1"])


@pytest.mark.timeout(180)
def test_local_gpu_cluster_workers_each_see_their_own_gpu() -> None:
    from distributed import Client

    with local_gpu_cluster(["3", "5"]) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        threads = client.nthreads()
    assert sorted(seen.values()) == ["3", "5"]  # set in each worker process, before it imports CUDA
    assert sorted(threads.values()) == [1, 1]  # one task at a time on a GPU


def test_visible_gpus_follow_the_device_and_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert visible_gpus("cpu") == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus("auto") == ["0", "1"] and visible_gpus("cuda") == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert visible_gpus("cuda") == ["4", "6"]  # the ids a scheduler already gave this job
    assert visible_gpus("cpu") == []


@pytest.fixture
def fake_prefect_ray(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """prefect_ray stand-ins recording what they are given (the `ray` extra is not installed on CI)."""
    seen: dict[str, Any] = {"remote_options": []}

    class RayTaskRunner:
        def __init__(self, address: str | None = None, init_kwargs: dict | None = None) -> None:
            self.address, self.init_kwargs = address, init_kwargs

    class remote_options:  # noqa: N801 - the name prefect_ray gives it
        def __init__(self, **options: Any) -> None:
            self.options = options

        def __enter__(self) -> None:
            seen["remote_options"].append(self.options)

        def __exit__(self, *exc: object) -> None:
            return None

    package, context = types.ModuleType("prefect_ray"), types.ModuleType("prefect_ray.context")
    package.RayTaskRunner, context.remote_options = RayTaskRunner, remote_options
    monkeypatch.setitem(sys.modules, "prefect_ray", package)
    monkeypatch.setitem(sys.modules, "prefect_ray.context", context)
    return seen


def test_ray_is_told_the_gpus_and_each_gpu_task_asks_for_one(fake_prefect_ray: dict[str, Any]) -> None:
    ray = OrchestrationConfig(task_runner="ray", max_workers=2)
    assert task_runner(ray, gpus=["0", "1"]).init_kwargs == {"num_cpus": 2, "num_gpus": 2}
    assert task_runner(ray).init_kwargs == {"num_cpus": 2}
    with task_resources(ray, "cuda"):
        pass
    assert fake_prefect_ray["remote_options"] == [gpu_task_options()] == [{"num_gpus": 1}]
    with task_resources(ray, "cpu"), task_resources(OrchestrationConfig(max_workers=2), "cuda"):
        pass
    assert len(fake_prefect_ray["remote_options"]) == 1  # CPU runs and other runners ask for nothing


class _CapturingFlow:
    """Stands in for a Prefect flow: records the task runner run_stage configures."""

    def __init__(self) -> None:
        self.runner: Any = None

    def with_options(self, task_runner: Any) -> Any:
        self.runner = task_runner
        return lambda **kwargs: kwargs


def test_run_stage_spreads_a_gpu_stage_over_the_visible_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import flows._stage as stage

    monkeypatch.setattr(stage, "visible_gpus", lambda device: ["0", "1"])
    argv = ["-S", "orchestration.task_runner=dask", "-S", "orchestration.max_workers=2", "-S", "device=cuda"]
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # Dask needs a real server: any URL
        gpu_flow, cpu_flow = _CapturingFlow(), _CapturingFlow()
        run_stage(gpu_flow, "extract", argv, fan_out=True, uses_gpu=True)  # type: ignore[arg-type]
        run_stage(cpu_flow, "synthesize", argv, fan_out=True)  # type: ignore[arg-type]
    assert gpu_flow.runner.cluster_kwargs == {"gpus": ["0", "1"]}
    assert cpu_flow.runner.cluster_class is None  # synthesize is CPU work: plain processes
