"""Tiny random models of the real extraction classes, saved like real checkpoints.

Each `save_*` function seeds torch, builds the real class with a tiny config, and writes it to a
folder the backends load exactly as they load a real checkpoint (`from_pretrained(folder)`,
`build_sam2(config, ckpt_path)`, open_clip `pretrained=<file>` or `local-dir:<folder>`). Nothing
is downloaded. Random weights give nonsense outputs (negative FOV, 1e4 m depth, ~0.5 predicted
IoU): tests check shapes, keys and the handling of such values, not the values.

    paths = save_all(tmp_path)    # TinyModels with every folder / file
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

DEPTH_PRO_INPUT_PX = 128  # patch_size 32 / smallest scaled-image ratio 0.25
SAM2_INPUT_PX = 128  # hiera strides 4, 8, 16, 32 -> feature maps 32, 16, 8 (+4)
OFFICIAL_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
OPENCLIP_NAME = "spatialboost-tiny-clip"


@dataclass(frozen=True)
class TinyModels:
    """Where `save_all` put each tiny model."""

    depth_pro: Path  # folder: DepthProForDepthEstimation (with FOV head) + processor
    depth_pro_no_fov: Path  # folder: the same without the FOV head
    sam2_hf: Path  # folder: Sam2Model + Sam2Processor
    sam2_official_ckpt: Path  # file: {"model": state_dict} for build_sam2(OFFICIAL_SAM2_CONFIG, ...)
    openclip_dir: Path  # folder: arch JSON, open_clip_config.json, open_clip_model.safetensors
    openclip_ckpt: Path  # file: the state_dict, for pretrained=<file>


def save_depth_pro(folder: Path, seed: int = 0, use_fov_model: bool = True) -> Path:
    """DepthPro with dinov2 sub-configs of hidden 16, 2 layers, patch 8; 128 px input."""
    from transformers import DepthProConfig, DepthProForDepthEstimation, DepthProImageProcessor

    torch.manual_seed(seed)
    dinov2 = dict(
        model_type="dinov2",
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=8,
        image_size=32,
    )
    config = DepthProConfig(
        patch_size=32,
        fusion_hidden_size=16,
        intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[16, 16],
        scaled_images_feature_dims=[16, 16, 16],
        use_fov_model=use_fov_model,
        image_model_config=dict(dinov2),
        patch_model_config=dict(dinov2),
        fov_model_config=dict(dinov2),
    )
    DepthProForDepthEstimation(config).eval().save_pretrained(folder)
    DepthProImageProcessor(size={"height": DEPTH_PRO_INPUT_PX, "width": DEPTH_PRO_INPUT_PX}).save_pretrained(folder)
    return Path(folder)


def save_constant_depth_pro(folder: Path, inverse_depth: float) -> Path:
    """A tiny Depth Pro whose head outputs `inverse_depth` everywhere (last conv: weight 0, bias it).

    Depth Pro's canonical inverse depth c gives metric depth f / (c * W) for a focal f in pixels
    and width W (post_process_depth_estimation), so with a known focal the depth is exact.
    """
    from transformers import DepthProForDepthEstimation

    save_depth_pro(folder)
    model = DepthProForDepthEstimation.from_pretrained(folder)
    last = model.head.layers[4]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(inverse_depth)
    model.save_pretrained(folder)
    return folder


def save_sam2_hf(folder: Path, seed: int = 0) -> Path:
    """Sam2Model with a hiera of hidden 12 (global attention not first in its stage); 128 px input."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    torch.manual_seed(seed)
    s = SAM2_INPUT_PX
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        num_attention_heads=1,
        image_size=[s, s],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[8, 4, 4, 4],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=32,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(
            hidden_size=32, image_size=s, patch_size=16, mask_input_channels=4
        ),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    Sam2Model(config).eval().save_pretrained(folder)
    image_processor = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    Sam2Processor(image_processor=image_processor).save_pretrained(folder)
    return Path(folder)


def official_sam2_overrides(image_size: int = SAM2_INPUT_PX) -> list[str]:
    """Hydra overrides that shrink OFFICIAL_SAM2_CONFIG to a hiera of 12 channels (video parts too)."""
    return [
        f"++model.image_size={image_size}",
        "++model.image_encoder.trunk.embed_dim=12",
        "++model.image_encoder.trunk.num_heads=1",
        "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        "++model.image_encoder.trunk.window_spec=[8,4,4,4]",
        "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
        "++model.image_encoder.neck.d_model=32",
        "++model.image_encoder.neck.position_encoding.num_pos_feats=32",
        "++model.image_encoder.neck.backbone_channel_list=[96,48,24,12]",
        "++model.memory_attention.num_layers=1",
        "++model.memory_attention.layer.dim_feedforward=32",
        "++model.memory_encoder.fuser.num_layers=1",
    ]


def save_sam2_official(folder: Path, seed: int = 0) -> Path:
    """A checkpoint of the sam2 package's SAM2Base, shrunk by `official_sam2_overrides`."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(
        OFFICIAL_SAM2_CONFIG, ckpt_path=None, device="cpu", hydra_overrides_extra=official_sam2_overrides()
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / "sam2_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def openclip_config() -> dict:
    """A CLIP of embed 16: ViT of width 32, 2 layers, 32 px input; text width 32, 2 layers, 16 tokens."""
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }


def save_openclip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the arch JSON (for `open_clip.add_model_config`), a local-dir config and the weights.

    Returns (folder, checkpoint file). Registering the arch is the loader's step:
    `open_clip.add_model_config(folder / f"{OPENCLIP_NAME}.json")`.
    """
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = openclip_config()
    (folder / f"{OPENCLIP_NAME}.json").write_text(json.dumps(cfg, indent=2))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    ckpt = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt)
    return folder, ckpt


def save_all(root: Path, seed: int = 0) -> TinyModels:
    """Save every tiny model under `root`; same seed, same weights."""
    root = Path(root)
    openclip_dir, openclip_ckpt = save_openclip(root / "openclip", seed)
    return TinyModels(
        depth_pro=save_depth_pro(root / "depth_pro", seed),
        depth_pro_no_fov=save_depth_pro(root / "depth_pro_no_fov", seed, use_fov_model=False),
        sam2_hf=save_sam2_hf(root / "sam2_hf", seed),
        sam2_official_ckpt=save_sam2_official(root / "sam2_official", seed),
        openclip_dir=openclip_dir,
        openclip_ckpt=openclip_ckpt,
    )
