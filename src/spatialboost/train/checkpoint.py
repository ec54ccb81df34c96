"""Resumable training checkpoints, written atomically.

    <out_dir>/checkpoints/
      step-000040/
        trainable.safetensors   the trainable parameters only (full tensors, names as in the objective)
        optimizer.pt            AdamW state (torch.save of tensors and numbers: loads with weights_only)
        scheduler.pt            the lr scheduler's state
        rng-rank0.pt ...        python, numpy, torch (and CUDA) RNG states of each process
        trainer_state.json      step, epoch, step in epoch, sampler seed, the run's shape, loss history
      latest.json               {"step": 40, "path": "step-000040"}: written last

A checkpoint is assembled in a hidden temporary folder and renamed into place (atomic on POSIX),
then latest.json is replaced atomically, so a process killed at any moment leaves the previous
checkpoint as the latest. Under DDP/FSDP every rank takes part in gathering the full state
(torch.distributed.checkpoint.state_dict); rank 0 writes all but the per-rank RNG files.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from spatialboost.io import write_json_atomic
from spatialboost.train.distributed import DistContext, barrier

CHECKPOINT_SCHEMA_VERSION = 1
LATEST = "latest.json"


@dataclass
class TrainerState:
    """Where a run is and what it was: enough to continue it exactly, and to refuse a mismatch."""

    step: int  # optimizer steps done
    epoch: int  # epoch of the next step
    step_in_epoch: int  # position of the next step inside its epoch
    sampler_seed: int
    run: dict[str, Any]  # what must match on resume: stage, adapter, batch sizes, data size, total steps
    history: list[dict[str, float]] = field(default_factory=list)  # one record per step: step, loss, lr, ...
    schema_version: int = CHECKPOINT_SCHEMA_VERSION


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The folder latest.json points at, or None when the run has no checkpoint yet."""
    root = checkpoint_root(out_dir)
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / json.loads(pointer.read_text())["path"]
    if not path.is_dir():
        raise FileNotFoundError(f"{pointer} points at {path.name}, which does not exist")
    return path


def _full_options(**extra: bool) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, ignore_frozen_params=True, **extra)


def save_checkpoint(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainerState,
    *,
    out_dir: str | Path,
    ctx: DistContext,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step-<state.step>` (every rank calls this); returns its folder."""
    root = checkpoint_root(out_dir)
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-step-{state.step:06d}"
    offload = ctx.distributed  # gather to rank 0's CPU only
    model_state = get_model_state_dict(objective, options=_full_options(cpu_offload=offload))
    optim_state = get_optimizer_state_dict(objective, optimizer, options=_full_options(cpu_offload=offload))
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(ctx)
    torch.save(rng_state(), tmp / f"rng-rank{ctx.rank}.pt")
    barrier(ctx)
    if ctx.is_main:
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model_state.items()}  # clone: no shared storage
        save_file(tensors, tmp / "trainable.safetensors", metadata={"step": str(state.step)})
        torch.save(_canonical_optimizer_state(optim_state), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(without_timings(asdict(state)), indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        write_json_atomic(root / LATEST, {"step": state.step, "path": final.name})
        _prune(root, keep)
    barrier(ctx)
    return final


def _canonical_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer state with its param groups' sequences as lists: a fresh AdamW holds betas as
    a tuple, one restored from a checkpoint as a list, and pickle writes the two differently, so
    without this a resumed run's checkpoints would differ in bytes from an uninterrupted run's."""
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    return {**state, "param_groups": groups}


RUN_LOG_KEYS = ("tokens_per_s", "wall_s", "resumed_from")
"""Keys about how a run went (the machine's speed, whether it was resumed), not what it
computed: kept out of every file a run writes, so that a rerun or a resumed run writes the same
bytes as an uninterrupted one. They reach the tracker, the console and metrics/train.json."""


def without_timings(record: Any) -> Any:
    """`record` (dicts and lists, recursively) without the RUN_LOG_KEYS."""
    if isinstance(record, dict):
        return {k: without_timings(v) for k, v in record.items() if k not in RUN_LOG_KEYS}
    if isinstance(record, list):
        return [without_timings(v) for v in record]
    return record


def load_checkpoint(
    path: Path,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ctx: DistContext,
    run: dict[str, Any],
) -> TrainerState:
    """Restore a checkpoint into the objective, optimizer, scheduler and this process's RNGs.

    Refuses a checkpoint of another kind of run (`run` differs) or one whose trainable
    parameters are not exactly the current trainable set.
    """
    state = TrainerState(**json.loads((path / "trainer_state.json").read_text()))
    if state.schema_version != CHECKPOINT_SCHEMA_VERSION:
        raise ValueError(f"{path}: checkpoint schema {state.schema_version}, expected {CHECKPOINT_SCHEMA_VERSION}")
    differ = sorted(k for k in set(run) | set(state.run) if run.get(k) != state.run.get(k))
    if differ:
        detail = ", ".join(f"{k}: {state.run.get(k)!r} -> {run.get(k)!r}" for k in differ)
        raise ValueError(f"{path} belongs to another run ({detail}); use another output folder or resume: false")
    tensors = load_file(path / "trainable.safetensors")
    expected = set(get_model_state_dict(objective, options=_full_options(cpu_offload=ctx.distributed)))  # every rank
    if ctx.is_main and set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"{path}: trainable parameters differ (missing {missing[:3]}, unexpected {extra[:3]})")
    set_model_state_dict(objective, tensors, options=_full_options(strict=False))
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    # not strict: a parameter that has had no gradient yet has no AdamW state, in the checkpoint or here
    set_optimizer_state_dict(objective, optimizer, optim_state, options=_full_options(strict=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-rank{ctx.rank}.pt"
    if rng_file.exists():  # resumed on more processes than were saved: the new ranks keep their seeds
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors, lists and numbers (loadable with weights_only)."""
    version, internal, gauss = random.getstate()
    bitgen = np.random.get_state(legacy=False)  # noqa: NPY002 - saving the global RNG is the point
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {"key": torch.from_numpy(bitgen["state"]["key"].astype(np.int64)), "pos": bitgen["state"]["pos"],
                  "has_gauss": bitgen["has_gauss"], "gauss": bitgen["gauss"]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """The inverse of `rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state({  # noqa: NPY002 - restoring the global RNG is the point
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": int(numpy_state["pos"])},
        "has_gauss": int(numpy_state["has_gauss"]),
        "gauss": float(numpy_state["gauss"]),
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _prune(root: Path, keep: int) -> None:
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
