"""The encoders the paper profile can boost, as tiny random models of the real classes saved under the
real repositories' ids and file names (with `hf download --local-dir`'s records), and small files in
LLaVA-1.5's two data formats with their images. Together with tests/tiny_hub.py (Depth Pro, SAM 2,
the OpenCLIP labeler, LLaVA-1.5) this is a hub mirror for every lvlm.encoder.

    save_encoder_repos(mirror, commit)                   # facebook/dinov2-large, google/siglip-..., ...
    paths = write_llava_data(tmp_path / "llava")         # LCS-558K + 665K-format files and images

The repositories' real file lists are those of the hub for facebook/dinov2-large and
google/siglip-so400m-patch14-384; google/siglip2-so400m-patch14-384 is assumed to have the same
layout (a fixed-resolution SigLIP 2 checkpoint is a SiglipModel), and the gated
facebook/dinov3-vitl16-pretrain-lvd1689m could not be checked (config.json, model.safetensors and
preprocessor_config.json are what transformers' DINOv3 port loads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.tiny_vlm import _HF_PROCESSORS, IMAGE_PX, hf_vision_config, random_images

ENCODER_REPOS = {
    "dinov2": "facebook/dinov2-large",
    "siglip": "google/siglip-so400m-patch14-384",
    "dinov3": "facebook/dinov3-vitl16-pretrain-lvd1689m",
    "siglip2": "google/siglip2-so400m-patch14-384",
}
"""hub role -> repository of configs/paper.yaml (the OpenCLIP encoder is the labeler's repository)."""
ENCODER_FAMILY = {"dinov2": "dinov2", "siglip": "siglip", "dinov3": "dinov3", "siglip2": "siglip"}
NOT_FETCHED = {
    "facebook/dinov2-large": ["pytorch_model.bin", "README.md"],
    "google/siglip-so400m-patch14-384": ["spiece.model", "tokenizer_config.json", "special_tokens_map.json", "README.md"],
    "facebook/dinov3-vitl16-pretrain-lvd1689m": ["README.md", "LICENSE.md"],
    "google/siglip2-so400m-patch14-384": ["tokenizer.model", "tokenizer_config.json", "README.md"],
}


def save_encoder_repo(folder: Path, role: str, seed: int = 0) -> Path:
    """One encoder repository: the real class with a tiny config, its image processor."""
    from transformers import Dinov2Model, DINOv3ViTModel, SiglipConfig, SiglipModel

    family = ENCODER_FAMILY[role]
    torch.manual_seed(seed)
    vision = hf_vision_config(family)
    if family == "siglip":  # the repositories hold the whole image-text model; the pipeline reads its vision tower
        text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=99)
        model = SiglipModel(SiglipConfig(vision_config=vision.to_dict(), text_config=text))
    else:
        model = (Dinov2Model if family == "dinov2" else DINOv3ViTModel)(vision)
    model.eval().save_pretrained(folder)
    _HF_PROCESSORS[family]().save_pretrained(folder)
    return Path(folder)


def save_encoder_repos(root: Path, commit: str, roles: tuple[str, ...] = tuple(ENCODER_REPOS), seed: int = 0) -> Path:
    """`root`/<repo_id>/<files> for the encoder roles, recorded as of `commit` (plus files not fetched)."""
    from huggingface_hub._local_folder import write_download_metadata

    for role in roles:
        folder = save_encoder_repo(Path(root) / ENCODER_REPOS[role], role, seed)
        for name in NOT_FETCHED[ENCODER_REPOS[role]]:
            (folder / name).write_bytes(b"not for the pipeline")
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
            write_download_metadata(folder, path.relative_to(folder).as_posix(), commit, etag="tiny")
    return Path(root)


# --- LLaVA-1.5's data formats ----------------------------------------------------------------------


@dataclass(frozen=True)
class LlavaDataPaths:
    pretrain: Path  # blip_laion_cc_sbu_558k.json
    pretrain_images: Path  # LLaVA-Pretrain/images
    instruct: Path  # llava_v1_5_mix665k.json
    instruct_images: Path  # the folder holding coco/, gqa/, ocr_vqa/, textvqa/, vg/


CAPTIONS = ["a red cube on a table", "two chairs next to a window", "a dog on the grass", "a lamp beside a sofa"]
PROMPTS = ["Render a clear and concise summary of the photo.\n<image>", "<image>\nDescribe the image concisely.",
           "Write a terse but informative summary of the picture.\n<image>", "<image>\nShare a concise interpretation."]  # fmt: skip


