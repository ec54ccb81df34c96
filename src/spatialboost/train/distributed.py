"""Processes, devices and the data order: the same global batches on 1 or N processes.

Under torchrun every process calls `init_distributed()` once (backend gloo on CPU, nccl on
GPU); the loop then asks `DistContext.current()` who it is. Without torchrun the context is a
single process and nothing is initialised.

The data order is a pure function of (seed, epoch, number of conversations): epoch e is one
permutation, cut into global batches of G conversations (the last incomplete one is dropped,
so every step has exactly G). Process r of W takes the r-th W-th of each global batch and cuts
it into micro-batches. Whatever W, the union of what the processes see in a step is the same
global batch, so with a loss normalised over the global batch (loop.py) a run on W processes
computes the step of a run on one.

    sampler = GlobalBatchSampler(len(dataset), global_batch=16, micro_batch=4, ctx.rank, ctx.world_size, seed)
    sampler.set_position(epoch, step_in_epoch)          # resume mid-epoch
    for micro_batch_indices in sampler: ...             # accumulation_steps per optimizer step
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistContext:
    """Who this process is: rank of world_size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def current(cls, device: str | torch.device | None = None) -> DistContext:
        """The context of this process: from the initialised process group, else a single process.

        device: "auto" | "cpu" | "cuda" | a torch.device; None = "auto". Under a process group on
        CUDA each process takes cuda:LOCAL_RANK.
        """
        kind = resolve_device(device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if kind.type == "cuda" and kind.index is None:
            kind = torch.device("cuda", local_rank if dist.is_initialized() else torch.cuda.current_device())
        if not dist.is_initialized():
            return cls(0, 1, 0, kind)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, kind)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" (or None) -> cuda if available else cpu; anything else as torch.device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_distributed(device: str | torch.device | None = "auto", timeout_s: float = 600.0) -> DistContext:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT); a no-op for a single process. Backend: nccl on CUDA, gloo on CPU."""
    from datetime import timedelta

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    kind = resolve_device(device)
    if world_size > 1 and not dist.is_initialized():
        if kind.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl" if kind.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistContext.current(kind)


def all_reduce_sum(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of `value` over the processes (a copy; the input is unchanged)."""
    out = value.detach().clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap_model(module: nn.Module, ctx: DistContext, strategy: Literal["ddp", "fsdp"], find_unused: bool = False) -> nn.Module:
    """The module to call in training: itself (one process), DDP around it, or itself sharded
    in place by FSDP2 (`fully_shard` on every transformer block, then on the root).

    DDP broadcasts rank 0's parameters at construction; FSDP needs identical initialisation
    on every rank (seeded construction).
    """
    if not ctx.distributed:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused)
    from torch.distributed.fsdp import fully_shard

    for block in transformer_blocks(module):
        fully_shard(block)
    fully_shard(module)
    return module


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks worth sharding one by one: every module inside a ModuleList of at
    least two members of one class (LLM decoder layers, encoder blocks), outermost lists only."""
    blocks: list[nn.Module] = []
    taken: set[int] = set()
    for _, child in module.named_modules():
        if id(child) in taken or not isinstance(child, nn.ModuleList) or len(child) < 2:
            continue
        if len({type(m) for m in child}) == 1:
            blocks.extend(child)
            taken.update(id(m) for m in child.modules())
    return blocks


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps (DDP no_sync / FSDP2 flag)."""
    if hasattr(wrapped, "no_sync") and not enabled:
        with wrapped.no_sync():
            yield
        return
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(enabled)
    yield


def is_sharded(module: nn.Module) -> bool:
    """Whether FSDP2 sharded `module` (its class is the FSDP subclass)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


# --- the data order ----------------------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order of the n conversations in `epoch`: a function of (n, seed, epoch) only."""
    if not shuffle:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


GROUP_MEGABATCH = 16
"""Length grouping sorts within windows of this many global batches (HF's LengthGroupedSampler: 50)."""


def global_batches(
    n: int, global_batch: int, seed: int, epoch: int, shuffle: bool = True, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """Epoch `epoch` as full global batches of `global_batch` indices (the remainder is dropped).

    lengths: token counts per example: group examples of similar length into the same batch
    (less padding; a mix of short captions and 10-turn conversations pads to the longest
    otherwise). The shuffled order is cut into windows of GROUP_MEGABATCH batches, each window
    sorted by length (longest first) and cut into batches, and the batches are shuffled again:
    still a function of (n, seed, epoch, lengths) only, so resume stays exact.
    """
    order = epoch_permutation(n, seed, epoch, shuffle)
    steps = n // global_batch
    if lengths is None:
        return [order[s * global_batch : (s + 1) * global_batch] for s in range(steps)]
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} lengths for {n} examples")
    kept, window = order[: steps * global_batch], GROUP_MEGABATCH * global_batch
    batches = []
    for start in range(0, len(kept), window):
        chunk = sorted(kept[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[b : b + global_batch] for b in range(0, len(chunk), global_batch)]
    shuffled = epoch_permutation(len(batches), seed + 1, epoch, shuffle)
    return [batches[i] for i in shuffled]


def rank_micro_batches(batch: list[int], micro_batch: int, rank: int, world_size: int) -> list[list[int]]:
    """The micro-batches process `rank` runs for one global batch (its contiguous W-th, cut in
    micro-batches). Raises when the global batch does not split evenly."""
    per_rank, rest = divmod(len(batch), world_size)
    if rest or per_rank % micro_batch:
        raise ValueError(
            f"global batch {len(batch)} does not split into {world_size} processes x micro-batches of {micro_batch}"
        )
    mine = batch[rank * per_rank : (rank + 1) * per_rank]
    return [mine[i : i + micro_batch] for i in range(0, per_rank, micro_batch)]


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this process's micro-batches of one epoch, from a position, for a DataLoader's
    `batch_sampler`; every `accumulation_steps` consecutive ones make one optimizer step."""

    def __init__(
        self,
        n: int,
        *,
        global_batch: int,
        micro_batch: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool = True,
        lengths: Sequence[int] | None = None,
    ) -> None:
        if global_batch % (micro_batch * world_size):
            raise ValueError(
                f"global_batch_size {global_batch} is not a multiple of micro_batch_size {micro_batch} x "
                f"{world_size} processes"
            )
        if n < global_batch:
            raise ValueError(f"{n} conversations are fewer than one global batch of {global_batch}")
        self.n, self.global_batch, self.micro_batch = n, global_batch, micro_batch
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.lengths = None if lengths is None else list(lengths)
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    def set_position(self, epoch: int, step_in_epoch: int) -> None:
        """Start the next iteration at optimizer step `step_in_epoch` of `epoch`."""
        self.epoch, self.start_step = epoch, step_in_epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = global_batches(self.n, self.global_batch, self.seed, self.epoch, self.shuffle, self.lengths)
        for batch in batches[self.start_step :]:
            yield from rank_micro_batches(batch, self.micro_batch, self.rank, self.world_size)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation_steps


# --- local launches (tests, benchmarks) --------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned(rank: int, fn: Callable[..., Any], world_size: int, port: int, args: tuple[Any, ...]) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    init_distributed("cpu")
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch_local(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Run `fn(*args)` in `world_size` fresh CPU processes joined by gloo on 127.0.0.1 (what
    torchrun --standalone does); `fn` must be importable (a module-level function)."""
    import torch.multiprocessing as mp

    mp.spawn(_spawned, args=(fn, world_size, free_port(), args), nprocs=world_size, join=True)
