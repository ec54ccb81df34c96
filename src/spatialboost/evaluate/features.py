"""Frozen encoder features, computed once per (encoder, dataset) and cached, and the part of an
image each patch token sees.

    features = cached_features(encoder, ids, load_image, cache_dir, dataset="nyu/test")
    features.patch_tokens          # (B, h, w, D) float32, the patch grid of the encoder's input
    features.cls_token             # (B, D) float32, None for encoders without one (SigLIP)
    features.mean_token            # (B, D) mean of the patch tokens

Cache: `<cache_dir>/<key>.npz`, key = sha256 of (schema, encoder fingerprint, dataset name, ids),
written atomically, read back with `allow_pickle=False`. The fingerprint hashes the encoder's
spec (architecture, feature layer, preprocessing) and every weight, so a boosted encoder never
reads its baseline's cache.

View geometry: an encoder's preprocessing resizes and crops (or pads) the image, so its patch
grid covers `view_box(preprocess, H, W)` of the original image, not the whole image. Dense probe
targets are cut to that box with `crop_to_view` so patch (i, j) and its target cover the same
pixels; metrics are computed at the resolution of that crop.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spatialboost.io import write_atomic
from spatialboost.models.encoders import VisionEncoder
from spatialboost.models.preprocess import ImagePreprocess

CACHE_SCHEMA_VERSION = 1

Box = tuple[int, int, int, int]
"""(top, left, bottom, right) in pixels of the original image; may reach outside it (padding)."""


@dataclass(frozen=True)
class FeatureSet:
    """Frozen features of B images, in the order of `ids`."""

    ids: tuple[str, ...]
    patch_tokens: np.ndarray  # (B, h, w, D) float32
    cls_token: np.ndarray | None  # (B, D) float32; None when the encoder has no CLS token

    def __post_init__(self) -> None:
        if self.patch_tokens.ndim != 4 or self.patch_tokens.shape[0] != len(self.ids):
            raise ValueError(f"patch_tokens must be (B={len(self.ids)}, h, w, D), got {self.patch_tokens.shape}")
        if self.cls_token is not None and self.cls_token.shape != (len(self.ids), self.patch_tokens.shape[-1]):
            raise ValueError(f"cls_token must be (B, D), got {self.cls_token.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the patch grid."""
        return int(self.patch_tokens.shape[1]), int(self.patch_tokens.shape[2])

    @property
    def dim(self) -> int:
        return int(self.patch_tokens.shape[-1])

    @property
    def mean_token(self) -> np.ndarray:
        """(B, D) mean over the patch grid."""
        return self.patch_tokens.mean(axis=(1, 2))

    def subset(self, indices: Sequence[int] | np.ndarray) -> FeatureSet:
        """The images at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return FeatureSet(
            ids=tuple(self.ids[i] for i in idx),
            patch_tokens=self.patch_tokens[idx],
            cls_token=None if self.cls_token is None else self.cls_token[idx],
        )


# --- view geometry -------------------------------------------------------------------------------


def view_box(preprocess: ImagePreprocess, height: int, width: int) -> Box:
    """The box of an (height, width) image that the encoder's input covers, rounded to pixels.

    Mirrors `ImagePreprocess._one`: "squash" sees the whole image, "shortest" a centred crop of
    the resized image, "longest" the whole image plus padding (a box larger than the image).
    """
    h_in, w_in = preprocess.size
    if preprocess.mode == "squash":
        return 0, 0, height, width
    if preprocess.mode == "shortest":
        target = preprocess.resize_shortest or min(h_in, w_in)
        scale = target / min(width, height)
        new_w, new_h = max(target, int(width * scale)), max(target, int(height * scale))
        if preprocess.crop_round:
            left, top = int(round((new_w - w_in) / 2)), int(round((new_h - h_in) / 2))
        else:
            left, top = (new_w - w_in) // 2, (new_h - h_in) // 2
    else:  # longest: the resized image is pasted at an offset into a padded canvas
        scale = max(h_in, w_in) / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = -((w_in - new_w) // 2), -((h_in - new_h) // 2)
    sx, sy = new_w / width, new_h / height  # resized pixels per original pixel
    return (round(top / sy), round(left / sx), round((top + h_in) / sy), round((left + w_in) / sx))


def crop_to_view(array: np.ndarray, box: Box, fill: float | int = 0) -> np.ndarray:
    """array[top:bottom, left:right] (leading two axes), padded with `fill` where the box leaves it."""
    top, left, bottom, right = box
    height, width = array.shape[:2]
    out = np.full((bottom - top, right - left, *array.shape[2:]), fill, dtype=array.dtype)
    src_t, src_l, src_b, src_r = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if src_b > src_t and src_r > src_l:
        out[src_t - top : src_b - top, src_l - left : src_r - left] = array[src_t:src_b, src_l:src_r]
    return out


def patch_grid(preprocess: ImagePreprocess, num_patches: int) -> tuple[int, int]:
    """(h, w) with h * w = num_patches and h / w the encoder input's aspect ratio."""
    h_in, w_in = preprocess.size
    h = max(1, round(math.sqrt(num_patches * h_in / w_in)))
    w = num_patches // h
    if h * w != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not form a grid for a {h_in}x{w_in} input")
    return h, w


