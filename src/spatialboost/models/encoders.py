"""Vision encoders behind one interface: images -> patch tokens, CLS token, hidden states.

    encoder = Dinov2Encoder.from_pretrained("models/hub/dinov2", feature_layer=-1, apply_final_norm=True)
    pixels = encoder.preprocess(list_of_uint8_images)         # (B, 3, H, W) float32
    out = encoder(pixels)                                      # EncoderFeatures
    out.patch_tokens                                           # (B, N, D)
    out.cls_token                                              # (B, D), None for SigLIP

Hidden states follow transformers' convention: index 0 is the token sequence entering the first
block, index i the output of block i, so there are `num_layers + 1`; `feature_layer=-2` is the
penultimate block's output (what LLaVA feeds its projector). `apply_final_norm` applies the
encoder's own final LayerNorm to the chosen layer (DINOv2's `last_hidden_state` is
`feature_layer=-1, apply_final_norm=True`).

Families (explicit mapping in `ENCODER_FAMILIES`):
    open_clip  open_clip `VisionTransformer` (the `.visual` of a CLIP)
    dinov2     transformers `Dinov2Model`
    clip       transformers `CLIPVisionModel`
    siglip     transformers `SiglipVisionModel` (no CLS token: every token is a patch); SigLIP 2's
               fixed-resolution checkpoints (google/siglip2-so400m-patch14-384) are SigLIP models too
    dinov3     transformers `DINOv3ViTModel` (CLS + register tokens before the patches, RoPE)

Construction is local only: `from_pretrained(folder)` for transformers checkpoints, an open_clip
architecture name + checkpoint file (or a `local-dir:` folder) for open_clip, `from_config(...)`
for random weights. Nothing here downloads (hub.py does that, in its own stage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from spatialboost.models.preprocess import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImagePreprocess,
    Images,
    from_hf_folder,
    from_open_clip_cfg,
)


@dataclass
class EncoderFeatures:
    """What a vision encoder returns for a batch of B images."""

    patch_tokens: torch.Tensor  # (B, N, D) tokens of the chosen layer, prefix (CLS) tokens removed
    cls_token: torch.Tensor | None  # (B, D) the CLS token of the chosen layer; None without one
    hidden_states: tuple[torch.Tensor, ...] | None = None  # num_layers + 1 of (B, T, D), raw, if asked


class VisionEncoder(nn.Module):
    """One vision transformer with its preprocessing and a chosen feature layer.

    Subclasses say where their blocks live and how to run them; everything else is shared.
    `model` is the wrapped library module (kept as is, so its weights load and save normally).
    """

    family: ClassVar[str]
    num_prefix_tokens: int = 1  # tokens before the patches (CLS, registers); a property where the config says
    blocks_path: ClassVar[str]  # dotted path of the ModuleList of transformer blocks inside `model`
    attention_name: ClassVar[str]  # the attention submodule of each block: what dual-channel attention wraps
    lora_targets: ClassVar[tuple[str, ...]]  # the attention projections LoRA adapts by default (train.lora)

    def __init__(
        self,
        model: nn.Module,
        preprocess: ImagePreprocess,
        arch_config: dict[str, Any],
        *,
        feature_layer: int = -1,
        apply_final_norm: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.arch_config = arch_config  # JSON-able: rebuilds `model` through `from_config`
        self.apply_final_norm = apply_final_norm
        n_states = self.num_layers + 1
        if not -n_states <= feature_layer < n_states:
            raise ValueError(f"feature_layer {feature_layer} out of range for {self.num_layers} layers")
        self.feature_layer = feature_layer

    # --- what each family provides -------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        """The LayerNorm the library applies after the last block."""
        raise NotImplementedError

    def all_hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> num_layers + 1 tensors of (B, T, D), T = prefix tokens + patches."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.blocks_path)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> EncoderFeatures:
        """(B, 3, H, W) preprocessed pixels -> patch tokens (B, N, D) and CLS (B, D) of `feature_layer`."""
        hidden = self.all_hidden_states(pixel_values.to(self.device, self.dtype))
        x = hidden[self.feature_layer]  # (B, T, D)
        if self.apply_final_norm:
            x = self.final_norm()(x)
        p = self.num_prefix_tokens
        return EncoderFeatures(
            patch_tokens=x[:, p:],
            cls_token=x[:, 0] if p else None,
            hidden_states=hidden if output_hidden_states else None,
        )

    @torch.no_grad()
    def encode(self, images: Images) -> EncoderFeatures:
        """uint8 (H, W, 3) images -> features, through the encoder's own preprocessing."""
        return self(self.preprocess(images))

    def spec(self) -> dict[str, Any]:
        """Everything but the weights needed to rebuild this encoder (see export.py)."""
        return {
            "family": self.family,
            "arch_config": self.arch_config,
            "feature_layer": self.feature_layer,
            "apply_final_norm": self.apply_final_norm,
            "preprocess": self.preprocess.to_dict(),
        }