def _image(path: Path, seed: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_images(1, seed=seed, size=size)[0]).save(path, quality=95)


def pretrain_records(n: int) -> list[dict]:
    """LCS-558K records as released: {"id", "image": "<5-digit folder>/<id>.jpg", two turns}."""
    records = []
    for i in range(n):
        rid = f"{4539375 + i:09d}"
        records.append({"id": rid, "image": f"{rid[:5]}/{rid}.jpg", "conversations": [
            {"from": "human", "value": PROMPTS[i % len(PROMPTS)]}, {"from": "gpt", "value": CAPTIONS[i % len(CAPTIONS)]}]})  # fmt: skip
    return records


def instruct_records() -> list[dict]:
    """One record of each kind the 665K mix has: multi-turn COCO (LLaVA-Instruct), GQA, OCR-VQA,
    TextVQA (image token after the text), Visual Genome and RefCOCO with normalised region boxes,
    ShareGPT text-only (no "image", a "model" key, an integer-looking id), and one that opens with
    the assistant (LLaVA drops that turn)."""
    h, g = "human", "gpt"
    return [
        {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": h, "value": "<image>\nWhat are the colors of the bus in the image?"}, {"from": g, "value": "The bus is white and red."},
            {"from": h, "value": "What feature can be seen on the back of the bus?"}, {"from": g, "value": "An advertisement."}]},
        {"id": "2354786", "image": "gqa/images/2354786.jpg", "conversations": [
            {"from": h, "value": "<image>\nIs the sky dark?\nAnswer the question using a single word or phrase."},
            {"from": g, "value": "Yes"}]},
        {"id": "140031996", "image": "ocr_vqa/images/140031996.jpg", "conversations": [
            {"from": h, "value": "<image>\nWho wrote this book?"}, {"from": g, "value": "Jane Doe"},
            {"from": h, "value": "Is this a comedy book?"}, {"from": g, "value": "No"}]},
        {"id": "0054c91397f2fe05", "image": "textvqa/train_images/0054c91397f2fe05.jpg", "conversations": [
            {"from": h, "value": "What is the brand of this camera?\nReference OCR token: nous, les\n<image>"},
            {"from": g, "value": "dakota"}]},
        {"id": "VG_1", "image": "vg/VG_100K/1.jpg", "conversations": [
            {"from": h, "value": "<image>\nPlease provide the bounding box coordinate of the region this sentence describes: a red cube."},
            {"from": g, "value": "[0.12, 0.34, 0.56, 0.78]"},
            {"from": h, "value": "Please provide a short description for this region: [0.5, 0.5, 0.9, 0.95]"},
            {"from": g, "value": "a lamp"}]},
        {"id": "VG_2", "image": "vg/VG_100K_2/2.jpg", "conversations": [
            {"from": h, "value": "<image>\nWhat is in the region [0.0, 0.25, 0.5, 0.75]?"}, {"from": g, "value": "a chair"}]},
        {"id": "i6IyJda_0", "model": "", "conversations": [
            {"from": h, "value": "How to tell if a customer segment is well segmented? In 3 bullet points."},
            {"from": g, "value": "1. Homogeneity 2. Distinctiveness 3. Reliability"}]},
        {"id": 1024, "model": "", "conversations": [
            {"from": g, "value": "Hello! How can I help?"}, {"from": h, "value": "Name a prime number."},
            {"from": g, "value": "Seven."}]},
    ]  # fmt: skip


def write_llava_data(root: Path, n_pretrain: int = 8) -> LlavaDataPaths:
    """Both annotation files and every image they name (JPEG, varied aspect ratios)."""
    root = Path(root)
    pretrain_images, instruct_images = root / "LLaVA-Pretrain" / "images", root / "images"
    pretrain = pretrain_records(n_pretrain)
    for i, record in enumerate(pretrain):
        _image(pretrain_images / record["image"], seed=i, size=(40 + 4 * i, 48))
    mix = instruct_records()
    for i, record in enumerate(mix):
        if "image" in record:
            _image(instruct_images / record["image"], seed=100 + i, size=(IMAGE_PX + 8 * (i % 3), IMAGE_PX + 16))
    paths = LlavaDataPaths(root / "LLaVA-Pretrain" / "blip_laion_cc_sbu_558k.json", pretrain_images,
                           root / "llava_v1_5_mix665k.json", instruct_images)  # fmt: skip
    paths.pretrain.write_text(json.dumps(pretrain))
    paths.instruct.write_text(json.dumps(mix))
    return paths


def padded_fixture(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 image whose every pixel is distinct enough to locate it."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 7 % 256, cols * 5 % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
