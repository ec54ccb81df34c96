"""Boosted OpenCLIP encoders as ordinary open_clip models, so existing open_clip code runs unchanged.

    from spatialboost import open_clip as sb_open_clip
    model, _, preprocess = sb_open_clip.create_model_and_transforms(
        "models/pulled/spatialboost-openclip-vit-l-14-champion",      # `spatialboost pull ... --output`
        pretrained="ViT-L-14.safetensors",                              # the base CLIP: text tower, logit scale
    )
    tokenizer = sb_open_clip.get_tokenizer("models/pulled/spatialboost-openclip-vit-l-14-champion")
    image_features = model.encode_image(preprocess(pil_image)[None])
    text_features = model.encode_text(tokenizer(["a photo of a chair"]))

The model is open_clip's own CLIP (or CustomTextCLIP) built from the folder's
`open_clip_config.json`; its `.visual` is the boosted tower (open_clip's VisionTransformer with
dual-channel attention in every block, weights from the folder). The registry holds only the
vision tower, so the text tower and `logit_scale` come from `pretrained`, the base CLIP's
checkpoint file (a local file: nothing is downloaded here). Without it they keep random weights
and a warning says so. The transforms are open_clip's, from the tower's own preprocessing.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spatialboost.models.export import OPEN_CLIP_CONFIG_FILE, load_encoder, read_spec


def _folder(source: str | Path, tracking_uri: str | None) -> Path:
    """A pulled folder as is; a `models:/NAME@ALIAS` URI downloaded from the registry first."""
    if str(source).startswith("models:/"):
        from spatialboost.tracking import download_encoder

        folder = download_encoder(str(source), tracking_uri=tracking_uri)
    else:
        folder = Path(source)
    spec = read_spec(folder)
    if spec["family"] != "open_clip":
        raise ValueError(
            f"{folder}: a {spec['family']} encoder, not an OpenCLIP tower; load it with "
            "transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)"
        )
    if not (folder / OPEN_CLIP_CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {OPEN_CLIP_CONFIG_FILE} (exported before open_clip support?)")
    return folder


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def create_model(
    source: str | Path,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    tracking_uri: str | None = None,
) -> nn.Module:
    """An open_clip CLIP whose `.visual` is the boosted tower of `source` (a pulled folder or a
    `models:/` URI); `pretrained`: the base CLIP's checkpoint file for the text tower."""
    import open_clip

    folder = _folder(source, tracking_uri)
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(f"base CLIP checkpoint not found: {pretrained} (a local file; nothing is downloaded)")
    with _quiet_random_init():  # open_clip warns "initialized randomly": the weights are loaded next
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    if pretrained is not None:
        open_clip.load_checkpoint(model, str(pretrained), strict=True)
    else:
        warnings.warn(
            "no base CLIP checkpoint given (pretrained=None): the text tower and logit_scale keep random "
            "weights; encode_image is the boosted tower's, encode_text is meaningless",
            stacklevel=2,
        )
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    model.visual = load_encoder(folder).model  # the boosted VisionTransformer, weights loaded strictly
    open_clip.model.set_model_preprocess_cfg(model, preprocess_cfg)
    return model.to(device).eval()


def create_model_and_transforms(
    source: str | Path,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    tracking_uri: str | None = None,
) -> tuple[nn.Module, Any, Any]:
    """(model, train transform, eval transform), like `open_clip.create_model_and_transforms`."""
    import open_clip

    model = create_model(source, pretrained, device, tracking_uri)
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return model, image_transform_v2(cfg, is_train=True), image_transform_v2(cfg, is_train=False)


def get_tokenizer(source: str | Path, tracking_uri: str | None = None) -> Any:
    """open_clip's tokenizer for the CLIP of `source` (`open_clip.get_tokenizer("local-dir:...")`)."""
    import open_clip

    return open_clip.get_tokenizer(f"local-dir:{_folder(source, tracking_uri)}")