# --- transformers families ---------------------------------------------------------------------


class _HFEncoder(VisionEncoder):
    """A transformers vision model; hidden states come from `output_hidden_states=True`."""

    model_class: ClassVar[type[PreTrainedModel]]
    config_class: ClassVar[type[PretrainedConfig]]
    final_norm_name: ClassVar[str]
    default_mean: ClassVar[tuple[float, float, float]]
    default_std: ClassVar[tuple[float, float, float]]
    default_mode: ClassVar[str] = "shortest"

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def final_norm(self) -> nn.Module:
        return getattr(self.model, self.final_norm_name)

    def all_hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states)

    @classmethod
    def default_preprocess(cls, config: PretrainedConfig) -> ImagePreprocess:
        """Preprocessing from the config alone (used when a folder has no processor file)."""
        s = int(config.image_size)
        return ImagePreprocess((s, s), cls.default_mean, cls.default_std, cls.default_mode)

    @classmethod
    def from_model(cls, model: PreTrainedModel, preprocess: ImagePreprocess | None = None, **options: Any):
        """Wrap an already built model of `model_class` (e.g. a LLaVA vision tower)."""
        if not isinstance(model, cls.model_class):
            raise TypeError(f"{cls.__name__} wraps {cls.model_class.__name__}, got {type(model).__name__}")
        preprocess = preprocess or cls.default_preprocess(model.config)
        return cls(model, preprocess, model.config.to_dict(), **options)

    @classmethod
    def from_config(
        cls, config: PretrainedConfig | dict, preprocess: ImagePreprocess | None = None, **options: Any
    ) -> _HFEncoder:
        """Random weights from a config object or its `to_dict()`; options: feature_layer, apply_final_norm."""
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__} needs a {cls.config_class.__name__}, got {type(config).__name__}")
        return cls.from_model(cls.model_class(config).eval(), preprocess, **options)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype = torch.float32, **options: Any) -> _HFEncoder:
        """Weights from a local checkpoint folder; preprocessing from its preprocessor_config.json."""
        folder = _local_dir(folder)
        model = cls.model_class.from_pretrained(folder, local_files_only=True, dtype=dtype).eval()
        return cls.from_model(model, from_hf_folder(folder), **options)


class Dinov2Encoder(_HFEncoder):
    family = "dinov2"
    blocks_path = "encoder.layer"
    attention_name = "attention"  # Dinov2Layer.attention: Dinov2Attention(hidden_states, ...) -> (out, weights)
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj")  # Dinov2Attention (transformers 5)
    model_class = Dinov2Model
    config_class = Dinov2Config
    final_norm_name = "layernorm"
    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD


class CLIPVisionEncoder(_HFEncoder):
    family = "clip"
    blocks_path = "encoder.layers"
    attention_name = "self_attn"  # CLIPEncoderLayer.self_attn: CLIPAttention(hidden_states, ...) -> (out, weights)
    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj")
    model_class = CLIPVisionModel
    config_class = CLIPVisionConfig
    final_norm_name = "post_layernorm"
    default_mean, default_std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


class SiglipVisionEncoder(_HFEncoder):
    family = "siglip"
    num_prefix_tokens = 0
    blocks_path = "encoder.layers"
    attention_name = "self_attn"  # SiglipEncoderLayer.self_attn: SiglipAttention(hidden_states, ...) -> (out, weights)
    lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj")
    model_class = SiglipVisionModel
    config_class = SiglipVisionConfig
    final_norm_name = "post_layernorm"
    default_mean, default_std = HALF, HALF
    default_mode = "squash"


class DINOv3Encoder(_HFEncoder):
    """DINOv3: CLS, then `num_register_tokens` registers, then the patches; its processor squashes
    to 224 x 224 (bilinear). Registers are neither patches nor the CLS token: dropped."""

    family = "dinov3"
    blocks_path = "model.layer"
    # DINOv3ViTLayer.attention: DINOv3ViTAttention(hidden_states, position_embeddings=...) -> (out, weights)
    attention_name = "attention"
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj")  # DINOv3ViTAttention
    model_class = DINOv3ViTModel
    config_class = DINOv3ViTConfig
    final_norm_name = "norm"
    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    default_mode = "squash"

    @property
    def num_prefix_tokens(self) -> int:  # type: ignore[override]
        return 1 + int(self.model.config.num_register_tokens)


# --- open_clip ------------------------------------------------------------------------------------


