"""What trains in each stage, and with which adapter: one function sets `requires_grad`.

    report = prepare_stage(vlm, cfg)       # cfg: TrainConfig; freezes everything else
    report.trainable                       # parameter names that train, e.g. for the log

    align     projector                                  (encoder and LLM frozen)
    instruct  projector + LLM                            (encoder frozen)
    boost     encoder adapter (+ projector if cfg.train_projector), LLM frozen:
              dual_channel  Attn+ and the gates of every block (the method, models/dual_channel.py)
              full          every encoder parameter (ablation)
              lora          LoRA on the encoder's attention projections via peft (ablation);
                            `merge_lora(encoder)` folds it back before export

Encoder parameters that cannot reach the features fed to the projector (blocks after the
`feature_layer`, DINOv2's mask token, a SigLIP pooling head, ...) are left frozen: they would
get no gradient, and DDP refuses trainable parameters without one. Reachability is found by
one probe forward through the encoder's autograd graph, not by family-specific names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from spatialboost.config import LoraSettings, TrainConfig
from spatialboost.models.dual_channel import add_dual_channel, dual_channel_parameters, is_dual_channel
from spatialboost.models.encoders import VisionEncoder
from spatialboost.models.vlm import SpatialVLM


@dataclass(frozen=True)
class TrainableReport:
    """Names and counts of what trains (names as in `vlm.named_parameters()`)."""

    stage: str
    adapter: str | None
    trainable: tuple[str, ...]
    n_trainable: int
    n_total: int
    unreachable: tuple[str, ...] = ()  # encoder parameters of the adapter left frozen: no path to the features

    def to_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "adapter": self.adapter,
            "n_trainable": self.n_trainable,
            "n_total": self.n_total,
            "trainable_fraction": self.n_trainable / max(self.n_total, 1),
            "unreachable": list(self.unreachable),
        }


def prepare_stage(vlm: SpatialVLM, cfg: TrainConfig) -> TrainableReport:
    """Freeze `vlm` except what `cfg.stage` (and for boost `cfg.adapter`) trains; in place.

    boost + dual_channel adds dual-channel attention when the encoder does not have it yet;
    boost + lora injects LoRA layers (a second call on the same encoder is an error).
    """
    vlm.requires_grad_(False)
    unreachable: tuple[str, ...] = ()
    if cfg.stage == "align":
        vlm.projector.requires_grad_(True)
    elif cfg.stage == "instruct":
        vlm.projector.requires_grad_(True)
        vlm.language_model.requires_grad_(True)
    else:
        encoder_params = _encoder_adapter(vlm.encoder, cfg.adapter, cfg.lora)
        unreachable = freeze_unreachable(vlm.encoder, encoder_params)
        if cfg.train_projector:
            vlm.projector.requires_grad_(True)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(vlm)
    names = tuple(n for n, p in vlm.named_parameters() if p.requires_grad)
    if not names:
        raise ValueError(f"stage {cfg.stage!r} left nothing to train")
    return TrainableReport(
        stage=cfg.stage,
        adapter=cfg.adapter if cfg.stage == "boost" else None,
        trainable=names,
        n_trainable=sum(p.numel() for p in vlm.parameters() if p.requires_grad),
        n_total=sum(p.numel() for p in vlm.parameters()),
        unreachable=unreachable,
    )


def _encoder_adapter(encoder: VisionEncoder, adapter: str, lora: LoraSettings) -> list[nn.Parameter]:
    """Set up the boost adapter on the encoder; returns the encoder parameters it trains."""
    if adapter == "dual_channel":
        if not is_dual_channel(encoder):
            add_dual_channel(encoder)
        params = dual_channel_parameters(encoder)
    elif adapter == "full":
        params = list(encoder.parameters())
    elif adapter == "lora":
        params = add_lora(encoder, lora)
    else:
        raise ValueError(f"unknown adapter {adapter!r}; known: dual_channel, full, lora")
    for p in params:
        p.requires_grad_(True)
    return params


def freeze_unreachable(encoder: VisionEncoder, params: list[nn.Parameter]) -> tuple[str, ...]:
    """Freeze those of `params` with no autograd path to the encoder's features; their names.

    One forward of a zero image at the preprocessing size; graph-based (not value-based), so
    a parameter whose gradient happens to be zero still counts as reachable.
    """
    height, width = encoder.preprocess.size
    pixels = torch.zeros(1, 3, height, width, device=encoder.device, dtype=encoder.dtype)
    was_training = encoder.training
    encoder.eval()
    with torch.enable_grad():
        feats = encoder(pixels)
        out = feats.patch_tokens.float().sum()
        if feats.cls_token is not None:
            out = out + feats.cls_token.float().sum()
        grads = torch.autograd.grad(out, params, allow_unused=True)
    encoder.train(was_training)
    names = {id(p): n for n, p in encoder.named_parameters()}
    dropped = []
    for p, g in zip(params, grads, strict=True):
        if g is None:
            p.requires_grad_(False)
            dropped.append(names.get(id(p), "?"))
    return tuple(dropped)


# --- LoRA (peft) -----------------------------------------------------------------------------------


def add_lora(encoder: VisionEncoder, settings: LoraSettings) -> list[nn.Parameter]:
    """Inject LoRA layers into the encoder's library model in place (peft, no PeftModel
    wrapper, so the VisionEncoder interface is unchanged); returns the LoRA parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(encoder):
        raise ValueError("the encoder already has LoRA layers")
    targets = settings.target_modules or encoder.lora_targets
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=list(targets))
    inject_adapter_in_model(config, encoder.model)
    params = [p for n, p in encoder.named_parameters() if "lora_" in n]
    if not params:
        raise ValueError(f"LoRA found no module named {list(targets)} in the {encoder.family} encoder")
    return params


def has_lora(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in module.modules())


def merge_lora(encoder: nn.Module) -> int:
    """Fold every LoRA update into its base layer and put the base layer back in place, so the
    encoder is a plain one again (exports and loads like any other); returns layers merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    while True:  # outermost first, re-listed after each swap (peft nests LoRA layers inside MHA)
        found = next(((n, m) for n, m in encoder.named_modules() if isinstance(m, LoraLayer)), None)
        if found is None:
            return merged
        name, module = found
        if not module.merged:  # an outer MHA layer merges its inner out_proj already
            module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name) if parent_name else encoder
        setattr(parent, child, module.base_layer)
        merged += 1


# --- memory ------------------------------------------------------------------------------------------


def enable_gradient_checkpointing(vlm: SpatialVLM) -> None:
    """Recompute block activations in backward: the LLM's decoder layers and the encoder's blocks
    (transformers models through their own switch, open_clip through `set_grad_checkpointing`;
    our open_clip adapter runs the blocks itself, so there it changes nothing)."""
    _hf_checkpointing(vlm.language_model)
    model = vlm.encoder.model
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    else:
        _hf_checkpointing(model)


def _hf_checkpointing(model: nn.Module) -> None:
    kwargs = {"use_reentrant": False}  # non-reentrant: correct when the block inputs need no grad
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
