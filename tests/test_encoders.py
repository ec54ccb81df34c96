"""Encoder adapters: one interface over open_clip, DINOv2, CLIP and SigLIP; preprocessing; export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialboost.models.dual_channel import add_dual_channel, dual_channel_layers
from spatialboost.models.encoders import (
    CLIPVisionEncoder,
    Dinov2Encoder,
    OpenCLIPEncoder,
    build_encoder,
    encoder_class,
)
from spatialboost.models.export import CONFIG_FILE, export_encoder, load_encoder, load_exported_encoder
from spatialboost.models.preprocess import ImagePreprocess, from_hf_processor_json, from_open_clip_cfg
from tests.tiny_vlm import (
    FAMILIES,
    HF_FAMILIES,
    IMAGE_PX,
    NUM_PATCHES,
    OPENCLIP_NAME,
    random_images,
    save_tiny_hf_encoder,
    save_tiny_openclip,
    tiny_encoder,
)

D = 32  # tiny hidden size


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_and_feature_layer(family: str) -> None:
    encoder = tiny_encoder(family, feature_layer=-2)
    pixels = encoder.preprocess(random_images(3))
    assert pixels.shape == (3, 3, IMAGE_PX, IMAGE_PX) and pixels.dtype == torch.float32
    with torch.no_grad():
        out = encoder(pixels, output_hidden_states=True)
    prefix = encoder.num_prefix_tokens
    assert out.patch_tokens.shape == (3, NUM_PATCHES, D)
    assert len(out.hidden_states) == encoder.num_layers + 1 == 3
    assert all(h.shape == (3, NUM_PATCHES + prefix, D) for h in out.hidden_states)
    torch.testing.assert_close(out.patch_tokens, out.hidden_states[-2][:, prefix:], rtol=0, atol=0)
    if family == "siglip":
        assert out.cls_token is None
    else:
        torch.testing.assert_close(out.cls_token, out.hidden_states[-2][:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hf_hidden_states_match_the_library(family: str) -> None:
    """Our layer indexing is transformers' own; final norm on layer -1 is the library's last output."""
    encoder = tiny_encoder(family, feature_layer=-1, apply_final_norm=True)
    pixels = torch.randn(2, 3, IMAGE_PX, IMAGE_PX)
    with torch.no_grad():
        ours = encoder(pixels)
        ref = encoder.model(pixel_values=pixels, output_hidden_states=True)
    p = encoder.num_prefix_tokens
    normed_last = encoder.final_norm()(ref.hidden_states[-1])
    torch.testing.assert_close(ours.patch_tokens, normed_last[:, p:], rtol=0, atol=1e-6)
    if family != "clip":  # CLIP's last_hidden_state is not post-normed; DINOv2's and SigLIP's are
        torch.testing.assert_close(ours.patch_tokens, ref.last_hidden_state[:, p:], rtol=0, atol=1e-6)


def test_open_clip_hidden_states_reproduce_its_forward() -> None:
    """Our block loop over open_clip's VisionTransformer gives the same pooled embedding as its forward."""
    encoder = tiny_encoder("open_clip", feature_layer=-1, apply_final_norm=True)
    pixels = torch.randn(2, 3, IMAGE_PX, IMAGE_PX)
    with torch.no_grad():
        pooled = encoder.model(pixels)  # (B, embed_dim): ln_post(CLS) @ proj
        ours = encoder(pixels).cls_token @ encoder.model.proj
    torch.testing.assert_close(ours, pooled, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hf_from_pretrained_local_folder(tmp_path: Path, family: str) -> None:
    folder = save_tiny_hf_encoder(tmp_path / family, family)
    loaded = encoder_class(family).from_pretrained(folder, feature_layer=-2)
    reference = tiny_encoder(family, feature_layer=-2)  # same seed, same weights
    pixels = torch.randn(1, 3, IMAGE_PX, IMAGE_PX)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).patch_tokens, reference(pixels).patch_tokens)
    # preprocessing comes from the folder's preprocessor_config.json, not the defaults
    assert loaded.preprocess == from_hf_processor_json(folder / "preprocessor_config.json")
    if family == "dinov2":
        assert loaded.preprocess.resize_shortest == 40 and loaded.preprocess.size == (IMAGE_PX, IMAGE_PX)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_vision_tower_loads_from_a_full_dual_encoder_checkpoint(tmp_path: Path, family: str) -> None:
    """openai/clip-* and google/siglip-* folders hold the whole CLIPModel / SiglipModel: take its tower."""
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    config_class, model_class = (CLIPConfig, CLIPModel) if family == "clip" else (SiglipConfig, SiglipModel)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    vision = tiny_encoder(family).model.config.to_dict()
    torch.manual_seed(0)
    full = model_class(config_class(vision_config=vision, text_config=text)).eval()
    full.save_pretrained(tmp_path / family)
    encoder = encoder_class(family).from_pretrained(tmp_path / family, feature_layer=-1, apply_final_norm=True)
    pixels = torch.randn(1, 3, IMAGE_PX, IMAGE_PX)
    with torch.no_grad():
        ref = full.vision_model(pixel_values=pixels).last_hidden_state
        if family == "clip":  # CLIP's last_hidden_state is before post_layernorm
            ref = full.vision_model.post_layernorm(ref)
        torch.testing.assert_close(encoder(pixels).patch_tokens, ref[:, encoder.num_prefix_tokens :])


