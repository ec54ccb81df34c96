"""The model card (README.md, Hugging Face style) logged with every registry version of an encoder.

    card = model_card(CardInputs(model_name="spatialboost-dinov2-demo", spec=read_spec(folder), ...))

Everything on it comes from the register stage's inputs: the export's spec (family, architecture,
dual channel), the base encoder (train.init, resolved to its pinned hub id when it is one),
the DVC hash of the conversation data, the boost recipe (the `train` section), the evaluate
stage's metrics (baseline vs boosted, mean ± std over seeds) and the git commit. Pure: text in,
text out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialboost import __version__
from spatialboost.config import HubConfig

# metric -> (what it is, which direction is better); others are listed as they are
METRIC_INFO: dict[str, tuple[str, str]] = {
    "depth_rmse": ("depth linear probe RMSE (m)", "lower"),
    "depth_absrel": ("depth linear probe AbsRel", "lower"),
    "seg_miou": ("segmentation linear probe mIoU", "higher"),
    "cls_top1": ("classification linear probe top-1", "higher"),
    "vqa_relative_depth_acc": ("BLINK-style relative depth accuracy (VLM)", "higher"),
    "vqa_quantitative_acc": ("SpatialRGPT-style quantitative accuracy (VLM, within 25%)", "higher"),
    "vqa_qualitative_acc": ("SpatialRGPT-style qualitative accuracy (VLM)", "higher"),
}
RECIPE_KEYS = ("stage", "adapter", "train_projector", "epochs", "max_steps", "max_conversations", "global_batch_size",
               "lr", "min_lr_ratio", "warmup_ratio", "weight_decay", "precision", "max_length", "seed")


@dataclass(frozen=True)
class CardInputs:
    """What the card says; every field comes from the register stage's inputs."""

    model_name: str  # registered model, e.g. spatialboost-dinov2-demo
    spec: Mapping[str, Any]  # encoder.json of the export
    base_model: str  # hub id (with revision) or local folder the boost started from
    data_version: str  # DVC md5 of the conversation data (dvc.lock), or "unknown"
    recipe: Mapping[str, Any]  # the `train` section
    metrics: Mapping[str, Any]  # metrics/evaluate.json: {"baseline": {m: {mean, std}}, "boosted": {...}}
    git_commit: str
    profile: str
    run_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # more provenance lines (name -> value)


def base_model_of(init: str, hub: HubConfig) -> str:
    """The base encoder `train.init` points at: `repo_id@revision` when it is a pinned hub download
    (hub.cache_dir/<role>), else the folder itself."""
    try:
        role = Path(init).resolve().relative_to(Path(hub.cache_dir).resolve()).parts[0]
    except (ValueError, IndexError):
        return init
    pin = hub.models.get(role)
    if pin is None:
        return init
    return f"{pin.repo_id}@{pin.revision}" if pin.revision else pin.repo_id


def _is_hub_id(name: str) -> bool:
    repo = name.split("@")[0]
    return repo.count("/") == 1 and not repo.startswith((".", "/")) and not Path(repo).exists()


def _fmt(stat: Any) -> str:
    if isinstance(stat, Mapping) and isinstance(stat.get("mean"), int | float):
        mean, std = float(stat["mean"]), stat.get("std")
        if not math.isfinite(mean):
            return "n/a"
        return f"{mean:.4g} ± {float(std):.2g}" if isinstance(std, int | float) else f"{mean:.4g}"
    if isinstance(stat, int | float) and not isinstance(stat, bool):
        return f"{float(stat):.4g}"
    return "n/a"


