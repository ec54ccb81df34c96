"""AdamW over exactly the trainable parameters, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def build_optimizer(
    module: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float
) -> torch.optim.AdamW:
    """AdamW on the parameters of `module` that require grad, nothing else.

    Weight decay applies to matrices (ndim >= 2) only: biases, norms and the dual-channel gates
    are not pulled towards zero (a gate at 0 means alpha = 0.5, not "off").
    """
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: nothing to optimise")
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


@dataclass(frozen=True)
class WarmupCosine:
    """Multiplier of the peak lr at optimizer step s (0-based): linear warmup over
    `warmup_steps` ((s + 1) / warmup, so the first step already moves), then a half cosine
    from 1 down to `min_ratio` at `total_steps`."""

    total_steps: int
    warmup_steps: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with `WarmupCosine`; warmup = ceil(warmup_ratio x total_steps)."""
    warmup = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup, min_ratio))