def test_open_clip_from_local_dir_and_registered_name(tmp_path: Path) -> None:
    import open_clip

    folder, checkpoint = save_tiny_openclip(tmp_path / "oc")
    from_dir = OpenCLIPEncoder.from_pretrained(f"local-dir:{folder}")
    open_clip.add_model_config(folder / f"{OPENCLIP_NAME}.json")
    from_name = OpenCLIPEncoder.from_pretrained(OPENCLIP_NAME, checkpoint)
    random = OpenCLIPEncoder.from_pretrained(OPENCLIP_NAME, None)
    pixels = torch.randn(1, 3, IMAGE_PX, IMAGE_PX)
    with torch.no_grad():
        a, b, c = (e(pixels).patch_tokens for e in (from_dir, from_name, random))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3  # the checkpoint was really loaded
    assert from_dir.preprocess.size == (IMAGE_PX, IMAGE_PX)
    with pytest.raises(FileNotFoundError):
        OpenCLIPEncoder.from_pretrained(OPENCLIP_NAME, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="hf-hub"):
        OpenCLIPEncoder.from_pretrained("hf-hub:org/model")


def test_construction_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        Dinov2Encoder.from_pretrained("facebook/dinov2-large")
    with pytest.raises(ValueError, match="unknown encoder family"):
        encoder_class("resnet")
    with pytest.raises(ValueError, match="feature_layer"):
        tiny_encoder("clip", feature_layer=3)
    with pytest.raises(TypeError):
        CLIPVisionEncoder.from_config(tiny_encoder("dinov2").model.config)


def test_preprocess_matches_the_reference_processors() -> None:
    """Our PIL pipeline equals open_clip's transform and HF's processor up to one grey level."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image
    from transformers import CLIPImageProcessor

    image = random_images(1, size=(45, 61))[0]
    hf = CLIPImageProcessor(size={"shortest_edge": IMAGE_PX}, crop_size={"height": IMAGE_PX, "width": IMAGE_PX})
    ref = hf(images=image, return_tensors="pt").pixel_values
    ours = ImagePreprocess((IMAGE_PX, IMAGE_PX), hf.image_mean, hf.image_std, "shortest", IMAGE_PX)([image])
    assert (ours - ref).abs().max() <= 1.01 / 255 / min(hf.image_std)

    cfg = {"size": 48, "resize_mode": "shortest", "interpolation": "bicubic"}
    oc_transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    torch.testing.assert_close(from_open_clip_cfg(cfg)([image]), oc_transform(Image.fromarray(image))[None])


def test_preprocess_modes_and_validation() -> None:
    image = random_images(1, size=(20, 60))[0]
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    for mode in ("shortest", "squash", "longest"):
        out = ImagePreprocess((16, 24), mean, std, mode, fill=0)([image, image])
        assert out.shape == (2, 3, 16, 24) and out.min() >= -1 and out.max() <= 1
    letterbox = ImagePreprocess((32, 32), mean, std, "longest")(np.stack([image]))
    assert (letterbox[0, :, 0] == -1).all()  # padded rows are `fill` = 0 -> -1 after normalisation
    spec = ImagePreprocess((16, 24), mean, std, "squash")
    assert ImagePreprocess.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="uint8"):
        spec([image.astype(np.float32)])
    with pytest.raises(ValueError, match="mode"):
        ImagePreprocess((16, 16), mean, std, "crop")


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip_in_process(tmp_path: Path, family: str) -> None:
    encoder = tiny_encoder(family, feature_layer=-2)
    add_dual_channel(encoder)
    with torch.no_grad():  # make Attn+ and the gates differ from their initial values
        for layer in dual_channel_layers(encoder):
            layer.gate.normal_()
            for p in layer.attn_plus.parameters():
                p.add_(0.05 * torch.randn_like(p))
    folder = export_encoder(encoder, tmp_path / "export")
    spec = json.loads((folder / CONFIG_FILE).read_text())
    assert spec["family"] == family and spec["dual_channel"] is True and spec["feature_layer"] == -2
    loaded = load_encoder(folder)
    images = random_images(2)
    torch.testing.assert_close(loaded.encode(images).patch_tokens, encoder.encode(images).patch_tokens, rtol=0, atol=0)
    plain = build_encoder(family, spec["arch_config"], spec["preprocess"])
    assert sum(p.numel() for p in loaded.parameters()) > sum(p.numel() for p in plain.parameters())


_SUBPROCESS = """
import sys, numpy as np
from spatialboost.models.export import load_exported_encoder
extractor = load_exported_encoder(sys.argv[1])
images = np.load(sys.argv[2])
feats = extractor(images)
np.savez(sys.argv[3], patch=feats.patch_tokens.numpy(), cls=feats.cls_token.numpy())
mods = [m for m in sys.modules if m.split(".")[0] in ("mlflow", "prefect", "peft", "dvc")]
assert not mods, mods
"""


def test_export_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    """A boosted DINOv2 exported here gives the same features when loaded in a new interpreter."""
    encoder = tiny_encoder("dinov2", feature_layer=-1, apply_final_norm=True)
    add_dual_channel(encoder)
    with torch.no_grad():
        for layer in dual_channel_layers(encoder):
            layer.gate.normal_()
            for p in layer.attn_plus.parameters():
                p.add_(0.05 * torch.randn_like(p))
    images = np.stack(random_images(2))
    expected = load_exported_encoder(export_encoder(encoder, tmp_path / "enc"))(images)
    direct = encoder.encode(images)
    torch.testing.assert_close(expected.patch_tokens, direct.patch_tokens, rtol=0, atol=0)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(_SUBPROCESS)
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "enc"), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["patch"], direct.patch_tokens.numpy())
    np.testing.assert_array_equal(out["cls"], direct.cls_token.numpy())
