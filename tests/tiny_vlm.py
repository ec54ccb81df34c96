"""Tiny random models of the real classes for the encoder / dual-channel / VLM / training tests.

Every builder seeds torch and builds the real class (Dinov2Model, CLIPVisionModel,
SiglipVisionModel, DINOv3ViTModel, open_clip VisionTransformer, LlamaForCausalLM,
LlavaForConditionalGeneration) with hidden size 32, 2 layers and 32 x 32 images (patch 8: 16
patches; the tiny DINOv3 has 2 register tokens, the real ViT-L/16 4). Nothing is downloaded;
`save_*` functions write folders that load exactly like real checkpoints.

    tok = train_tiny_tokenizer(tmp_path / "tok")
    vlm = tiny_vlm(tok, family="clip")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import (
    BitImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    Dinov2Config,
    DINOv3ViTConfig,
    DINOv3ViTImageProcessor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerBase,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

from spatialboost.models.encoders import ENCODER_FAMILIES, VisionEncoder, build_encoder
from spatialboost.models.tokenizer import IMAGE_TOKEN, train_tokenizer
from spatialboost.models.vlm import SpatialVLM
from tests.tiny_models import OPENCLIP_NAME, openclip_config, save_openclip

IMAGE_PX = 32
PATCH = 8
NUM_PATCHES = (IMAGE_PX // PATCH) ** 2  # 16
FAMILIES = tuple(ENCODER_FAMILIES)  # open_clip, dinov2, clip, siglip, dinov3
HF_FAMILIES = ("dinov2", "clip", "siglip", "dinov3")

_VISION = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    patch_size=PATCH,
    image_size=IMAGE_PX,
)
_HF_CONFIGS = {"dinov2": Dinov2Config, "clip": CLIPVisionConfig, "siglip": SiglipVisionConfig, "dinov3": DINOv3ViTConfig}
_FAMILY_OVERRIDES = {"dinov3": {"num_register_tokens": 2}}
_HF_PROCESSORS = {
    "dinov2": lambda: BitImageProcessor(
        size={"shortest_edge": 40}, crop_size={"height": IMAGE_PX, "width": IMAGE_PX}, do_center_crop=True
    ),
    "clip": lambda: CLIPImageProcessor(
        size={"shortest_edge": IMAGE_PX}, crop_size={"height": IMAGE_PX, "width": IMAGE_PX}
    ),
    "siglip": lambda: SiglipImageProcessor(size={"height": IMAGE_PX, "width": IMAGE_PX}),
    "dinov3": lambda: DINOv3ViTImageProcessor(size={"height": IMAGE_PX, "width": IMAGE_PX}),
}

CORPUS = [
    "What is the depth at pixel (12, 20)? The depth there is 2.4 meters.",
    "Which point is closer to the camera, A or B? Point A is closer.",
    "The red cube is to the left of the blue sphere, about 1.3 meters apart.",
    "Is the chair above or below the table? The chair is below the table.",
    "How far is the lamp from the sofa? The lamp is 85 centimeters from the sofa.",
    "A photo of a kitchen with a green cylinder on the floor.",
    "USER: ASSISTANT: A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
]


def hf_vision_config(family: str, **overrides):
    """A tiny transformers vision config: hidden 32, 2 layers, 2 heads, patch 8, 32 px."""
    return _HF_CONFIGS[family](**{**_VISION, **_FAMILY_OVERRIDES.get(family, {}), **overrides})


def arch_config(family: str) -> dict:
    """The architecture config dict `build_encoder` takes for a tiny encoder of `family`."""
    return openclip_config() if family == "open_clip" else hf_vision_config(family).to_dict()


def tiny_encoder(family: str, seed: int = 0, **options) -> VisionEncoder:
    """A random tiny encoder; options: feature_layer, apply_final_norm."""
    torch.manual_seed(seed)
    return build_encoder(family, arch_config(family), **options)


def save_tiny_hf_encoder(folder: Path, family: str, seed: int = 0) -> Path:
    """A transformers checkpoint folder (model + preprocessor_config.json) for `from_pretrained`."""
    encoder = tiny_encoder(family, seed)
    encoder.model.save_pretrained(folder)
    _HF_PROCESSORS[family]().save_pretrained(folder)
    return Path(folder)


def save_tiny_openclip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """(local-dir folder, checkpoint file) of a tiny open_clip CLIP; arch name is OPENCLIP_NAME."""
    return save_openclip(folder, seed)


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[np.ndarray]:
    """n smooth random uint8 (H, W, 3) images."""
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.normal(size=(n, *size, 3)), axis=2) * 12 + 128
    return list(np.clip(base, 0, 255).astype(np.uint8))


def train_tiny_tokenizer(folder: Path, vocab_size: int = 320) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on `CORPUS` with <pad>, <s>, </s>, <image>."""
    return train_tokenizer(CORPUS * 4, vocab_size, folder)


def tiny_llama(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama of hidden 32 over the tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(**_llama_kwargs(tokenizer))
    return LlamaForCausalLM(config).eval()


def tiny_vlm(tokenizer: PreTrainedTokenizerBase, family: str = "clip", seed: int = 0, **options) -> SpatialVLM:
    """encoder (feature layer -2, like LLaVA) + projector + tiny Llama."""
    encoder = tiny_encoder(family, seed, feature_layer=options.pop("feature_layer", -2))
    lm = tiny_llama(tokenizer, seed)
    torch.manual_seed(seed)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return SpatialVLM(encoder, lm, image_token_id, **options).eval()


def save_tiny_llava(folder: Path, tokenizer: PreTrainedTokenizerBase, seed: int = 0, strategy: str = "default") -> Path:
    """A LlavaForConditionalGeneration (CLIP tower, Llama LM) checkpoint folder with its image processor."""
    torch.manual_seed(seed)
    config = LlavaConfig(
        vision_config=hf_vision_config("clip"),
        text_config=LlamaConfig(**_llama_kwargs(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
    )
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    _HF_PROCESSORS["clip"]().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def _llama_kwargs(tokenizer: PreTrainedTokenizerBase) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


__all__ = [
    "FAMILIES",
    "HF_FAMILIES",
    "IMAGE_PX",
    "NUM_PATCHES",
    "OPENCLIP_NAME",
    "arch_config",
    "hf_vision_config",
    "random_images",
    "save_tiny_hf_encoder",
    "save_tiny_llava",
    "save_tiny_openclip",
    "tiny_encoder",
    "tiny_llama",
    "tiny_vlm",
    "train_tiny_tokenizer",
]
