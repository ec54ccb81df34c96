"""Dual-channel attention: boost a vision encoder without overwriting what it knows.

Every self-attention layer `Attn` of the encoder becomes (SpatialBoost, Eq. 1)

    alpha = sigmoid(a)                                  # (D,), one gate per channel
    Attn_final(x) = alpha * Attn(x) + (1 - alpha) * Attn+(x)

`Attn` keeps its pre-trained weights and is frozen; `Attn+` is a trainable deep copy of it (same
initial weights) and `a` starts at zero (alpha = 0.5). Since Attn+(x) == Attn(x) at
initialisation, the boosted encoder computes exactly what the original did, whatever `a` is;
training moves Attn+ and the gates only.

"Attn" is the whole attention module of a block as its library defines it: the q/k/v
projections, the attention itself and the output projection (open_clip's nn.MultiheadAttention,
transformers' Dinov2Attention / CLIPAttention / SiglipAttention / DINOv3ViTAttention; each
encoder adapter names it, `VisionEncoder.attention_name`, so a new family touches encoders.py only). Its output is what the block
adds to its residual stream, so the gate mixes residual-stream channels. On a ViT-L/14 this adds
about a third of the encoder's parameters (see `test_parameter_growth_vit_large`).

    report = add_dual_channel(encoder)        # in place; everything else in the encoder frozen
    optimizer = AdamW(dual_channel_parameters(encoder))
    gate_values(encoder)                      # (L, D) alphas, for logging
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spatialboost.models.encoders import VisionEncoder


class DualChannelAttention(nn.Module):
    """alpha * attn(...) + (1 - alpha) * attn_plus(...), with the wrapped module's own call signature.

    The wrapper forwards any arguments unchanged to both channels, so it fits every family's
    calling convention. When the attention returns a tuple (output, weights, ...), the outputs are
    mixed and the rest comes from the original channel.
    """

    def __init__(self, attn: nn.Module, dim: int) -> None:
        super().__init__()
        self.attn = attn  # the pre-trained attention, frozen
        self.attn_plus = copy.deepcopy(attn)  # the trainable twin, same initial weights
        self.gate = nn.Parameter(torch.zeros(dim, device=_device_of(attn)))  # a: (D,), alpha = sigmoid(a)
        self.attn.requires_grad_(False)
        self.attn_plus.requires_grad_(True)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.attn(*args, **kwargs)
        out_plus = self.attn_plus(*args, **kwargs)
        y, y_plus = _first(out), _first(out_plus)  # (..., D) each: (B, T, D), or (T, B, D) for old MHA
        alpha = torch.sigmoid(self.gate).to(y.dtype)  # (D,)
        mixed = alpha * y + (1 - alpha) * y_plus  # (..., D)
        return (mixed, *out[1:]) if isinstance(out, tuple) else mixed


@dataclass(frozen=True)
class DualChannelReport:
    """What `add_dual_channel` did: layers wrapped and parameter counts (growth = added / before)."""

    n_layers: int
    params_before: int
    params_added: int
    growth_fraction: float


def add_dual_channel(encoder: VisionEncoder, freeze_rest: bool = True) -> DualChannelReport:
    """Wrap every block's attention of `encoder` in place (see the module docstring).

    freeze_rest: also freeze every other encoder parameter, so that exactly the dual-channel
    parameters train (the boost stage). With False only the original attentions are frozen.
    """
    if is_dual_channel(encoder):
        raise ValueError("the encoder already has dual-channel attention")
    name = encoder.attention_name  # each family's adapter says which submodule of a block is its attention
    params_before = _count(encoder)
    if freeze_rest:
        encoder.requires_grad_(False)
    for block in encoder.blocks:
        setattr(block, name, DualChannelAttention(getattr(block, name), encoder.hidden_size))
    params_added = _count(encoder) - params_before
    return DualChannelReport(
        n_layers=encoder.num_layers,
        params_before=params_before,
        params_added=params_added,
        growth_fraction=params_added / params_before,
    )


def dual_channel_layers(encoder: nn.Module) -> list[DualChannelAttention]:
    """The wrapped attentions, in block order."""
    return [m for m in encoder.modules() if isinstance(m, DualChannelAttention)]


def is_dual_channel(encoder: nn.Module) -> bool:
    return bool(dual_channel_layers(encoder))


def dual_channel_parameters(encoder: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of the method: every Attn+ and every gate `a`."""
    params: list[nn.Parameter] = []
    for layer in dual_channel_layers(encoder):
        params.extend(layer.attn_plus.parameters())
        params.append(layer.gate)
    return params


@torch.no_grad()
def gate_values(encoder: nn.Module) -> torch.Tensor:
    """(L, D) float32 alphas = sigmoid(a): the weight of the original attention, per layer and channel."""
    layers = dual_channel_layers(encoder)
    if not layers:
        raise ValueError("the encoder has no dual-channel attention")
    return torch.stack([torch.sigmoid(layer.gate.float()) for layer in layers]).cpu()


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