# --- extraction and cache ------------------------------------------------------------------------


def encoder_fingerprint(encoder: VisionEncoder) -> str:
    """sha256 hex of the encoder's spec and all of its weights (bytes, in key order)."""
    digest = hashlib.sha256(json.dumps(encoder.spec(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compute_features(
    encoder: VisionEncoder,
    ids: Sequence[str],
    load_image: Callable[[str], np.ndarray],
    batch_size: int = 32,
    preprocess: ImagePreprocess | None = None,
    pooled: bool = False,
) -> FeatureSet:
    """Features of the images `load_image(id)` ((H, W, 3) uint8) in batches, under inference mode.

    preprocess: instead of the encoder's own (e.g. normalisation only, for sliding windows that
    already have the encoder's input size). pooled: keep only the mean patch token, as a 1 x 1
    grid (classification probes on ImageNet-sized sets: D floats per image instead of N x D).
    """
    if not ids:
        raise ValueError("no image ids given")
    preprocess = preprocess or encoder.preprocess
    patches, cls_tokens = [], []
    encoder.eval()
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = [load_image(image_id) for image_id in ids[start : start + batch_size]]
            out = encoder(preprocess(batch))
            tokens = out.patch_tokens.mean(1, keepdim=True) if pooled else out.patch_tokens
            patches.append(tokens.float().cpu().numpy())  # (b, N, D); N = 1 when pooled
            if out.cls_token is not None:
                cls_tokens.append(out.cls_token.float().cpu().numpy())
    tokens = np.concatenate(patches)
    h, w = (1, 1) if pooled else patch_grid(preprocess, tokens.shape[1])
    return FeatureSet(
        ids=tuple(ids),
        patch_tokens=tokens.reshape(len(ids), h, w, tokens.shape[-1]),
        cls_token=np.concatenate(cls_tokens) if cls_tokens else None,
    )


def cache_key(fingerprint: str, dataset: str, ids: Sequence[str]) -> str:
    """24 hex digits naming the cache file of (encoder, dataset, ids)."""
    digest = hashlib.sha256(f"{CACHE_SCHEMA_VERSION}\n{fingerprint}\n{dataset}\n".encode())
    digest.update("\n".join(ids).encode())
    return digest.hexdigest()[:24]


def save_features(path: str | Path, features: FeatureSet, fingerprint: str) -> None:
    """Write an .npz (no pickled objects) atomically."""
    arrays = {
        "schema_version": np.array(CACHE_SCHEMA_VERSION),
        "fingerprint": np.array(fingerprint),
        "ids": np.array(features.ids, dtype=str),
        "patch_tokens": features.patch_tokens,
    }
    if features.cls_token is not None:
        arrays["cls_token"] = features.cls_token
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_features(path: str | Path) -> tuple[FeatureSet, str]:
    """(features, fingerprint) from an .npz written by `save_features`."""
    with np.load(path, allow_pickle=False) as data:
        if int(data["schema_version"]) != CACHE_SCHEMA_VERSION:
            raise ValueError(
                f"{path}: feature cache schema {int(data['schema_version'])}, expected {CACHE_SCHEMA_VERSION}"
            )
        features = FeatureSet(
            ids=tuple(str(i) for i in data["ids"]),
            patch_tokens=data["patch_tokens"],
            cls_token=data["cls_token"] if "cls_token" in data.files else None,
        )
        return features, str(data["fingerprint"])


def cached_features(
    encoder: VisionEncoder,
    ids: Sequence[str],
    load_image: Callable[[str], np.ndarray],
    *,
    cache_dir: str | Path | None,
    dataset: str,
    batch_size: int = 32,
    fingerprint: str | None = None,
    preprocess: ImagePreprocess | None = None,
    pooled: bool = False,
) -> FeatureSet:
    """`compute_features`, read from / written to `cache_dir` (no cache when it is None).

    dataset: a name for the image set ("nyu/test"), so equal ids of two datasets never collide.
    fingerprint: the encoder's identity; `encoder_fingerprint(encoder)` when None.
    preprocess, pooled: as in `compute_features`; both are part of the cache key.
    """
    if cache_dir is None:
        return compute_features(encoder, ids, load_image, batch_size, preprocess, pooled)
    fingerprint = fingerprint or encoder_fingerprint(encoder)
    variant = dataset + ("|pooled" if pooled else "")
    if preprocess is not None:
        variant += "|preprocess=" + json.dumps(preprocess.to_dict(), sort_keys=True)
    path = Path(cache_dir) / f"{cache_key(fingerprint, variant, ids)}.npz"
    if path.exists():
        features, stored = load_features(path)
        if stored == fingerprint and features.ids == tuple(ids):
            return features
    features = compute_features(encoder, ids, load_image, batch_size, preprocess, pooled)
    save_features(path, features, fingerprint)
    return features
