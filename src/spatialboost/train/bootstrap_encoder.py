"""Bootstrap (a): pre-train a small Dinov2Model on "which shapes and colours are in the image".

One linear head scores the 15 labels of bootstrap_data.LABELS on every token of the final
(normed) layer, CLS and patches alike, and an image's logit for a label is its best token's
(multiple-instance max pooling); binary cross-entropy against "present or not". Objects in the
world are often a few patches wide: a head on the CLS or mean token learns them about half as
fast (test F1 0.27 vs 0.54 after 6 epochs, demo sizes), and scoring each patch gives the patch
tokens, which the projector reads, their own semantics. Images are randomly flipped left-right
(which changes no label). Nothing about depth or geometry is supervised. Training goes through
the one loop (`fit`), so it checkpoints and resumes like every other phase.

    encoder = build_encoder(cfg.bootstrap.encoder, seed=0)
    result = pretrain_encoder(encoder, head, pixels, targets, train_cfg, out_dir)
    scores = multilabel_scores(encoder, head, test_pixels, test_targets)   # micro F1, ...
    save_hf_encoder(encoder, "models/bootstrap/encoder")                   # Dinov2Encoder.from_pretrained
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import BitImageProcessor, Dinov2Config

from spatialboost.config import PretrainEncoderConfig, TrainConfig
from spatialboost.models.encoders import Dinov2Encoder, VisionEncoder
from spatialboost.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from spatialboost.train.adapters import freeze_unreachable
from spatialboost.train.bootstrap_data import LABELS, SHAPE_CLASSES
from spatialboost.train.loop import MetricsLogger, TrainResult, fit


def build_encoder(cfg: PretrainEncoderConfig, seed: int) -> Dinov2Encoder:
    """A random Dinov2 encoder (final layer, final norm: DINOv2's last_hidden_state) that
    squashes images to cfg.image_size with ImageNet normalisation."""
    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_ratio * cfg.hidden_size,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )
    preprocess = ImagePreprocess((cfg.image_size, cfg.image_size), IMAGENET_MEAN, IMAGENET_STD, mode="squash")
    return Dinov2Encoder.from_config(config, preprocess, feature_layer=-1, apply_final_norm=True)


def label_logits(encoder: VisionEncoder, head: nn.Linear, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, L): per label, the highest logit over the CLS and patch tokens."""
    feats = encoder(pixel_values)
    tokens = torch.cat([feats.cls_token[:, None], feats.patch_tokens], dim=1)  # (B, 1 + N, D)
    return head(tokens).amax(dim=1)  # (B, 1 + N, L) -> (B, L)


class MultiLabelObjective(nn.Module):
    """BCE of the max-pooled token logits, summed over images x labels (for `fit`)."""

    def __init__(self, encoder: VisionEncoder, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, pixel_values: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:  # left-right flips keep every label (torch's RNG: checkpointed by the loop)
            flip = torch.rand(pixel_values.shape[0], device=pixel_values.device) < 0.5
            pixel_values = torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)
        logits = label_logits(self.encoder, self.head, pixel_values)  # (B, L)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
        tokens = torch.tensor(pixel_values.shape[0] * (self.encoder.model.embeddings.patch_embeddings.num_patches + 1))
        return loss, tokens


@dataclass
class ImageBatch:
    pixel_values: torch.Tensor  # (B, 3, H, W)
    targets: torch.Tensor  # (B, L) 0/1
    n_targets: int  # B x L: BCE terms

    def inputs(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values.to(device), "targets": self.targets.to(device)}


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


@dataclass(frozen=True)
class _GatherImages:
    pixels: torch.Tensor
    targets: torch.Tensor

    def __call__(self, indices: list[int]) -> ImageBatch:
        index = torch.tensor(indices)
        targets = self.targets[index]
        return ImageBatch(self.pixels[index], targets, targets.numel())


def pretrain_encoder(
    encoder: VisionEncoder,
    head: nn.Linear,
    *,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    out_dir: str | Path,
    tracker: MetricsLogger | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train encoder + head (all parameters) on preprocessed pixels (N, 3, H, W) and 0/1 targets (N, L)."""
    objective = MultiLabelObjective(encoder, head)
    objective.requires_grad_(True)
    freeze_unreachable(encoder, list(encoder.parameters()))  # e.g. DINOv2's mask token: no gradient, ever
    return fit(
        objective,
        _Indices(len(pixels)),
        _GatherImages(pixels, targets),
        cfg,
        out_dir,
        tracker=tracker,
        progress=progress,
        name="encoder",
    )


@torch.no_grad()
def multilabel_scores(
    encoder: VisionEncoder, head: nn.Linear, pixels: torch.Tensor, targets: torch.Tensor, batch_size: int = 128
) -> dict[str, float]:
    """Micro F1 over all labels, over shapes only and over colours only (probability 0.5), and
    the fraction of images whose whole label set is right."""
    encoder.eval()
    logits = torch.cat([label_logits(encoder, head, pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])
    predicted = (logits > 0).float()
    n_shapes = len(SHAPE_CLASSES)
    return {
        "f1": _micro_f1(predicted, targets),
        "shape_f1": _micro_f1(predicted[:, :n_shapes], targets[:, :n_shapes]),
        "colour_f1": _micro_f1(predicted[:, n_shapes:], targets[:, n_shapes:]),
        "exact_set_accuracy": float((predicted == targets).all(dim=1).float().mean()),
    }


def _micro_f1(predicted: torch.Tensor, targets: torch.Tensor) -> float:
    tp = float((predicted * targets).sum())
    fp = float((predicted * (1 - targets)).sum())
    fn = float(((1 - predicted) * targets).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1e-9)


def new_head(encoder: VisionEncoder, seed: int) -> nn.Linear:
    """The multi-label linear head: a (D,) token -> (L,) logits."""
    torch.manual_seed(seed)
    return nn.Linear(encoder.hidden_size, len(LABELS))


def save_hf_encoder(encoder: Dinov2Encoder, folder: str | Path) -> Path:
    """A transformers checkpoint folder (Dinov2Model + preprocessor_config.json) that
    `Dinov2Encoder.from_pretrained(folder)` loads exactly like a released DINOv2."""
    folder = Path(folder)
    encoder.model.save_pretrained(folder)
    size = encoder.preprocess.size
    processor: Any = BitImageProcessor(
        size={"height": size[0], "width": size[1]},
        do_center_crop=False,
        image_mean=list(encoder.preprocess.mean),
        image_std=list(encoder.preprocess.std),
        resample=3,  # bicubic
    )
    processor.save_pretrained(folder)
    return folder
