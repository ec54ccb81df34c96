"""The supervision control: the boost's own encoder adapter, trained by depth labels directly.

The paper's claim is that language (a frozen LLM answering spatial questions) is a good way to
put 3D knowledge into an encoder. Its natural control trains the *same* adapter on the *same*
images with the depth the conversations were computed from, through a linear head instead of
the LLM (`train.objective: depth`). It bounds what this encoder, adapter and data can absorb
at all: if it cannot beat the position-only floor, the data, token grid or encoder is the
bottleneck, not the language model.

    objective = DepthObjective(vlm.encoder, head)      # (loss summed over patches, patches)
    dataset = DepthDataset(images, depths, vlm.encoder.preprocess, depth_range)

Targets are the evaluation probe's: the mean log-depth of each patch's valid pixels on the
encoder's patch grid (evaluate/probe_targets.py `depth_patch_target`), patches with less than half
their pixels valid left out. The loss is the squared error summed over target patches, which
the loop turns into the mean over the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from spatialboost.evaluate.features import crop_to_view, view_box
from spatialboost.evaluate.probe_targets import depth_patch_target
from spatialboost.models.encoders import VisionEncoder
from spatialboost.models.preprocess import ImagePreprocess

MIN_VALID_FRACTION = 0.5
"""A patch is a target when at least this share of its pixels has depth (the probe's rule)."""


class DepthObjective(nn.Module):
    """Squared error of a linear head's per-patch log-depth, summed over valid patches (for `fit`)."""

    def __init__(self, encoder: VisionEncoder, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(
        self, pixel_values: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(pixel_values).patch_tokens  # (B, N, D)
        pred = self.head(tokens.float())[..., 0]  # (B, N)
        err = torch.where(valid, (pred - targets) ** 2, torch.zeros_like(pred))
        return err.sum(), valid.sum()


def new_depth_head(encoder: VisionEncoder, seed: int, mean_log_depth: float) -> nn.Linear:
    """A (D,) token -> log-depth head, zero weights and the training mean as its bias: the first
    step starts from the mean prediction, not from noise."""
    head = nn.Linear(encoder.hidden_size, 1)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.normal_(0.0, 1e-3, generator=generator)
        head.bias.fill_(mean_log_depth)
    return head


@dataclass
class DepthBatch:
    pixel_values: torch.Tensor  # (B, 3, H, W)
    targets: torch.Tensor  # (B, N) float32 log-depth
    valid: torch.Tensor  # (B, N) bool
    n_targets: int

    def inputs(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).to(device) for k in ("pixel_values", "targets", "valid")}


class DepthDataset(Dataset):
    """Preprocessed images with their patch log-depth targets, computed once (small data sets).

    images / depths: (H, W, 3) uint8 and (H, W) float32 metres (0 = none) per image, or a
    callable per index that loads them (read lazily, once each).
    """

    def __init__(
        self,
        load: Callable[[int], tuple[np.ndarray, np.ndarray]],
        n: int,
        preprocess: ImagePreprocess,
        grid: tuple[int, int],
        depth_range: tuple[float, float],
    ) -> None:
        pixels, targets, valid = [], [], []
        for index in range(n):
            image, depth = load(index)
            box = view_box(preprocess, *image.shape[:2])
            value, fraction = depth_patch_target(crop_to_view(depth, box, 0.0), grid, depth_range, log=True)
            pixels.append(preprocess([image])[0])
            targets.append(torch.from_numpy(value.reshape(-1)))
            valid.append(torch.from_numpy(fraction.reshape(-1) >= MIN_VALID_FRACTION))
        if not pixels:
            raise ValueError("the depth-supervision data set is empty")
        self.pixels, self.targets, self.valid = torch.stack(pixels), torch.stack(targets), torch.stack(valid)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> int:
        return index

    def mean_log_depth(self) -> float:
        return float(self.targets[self.valid].mean())

    def collate(self, indices: Sequence[int]) -> DepthBatch:
        index = torch.as_tensor(list(indices))
        valid = self.valid[index]
        return DepthBatch(self.pixels[index], self.targets[index], valid, int(valid.sum()))