class OpenCLIPEncoder(VisionEncoder):
    """open_clip's `VisionTransformer` (a CLIP's `.visual`).

    arch_config is open_clip's model config ({"embed_dim", "vision_cfg", "quick_gelu", ...}); only
    the vision tower is built from it, so a ViT-L costs no text-tower memory.
    """

    family = "open_clip"
    blocks_path = "transformer.resblocks"
    attention_name = "attn"  # ResidualAttentionBlock.attn: nn.MultiheadAttention(q, k, v, ...) -> (out, weights)
    lora_targets = ("attn",)  # nn.MultiheadAttention: peft's LoRA wraps it as a whole

    @property
    def hidden_size(self) -> int:
        return int(self.model.transformer.width)

    def final_norm(self) -> nn.Module:
        return self.model.ln_post

    def all_hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        visual = self.model
        # `_embeds` is open_clip's own patchify + CLS + positions + ln_pre (pinned open_clip 3.x);
        # the public `forward_intermediates` drops the embeddings (hidden state 0).
        x = visual._embeds(pixel_values)  # (B, 1 + N, D)
        batch_first = visual.transformer.batch_first
        hidden = [x]
        x = x if batch_first else x.transpose(0, 1)  # (T, B, D) for the old layout
        for block in self.blocks:
            x = block(x)
            hidden.append(x if batch_first else x.transpose(0, 1))
        return tuple(hidden)

    @classmethod
    def from_config(
        cls, arch_config: dict, preprocess: ImagePreprocess | None = None, **options: Any
    ) -> OpenCLIPEncoder:
        """Random weights from an open_clip model config dict (as in open_clip's JSON configs)."""
        from open_clip.model import _build_vision_tower  # the builder CLIP.__init__ itself uses
        from open_clip.transformer import VisionTransformer

        vision_cfg = dict(arch_config["vision_cfg"])
        visual = _build_vision_tower(arch_config["embed_dim"], vision_cfg, arch_config.get("quick_gelu", False))
        if not isinstance(visual, VisionTransformer):
            raise ValueError(f"only open_clip VisionTransformer towers are supported, got {type(visual).__name__}")
        size = vision_cfg.get("image_size", 224)
        preprocess = preprocess or from_open_clip_cfg({"size": size})
        return cls(visual.eval(), preprocess, arch_config, **options)

    @classmethod
    def from_pretrained(cls, model_name: str, checkpoint: str | Path | None = None, **options: Any) -> OpenCLIPEncoder:
        """A CLIP from open_clip: "local-dir:/folder", or an architecture name + checkpoint file.

        The architecture name must be built in or registered by the caller through
        `open_clip.add_model_config`. A pretrained *tag* would download: resolve it with hub.py.
        """
        import open_clip

        if model_name.startswith("hf-hub:"):
            raise ValueError("hf-hub: names download; fetch the folder with hub.py and pass local-dir:")
        if model_name.startswith("local-dir:"):
            folder = _local_dir(model_name.removeprefix("local-dir:"))
            arch_config = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
        else:
            if checkpoint is not None and not Path(checkpoint).is_file():
                raise FileNotFoundError(f"open_clip checkpoint file not found: {checkpoint}")
            arch_config = open_clip.get_model_config(model_name)
            if arch_config is None:
                raise ValueError(f"unknown open_clip architecture {model_name!r} (register it with add_model_config)")
        clip = open_clip.create_model(
            model_name,
            pretrained=None if checkpoint is None else str(checkpoint),
            pretrained_text=False,
            load_weights=True,
        )
        preprocess = from_open_clip_cfg(open_clip.get_model_preprocess_cfg(clip))
        return cls(clip.visual.eval(), preprocess, arch_config, **options)


ENCODER_FAMILIES: dict[str, type[VisionEncoder]] = {
    "open_clip": OpenCLIPEncoder,
    "dinov2": Dinov2Encoder,
    "clip": CLIPVisionEncoder,
    "siglip": SiglipVisionEncoder,
    "dinov3": DINOv3Encoder,
}

# transformers `model_type` of a vision config -> our family (LLaVA towers, exported configs)
HF_MODEL_TYPES: dict[str, str] = {
    "dinov2": "dinov2", "clip_vision_model": "clip", "siglip_vision_model": "siglip", "dinov3_vit": "dinov3",
}  # fmt: skip


def encoder_class(family: str) -> type[VisionEncoder]:
    """The adapter class of a family; a clear error for anything else."""
    if family not in ENCODER_FAMILIES:
        raise ValueError(f"unknown encoder family {family!r}; known: {sorted(ENCODER_FAMILIES)}")
    return ENCODER_FAMILIES[family]


def build_encoder(
    family: str,
    arch_config: dict,
    preprocess: ImagePreprocess | dict | None = None,
    **options: Any,
) -> VisionEncoder:
    """Random-weight encoder of a family from its architecture config (the export format's fields)."""
    if isinstance(preprocess, dict):
        preprocess = ImagePreprocess.from_dict(preprocess)
    return encoder_class(family).from_config(arch_config, preprocess, **options)


def _local_dir(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a local folder: {folder} (nothing is downloaded here; see hub.py)")
    return folder
