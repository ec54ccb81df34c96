"""An encoder's own image preprocessing as data: uint8 RGB images -> a normalised float batch.

One small spec covers the processors our encoder families ship with:

    CLIP (HF, open_clip)  resize shortest edge to S, centre-crop (S, S)     mode="shortest"
    DINOv2 (HF)           resize shortest edge to 256, centre-crop 224      mode="shortest"
    SigLIP (HF)           resize to (H, W), no crop                          mode="squash"
    open_clip "longest"   resize longest edge to S, pad to (S, S)            mode="longest"

Resampling is PIL's (what the reference processors use on PIL images); values match those
processors up to resampling details, which is all a frozen encoder needs. The spec is JSON-able
(`to_dict` / `from_dict`) so an exported encoder carries its preprocessing with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_PIL_CODES = {2: "bilinear", 3: "bicubic"}  # HF processors store PIL resample codes
HF_PROCESSOR_FILE = "preprocessor_config.json"

Images = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class ImagePreprocess:
    """How one encoder wants its pixels; call it on uint8 images.

    size: (H, W) of the tensor the encoder sees.
    mode: "shortest" (resize the shortest edge to `resize_shortest`, centre-crop to `size`),
        "squash" (resize straight to `size`), "longest" (resize the longest edge to max(size),
        pad to `size` with `fill`).
    resize_shortest: shortest-edge target for mode "shortest" (None: min(size)).
    mean, std: per-channel normalisation of [0, 1] values.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: Literal["shortest", "squash", "longest"] = "shortest"
    resize_shortest: int | None = None
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    fill: int = 0
    crop_round: bool = False  # crop offset round((W - w) / 2) like torchvision (open_clip); False: floor, like HF

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (H, W) with positive values, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std need 3 values (std > 0), got {self.mean}, {self.std}")
        if self.mode not in ("shortest", "squash", "longest"):
            raise ValueError(f"mode must be shortest, squash or longest, got {self.mode!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")

    def __call__(self, images: Images) -> torch.Tensor:
        """uint8 (H, W, 3) images (a list, or one (B, H, W, 3) array) -> (B, 3, H', W') float32."""
        batch = [self._one(image) for image in _as_list(images)]
        return torch.from_numpy(np.stack(batch))

    def _one(self, image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(image)
        h, w = self.size
        resample = _RESAMPLE[self.interpolation]
        if self.mode == "squash":
            pil = pil.resize((w, h), resample)
        elif self.mode == "shortest":
            target = self.resize_shortest or min(h, w)
            scale = target / min(pil.size)
            new_w, new_h = max(target, int(pil.width * scale)), max(target, int(pil.height * scale))
            pil = pil.resize((new_w, new_h), resample)
            if self.crop_round:
                left, top = int(round((new_w - w) / 2)), int(round((new_h - h) / 2))
            else:
                left, top = (new_w - w) // 2, (new_h - h) // 2
            pil = pil.crop((left, top, left + w, top + h))  # pads with 0 if the crop is larger
        else:  # longest
            scale = max(h, w) / max(pil.size)
            new_w, new_h = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
            canvas = Image.new("RGB", (w, h), (self.fill,) * 3)
            canvas.paste(pil.resize((new_w, new_h), resample), ((w - new_w) // 2, (h - new_h) // 2))
            pil = canvas
        x = np.asarray(pil, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x.transpose(2, 0, 1)  # (3, H, W)

    def to_dict(self) -> dict:
        """A JSON-able dict; `from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImagePreprocess:
        return cls(**d)


def from_hf_processor_json(path: str | Path) -> ImagePreprocess:
    """Read a transformers `preprocessor_config.json` (CLIP, BiT/DINOv2, SigLIP image processors)."""
    d = json.loads(Path(path).read_text())
    size, crop = d.get("size", {}), d.get("crop_size") if d.get("do_center_crop", False) else None
    mean, std = d.get("image_mean", HALF), d.get("image_std", HALF)
    interpolation = _PIL_CODES.get(d.get("resample", 3), "bicubic")
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if "shortest_edge" in size:
        shortest = int(size["shortest_edge"])
        out = (crop["height"], crop["width"]) if crop else (shortest, shortest)
        return ImagePreprocess(out, mean, std, "shortest", shortest, interpolation)
    if "height" in size and "width" in size and crop is None:
        return ImagePreprocess((size["height"], size["width"]), mean, std, "squash", None, interpolation)
    raise ValueError(f"{path}: unsupported image processor sizes size={size} crop_size={crop}")


def from_hf_folder(folder: str | Path) -> ImagePreprocess | None:
    """The preprocessing of a transformers checkpoint folder; None when it has no processor file."""
    path = Path(folder) / HF_PROCESSOR_FILE
    return from_hf_processor_json(path) if path.is_file() else None


def from_open_clip_cfg(cfg: dict) -> ImagePreprocess:
    """Read open_clip's `preprocess_cfg` dict (size, mean, std, interpolation, resize_mode, fill_color)."""
    size = cfg.get("size", 224)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    mode = cfg.get("resize_mode", "shortest")
    return ImagePreprocess(
        size=hw,
        mean=cfg.get("mean", OPENAI_CLIP_MEAN),
        std=cfg.get("std", OPENAI_CLIP_STD),
        mode=mode,
        resize_shortest=min(hw) if mode == "shortest" else None,
        interpolation=cfg.get("interpolation", "bicubic"),
        fill=int(cfg.get("fill_color", 0)),
        crop_round=True,
    )


def _as_list(images: Images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        images = list(images) if images.ndim == 4 else [images]
    out = list(images)
    if not out:
        raise ValueError("no images given")
    for i, image in enumerate(out):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"image {i}: expected a uint8 (H, W, 3) array, got {desc}")
    return out
