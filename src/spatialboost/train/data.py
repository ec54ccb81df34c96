"""Conversations in, padded SFT batches out.

    records = load_conversations("data/qa")                      # LLaVA records
    dataset = ConversationDataset(records, tokenizer, vlm.encoder.preprocess, image_root="data/world")
    collate = SFTCollator(pad_token_id=tokenizer.pad_token_id)
    batch = collate([dataset[0], dataset[1]])                     # SFTBatch

A LLaVA record is {"id", "image" (optional), "conversations": [{"from": "human"|"gpt", "value"}]}
(spatialboost.qa writes them); the first human turn of an image record starts with "<image>\\n".
Each example is tokenised once by `build_sft_example` (labels only on assistant answers), and
its image goes through the encoder's own preprocessing. Records without "image" are text-only
(LLaVA-1.5's instruction mix has such conversations).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from spatialboost.models.tokenizer import IGNORE_INDEX, IMAGE_TOKEN, build_sft_example

ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}

ImageLoader = Callable[[str], np.ndarray]
"""An image reference (a record's "image") -> (H, W, 3) uint8 RGB."""


def load_conversations(path: str | Path) -> list[dict[str, Any]]:
    """LLaVA records from a .json list, a .jsonl, a .parquet, or a folder of them (parquet
    files if the folder has any, else .json lists; sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.parquet")) or sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"{path}: no .parquet or .json conversation files")
        return [record for file in files for record in load_conversations(file)]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path, columns=["id", "image", "conversations"]).to_pylist()
        return [{k: v for k, v in row.items() if v is not None} for row in rows]
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.suffix == ".json":
        records = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of LLaVA records")
        return records
    raise ValueError(f"{path}: conversations must be .json, .jsonl or .parquet")


def to_messages(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """LLaVA {"from", "value"} turns -> chat messages {"role", "content"}."""
    messages = []
    for i, turn in enumerate(record["conversations"]):
        role = ROLES.get(turn.get("from", ""))
        if role is None:
            raise ValueError(f"record {record.get('id')!r} turn {i}: unknown speaker {turn.get('from')!r}")
        messages.append({"role": role, "content": turn["value"]})
    return messages


def local_image_loader(image_root: str | Path | None) -> ImageLoader:
    """Reads a relative path under `image_root`, an absolute path or a file:// uri, as RGB."""
    root = None if image_root is None else Path(image_root)

    def load(reference: str) -> np.ndarray:
        parsed = urlparse(reference)
        if parsed.scheme == "file":
            path = Path(unquote(parsed.path))
        elif parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a plain (or Windows) path
            path = Path(reference)
            if not path.is_absolute() and root is not None:
                path = root / path
        else:
            raise ValueError(f"image {reference!r}: only local files are read here; pass an image_loader for {parsed.scheme}://")
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)

    return load


@dataclass
class SFTExample:
    """One tokenised conversation: ids and labels (T,) int64; pixels (1, 3, H, W) or None."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None = None


class ConversationDataset(Dataset):
    """LLaVA records as SFT examples (tokenised and preprocessed on access).

    preprocess: the encoder's own `ImagePreprocess` (uint8 images -> (B, 3, H, W) float32).
    image_loader: how to read a record's "image"; default: local files under image_root.
    cache_images: keep each preprocessed image in memory after its first use (small datasets).
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        tokenizer: PreTrainedTokenizerBase,
        preprocess: Callable[[list[np.ndarray]], torch.Tensor] | None,
        image_root: str | Path | None = None,
        max_length: int | None = None,
        image_loader: ImageLoader | None = None,
        cache_images: bool = False,
    ) -> None:
        self.records = list(records)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.max_length = max_length
        self.load_image = image_loader or local_image_loader(image_root)
        self._cache: dict[str, torch.Tensor] | None = {} if cache_images else None
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SFTExample:
        record = self.records[index]
        messages = to_messages(record)
        has_image = bool(record.get("image"))
        if not has_image and any(IMAGE_TOKEN in m["content"] for m in messages):
            raise ValueError(f"record {record.get('id')!r} has an {IMAGE_TOKEN} token but no image")
        ids, labels = build_sft_example(messages, self.tokenizer, self.max_length, add_image=has_image)
        pixels = self.pixels(record["image"]) if has_image else None
        if pixels is not None and not (ids == self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).any():
            raise ValueError(f"record {record.get('id')!r}: the {IMAGE_TOKEN} token was cut by max_length {self.max_length}")
        return SFTExample(ids, labels, pixels)

    def lengths(self) -> list[int]:
        """Token count of every example (tokenised once, without images; for length grouping)."""
        if self._lengths is None:
            self._lengths = [
                len(build_sft_example(to_messages(r), self.tokenizer, self.max_length, add_image=bool(r.get("image")))[0])
                for r in self.records
            ]
        return self._lengths

    def pixels(self, reference: str) -> torch.Tensor:
        """(1, 3, H, W) float32 of an image reference, through the encoder's preprocessing."""
        if self._cache is not None and reference in self._cache:
            return self._cache[reference]
        if self.preprocess is None:
            raise ValueError("this dataset has image records but no image preprocessing")
        pixels = self.preprocess([self.load_image(reference)])
        if self._cache is not None:
            self._cache[reference] = pixels
        return pixels


@dataclass
class SFTBatch:
    """A padded micro-batch: what SFTObjective takes, plus counts for loss normalisation."""

    input_ids: torch.Tensor  # (B, T) int64, right-padded with pad_token_id
    attention_mask: torch.Tensor  # (B, T) int64, 0 on padding
    labels: torch.Tensor  # (B, T) int64, IGNORE_INDEX on padding and non-assistant tokens
    pixel_values: torch.Tensor | None  # (I, 3, H, W): the images of the rows that have one, in row order
    n_targets: int  # tokens the loss counts: labels[:, 1:] != IGNORE_INDEX (the LM shifts by one)

    def inputs(self, device: torch.device) -> dict[str, torch.Tensor | None]:
        """Keyword arguments of the objective, on `device`."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return {
            "input_ids": move(self.input_ids),
            "attention_mask": move(self.attention_mask),
            "labels": move(self.labels),
            "pixel_values": move(self.pixel_values),
        }


@dataclass(frozen=True)
class SFTCollator:
    """Pads SFTExamples on the right into an SFTBatch."""

    pad_token_id: int

    def __call__(self, examples: Sequence[SFTExample]) -> SFTBatch:
        length = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(examples):
            n = len(e.input_ids)
            ids[row, :n], labels[row, :n], mask[row, :n] = e.input_ids, e.labels, 1
        images = [e.pixel_values for e in examples if e.pixel_values is not None]
        pixels = torch.cat(images) if images else None
        n_targets = int((labels[:, 1:] != IGNORE_INDEX).sum())
        return SFTBatch(ids, mask, labels, pixels, n_targets)
