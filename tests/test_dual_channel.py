"""Dual-channel attention: identity at initialisation, trainable set, parameter growth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spatialboost.models.dual_channel import (
    DualChannelAttention,
    add_dual_channel,
    dual_channel_layers,
    dual_channel_parameters,
    gate_values,
)
from spatialboost.models.encoders import (
    CLIPVisionEncoder,
    Dinov2Encoder,
    DINOv3Encoder,
    OpenCLIPEncoder,
    SiglipVisionEncoder,
    VisionEncoder,
)
from tests.tiny_vlm import FAMILIES, IMAGE_PX, tiny_encoder

ATOL = 1e-5  # fp32, max abs difference


def _all_states(encoder: VisionEncoder, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = encoder(pixels, output_hidden_states=True)
    return torch.stack(out.hidden_states)  # (L + 1, B, T, D)


def _perturb_attn_plus(encoder: VisionEncoder, scale: float = 0.05) -> None:
    with torch.no_grad():
        for layer in dual_channel_layers(encoder):
            for p in layer.attn_plus.parameters():
                p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_at_initialisation(family: str) -> None:
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, IMAGE_PX, IMAGE_PX)
    encoder = tiny_encoder(family, feature_layer=-1, apply_final_norm=True)
    before = _all_states(encoder, pixels)
    final_before = encoder(pixels).patch_tokens.detach()

    report = add_dual_channel(encoder)
    assert report.n_layers == encoder.num_layers == 2
    assert len(dual_channel_layers(encoder)) == 2
    assert all(isinstance(getattr(b, encoder.attention_name), DualChannelAttention) for b in encoder.blocks)
    assert (gate_values(encoder) == 0.5).all()  # a = 0 -> alpha = 0.5
    assert (_all_states(encoder, pixels) - before).abs().max() <= ATOL
    assert (encoder(pixels).patch_tokens - final_before).abs().max() <= ATOL

    # any gate is still the identity while Attn+ == Attn ...
    with torch.no_grad():
        for layer in dual_channel_layers(encoder):
            layer.gate.normal_(0, 2)
    assert (_all_states(encoder, pixels) - before).abs().max() <= ATOL

    # ... and the output moves once Attn+ differs
    _perturb_attn_plus(encoder)
    assert (_all_states(encoder, pixels) - before).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_gate_mixes_per_channel(family: str) -> None:
    """alpha -> 1 recovers the original attention, alpha -> 0 is Attn+ alone."""
    torch.manual_seed(2)
    pixels = torch.randn(1, 3, IMAGE_PX, IMAGE_PX)
    encoder = tiny_encoder(family)
    add_dual_channel(encoder)
    _perturb_attn_plus(encoder, 0.2)
    layer = dual_channel_layers(encoder)[0]
    x = torch.randn(1, 5, 32)
    args, kwargs = (x, x, x) if family == "open_clip" else (x,), {}  # MHA takes (q, k, v); HF takes hidden_states
    if family == "dinov3":  # RoPE on the patch tokens: the cos/sin of a real image's grid
        x = torch.randn(1, encoder.num_prefix_tokens + 16, 32)
        args, kwargs = (x,), {"position_embeddings": encoder.model.rope_embeddings(pixels)}
    with torch.no_grad():
        y = layer.attn(*args, **kwargs)[0]
        y_plus = layer.attn_plus(*args, **kwargs)[0]
        layer.gate.copy_(torch.linspace(-30, 30, 32))  # alpha ~ 0 on the first channels, ~ 1 on the last
        mixed = layer(*args, **kwargs)
    assert isinstance(mixed, tuple)  # the library's tuple return is kept
    torch.testing.assert_close(mixed[0][..., :4], y_plus[..., :4], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[0][..., -4:], y[..., -4:], rtol=0, atol=1e-6)
    with torch.no_grad():
        assert encoder(pixels).patch_tokens.isfinite().all()


@pytest.mark.parametrize("family", FAMILIES)
def test_only_attn_plus_and_gates_train(family: str) -> None:
    encoder = tiny_encoder(family)
    report = add_dual_channel(encoder)
    params = dual_channel_parameters(encoder)
    names = {id(p): n for n, p in encoder.named_parameters()}
    assert all(".attn_plus." in names[id(p)] or names[id(p)].endswith(".gate") for p in params)
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params}
    assert sum(p.numel() for p in params) == report.params_added
    for layer in dual_channel_layers(encoder):
        assert not any(p.requires_grad for p in layer.attn.parameters())  # the original attention is frozen
        for p_orig, p_plus in zip(layer.attn.parameters(), layer.attn_plus.parameters(), strict=True):
            assert p_orig is not p_plus and torch.equal(p_orig, p_plus)  # a copy, same initial weights

    # one optimiser step moves Attn+ and the gates, nothing else
    frozen = {n: p.detach().clone() for n, p in encoder.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD(params, lr=1.0)
    pixels = torch.randn(2, 3, IMAGE_PX, IMAGE_PX)
    for step in range(2):
        optimizer.zero_grad()
        encoder(pixels).patch_tokens.square().mean().backward()
        assert all(p.grad is None for p in encoder.parameters() if not p.requires_grad)
        assert all(p.grad is not None for p in params)
        gate_grad = torch.stack([layer.gate.grad for layer in dual_channel_layers(encoder)])
        # d/da [alpha Attn + (1 - alpha) Attn+] = alpha'(Attn - Attn+): zero (up to fp noise: torch's MHA
        # takes its fused path for the frozen copy only) until Attn+ has moved
        assert (gate_grad.abs().max() < 1e-7) == (step == 0)
        optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in encoder.named_parameters() if n in frozen)
    assert not (gate_values(encoder) == 0.5).all()


def test_keep_rest_trainable_and_no_double_wrap() -> None:
    encoder = tiny_encoder("dinov2")
    add_dual_channel(encoder, freeze_rest=False)
    layer = dual_channel_layers(encoder)[0]
    assert not any(p.requires_grad for p in layer.attn.parameters())
    assert encoder.model.embeddings.patch_embeddings.projection.weight.requires_grad
    with pytest.raises(ValueError, match="already"):
        add_dual_channel(encoder)
    with pytest.raises(ValueError, match="no dual-channel"):
        gate_values(tiny_encoder("clip"))


def _paper_size(family: str) -> VisionEncoder:
    """Each family at the size of the checkpoint the paper profile boosts, on the meta device: real
    parameter counts, no memory. ViT-L/14 (DINOv2 facebook/dinov2-large, OpenCLIP ViT-L-14 of
    laion/CLIP-ViT-L-14-laion2B-s32B-b82K, LLaVA-1.5's CLIP ViT-L/14-336), SigLIP So400m/14-384
    (google/siglip-so400m-patch14-384; SigLIP 2's google/siglip2-so400m-patch14-384 has the same
    tower), DINOv3 ViT-L/16 with 4 registers and no key bias (facebook/dinov3-vitl16-pretrain-lvd1689m)."""
    import open_clip
    from transformers import CLIPVisionConfig, Dinov2Config, DINOv3ViTConfig, SiglipVisionConfig

    vit_l = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    with torch.device("meta"):
        if family == "dinov2":
            return Dinov2Encoder.from_config(Dinov2Config(**vit_l, patch_size=14, image_size=518))
        if family == "clip":
            return CLIPVisionEncoder.from_config(CLIPVisionConfig(**vit_l, patch_size=14, image_size=336))
        if family == "siglip":
            so400m = dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304)
            return SiglipVisionEncoder.from_config(SiglipVisionConfig(**so400m, patch_size=14, image_size=384))
        if family == "dinov3":
            config = DINOv3ViTConfig(**vit_l, patch_size=16, num_register_tokens=4, key_bias=False)
            return DINOv3Encoder.from_config(config)
        return OpenCLIPEncoder.from_config(open_clip.get_model_config("ViT-L-14"))


# family -> (width d, blocks, Attn+ parameters per block besides the gate, encoder size range, growth)
PAPER_SIZES = {
    "open_clip": (1024, 24, lambda d: 4 * d * d + 4 * d, (303e6, 305e6), 0.331),
    "dinov2": (1024, 24, lambda d: 4 * d * d + 4 * d, (303e6, 305e6), 0.331),
    "clip": (1024, 24, lambda d: 4 * d * d + 4 * d, (303e6, 305e6), 0.331),
    "siglip": (1152, 27, lambda d: 4 * d * d + 4 * d, (428e6, 429e6), 0.335),  # the 428M includes its MAP head
    "dinov3": (1024, 24, lambda d: 4 * d * d + 3 * d, (302e6, 304e6), 0.332),  # no key bias
}


@pytest.mark.parametrize("family", sorted(PAPER_SIZES))
def test_parameter_growth_at_paper_size(family: str) -> None:
    """Attn+ (q, k, v, out projections) + gates add about a third: 100.8M to a ViT-L/14's 304M
    (33.1%), 143.5M to SigLIP So400m's 428M, 100.8M to DINOv3 ViT-L/16's 303M."""
    assert set(PAPER_SIZES) == set(FAMILIES)  # every family the encoders module knows
    d, layers, per_block, (low, high), growth = PAPER_SIZES[family]
    encoder = _paper_size(family)
    assert encoder.device.type == "meta"
    report = add_dual_channel(encoder)
    assert report.n_layers == layers
    assert report.params_added == layers * (per_block(d) + d)  # + the gate a, one per channel
    assert low < report.params_before < high
    assert report.growth_fraction == pytest.approx(growth, abs=0.002)


def test_wraps_any_signature() -> None:
    """The wrapper forwards positional and keyword arguments unchanged, tensor or tuple returns."""

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
            return self.proj(x) * scale

    layer = DualChannelAttention(Plain(), dim=4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(layer(x, scale=2.0), layer.attn(x, scale=2.0))


def test_every_encoder_family_names_its_attention_in_its_adapter() -> None:
    """A new family touches encoders.py only: its adapter names the block's attention (what
    dual-channel attention wraps) and the projections LoRA adapts."""
    from spatialboost.models.encoders import ENCODER_FAMILIES

    for family, adapter in ENCODER_FAMILIES.items():
        assert isinstance(adapter.attention_name, str) and adapter.attention_name, family
        assert adapter.lora_targets and all(isinstance(t, str) for t in adapter.lora_targets), family
