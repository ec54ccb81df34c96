"""The head grid and its fitting, the shape of dinov2's eval/linear.py: one `LinearHeadGrid` holds a
linear head for every (feature variant, learning rate) pair; all heads see the same batches in
one training run, each in its own optimizer parameter group; the head with the best validation
score is the probe (`train_head_grid`). Inputs are standardised per feature part (patch, cls,
mean) with training-set statistics, so one learning-rate grid fits every encoder.

    grid, best, scores = train_head_grid(rows, target, val_rows=..., val_target=..., specs=specs,
                                         kind="log_depth", out_dim=1, options=options, seed=0)
    head = fitted_head(grid, best, "log_depth", depth_range)     # FittedHead, numpy only
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialboost.evaluate.closed_form import DEFAULT_PENALTIES
from spatialboost.evaluate.features import FeatureSet
from spatialboost.evaluate.probe_metrics import class_iou, confusion_counts, upsampled_depth
from spatialboost.evaluate.probe_targets import TargetKind
from spatialboost.runtime import torch_threads

DENSE_VARIANTS = {"patch": ("patch",), "patch+cls": ("patch", "cls")}
GLOBAL_VARIANTS = {"cls": ("cls",), "mean": ("mean",), "cls+mean": ("cls", "mean")}


@dataclass(frozen=True)
class ProbeOptions:
    """Hyperparameters of every probe; one learning rate per head of the grid."""

    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    epochs: int = 20
    batch_size: int = 1024  # rows per step: patches (dense probes) or images (classification)
    weight_decay: float = 0.0
    val_fraction: float = 0.2  # of the training images, held out to pick the best head
    split_seed: int = 0  # the train/val split: fixed across seeds so seeds compare like for like
    seeds: tuple[int, ...] = (0, 1, 2)
    dense_variants: tuple[str, ...] = ("patch", "patch+cls")
    global_variants: tuple[str, ...] = ("cls", "mean", "cls+mean")
    depth_target: Literal["log", "linear"] = "log"  # log: scale errors weigh the same near and far
    min_valid_fraction: float = 0.5
    threads: int | None = None  # torch intra-op threads while heads train (restored after); 1 suits tiny heads
    # sgd: the learning-rate grid above, one run per seed; ridge: closed-form heads (evaluate/closed_form.py),
    # exact and seed-free, so the probe adds no noise of its own (seeds then has no effect)
    solver: Literal["sgd", "ridge"] = "sgd"
    ridge_penalties: tuple[float, ...] = DEFAULT_PENALTIES
    near_depth_m: float | None = None  # also score depth on pixels closer than this (depth_*_near); None = not

    def __post_init__(self) -> None:
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise ValueError(f"learning_rates must be positive, got {self.learning_rates}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}")
        unknown = set(self.dense_variants) - set(DENSE_VARIANTS) | set(self.global_variants) - set(GLOBAL_VARIANTS)
        if unknown:
            raise ValueError(f"unknown feature variants {sorted(unknown)}")
        if self.depth_target not in ("log", "linear"):
            raise ValueError(f"depth_target must be 'log' or 'linear', got {self.depth_target!r}")
        if not 0 < self.min_valid_fraction <= 1:
            raise ValueError(f"min_valid_fraction must be in (0, 1], got {self.min_valid_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.solver not in ("sgd", "ridge"):
            raise ValueError(f"solver must be 'sgd' or 'ridge', got {self.solver!r}")
        if not self.ridge_penalties or min(self.ridge_penalties) <= 0:
            raise ValueError(f"ridge_penalties must be positive, got {self.ridge_penalties}")
        if self.near_depth_m is not None and self.near_depth_m <= 0:
            raise ValueError(f"near_depth_m must be positive or None, got {self.near_depth_m}")


# --- rows of features ----------------------------------------------------------------------------


class FeatureRows:
    """Training rows: each feature part is a tensor indexed through its own row -> source map."""

    def __init__(self, parts: dict[str, torch.Tensor], index: dict[str, torch.Tensor]) -> None:
        self.parts, self.index = parts, index

    def __len__(self) -> int:
        return len(next(iter(self.index.values())))

    def get(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """{part: (len(rows), D_part)} float32."""
        return {name: tensor[self.index[name][rows]] for name, tensor in self.parts.items()}

    def stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{part: (mean (D,), std (D,))} over the rows (at most 65536 of them, evenly spaced)."""
        step = max(1, len(self) // 65536)
        sample = self.get(torch.arange(0, len(self), step))
        return {name: (x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)) for name, x in sample.items()}


