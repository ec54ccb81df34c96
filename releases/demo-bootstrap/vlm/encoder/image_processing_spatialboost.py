"""The exported encoder's own preprocessing as a transformers image processor (remote code).

    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]     # (B, 3, H, W) float32

Exactly the SpatialBoost pipeline's preprocessing (PIL resampling, then [0, 1] and mean/std):
    mode "shortest": resize the shortest edge to `resize_shortest` (default min(size)), centre-crop `size`
    mode "squash":   resize straight to `size`
    mode "longest":  resize the longest edge to max(size), pad to `size` with `fill`
Images: PIL images or uint8 (H, W, 3) arrays, one or a list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class SpatialBoostImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: list[int] | tuple[int, int] = (224, 224),
        mean: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5),
        std: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5),
        mode: str = "shortest",
        resize_shortest: int | None = None,
        interpolation: str = "bicubic",
        fill: int = 0,
        crop_round: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("shortest", "squash", "longest") or interpolation not in _RESAMPLE:
            raise ValueError(f"unsupported preprocessing mode={mode!r} interpolation={interpolation!r}")
        self.size = [int(s) for s in size]  # (H, W) the encoder sees
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.mode = mode
        self.resize_shortest = resize_shortest
        self.interpolation = interpolation
        self.fill = int(fill)
        self.crop_round = bool(crop_round)  # crop offset rounded like torchvision (open_clip), else floored

    def __call__(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors)

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        batch = np.stack([self._one(image) for image in images])  # (B, 3, H, W) float32
        return BatchFeature(data={"pixel_values": batch}, tensor_type=return_tensors)

    def _one(self, image: Any) -> np.ndarray:
        pil = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
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
            pil = pil.crop((left, top, left + w, top + h))
        else:
            scale = max(h, w) / max(pil.size)
            new_w, new_h = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
            canvas = Image.new("RGB", (w, h), (self.fill,) * 3)
            canvas.paste(pil.resize((new_w, new_h), resample), ((w - new_w) // 2, (h - new_h) // 2))
            pil = canvas
        x = np.asarray(pil, dtype=np.float32) / 255.0  # (H, W, 3) in [0, 1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x.transpose(2, 0, 1)
