"""Small helpers every backend shares: dtype names, batching, input checks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """torch.dtype from a dtype or its name ("float32", "bf16", ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(_DTYPES)}") from None


def batches(items: Sequence[T], size: int) -> Iterator[tuple[int, Sequence[T]]]:
    """(start index, chunk) pairs of at most `size` items, in order."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def check_rgb_images(images: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless every image is an (H, W, 3) uint8 array with H, W >= 1.

    A wrong image is a caller bug (the data stage decodes and quarantines), so it raises.
    """
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
            raise ValueError(f"image {i}: expected an (H, W, 3) uint8 array, got {got}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image {i}: empty image of shape {image.shape}")
