"""The spatial VLM: vision encoder -> 2-layer GELU MLP projector -> a transformers causal LM.

    vlm = SpatialVLM(encoder, language_model, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    out = vlm(input_ids, attention_mask, pixel_values, labels)     # out.loss, out.logits
    answer_ids = vlm.generate(prompt_ids, pixel_values)             # greedy, new tokens only

Each `<image>` token in `input_ids` stands for one image of `pixel_values` (in reading order over
the batch) and becomes that image's N projected patch embeddings, like LLaVA-1.5; labels get -100
there. Logits and the loss are those of the expanded sequence; the LM shifts labels itself.
`SpatialVLM.from_llava(folder)` loads a `LlavaForConditionalGeneration` checkpoint (LLaVA-1.5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from spatialboost.models.encoders import HF_MODEL_TYPES, VisionEncoder, encoder_class
from spatialboost.models.export import export_encoder, load_encoder
from spatialboost.models.preprocess import from_hf_folder
from spatialboost.models.tokenizer import IGNORE_INDEX

VLM_SCHEMA_VERSION = 1


class MultimodalProjector(nn.Module):
    """LLaVA-1.5's `mlp2x_gelu`: (..., D_vision) -> (..., D_text). Names match LLaVA's weights."""

    def __init__(self, vision_dim: int, text_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim, bias=bias)
        self.act = nn.GELU()  # exact (erf) GELU, as transformers' ACT2FN["gelu"]
        self.linear_2 = nn.Linear(text_dim, text_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@dataclass
class SplicedBatch:
    """Token ids with every `<image>` token repeated N times, and the matching mask and labels."""

    input_ids: torch.Tensor  # (B, T') int64
    attention_mask: torch.Tensor  # (B, T') int64, 0 on padding
    labels: torch.Tensor | None  # (B, T') int64, IGNORE_INDEX on image positions and padding
    image_mask: torch.Tensor  # (B, T') bool, True where patch embeddings go


def expand_image_tokens(
    input_ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    image_token_id: int,
    num_patches: int,
    padding_side: Literal["left", "right"] = "right",
    pad_token_id: int = 0,
) -> SplicedBatch:
    """Repeat each `<image>` token of each row `num_patches` times, then re-pad the rows.

    input_ids, attention_mask, labels: (B, T). Padding (attention_mask 0) may be on either side
    on input; output rows are padded on `padding_side` (left for generation).
    """
    rows = []
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool()
        ids = input_ids[b][keep]  # (T_b,)
        repeats = torch.where(ids == image_token_id, num_patches, 1)
        ids = ids.repeat_interleave(repeats)  # (T_b',)
        lab = None if labels is None else labels[b][keep].repeat_interleave(repeats)
        if lab is not None:
            lab = lab.masked_fill(ids == image_token_id, IGNORE_INDEX)
        rows.append((ids, lab))
    length = max(len(ids) for ids, _ in rows)
    out_ids = input_ids.new_full((len(rows), length), pad_token_id)
    out_mask = torch.zeros_like(out_ids)
    out_labels = None if labels is None else torch.full_like(out_ids, IGNORE_INDEX)
    for b, (ids, lab) in enumerate(rows):
        span = slice(0, len(ids)) if padding_side == "right" else slice(length - len(ids), length)
        out_ids[b, span], out_mask[b, span] = ids, 1
        if out_labels is not None:
            out_labels[b, span] = lab
    image_mask = (out_ids == image_token_id) & out_mask.bool()
    return SplicedBatch(out_ids, out_mask, out_labels, image_mask)


class SpatialVLM(nn.Module):
    """encoder + projector + causal LM, LLaVA-1.5 style.

    include_cls: feed the CLS token too (LLaVA's vision_feature_select_strategy "full"); the
    default drops it ("default"). The encoder's own `feature_layer` picks the layer.
    """

    def __init__(
        self,
        encoder: VisionEncoder,
        language_model: PreTrainedModel,
        image_token_id: int,
        projector: MultimodalProjector | None = None,
        include_cls: bool = False,
    ) -> None:
        super().__init__()
        text_dim = language_model.get_input_embeddings().embedding_dim
        self.encoder = encoder
        self.projector = projector or MultimodalProjector(encoder.hidden_size, text_dim)
        self.language_model = language_model
        self.image_token_id = int(image_token_id)
        self.include_cls = include_cls
        if include_cls and encoder.num_prefix_tokens == 0:
            raise ValueError(f"include_cls: the {encoder.family} encoder has no CLS token")

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(num_images, 3, H, W) -> (num_images, N, D_text) projected image tokens."""
        feats = self.encoder(pixel_values)
        x = feats.patch_tokens  # (I, N, D_vision)
        if self.include_cls:
            x = torch.cat([feats.cls_token[:, None], x], dim=1)  # (I, 1 + N, D_vision)
        return self.projector(x.to(self.projector.linear_1.weight.dtype))

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: Literal["left", "right"] = "right",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(inputs_embeds (B, T', D), attention_mask (B, T'), labels (B, T') or None) for the LM."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n_tokens = int(((input_ids == self.image_token_id) & attention_mask.bool()).sum())
        n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
        if n_tokens != n_images:
            raise ValueError(
                f"Image features and image tokens do not match: {n_tokens} <image> tokens in input_ids, "
                f"{n_images} images in pixel_values (each <image> token stands for one whole image)"
            )
        features = self.image_features(pixel_values) if n_images else None  # (I, N, D)
        num_patches = 1 if features is None else features.shape[1]
        batch = expand_image_tokens(
            input_ids,
            attention_mask=attention_mask,
            labels=labels,
            image_token_id=self.image_token_id,
            num_patches=num_patches,
            padding_side=padding_side,
        )
        embed_tokens = self.language_model.get_input_embeddings()
        embeds = embed_tokens(batch.input_ids.masked_fill(batch.image_mask, 0))  # (B, T', D)
        if features is not None:
            mask = batch.image_mask[..., None].to(embeds.device)  # (B, T', 1)
            embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
        return embeds, batch.attention_mask, batch.labels

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **lm_kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """input_ids, attention_mask, labels: (B, T); pixel_values (num_images, 3, H, W).

        Returns the LM's output over the expanded sequence: loss (mean over label tokens != -100,
        shifted by the LM) and logits (B, T', V).
        """
        embeds, mask, labels = self.embed(input_ids, attention_mask, pixel_values, labels)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **lm_kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 64,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Greedy answers: (B, T_new) int64 new tokens only (padded with pad_token_id after EOS)."""
        embeds, mask, _ = self.embed(input_ids, attention_mask, pixel_values, padding_side="left")
        config = self.language_model.generation_config
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        options = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id": pad, **generate_kwargs}
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **options)

    # --- checkpoints ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """folder/{vlm.json, projector.safetensors, encoder/, language_model/}; no pickle."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        export_encoder(self.encoder, folder / "encoder")
        self.language_model.save_pretrained(folder / "language_model")
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, folder / "projector.safetensors")
        meta = {
            "schema_version": VLM_SCHEMA_VERSION,
            "image_token_id": self.image_token_id,
            "include_cls": self.include_cls,
            "projector": {
                "vision_dim": self.projector.linear_1.in_features,
                "text_dim": self.projector.linear_1.out_features,
                "bias": self.projector.linear_1.bias is not None,
            },
        }
        (folder / "vlm.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> SpatialVLM:
        """The inverse of `save`."""
        folder = Path(folder)
        meta = json.loads((folder / "vlm.json").read_text())
        if meta.get("schema_version") != VLM_SCHEMA_VERSION:
            raise ValueError(f"{folder}: vlm.json schema {meta.get('schema_version')}, expected {VLM_SCHEMA_VERSION}")
        encoder = load_encoder(folder / "encoder")
        lm = AutoModelForCausalLM.from_pretrained(folder / "language_model", local_files_only=True, dtype=dtype)
        projector = MultimodalProjector(**meta["projector"])
        projector.load_state_dict(load_file(folder / "projector.safetensors"))
        return cls(encoder, lm, meta["image_token_id"], projector, meta["include_cls"]).to(dtype).eval()

    @classmethod
    def from_llava(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> SpatialVLM:
        """A LLaVA(-1.5) `LlavaForConditionalGeneration` checkpoint folder as a SpatialVLM.

        Maps the vision tower (feature layer and CLS handling from the LLaVA config), the
        `multi_modal_projector` (linear_1, act, linear_2) and the language model + lm_head. The
        modules are moved, not copied, so a 7B model is in memory once.
        """
        from transformers import LlavaForConditionalGeneration

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"not a local LLaVA folder: {folder}")
        llava = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
        config = llava.config
        if not isinstance(config.vision_feature_layer, int):
            raise NotImplementedError("LLaVA checkpoints with several vision feature layers are not supported")
        strategy = config.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise ValueError(f"unknown vision_feature_select_strategy {strategy!r}")
        model_type = config.vision_config.model_type
        if model_type not in HF_MODEL_TYPES:
            raise ValueError(f"unsupported LLaVA vision tower {model_type!r}; known: {sorted(HF_MODEL_TYPES)}")
        encoder = encoder_class(HF_MODEL_TYPES[model_type]).from_model(
            llava.model.vision_tower, from_hf_folder(folder), feature_layer=config.vision_feature_layer
        )
        source = llava.model.multi_modal_projector
        projector = MultimodalProjector(
            source.linear_1.in_features, source.linear_1.out_features, bias=source.linear_1.bias is not None
        ).to(dtype)
        projector.load_state_dict(source.state_dict())
        lm = llava_language_model(llava)
        return cls(encoder, lm, config.image_token_id, projector, include_cls=strategy == "full").eval()


def llava_language_model(llava: PreTrainedModel) -> PreTrainedModel:
    """The causal LM (decoder + lm_head) inside a loaded `LlavaForConditionalGeneration`, as a
    model of its own (e.g. LlamaForCausalLM for LLaVA-1.5's Vicuna). The modules are moved, not
    copied: a 7B model is in memory once."""
    with torch.device("meta"):  # an empty shell; its decoder and head are LLaVA's own modules
        lm = AutoModelForCausalLM.from_config(llava.config.text_config)
    setattr(lm, lm.base_model_prefix, llava.model.language_model)
    lm.set_output_embeddings(llava.lm_head)
    lm.generation_config = llava.generation_config
    left_on_meta = [n for n, t in [*lm.named_parameters(), *lm.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"LLaVA language model mapping left tensors unset: {left_on_meta[:5]}")
    return lm.eval()