def _mean(stat: Any) -> float | None:
    value = stat.get("mean") if isinstance(stat, Mapping) else stat
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def metrics_table(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown rows: metric | baseline | boosted | change, from evaluate.json's two sides."""
    baseline, boosted = metrics.get("baseline") or {}, metrics.get("boosted") or {}
    names = [n for n in METRIC_INFO if n in baseline or n in boosted]
    names += sorted(n for n in {*baseline, *boosted} if n not in METRIC_INFO)
    if not names:
        return ["No evaluation metrics were recorded for this version."]
    rows = ["| metric | baseline encoder | boosted encoder | change |", "|---|---|---|---|"]
    for name in names:
        what, better = METRIC_INFO.get(name, (name, ""))
        old, new = _mean(baseline.get(name)), _mean(boosted.get(name))
        change = f"{new - old:+.4g}" if old is not None and new is not None else "n/a"
        label = f"{what} (`{name}`, {better} is better)" if better else f"`{name}`"
        rows.append(f"| {label} | {_fmt(baseline.get(name))} | {_fmt(boosted.get(name))} | {change} |")
    return rows


def model_card(inputs: CardInputs) -> str:
    """README.md of one registry version (YAML front matter + markdown)."""
    spec = inputs.spec
    family, arch = spec["family"], spec["arch_config"]
    front = ["---", "library_name: transformers", "pipeline_tag: image-feature-extraction",
             f"tags: [spatialboost, vision-encoder, dual-channel-attention, {family}]"]
    if _is_hub_id(inputs.base_model):
        front.append(f"base_model: {inputs.base_model.split('@')[0]}")
    front.append("---")
    dual = "yes: every block's attention `Attn` has a trained twin `Attn+` and a per-channel gate" if spec.get(
        "dual_channel") else "no (the adapter was merged into the encoder's own weights)"
    recipe = {k: inputs.recipe[k] for k in RECIPE_KEYS if k in inputs.recipe}
    lines = [
        *front,
        "",
        f"# {inputs.model_name}",
        "",
        f"A {family} vision encoder made spatially aware by SpatialBoost: multi-turn spatial conversations",
        "(pixel -> object -> scene) taught through a frozen LLaVA-style language model.",
        "",
        "## Model",
        "",
        f"- Base encoder: `{inputs.base_model}`",
        f"- Family: `{family}`; architecture: {_arch_summary(family, arch)}",
        f"- Dual-channel attention: {dual}",
        f"- Features: hidden state {spec['feature_layer']}"
        + (", with the encoder's final LayerNorm" if spec.get("apply_final_norm") else "")
        + f"; dtype {spec.get('dtype', 'float32')}",
        f"- Input: {spec['preprocess']['size'][0]} x {spec['preprocess']['size'][1]} px, "
        f"`{spec['preprocess']['mode']}` resize ({spec['preprocess']['interpolation']})",
        "",
        "## Data",
        "",
        f"- Conversation data version (DVC md5 of the QA data in dvc.lock): `{inputs.data_version}`",
        f"- Profile: `{inputs.profile}`",
        "",
        "## Recipe (boost stage, language model frozen)",
        "",
        *[f"- {key}: `{value}`" for key, value in recipe.items()],
        "",
        "## Evaluation (evaluate stage: frozen-feature probes and spatial VQA, mean ± std over seeds)",
        "",
        *metrics_table(inputs.metrics),
        "",
        "## Provenance",
        "",
        f"- Git commit: `{inputs.git_commit}`",
        f"- SpatialBoost version: `{__version__}`",
        *([f"- MLflow run: `{inputs.run_id}`"] if inputs.run_id else []),
        *[f"- {key}: `{value}`" for key, value in inputs.extra.items()],
        "",
        "## Use",
        "",
        "```bash",
        f"spatialboost pull {inputs.model_name}@champion --output {inputs.model_name}",
        "```",
        "",
        "transformers (the remote code ships in this folder; spatialboost is not needed):",
        "",
        "```python",
        "from transformers import AutoImageProcessor, AutoModel",
        f'model = AutoModel.from_pretrained("{inputs.model_name}", trust_remote_code=True)',
        f'processor = AutoImageProcessor.from_pretrained("{inputs.model_name}", trust_remote_code=True)',
        "out = model(**processor(images, return_tensors=\"pt\"))   # out.patch_tokens (B, N, D), out.pooler_output (B, D)",
        "```",
    ]
    if family == "open_clip":
        lines += [
            "",
            "open_clip (the text tower comes from the base CLIP's checkpoint file):",
            "",
            "```python",
            "from spatialboost import open_clip as sb_open_clip",
            f'model, _, preprocess = sb_open_clip.create_model_and_transforms("{inputs.model_name}", pretrained="base.safetensors")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def _arch_summary(family: str, arch: Mapping[str, Any]) -> str:
    if family == "open_clip":
        vision = arch.get("vision_cfg", {})
        return (f"ViT width {vision.get('width')}, {vision.get('layers')} layers, patch {vision.get('patch_size')}, "
                f"embed dim {arch.get('embed_dim')}")
    return (f"hidden {arch.get('hidden_size')}, {arch.get('num_hidden_layers')} layers, "
            f"{arch.get('num_attention_heads')} heads, patch {arch.get('patch_size')}")