def dense_rows(features: FeatureSet, keep: np.ndarray | None = None) -> FeatureRows:
    """One row per patch (flat (B * h * w) order), `keep` a bool mask over those patches."""
    b, h, w, d = features.patch_tokens.shape
    rows = torch.arange(b * h * w) if keep is None else torch.from_numpy(np.flatnonzero(keep.ravel()))
    parts = {"patch": torch.from_numpy(features.patch_tokens.reshape(-1, d)).float()}
    index = {"patch": rows}
    if features.cls_token is not None:
        parts["cls"], index["cls"] = torch.from_numpy(features.cls_token).float(), rows // (h * w)
    return FeatureRows(parts, index)


def global_rows(features: FeatureSet, rows: np.ndarray) -> FeatureRows:
    """One row per image in `rows`."""
    index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    parts = {"mean": torch.from_numpy(features.mean_token).float()}
    if features.cls_token is not None:
        parts["cls"] = torch.from_numpy(features.cls_token).float()
    return FeatureRows(parts, dict.fromkeys(parts, index))


# --- the head grid -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadSpec:
    """One head of the grid: the feature parts it reads (concatenated) and its learning rate."""

    parts: tuple[str, ...]
    lr: float
    ridge: float | None = None  # the relative penalty of a closed-form head (lr unused then)

    @property
    def name(self) -> str:
        if self.ridge is not None:
            return f"{'+'.join(self.parts)}@ridge={self.ridge:g}"
        return f"{'+'.join(self.parts)}@lr={self.lr:g}"


