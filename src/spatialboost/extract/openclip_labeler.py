"""OpenCLIP zero-shot region labels over a configurable vocabulary, on mask crops.

Text side: every vocabulary entry goes through every prompt template; the normalised template
embeddings are averaged and renormalised (CLIP's prompt ensemble), once per vocabulary (cached).
Image side: each mask becomes a grey-background square crop (`mask_crop`), crops run batched.
Probabilities are a softmax over the vocabulary of the model's scaled cosine similarities.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from spatialboost.extract.crops import mask_crop
from spatialboost.extract.protocols import Label, Mask
from spatialboost.extract.runtime import batches, check_rgb_images, resolve_dtype

_TEXT_CACHE_SIZE = 8  # vocabularies whose text embeddings stay cached


class OpenCLIPLabeler:
    """Zero-shot mask labels from an OpenCLIP model; implements `Labeler`.

    model_name: an open_clip architecture ("ViT-L-14", or one registered with
        `open_clip.add_model_config`) or "local-dir:/folder": a hub repository's files
        (open_clip_config.json + weights), what the paper profile's hub stage fetches.
    pretrained: a local checkpoint file for an architecture name (None: random, tests only);
        with local-dir it must be None (the folder's weights load). A pretrained *tag* makes
        open_clip download: resolve tags with hub.py first.
    templates: prompt templates with one "{}" each; top_k: alternatives kept per label.
    margin, fill: crop border (fraction of the mask box) and background grey level.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 32,
        templates: Sequence[str] = ("a photo of a {}.",),
        top_k: int = 5,
        margin: float = 0.1,
        fill: int = 128,
    ) -> None:
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError(f"templates need exactly one '{{}}' each, got {list(templates)}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size
        self.templates = tuple(templates)
        self.top_k = top_k
        self.margin, self.fill = margin, fill
        if model_name.startswith("local-dir:"):
            check_local_dir(model_name, pretrained)
        model, _, self.preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        self.model = model.to(self.device, self.dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._text_cache: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    @torch.inference_mode()
    def text_embeddings(self, vocabulary: Sequence[str]) -> torch.Tensor:
        """(V, D) float32 unit-norm class embeddings, template-averaged; cached per vocabulary."""
        key = _check_vocabulary(vocabulary)
        if key in self._text_cache:
            self._text_cache.move_to_end(key)
            return self._text_cache[key]
        prompts = [template.format(name) for name in key for template in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (V * T, D)
        emb = F.normalize(emb.reshape(len(key), len(self.templates), -1).mean(1), dim=-1)  # (V, D)
        self._text_cache[key] = emb
        if len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return emb

    @torch.inference_mode()
    def probabilities(
        self, image: np.ndarray, masks: Sequence[Mask | np.ndarray], vocabulary: Sequence[str]
    ) -> np.ndarray:
        """(N, V) float32 softmax over the vocabulary per mask; a row of NaN for an empty mask."""
        check_rgb_images([image])
        text = self.text_embeddings(vocabulary)
        probs = np.full((len(masks), len(text)), np.nan, dtype=np.float32)
        crops = [mask_crop(image, _as_bool(m), margin=self.margin, fill=self.fill) for m in masks]
        present = [i for i, crop in enumerate(crops) if crop is not None]
        scale = self.model.logit_scale.exp().float()
        for _, chunk in batches(present, self.batch_size):
            pixels = torch.stack([self.preprocess(Image.fromarray(crops[i])) for i in chunk])
            feats = F.normalize(self.model.encode_image(pixels.to(self.device, self.dtype)).float(), dim=-1)
            probs[list(chunk)] = (scale * feats @ text.T).softmax(-1).cpu().numpy()
        return probs

    def label(self, image: np.ndarray, masks: Sequence[Mask | np.ndarray], vocabulary: Sequence[str]) -> list[Label]:
        """One Label per mask: best name, its probability and the top-k alternatives."""
        names = _check_vocabulary(vocabulary)
        probs = self.probabilities(image, masks, names)
        return [_label_from_row(row, names, self.top_k) for row in probs]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")


def check_local_dir(model_name: str, pretrained: str | None = None) -> None:
    """Refuse a "local-dir:" folder open_clip would load wrongly: missing, without
    open_clip_config.json, or without weights (open_clip only warns and keeps random weights),
    or with `pretrained` also set (open_clip ignores it)."""
    folder = Path(model_name.removeprefix("local-dir:"))
    if pretrained is not None:
        raise ValueError(f"labeler {model_name}: pretrained={pretrained!r} would be ignored; a local-dir: folder brings its own weights")
    if not (folder / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"labeler {model_name}: no open_clip_config.json in {folder} (fetch it with `spatialboost hub fetch`)")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file()):
        raise FileNotFoundError(f"labeler {model_name}: no weights ({', '.join(WEIGHT_SUFFIXES)}) in {folder}; "
                                "open_clip would run with random weights")  # fmt: skip


def _label_from_row(row: np.ndarray, names: tuple[str, ...], top_k: int) -> Label:
    if not np.isfinite(row).all():
        return Label(name=None, score=float("nan"))
    order = np.argsort(-row, kind="stable")[:top_k]
    top = tuple((names[j], float(row[j])) for j in order)
    return Label(name=top[0][0], score=top[0][1], top_k=top)


def _check_vocabulary(vocabulary: Sequence[str]) -> tuple[str, ...]:
    names = tuple(vocabulary)
    if not names:
        raise ValueError("the vocabulary is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"the vocabulary has duplicates: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return names


def _as_bool(mask: Mask | np.ndarray) -> np.ndarray:
    return np.asarray(mask.mask if isinstance(mask, Mask) else mask, dtype=bool)
