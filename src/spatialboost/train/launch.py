"""The train stage on several processes, started by the stage itself.

With `orchestration.train_nproc_per_node` N > 1 the train stage does not train in its own
process: it runs `torchrun --standalone --nproc_per_node N -m spatialboost.train --params ...`
(the same `run_train_stage` in every process: DDP or FSDP, nccl on GPU, gloo on CPU), waits, and
returns rank 0's metrics, which rank 0 writes to a file this function reads.

    metrics = run_boost_stage(cfg, "params.yaml", ["train.lr=1e-4"])   # the stage, 1 or N processes
    metrics = launch_train_processes("params.yaml", ["train.lr=1e-4"], cfg)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spatialboost.config import SpatialBoostConfig


def run_boost_stage(
    cfg: SpatialBoostConfig, params: str | Path = "params.yaml", overrides: Sequence[str] = (), progress: bool = True
) -> dict[str, Any]:
    """The `train` stage, what `spatialboost train` and flows/train.py both run: cfg.train (the boost
    by default), a resumable run, so a retry continues; with orchestration.train_nproc_per_node
    N > 1 under torchrun (params and overrides are handed on), rank 0's metrics. Returns
    metrics/train.json."""
    if cfg.orchestration.train_nproc_per_node > 1:
        return launch_train_processes(params, list(overrides), cfg)
    from spatialboost.train.stage import run_train_stage, train_metrics

    return train_metrics(cfg, run_train_stage(cfg, progress=progress))


def torchrun_command(params: str | Path, overrides: list[str], nproc: int, result: str | Path, stage: str = "boost") -> list[str]:
    """The torchrun command line of a training stage (boost, or LLaVA's align / instruct) through
    this interpreter's torch.distributed.run."""
    sets = [arg for item in overrides for arg in ("-S", item)]
    which = [] if stage == "boost" else ["--stage", stage]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "spatialboost.train", *which, "--params", str(params), *sets, "--result", str(result)]  # fmt: skip


def check_devices(cfg: SpatialBoostConfig) -> None:
    """One GPU per process on CUDA: refuse a count the machine does not have, with the fix."""
    import torch

    nproc = cfg.orchestration.train_nproc_per_node
    wants_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if wants_cuda and torch.cuda.device_count() < nproc:
        raise ValueError(
            f"orchestration.train_nproc_per_node={nproc} but {torch.cuda.device_count()} GPUs are visible: one "
            f"process per GPU, so set it to at most {torch.cuda.device_count()} (the steps are the same on any count)"
        )


def launch_train_processes(
    params: str | Path,
    overrides: list[str],
    cfg: SpatialBoostConfig,
    env: dict[str, str] | None = None,
    stage: str = "boost",
) -> dict[str, Any]:
    """Run a training stage (boost; align or instruct) under torchrun with
    cfg.orchestration.train_nproc_per_node processes; returns rank 0's metrics. Its output streams
    to this process's stdout."""
    check_devices(cfg)
    with tempfile.TemporaryDirectory(prefix="spatialboost-train-") as tmp:
        result = Path(tmp) / "result.json"
        command = torchrun_command(params, overrides, cfg.orchestration.train_nproc_per_node, result, stage)
        done = subprocess.run(command, env={**os.environ, **(env or {})}, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"torchrun exited with {done.returncode} (the processes' output is above): {' '.join(command)}")
        if not result.is_file():
            raise RuntimeError("torchrun finished but rank 0 wrote no result")
        return json.loads(result.read_text())