class LinearHeadGrid(nn.Module):
    """A linear head per HeadSpec, all fed the same standardised batch.

    Heads that read the same parts run as one batched matmul (one op per variant, not per head:
    tiny ops are what a CPU probe spends its time on); each keeps its own parameters, so each
    can sit in its own optimizer parameter group with its own learning rate.
    """

    def __init__(
        self,
        specs: Sequence[HeadSpec],
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
        out_dim: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.specs = tuple(sorted(specs, key=lambda s: s.parts))  # heads of one variant side by side
        self.stats = stats
        self.heads = nn.ModuleList()
        for spec in self.specs:
            head = nn.Linear(sum(int(stats[p][0].numel()) for p in spec.parts), out_dim)
            with torch.no_grad():  # dinov2's init, drawn from our generator (no global RNG)
                head.weight.normal_(0.0, 0.01, generator=generator)
                head.bias.zero_()
            self.heads.append(head)
        self.groups: list[tuple[tuple[str, ...], list[int]]] = []
        for i, spec in enumerate(self.specs):
            if not self.groups or self.groups[-1][0] != spec.parts:
                self.groups.append((spec.parts, []))
            self.groups[-1][1].append(i)

    def inputs(self, parts: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
        """(n, D_in) standardised concatenation of the named parts."""
        return torch.cat([(parts[p] - self.stats[p][0]) / self.stats[p][1] for p in names], dim=1)

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """(num_heads, n, out_dim): every head's output, in `self.specs` order."""
        outs = []
        for names, members in self.groups:
            x = self.inputs(parts, names)  # (n, D_in)
            weight = torch.stack([self.heads[i].weight for i in members])  # (G, out, D_in)
            bias = torch.stack([self.heads[i].bias for i in members])  # (G, out)
            outs.append(torch.einsum("nd,god->gno", x, weight) + bias[:, None, :])
        return torch.cat(outs)


@dataclass(frozen=True)
class FittedHead:
    """The chosen head, detached from training: y = standardise(x) @ weight + bias."""

    spec: HeadSpec
    kind: TargetKind
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    weight: np.ndarray  # (D_in, out_dim)
    bias: np.ndarray  # (out_dim,)
    depth_range: tuple[float, float] | None = None

    def apply(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """(n, out_dim) from {part: (n, D_part)}."""
        x = np.concatenate([(parts[p] - self.mean[p]) / self.std[p] for p in self.spec.parts], axis=1)
        return x @ self.weight + self.bias

    def predict_dense(self, features: FeatureSet) -> np.ndarray:
        """(B, h, w, out_dim) raw outputs on every patch."""
        b, h, w, d = features.patch_tokens.shape
        parts = {"patch": features.patch_tokens.reshape(-1, d)}
        if features.cls_token is not None:
            parts["cls"] = np.repeat(features.cls_token, h * w, axis=0)
        return self.apply(parts).reshape(b, h, w, -1)

    def depth_maps(self, features: FeatureSet, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Predicted (H, W) depth in metres per image, upsampled to `sizes`."""
        raw = self.predict_dense(features)[..., 0]
        return [upsampled_depth(r, size, self.kind, self.depth_range) for r, size in zip(raw, sizes, strict=True)]


def fitted_head(
    grid: LinearHeadGrid, index: int, kind: TargetKind, depth_range: tuple[float, float] | None
) -> FittedHead:
    spec, head = grid.specs[index], grid.heads[index]
    return FittedHead(
        spec=spec,
        kind=kind,
        mean={p: grid.stats[p][0].numpy() for p in spec.parts},
        std={p: grid.stats[p][1].numpy() for p in spec.parts},
        weight=head.weight.detach().numpy().T.copy(),
        bias=head.bias.detach().numpy().copy(),
        depth_range=depth_range,
    )


# --- training ------------------------------------------------------------------------------------


def _loss(kind: TargetKind, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's mean loss; out (H, n, out_dim), target (n,)."""
    heads, n = out.shape[:2]
    if kind != "class":
        return ((out[..., 0] - target) ** 2).mean(1).sum()
    return F.cross_entropy(out.reshape(heads * n, -1), target.repeat(heads)) * heads


def selection_score(kind: TargetKind, out: torch.Tensor, target: torch.Tensor, num_classes: int, dense: bool) -> float:
    """Higher is better: -RMSE in metres (depth), patch-level mIoU (segmentation), top-1 (images)."""
    if kind == "log_depth":
        return -float(((out[:, 0].exp() - target.exp()) ** 2).mean().sqrt())
    if kind == "depth":
        return -float(((out[:, 0] - target) ** 2).mean().sqrt())
    pred = out.argmax(1)
    if not dense:
        return float((pred == target).float().mean())
    return float(np.nanmean(class_iou(confusion_counts(pred.numpy(), target.numpy(), num_classes))))


def train_head_grid(
    rows: FeatureRows,
    target: torch.Tensor,
    *,
    val_rows: FeatureRows,
    val_target: torch.Tensor,
    specs: Sequence[HeadSpec],
    kind: TargetKind,
    out_dim: int,
    options: ProbeOptions,
    seed: int,
    dense: bool = True,
) -> tuple[LinearHeadGrid, int, list[float]]:
    """Train every head in one pass; returns (grid, index of the best head, validation scores)."""
    generator = torch.Generator().manual_seed(seed)
    grid = LinearHeadGrid(specs, rows.stats(), out_dim, generator)
    with torch_threads(options.threads):
        _fit(grid, rows, target, kind, options, generator)
        with torch.no_grad():
            outs = _batched_outputs(grid, val_rows, options.batch_size * 4)
    scores = [selection_score(kind, out, val_target, out_dim, dense) for out in outs]
    best = int(np.nanargmax(np.nan_to_num(np.asarray(scores), nan=-np.inf)))
    return grid, best, scores


def _fit(
    grid: LinearHeadGrid,
    rows: FeatureRows,
    target: torch.Tensor,
    kind: TargetKind,
    options: ProbeOptions,
    generator: torch.Generator,
) -> None:
    """AdamW, one parameter group (own learning rate) per head, cosine decay over all steps."""
    groups = [{"params": head.parameters(), "lr": spec.lr} for spec, head in zip(grid.specs, grid.heads, strict=True)]
    optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay, foreach=True)
    steps = options.epochs * math.ceil(len(rows) / options.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    for _ in range(options.epochs):
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(rows), options.batch_size):
            batch = order[start : start + options.batch_size]
            loss = _loss(kind, grid(rows.get(batch)), target[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def _batched_outputs(grid: LinearHeadGrid, rows: FeatureRows, batch_size: int) -> torch.Tensor:
    """(num_heads, len(rows), out_dim)."""
    chunks = [grid(rows.get(torch.arange(s, min(s + batch_size, len(rows))))) for s in range(0, len(rows), batch_size)]
    return torch.cat(chunks, dim=1)


def split_images(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train image indices, val image indices), both sorted and non-empty."""
    if n < 2:
        raise ValueError(f"a probe needs at least 2 training images (train + validation), got {n}")
    order = np.random.default_rng(split_seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
