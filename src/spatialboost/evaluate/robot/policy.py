"""CortexBench's few-shot behaviour cloning on frozen embeddings (VC-1, mujoco_vc protocol).

The protocol (facebookresearch/eai-vc, cortexbench/mujoco_vc, Metaworld_BC_config.yaml):
a frozen encoder embeds every frame (VC-1 uses the CLS token); the policy input at step t is the
FLARE fusion of the last `history` embeddings (their successive differences, then the newest
embedding; frames before the first repeat it) with the proprioception appended; the policy is a
BatchNorm on the input followed by an MLP (256, 256, 256, ReLU) trained by MSE on the expert's
actions (Adam, lr 1e-3, batch 256, 100 epochs); every `eval_every` epochs the policy is rolled out
and the score is the highest success rate over those evaluations (`highest_success` in
train_loop.py), MetaWorld's success being the success flag of an episode's last step.

    demos = [Demonstration(images, proprio, actions, success), ...]
    result = behaviour_cloning(embed, demos, task, BCOptions(epochs=100), seed=100)
    result.best_success, result.final_success, result.losses
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

Embedder = Callable[[np.ndarray], np.ndarray]
"""(N, H, W, 3) uint8 frames -> (N, D) float32 embeddings of a frozen encoder."""

ActFn = Callable[[np.ndarray], np.ndarray]
"""(B, F) float32 policy features -> (B, A) float32 actions."""


@dataclass(frozen=True)
class Demonstration:
    """One expert episode of T steps, as CortexBench stores it (a 'path')."""

    images: np.ndarray  # (T, H, W, 3) uint8, the frame the action was taken from
    proprio: np.ndarray  # (T, P) float32; P = 0 where the domain uses none (DMControl)
    actions: np.ndarray  # (T, A) float32, the expert's action at each step
    success: np.ndarray | None = None  # (T,) bool, the task's success flag after each step (MetaWorld)

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if steps == 0:
            raise ValueError("a demonstration needs at least one step")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (T, H, W, 3) uint8, got {self.images.shape} {self.images.dtype}")
        for name, array in (("images", self.images), ("proprio", self.proprio)):
            if len(array) != steps:
                raise ValueError(f"{name} has {len(array)} steps, actions have {steps}")
        if self.proprio.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(
                f"proprio and actions must be (T, P) and (T, A), got {self.proprio.shape}, {self.actions.shape}"
            )

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class BCOptions:
    """The protocol's policy and training settings (defaults: CortexBench's MetaWorld config)."""

    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    history: int = 3  # embeddings fused per step (FLARE)
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    eval_every: int = 5  # epochs between evaluations; the last epoch is always evaluated
    eval_episodes: int = 25
    horizon: int = 500  # steps per evaluation episode

    def __post_init__(self) -> None:
        if self.history < 1 or self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"history, epochs, batch_size and eval_every must be >= 1: {self}")
        if self.eval_episodes < 1 or self.horizon < 1 or self.lr <= 0:
            raise ValueError(f"eval_episodes and horizon must be >= 1 and lr > 0: {self}")

    def eval_epochs(self) -> list[int]:
        """1-based epochs after which the policy is evaluated (CortexBench: every eval_every, and the last)."""
        epochs = [e for e in range(self.eval_every, self.epochs + 1, self.eval_every)]
        return epochs if epochs and epochs[-1] == self.epochs else [*epochs, self.epochs]


class RolloutTask(Protocol):
    """What behaviour cloning evaluates a policy on (metaworld.MetaWorldTask is one)."""

    name: str

    def rollout(
        self, act: ActFn, embed: Embedder, *, episodes: int, horizon: int, history: int, seed: int
    ) -> np.ndarray:
        """Success (bool) of each of `episodes` episodes, by the domain's rule."""
        ...


@dataclass
class BCResult:
    """One (task, encoder, seed) run: the training curve and every evaluation."""

    task: str
    seed: int
    losses: list[float]  # mean training loss per epoch
    evaluations: dict[int, float] = field(default_factory=dict)  # epoch -> success rate, percent

    @property
    def best_success(self) -> float:
        """CortexBench's score: the highest success rate over the evaluations (percent)."""
        return max(self.evaluations.values())

    @property
    def final_success(self) -> float:
        """The last evaluation's success rate (percent): no selection over checkpoints."""
        return self.evaluations[max(self.evaluations)]


