"""THE training loop: every stage (align, instruct, boost) and every adapter (dual_channel, full,
lora) runs through `train`, chosen by config, so the ablations differ only in what trains.

    report = train(vlm, dataset, cfg.train, "models/boosted", tracker=tracker)

One optimizer step = one global batch of `cfg.global_batch_size` conversations, split over
processes and micro-batches (gradient accumulation). The loss of a step is the mean over every
target token of the global batch (not a mean of micro-batch means), so 1 process and N
processes, or 1 and 4 micro-batches, compute the same step. AdamW on exactly the trainable
parameters, warmup + cosine schedule, gradient clipping, bf16 autocast on GPU (fp32 on CPU by
default), checkpoints every `checkpoint_every` steps and an exact resume from the latest one.

`fit` is the loop itself, for any objective module returning (loss summed over targets, tokens);
the bootstrap stage pre-trains its encoder through it too.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from spatialboost.config import TrainConfig
from spatialboost.io import write_json_atomic
from spatialboost.models.vlm import SpatialVLM
from spatialboost.train.adapters import prepare_stage
from spatialboost.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    without_timings,
)
from spatialboost.train.data import SFTCollator
from spatialboost.train.distributed import DistContext, GlobalBatchSampler, all_reduce_sum, gradient_sync, wrap_model
from spatialboost.train.objective import SFTObjective
from spatialboost.train.optim import build_optimizer, build_scheduler


class MetricsLogger(Protocol):
    """What the loop needs from a tracker (spatialboost.tracking.Tracker has it)."""

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...


class Batch(Protocol):
    """A collated micro-batch: objective keyword arguments and its number of loss targets."""

    n_targets: int

    def inputs(self, device: torch.device) -> dict[str, Any]: ...


@dataclass
class TrainResult:
    """What a run did. history: one record per optimizer step since the run began (a resumed
    run includes the steps before the interruption): step, loss, lr, grad_norm, tokens, tokens_per_s."""

    steps: int
    total_steps: int
    history: list[dict[str, float]]
    wall_s: float
    tokens_per_s: float
    resumed_from: int | None = None
    checkpoint: str | None = None
    trainable: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [record["loss"] for record in self.history]

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "final_loss": self.final_loss}


def train(
    model: SpatialVLM,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    tracker: MetricsLogger | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    stop_after_steps: int | None = None,
    pad_token_id: int | None = None,
    name: str | None = None,
    master_dtype: torch.dtype | None = None,
) -> TrainResult:
    """SFT of `model` on `dataset` (SFTExamples, e.g. a ConversationDataset) for `cfg.stage`.

    Sets the trainable set in place (adapters.prepare_stage: adds dual-channel attention or
    LoRA to the encoder for those boost adapters), then runs `fit`. The model is left on the
    training device in eval mode with its trained weights; saving it is the caller's choice
    (SpatialVLM.save, export_encoder, merge_lora first for LoRA).
    device: None = the model's current device (cuda:LOCAL_RANK under torchrun on GPU).
    stop_after_steps: return after this many optimizer steps as if killed (no extra checkpoint).
    name: prefix of the tracker's metric names and of the result file; default cfg.stage.
    master_dtype: cast the trainable parameters to this dtype (fp32 master weights of a model
        loaded in bf16; autocast keeps the compute in bf16).
    """
    report = prepare_stage(model, cfg)
    if master_dtype is not None:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(master_dtype)
    if pad_token_id is None:
        pad_token_id = _pad_token_id(model, dataset)
    result = fit(
        SFTObjective(model),
        dataset,
        SFTCollator(int(pad_token_id)),
        cfg,
        out_dir,
        tracker=tracker,
        progress=progress,
        name=name or cfg.stage,
        device=device if device is not None else _device_of(model),
        stop_after_steps=stop_after_steps,
    )
    result.trainable = report.to_dict()
    return result


def fit(
    objective: nn.Module,
    dataset: Dataset,
    collate: Callable[[Sequence[Any]], Batch],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    tracker: MetricsLogger | None = None,
    progress: bool = True,
    name: str = "train",
    device: str | torch.device | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """The loop: `objective(**batch.inputs(device))` -> (loss summed over targets, tokens).

    Trains the parameters of `objective` that require grad; resumes from the latest checkpoint
    in `out_dir` when cfg.resume. Metrics go to `tracker` as `<name>.loss`, `<name>.lr`,
    `<name>.grad_norm`, `<name>.tokens_per_s` (rank 0 only).
    """
    out_dir = Path(out_dir)
    ctx = DistContext.current(device if device is not None else _device_of(objective))
    objective.to(ctx.device)
    seed_everything(cfg.seed + ctx.rank)
    wrapped = wrap_model(objective, ctx, cfg.strategy, cfg.find_unused_parameters)
    optimizer = build_optimizer(objective, cfg.lr, cfg.weight_decay, cfg.adam_betas, cfg.adam_eps)
    lengths = dataset.lengths() if cfg.group_by_length else None  # type: ignore[attr-defined]
    sampler = GlobalBatchSampler(
        len(dataset),
        global_batch=cfg.global_batch_size,
        micro_batch=cfg.micro_batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        shuffle=cfg.shuffle,
        lengths=lengths,
    )
    total = cfg.max_steps or cfg.epochs * sampler.steps_per_epoch
    scheduler = build_scheduler(optimizer, total, cfg.warmup_ratio, cfg.min_lr_ratio)
    run = _run_signature(cfg, name, len(dataset), total)
    state = TrainerState(step=0, epoch=0, step_in_epoch=0, sampler_seed=cfg.seed, run=run)
    resumed_from = None
    latest = latest_checkpoint(out_dir) if cfg.resume else None
    if latest is not None:
        state = load_checkpoint(latest, objective, optimizer, scheduler, ctx, run)
        resumed_from = state.step
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    bar = tqdm(total=total, initial=state.step, desc=name, unit="step", disable=not (progress and ctx.is_main))
    wrapped.train()
    start, tokens_run, last_checkpoint = time.perf_counter(), 0, latest
    try:
        for micro_batches in _steps(
            dataset, collate, sampler, state=state, total=total, num_workers=cfg.num_workers, ctx=ctx
        ):
            record = train_step(
                wrapped,
                objective=objective,
                micro_batches=micro_batches,
                optimizer=optimizer,
                scheduler=scheduler,
                cfg=cfg,
                ctx=ctx,
            )
            state.step += 1
            state.step_in_epoch += 1
            if state.step_in_epoch == sampler.steps_per_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            record["step"] = state.step
            state.history.append(record)
            tokens_run += int(record["tokens"])
            _report(record, name, bar, tracker, ctx, cfg.log_every)
            if _checkpoint_due(state.step, total, cfg.checkpoint_every):
                last_checkpoint = save_checkpoint(
                    objective, optimizer, scheduler, state, out_dir=out_dir, ctx=ctx, keep=cfg.keep_checkpoints
                )
            if stop_after_steps is not None and state.step >= stop_after_steps:
                break
    finally:
        bar.close()
        objective.eval()
    wall = time.perf_counter() - start
    result = TrainResult(
        steps=state.step,
        total_steps=total,
        history=state.history,
        wall_s=wall,
        tokens_per_s=tokens_run / wall if wall > 0 else 0.0,
        resumed_from=resumed_from,
        checkpoint=None if last_checkpoint is None else str(last_checkpoint),
    )
    if ctx.is_main:
        write_json_atomic(out_dir / f"{name}_result.json", without_timings(result.to_dict()))  # same bytes on a rerun
    return result


def train_step(
    wrapped: nn.Module,
    *,
    objective: nn.Module,
    micro_batches: list[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    ctx: DistContext,
) -> dict[str, float]:
    """One optimizer step over this process's micro-batches of a global batch.

    Each micro-batch's summed loss is scaled by world_size / (targets in the global batch):
    DDP and FSDP average gradients over processes, so the step's gradient is the mean over
    every target of the global batch, whatever the split.
    """
    begin = time.perf_counter()
    n_global = float(all_reduce_sum(torch.tensor(sum(b.n_targets for b in micro_batches), dtype=torch.float64), ctx))
    if n_global == 0:
        raise ValueError("a global batch has no target tokens (no assistant answers, or all truncated by max_length)")
    scale = ctx.world_size / n_global
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    tokens = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for i, batch in enumerate(micro_batches):
        with gradient_sync(wrapped, enabled=i == len(micro_batches) - 1):
            with _autocast(cfg.precision, ctx.device):
                batch_loss, batch_tokens = wrapped(**batch.inputs(ctx.device))
            (batch_loss * scale).backward()
        loss_sum += batch_loss.detach().double()
        tokens += batch_tokens.detach().double()
    params = [p for p in objective.parameters() if p.requires_grad and p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    totals = all_reduce_sum(torch.stack([loss_sum, tokens]), ctx)
    seconds = time.perf_counter() - begin
    return {
        "loss": float(totals[0]) / n_global,
        "lr": float(lr),
        "grad_norm": float(_full(grad_norm)),
        "tokens": float(totals[1]),
        "tokens_per_s": float(totals[1]) / seconds if seconds > 0 else 0.0,
    }


def _steps(
    dataset: Dataset,
    collate: Callable[[Sequence[Any]], Batch],
    sampler: GlobalBatchSampler,
    *,
    state: TrainerState,
    total: int,
    num_workers: int,
    ctx: DistContext,
) -> Iterator[list[Batch]]:
    """The micro-batches of each remaining optimizer step, from the state's data position.

    Reads state.epoch / step_in_epoch at each epoch start, so the caller advances them.
    """
    done = state.step
    while done < total:
        sampler.set_position(state.epoch, state.step_in_epoch)
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers, pin_memory=ctx.device.type == "cuda"
        )
        iterator = iter(loader)
        for _ in range(sampler.steps_per_epoch - state.step_in_epoch):
            if done >= total:
                return
            yield [next(iterator) for _ in range(sampler.accumulation_steps)]
            done += 1


def _report(
    record: dict[str, float], name: str, bar: tqdm, tracker: MetricsLogger | None, ctx: DistContext, every: int
) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
    step = int(record["step"])
    if tracker is not None and ctx.is_main and step % every == 0:
        keys = ("loss", "lr", "grad_norm", "tokens_per_s")
        tracker.log_metrics({f"{name}.{k}": record[k] for k in keys}, step=step)


def _checkpoint_due(step: int, total: int, every: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def _run_signature(cfg: TrainConfig, name: str, n_examples: int, total: int) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it (world size may differ)."""
    return {
        "name": name,
        "stage": cfg.stage,
        "adapter": cfg.adapter if cfg.stage == "boost" else None,
        "train_projector": cfg.train_projector if cfg.stage == "boost" else None,
        "n_examples": n_examples,
        "global_batch_size": cfg.global_batch_size,
        "total_steps": total,
        "seed": cfg.seed,
        "shuffle": cfg.shuffle,
        "group_by_length": cfg.group_by_length,
    }


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 for "bf16" (or "auto" on GPU), None (fp32) otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = resolve_precision(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global RNG is what third-party code draws from
    torch.manual_seed(seed)


def _full(value: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2 gradient norm) as a plain tensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def _pad_token_id(model: SpatialVLM, dataset: Dataset) -> int:
    """The dataset's tokenizer's pad id, else the LM config's, else 0 (padding is masked anyway)."""
    for candidate in (getattr(getattr(dataset, "tokenizer", None), "pad_token_id", None), model.language_model.config.pad_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _device_of(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")
