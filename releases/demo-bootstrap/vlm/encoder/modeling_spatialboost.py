"""A SpatialBoost-boosted vision encoder as a transformers model (remote code, shipped with the weights).

    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    out = model(pixel_values)          # pixel_values (B, 3, H, W) from the folder's image processor
    out.patch_tokens                   # (B, N, D) tokens of config.feature_layer, prefix tokens removed
    out.cls_token                      # (B, D); None for SigLIP (no CLS token)
    out.pooler_output                  # (B, D): the CLS token, or the mean patch token without one

The wrapped encoder (`self.model`) is the base library's own module (transformers Dinov2Model,
CLIPVisionModel, SiglipVisionModel, or open_clip's VisionTransformer), built from
`config.arch_config`. When `config.dual_channel` is set, every block's attention `Attn` is wrapped
as in SpatialBoost (Eq. 1):

    alpha = sigmoid(a)                               # (D,), one gate per channel
    Attn_final(x) = alpha * Attn(x) + (1 - alpha) * Attn+(x)

This cannot be folded into a single attention (the two softmaxes differ), so the twin `Attn+` and
the gate `a` are weights of their own. Parameter names match the SpatialBoost library exactly
(`model.<blocks>.<i>.<attention>.{attn, attn_plus, gate}`), so one safetensors file serves both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_spatialboost import SpatialBoostVisionConfig

# family -> (dotted path of the block list inside the wrapped model, attention name in a block, final norm)
LAYOUT: dict[str, tuple[str, str, str]] = {
    "dinov2": ("encoder.layer", "attention", "layernorm"),
    "clip": ("encoder.layers", "self_attn", "post_layernorm"),
    "siglip": ("encoder.layers", "self_attn", "post_layernorm"),
    "dinov3": ("model.layer", "attention", "norm"),
    "open_clip": ("transformer.resblocks", "attn", "ln_post"),
}


@dataclass
class SpatialBoostVisionOutput(ModelOutput):
    """Features of one batch; every tensor comes from the hidden state `config.feature_layer`."""

    last_hidden_state: torch.Tensor | None = None  # (B, T, D), prefix tokens included
    pooler_output: torch.Tensor | None = None  # (B, D)
    patch_tokens: torch.Tensor | None = None  # (B, N, D)
    cls_token: torch.Tensor | None = None  # (B, D) or None
    hidden_states: tuple[torch.Tensor, ...] | None = None  # num_layers + 1 of (B, T, D), raw, if asked


class DualChannelAttention(nn.Module):
    """alpha * attn(...) + (1 - alpha) * attn_plus(...) with the wrapped module's own call signature;
    for tuple outputs (output, weights, ...) the outputs are mixed and the rest comes from `attn`."""

    def __init__(self, attn: nn.Module, dim: int) -> None:
        super().__init__()
        self.attn = attn
        self.attn_plus = copy.deepcopy(attn)
        self.gate = nn.Parameter(torch.zeros(dim, device=next(attn.parameters()).device))  # a: (D,)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.attn(*args, **kwargs)
        out_plus = self.attn_plus(*args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out  # (..., D)
        y_plus = out_plus[0] if isinstance(out_plus, tuple) else out_plus
        alpha = torch.sigmoid(self.gate).to(y.dtype)  # (D,)
        mixed = alpha * y + (1 - alpha) * y_plus
        return (mixed, *out[1:]) if isinstance(out, tuple) else mixed


def build_backbone(family: str, arch_config: dict) -> nn.Module:
    """The base encoder's module with random weights, from its own architecture config."""
    if family == "open_clip":
        try:
            from open_clip.model import _build_vision_tower  # what open_clip's CLIP.__init__ uses
        except ImportError as err:
            raise ImportError("this encoder is an OpenCLIP tower: pip install open_clip_torch") from err
        vision_cfg = dict(arch_config["vision_cfg"])
        return _build_vision_tower(arch_config["embed_dim"], vision_cfg, arch_config.get("quick_gelu", False))
    import transformers

    config_class, model_class = {
        "dinov2": ("Dinov2Config", "Dinov2Model"),
        "clip": ("CLIPVisionConfig", "CLIPVisionModel"),
        "siglip": ("SiglipVisionConfig", "SiglipVisionModel"),
        "dinov3": ("DINOv3ViTConfig", "DINOv3ViTModel"),
    }[family]
    config = getattr(transformers, config_class).from_dict(arch_config)
    return getattr(transformers, model_class)(config)


class SpatialBoostVisionModel(PreTrainedModel):
    """pixel_values -> features of a (boosted) vision encoder; see the module docstring."""

    config_class = SpatialBoostVisionConfig
    base_model_prefix = "spatialboost"  # not "model": checkpoint keys start with "model." as they are
    main_input_name = "pixel_values"

    def __init__(self, config: SpatialBoostVisionConfig) -> None:
        super().__init__(config)
        self.model = build_backbone(config.family, config.arch_config)
        blocks_path, attention_name, _ = LAYOUT[config.family]
        if config.dual_channel:
            for block in self.model.get_submodule(blocks_path):
                setattr(block, attention_name, DualChannelAttention(getattr(block, attention_name), self.hidden_size))
        n_states = len(self.model.get_submodule(blocks_path)) + 1
        if not -n_states <= config.feature_layer < n_states:
            raise ValueError(f"feature_layer {config.feature_layer} out of range for {n_states - 1} layers")
        self.post_init()

    @property
    def hidden_size(self) -> int:
        if self.config.family == "open_clip":
            return int(self.model.transformer.width)
        return int(self.config.arch_config["hidden_size"])

    @property
    def num_prefix_tokens(self) -> int:
        if self.config.family == "siglip":
            return 0
        if self.config.family == "dinov3":  # CLS, then the register tokens
            return 1 + int(self.config.arch_config.get("num_register_tokens", 0))
        return 1

    def _init_weights(self, module: nn.Module) -> None:
        # Every weight, the gates included, comes from the checkpoint; a fresh model starts with
        # alpha = 0.5 and Attn+ = Attn, i.e. exactly the base encoder.
        if isinstance(module, DualChannelAttention):
            with torch.no_grad():
                module.gate.zero_()

    def all_hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> num_layers + 1 tensors (B, T, D): embeddings, then each block's output."""
        if self.config.family != "open_clip":
            return tuple(self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states)
        visual = self.model
        x = visual._embeds(pixel_values)  # (B, 1 + N, D): patchify + CLS + positions + ln_pre
        hidden = [x]
        batch_first = visual.transformer.batch_first
        x = x if batch_first else x.transpose(0, 1)
        for block in visual.transformer.resblocks:
            x = block(x)
            hidden.append(x if batch_first else x.transpose(0, 1))
        return tuple(hidden)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SpatialBoostVisionOutput | tuple[torch.Tensor, ...]:
        dtype = next(self.parameters()).dtype
        hidden = self.all_hidden_states(pixel_values.to(self.device, dtype))
        x = hidden[self.config.feature_layer]  # (B, T, D)
        if self.config.apply_final_norm:
            x = self.model.get_submodule(LAYOUT[self.config.family][2])(x)
        p = self.num_prefix_tokens
        patch_tokens, cls_token = x[:, p:], (x[:, 0] if p else None)
        out = SpatialBoostVisionOutput(
            last_hidden_state=x,
            pooler_output=cls_token if cls_token is not None else patch_tokens.mean(dim=1),
            patch_tokens=patch_tokens,
            cls_token=cls_token,
            hidden_states=hidden if output_hidden_states else None,
        )
        use_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return out if use_dict else out.to_tuple()
