"""Export a (boosted) vision encoder as safetensors + JSON, and load it back as an image -> features module.

    export_encoder(encoder, "out/encoder")
    extractor = load_exported_encoder("out/encoder")     # needs spatialboost, torch, transformers/open_clip
    feats = extractor(uint8_images)                      # EncoderFeatures: patch tokens (B, N, D), CLS (B, D)

The folder holds `encoder.safetensors` (the full state dict, Attn+ and gates included) and
`encoder.json`: schema version, family, the architecture config dict, whether dual-channel
attention is on, feature layer, final norm, dtype and preprocessing. Loading rebuilds the
architecture from the config (random init), adds dual-channel attention when it was on, and
loads the weights strictly. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spatialboost.models.dual_channel import add_dual_channel, is_dual_channel
from spatialboost.models.encoders import EncoderFeatures, VisionEncoder, build_encoder
from spatialboost.models.preprocess import Images

EXPORT_SCHEMA_VERSION = 1
WEIGHTS_FILE = "encoder.safetensors"
CONFIG_FILE = "encoder.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ImageFeatureExtractor(nn.Module):
    """uint8 images -> encoder features, preprocessing included; what a registry model pull gives."""

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder.eval()

    def forward(self, images: Images) -> EncoderFeatures:
        """uint8 (H, W, 3) images (list, or (B, H, W, 3)) -> patch tokens (B, N, D), CLS (B, D)."""
        return self.encoder.encode(images)


def export_encoder(encoder: VisionEncoder, folder: str | Path) -> Path:
    """Write encoder.safetensors + encoder.json into `folder` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = next(name for name, t in _DTYPES.items() if t == encoder.dtype)
    spec = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        **encoder.spec(),
        "dual_channel": is_dual_channel(encoder),
        "dtype": dtype,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    # One metadata key only: safetensors writes two or more in a per-process order, so the same
    # weights would give different bytes on every run (the family is in encoder.json).
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
    return folder


def load_encoder(folder: str | Path, device: str | torch.device = "cpu") -> VisionEncoder:
    """Rebuild the exported VisionEncoder (dual-channel when exported so), weights loaded strictly."""
    folder = Path(folder)
    spec = json.loads((folder / CONFIG_FILE).read_text())
    if spec.get("schema_version") != EXPORT_SCHEMA_VERSION:
        raise ValueError(f"{folder}: export schema {spec.get('schema_version')}, expected {EXPORT_SCHEMA_VERSION}")
    encoder = build_encoder(
        spec["family"],
        spec["arch_config"],
        spec["preprocess"],
        feature_layer=spec["feature_layer"],
        apply_final_norm=spec["apply_final_norm"],
    )
    if spec["dual_channel"]:
        add_dual_channel(encoder)
    encoder.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
    return encoder.to(device=device, dtype=_DTYPES[spec["dtype"]]).eval()


def load_exported_encoder(folder: str | Path, device: str | torch.device = "cpu") -> ImageFeatureExtractor:
    """The exported encoder as a module mapping uint8 images to features."""
    return ImageFeatureExtractor(load_encoder(folder, device))
