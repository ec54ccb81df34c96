"""Export a (boosted) vision encoder as one folder that loads in our code, transformers and open_clip.

    export_encoder(encoder, "out/encoder")
    extractor = load_exported_encoder("out/encoder")     # needs spatialboost, torch, transformers/open_clip
    feats = extractor(uint8_images)                      # EncoderFeatures: patch tokens (B, N, D), CLS (B, D)

    # a user's environment, no spatialboost needed:
    model = AutoModel.from_pretrained("out/encoder", trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained("out/encoder", trust_remote_code=True)

The folder holds
    model.safetensors          the full state dict, Attn+ and gates included (keys `model.<library module>...`)
    encoder.json               our spec: schema version, family, architecture config, dual channel,
                               feature layer, final norm, dtype, preprocessing
    config.json                the same for transformers (`auto_map` -> the remote code below)
    preprocessor_config.json   the preprocessing for `AutoImageProcessor`
    configuration_spatialboost.py, modeling_spatialboost.py, image_processing_spatialboost.py
                               the remote code (models/hf_remote/, self-contained)
    open_clip_config.json      OpenCLIP towers only: the CLIP's config for `spatialboost.open_clip`
and, once registered, README.md (the model card, `models/card.py`). Loading rebuilds the
architecture from the config (random init), adds dual-channel attention when it was on, and loads
the weights strictly. No pickle anywhere. The safetensors header has one metadata key only: with
two or more, safetensors writes them in a different order in each process and the file's bytes
(hence its DVC hash) would change from run to run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from spatialboost import __version__
from spatialboost.models.dual_channel import add_dual_channel, is_dual_channel
from spatialboost.models.encoders import EncoderFeatures, VisionEncoder, build_encoder
from spatialboost.models.hf_remote import REMOTE_CODE_DIR, REMOTE_CODE_FILES
from spatialboost.models.preprocess import HF_PROCESSOR_FILE, Images

EXPORT_SCHEMA_VERSION = 2  # 2: model.safetensors + transformers files; 1: encoder.safetensors only
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_FILE_V1 = "encoder.safetensors"
CONFIG_FILE = "encoder.json"
HF_CONFIG_FILE = "config.json"
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"
MODEL_CARD_FILE = "README.md"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ImageFeatureExtractor(nn.Module):
    """uint8 images -> encoder features, preprocessing included; what a registry model pull gives."""

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder.eval()

    def forward(self, images: Images) -> EncoderFeatures:
        """uint8 (H, W, 3) images (list, or (B, H, W, 3)) -> patch tokens (B, N, D), CLS (B, D)."""
        return self.encoder.encode(images)


def hf_config(spec: dict[str, Any]) -> dict[str, Any]:
    """config.json of the transformers remote-code model for an export spec."""
    return {
        "architectures": ["SpatialBoostVisionModel"],
        "auto_map": {
            "AutoConfig": "configuration_spatialboost.SpatialBoostVisionConfig",
            "AutoModel": "modeling_spatialboost.SpatialBoostVisionModel",
        },
        "model_type": "spatialboost_vision",
        "family": spec["family"],
        "arch_config": spec["arch_config"],
        "feature_layer": spec["feature_layer"],
        "apply_final_norm": spec["apply_final_norm"],
        "dual_channel": spec["dual_channel"],
        "dtype": spec["dtype"],
        "spatialboost_version": __version__,
    }


def hf_preprocessor_config(preprocess: dict[str, Any]) -> dict[str, Any]:
    """preprocessor_config.json for `AutoImageProcessor` (the remote SpatialBoostImageProcessor)."""
    return {
        "auto_map": {"AutoImageProcessor": "image_processing_spatialboost.SpatialBoostImageProcessor"},
        "image_processor_type": "SpatialBoostImageProcessor",
        **preprocess,
    }


def open_clip_config(spec: dict[str, Any]) -> dict[str, Any]:
    """open_clip_config.json (open_clip's `local-dir:` format) of an OpenCLIP tower's export: the whole
    CLIP's architecture and the tower's preprocessing, so open_clip builds the model and its transforms."""
    pre = spec["preprocess"]
    height, width = pre["size"]
    return {
        "model_cfg": spec["arch_config"],
        "preprocess_cfg": {
            "size": height if height == width else [height, width],
            "mean": pre["mean"],
            "std": pre["std"],
            "interpolation": pre["interpolation"],
            "resize_mode": pre["mode"],
            "fill_color": pre["fill"],
        },
    }


def export_encoder(encoder: VisionEncoder, folder: str | Path) -> Path:
    """Write the export folder (see the module docstring) atomically; returns the folder."""
    folder = Path(folder)
    dtype = next(name for name, t in _DTYPES.items() if t == encoder.dtype)
    spec = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        **encoder.spec(),
        "dual_channel": is_dual_channel(encoder),
        "dtype": dtype,
    }
    spec = json.loads(json.dumps(spec))  # tuples -> lists, as every reader sees them
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}

    def write(tmp: Path) -> None:
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        _write_json(tmp / CONFIG_FILE, spec)
        _write_json(tmp / HF_CONFIG_FILE, hf_config(spec))
        _write_json(tmp / HF_PROCESSOR_FILE, hf_preprocessor_config(spec["preprocess"]))
        for name in REMOTE_CODE_FILES:
            shutil.copyfile(REMOTE_CODE_DIR / name, tmp / name)
        if spec["family"] == "open_clip":
            _write_json(tmp / OPEN_CLIP_CONFIG_FILE, open_clip_config(spec))

    return replace_folder(folder, write)


def replace_folder(folder: Path, write: Any) -> Path:
    """Fill a sibling temporary folder with `write(tmp)`, then swap it in for `folder`: a reader never
    sees a half-written folder, and a crash leaves the old one (or none), not a mix."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_spec(folder: str | Path) -> dict[str, Any]:
    """encoder.json of an export folder (schema 1 or 2); a clear error for anything else."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not an exported encoder (no {CONFIG_FILE})")
    spec = json.loads(path.read_text())
    if spec.get("schema_version") not in (1, EXPORT_SCHEMA_VERSION):
        raise ValueError(f"{folder}: export schema {spec.get('schema_version')}, expected 1 or {EXPORT_SCHEMA_VERSION}")
    return spec


def load_encoder(folder: str | Path, device: str | torch.device = "cpu") -> VisionEncoder:
    """Rebuild the exported VisionEncoder (dual-channel when exported so), weights loaded strictly."""
    folder = Path(folder)
    spec = read_spec(folder)
    encoder = build_encoder(
        spec["family"],
        spec["arch_config"],
        spec["preprocess"],
        feature_layer=spec["feature_layer"],
        apply_final_norm=spec["apply_final_norm"],
    )
    if spec["dual_channel"]:
        add_dual_channel(encoder)
    weights = folder / (WEIGHTS_FILE if spec["schema_version"] == EXPORT_SCHEMA_VERSION else WEIGHTS_FILE_V1)
    encoder.load_state_dict(load_file(weights), strict=True)
    return encoder.to(device=device, dtype=_DTYPES[spec["dtype"]]).eval()


def load_exported_encoder(folder: str | Path, device: str | torch.device = "cpu") -> ImageFeatureExtractor:
    """The exported encoder as a module mapping uint8 images to features."""
    return ImageFeatureExtractor(load_encoder(folder, device))