def flare_features(embeddings: np.ndarray, history: int) -> np.ndarray:
    """(T, D) embeddings of one episode -> (T, history * D) FLARE features.

    Step t fuses e[t-h+1..t] (indices below 0 repeat e[0]) as [e1 - e0, ..., e_last - e_prev, e_last],
    CortexBench's fuse_embeddings_flare, so a policy sees motion as well as the current frame.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (T, D), got {embeddings.shape}")
    steps = np.arange(len(embeddings))
    window = [embeddings[np.maximum(steps - k, 0)] for k in range(history - 1, -1, -1)]  # oldest first
    deltas = [window[i + 1] - window[i] for i in range(history - 1)]
    return np.concatenate([*deltas, window[-1]], axis=1).astype(np.float32)


def demonstration_features(
    embed: Embedder, demos: Sequence[Demonstration], history: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Policy inputs and targets of every step of `demos`: ((N, F), (N, A)) float32."""
    features, actions = [], []
    for demo in demos:
        embeddings = np.concatenate([embed(demo.images[i : i + batch_size]) for i in range(0, len(demo), batch_size)])
        features.append(np.concatenate([flare_features(embeddings, history), demo.proprio], axis=1))
        actions.append(demo.actions)
    return np.concatenate(features).astype(np.float32), np.concatenate(actions).astype(np.float32)


class BCPolicy(nn.Module):
    """BatchNorm on the input, then an MLP: mjrl's BatchNormMLP, as CortexBench trains it."""

    def __init__(self, in_features: int, out_features: int, hidden_sizes: Sequence[int] = (256, 256, 256)) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(in_features)
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.input_norm(features))  # (B, F) -> (B, A)

    def act_fn(self) -> ActFn:
        """The policy in eval mode as a numpy function (batch statistics frozen)."""
        self.eval()

        def act(features: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self(torch.from_numpy(np.asarray(features, dtype=np.float32))).numpy()

        return act


def train_policy(
    policy: BCPolicy,
    features: np.ndarray,
    actions: np.ndarray,
    options: BCOptions,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Behaviour cloning: MSE on the expert's actions, Adam, shuffled minibatches; the mean loss per epoch.

    on_epoch(epoch, loss) runs after each (1-based) epoch, with the policy in train mode afterwards.
    """
    if len(features) != len(actions) or len(features) < 2:
        raise ValueError(f"need at least 2 (feature, action) pairs, got {len(features)} and {len(actions)}")
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(features), torch.from_numpy(actions)
    optimizer = torch.optim.Adam(policy.parameters(), lr=options.lr)
    losses = []
    for epoch in range(1, options.epochs + 1):
        policy.train()
        order = torch.randperm(len(x), generator=generator)
        total, batches = 0.0, 0
        for start in range(0, len(x), options.batch_size):
            index = order[start : start + options.batch_size]
            if len(index) < 2:  # BatchNorm needs two rows; a lone last row waits for the next epoch
                continue
            loss = nn.functional.mse_loss(policy(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / batches)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses


def behaviour_cloning(
    embed: Embedder,
    demos: Sequence[Demonstration],
    task: RolloutTask,
    options: BCOptions,
    seed: int,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> BCResult:
    """Train a policy on `demos` over frozen embeddings and evaluate it on `task` as CortexBench does.

    features: the (inputs, targets) of `demonstration_features(embed, demos, options.history)`,
    when the caller already has them (the same encoder's features serve every seed).
    """
    x, y = features if features is not None else demonstration_features(embed, demos, options.history)
    torch.manual_seed(seed)
    policy = BCPolicy(x.shape[1], y.shape[1], options.hidden_sizes)
    result = BCResult(task=task.name, seed=seed, losses=[])
    eval_epochs = set(options.eval_epochs())

    def evaluate(epoch: int, loss: float) -> None:
        if epoch in eval_epochs:
            success = task.rollout(
                policy.act_fn(),
                embed,
                episodes=options.eval_episodes,
                horizon=options.horizon,
                history=options.history,
                seed=seed,
            )
            result.evaluations[epoch] = 100.0 * float(np.mean(success))

    result.losses = train_policy(policy, x, y, options, seed, on_epoch=evaluate)
    return result


def encoder_embedder(encoder: torch.nn.Module) -> Embedder:
    """Frames -> the frozen encoder's CLS token (VC-1's embedding), or its mean patch token without one."""

    def embed(frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, encoder.hidden_size), np.float32)
        out = encoder.encode(list(frames))
        pooled = out.cls_token if out.cls_token is not None else out.patch_tokens.mean(1)
        return pooled.float().cpu().numpy()

    return embed
