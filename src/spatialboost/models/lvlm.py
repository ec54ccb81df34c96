"""A new vision encoder inside LLaVA-1.5: the encoder, a fresh 2-layer GELU projector, LLaVA-1.5's LLM.

    encoder = load_encoder_choice(cfg.lvlm.encoders["dinov2"])                  # its own preprocessing
    lm, tokenizer = load_language_model("models/hub/lvlm")                     # Vicuna-7B from llava-hf
    vlm = build_lvlm(encoder, lm, tokenizer, seed=0)                           # projector: fresh, seeded

The LLM comes from the LLaVA-1.5 checkpoint the hub stage pins (llava-hf/llava-1.5-7b-hf: its
`language_model` + `lm_head`, and its tokenizer, which has the `<image>` token), or from a plain
causal-LM folder such as lmsys/vicuna-7b-v1.5, LLaVA-1.5's own starting point (scripts/v1_5/
pretrain.sh: --model_name_or_path lmsys/vicuna-13b-v1.5); such a tokenizer gets `<image>` added
and, like LLaVA's training code for Vicuna v1, pads with its unk token. Note the difference: the
llava-hf LLM has already been instruction-tuned once (with CLIP features); Vicuna has not.

Which hidden state feeds the projector (EncoderChoice.feature_layer, -2 for every family):
    clip       -2, patch tokens, no CLS, no final norm: LLaVA-1.5's own choice (--mm_vision_select_layer
               -2, vision_feature_select_strategy "default"); the last block of a contrastive ViT is
               specialised for the pooled image-text embedding.
    open_clip  -2 as for CLIP (the same contrastive ViT-L/14 recipe, LAION-2B instead of OpenAI's data).
    siglip     -2 (SigLIP and SigLIP 2): all tokens are patches; the last block feeds SigLIP's
               attention-pooling head. Prismatic VLMs (TRI-ML/prismatic-vlms,
               prismatic/models/backbones/vision/base_vision.py) read the second-to-last block's patch
               tokens of SigLIP, DINOv2 and CLIP alike (timm get_intermediate_layers, no final norm).
    dinov2     -2, no final norm, as Prismatic does for DINOv2 (and its DINO-SigLIP fusion).
    dinov3     -2, no final norm, CLS and the 4 register tokens dropped: the same rule; no published
               LLaVA-style recipe for DINOv3 was found to follow, so this is the rule, not a measurement.
The encoder keeps its own preprocessing (size, crop or squash, mean/std); LLaVA-1.5's instruct stage
pads images to a square first (train/llava_data.py, `image_aspect_ratio: pad`).

The instruct stage's output folder (train.init of the paper profile) says where the LVLM the boost
starts from is, in `lvlm.json`: {"vlm": "dinov2/vlm"} (a SpatialVLM folder inside it, one per
encoder, kept when another is chosen) or {"released": "models/hub/lvlm"} (LLaVA-1.5 itself,
whose weights already passed both stages). `resolve_lvlm_folder` follows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from spatialboost.config import EncoderChoice
from spatialboost.io import write_json_atomic
from spatialboost.models.encoders import OpenCLIPEncoder, VisionEncoder, encoder_class
from spatialboost.models.tokenizer import IMAGE_TOKEN, load_tokenizer
from spatialboost.models.vlm import MultimodalProjector, SpatialVLM, llava_language_model

POINTER_FILE = "lvlm.json"
POINTER_SCHEMA_VERSION = 1


def load_encoder_choice(choice: EncoderChoice, dtype: torch.dtype = torch.float32) -> VisionEncoder:
    """The chosen encoder from its local checkpoint folder, with its own preprocessing and the
    choice's feature layer (nothing is downloaded: hub.py fetched the folder)."""
    folder = Path(choice.path)
    if choice.released:
        raise ValueError(f"{choice.name} is a released LLaVA: load it with SpatialVLM.from_llava({folder})")
    options = {"feature_layer": choice.feature_layer, "apply_final_norm": choice.apply_final_norm}
    if choice.family == "open_clip":
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{folder}: no open_clip_config.json (an open_clip checkpoint folder, e.g. the laion repository)")
        return OpenCLIPEncoder.from_pretrained(f"local-dir:{folder}", **options).to(dtype)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a transformers checkpoint folder of the {choice.family} encoder)")
    return encoder_class(choice.family).from_pretrained(folder, dtype=dtype, **options)


def load_language_model(
    folder: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM, tokenizer with an `<image>` token) from a LLaVA checkpoint folder (its LLM) or a
    causal-LM folder (tokenizer extended with `<image>`, embeddings resized to match)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a LLaVA checkpoint or a causal-LM folder)")
    tokenizer = load_tokenizer(folder)
    if json.loads(config_file.read_text()).get("model_type") == "llava":
        from transformers import LlavaForConditionalGeneration

        llava = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
        lm = llava_language_model(llava)
        del llava  # its vision tower and projector are not used
    else:
        lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype).eval()
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:  # Vicuna v1: LLaVA's train.py sets pad_token = unk_token
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer))  # the <image> row is never read: image features replace it
    return lm, tokenizer


def build_lvlm(
    encoder: VisionEncoder,
    language_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    projector_state: dict[str, torch.Tensor] | None = None,
) -> SpatialVLM:
    """encoder + 2-layer GELU projector (fresh: PyTorch's default Linear init under `seed`, as
    LLaVA's nn.Linear layers; or `projector_state`, the align stage's) + the LM. The encoder is
    frozen in both LLaVA stages; `train/adapters.prepare_stage` sets what trains."""
    text_dim = language_model.get_input_embeddings().embedding_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projector = MultimodalProjector(encoder.hidden_size, text_dim)
    if projector_state is not None:
        projector.load_state_dict(projector_state)
    projector = projector.to(language_model.dtype)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    return SpatialVLM(encoder, language_model, image_token_id, projector).eval()


def write_pointer(
    folder: str | Path, encoder: str, *, vlm: str | None = None, released: str | None = None, pin: dict | None = None
) -> Path:
    """Write `folder/lvlm.json` (atomically): the LVLM of `encoder` is `folder/vlm` or the released
    checkpoint folder `released` (a path as the params give it); `pin`: its hub pin, so that a new pin
    changes this file (and DVC reruns what depends on it)."""
    if (vlm is None) == (released is None):
        raise ValueError("a pointer names either a trained vlm folder or a released checkpoint")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"schema_version": POINTER_SCHEMA_VERSION, "encoder": encoder}
    record |= {"vlm": vlm} if vlm is not None else {"released": released, "pin": pin}
    write_json_atomic(folder / POINTER_FILE, record)
    return folder / POINTER_FILE


def resolve_lvlm_folder(folder: str | Path) -> Path:
    """The model folder `folder` stands for: itself, or where its lvlm.json points (a trained vlm
    inside it, or a released checkpoint); a clear error when the target is missing."""
    folder = Path(folder)
    pointer = folder / POINTER_FILE
    if not pointer.is_file():
        return folder
    record = json.loads(pointer.read_text())
    if record.get("schema_version") != POINTER_SCHEMA_VERSION:
        raise ValueError(f"{pointer}: schema {record.get('schema_version')}, expected {POINTER_SCHEMA_VERSION}")
    target = folder / record["vlm"] if record.get("vlm") else Path(record["released"])
    if not target.is_dir():
        raise FileNotFoundError(f"{pointer} points at {target}, which does not exist")
    return target
