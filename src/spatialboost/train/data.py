"""Conversations in, padded SFT batches out.

    records = load_conversations("data/qa")                      # LLaVA records
    dataset = ConversationDataset(records, tokenizer, vlm.encoder.preprocess, image_root="data/world")
    collate = SFTCollator(pad_token_id=tokenizer.pad_token_id)
    batch = collate([dataset[0], dataset[1]])                     # SFTBatch

A LLaVA record is {"id", "image" (optional), "conversations": [{"from": "human"|"gpt", "value"}]}
(spatialboost.qa writes them); the first human turn of an image record starts with "<image>\\n".
Each example is tokenised once by `build_sft_example` (labels only on assistant answers), and
its image goes through the encoder's own preprocessing. Records without "image" are text-only
(LLaVA-1.5's instruction mix has such conversations). A record that cannot become an example
(no user message, an unreadable image) raises a ValueError naming it.

Images (`ImageFetcher`): local paths (relative to image_root), file:// and s3:// uris. S3 objects
are read through boto3 straight into memory (data.s3's endpoint, region and profile; a client per
process, so DataLoader workers each make their own), checked against the sha256 the data
manifest recorded, so a run trains on exactly the bytes the pipeline extracted and never on an
object changed since; a small per-process cache keeps recent files. Every image is decoded the
way the manifest and the extraction decoded it (spatialboost.data.decode: EXIF orientation
applied), so a conversation's pixel coordinates name the pixels the encoder sees.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from spatialboost.data.decode import decode_image
from spatialboost.data.marks import Mark, draw_marks, marks_of
from spatialboost.data.records import BadImage, ImageLimits, formats_for_extensions
from spatialboost.io import FileTooLarge, read_regular_file
from spatialboost.models.tokenizer import IGNORE_INDEX, IMAGE_TOKEN, build_sft_example

if TYPE_CHECKING:
    from spatialboost.config import S3Config

ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}

ImageLoader = Callable[[str], np.ndarray]
"""An image reference (a record's "image") -> (H, W, 3) uint8 RGB."""

ExampleBuilder = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""(messages, tokenizer, max_length, add_image=...) -> (input_ids, labels): `build_sft_example` (the
chat format) or `build_plain_example` (LLaVA's alignment format)."""


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

        names = pq.read_schema(path).names
        columns = ["id", "image", "conversations", *(["marks"] if "marks" in names else [])]
        rows = pq.read_table(path, columns=columns).to_pylist()
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


TRAINING_LIMITS = ImageLimits(
    max_file_bytes=50_000_000,
    max_pixels=40_000_000,
    min_side_px=1,
    formats=formats_for_extensions((".jpg", ".png", ".webp")),
)
"""Decoder limits when no data config is given (data.* defaults; any side is accepted here)."""

DEFAULT_CACHE_BYTES = 64 << 20
"""Per-process cache of raw image files, bytes: a few hundred SA-1B JPEGs (~0.5 MB each)."""


class ImageFetcher:
    """Image references -> (H, W, 3) uint8 RGB; an `ImageLoader`.

    References: a path relative to `image_root`, an absolute path, a file:// uri, or an s3:// uri
    (read with boto3 through `data.sources.s3_client(s3)`: credentials from the environment or
    the AWS profile only; errors carry the S3 code and status, never request details).
    expected_sha256: uri -> sha256 of the file's bytes (the data manifest's, `manifest_sha256`):
    a file listed there whose bytes differ is an error; an s3:// uri missing from it is an error
    too (S3 objects are not tracked by DVC: the manifest pins them). limits: the decoder's
    (ImageLimits.from_config(cfg.data)). cache_bytes: an LRU of raw file bytes per process.

    Picklable and fork-aware: the boto3 client (not fork-safe) is made on first use in each
    process, and neither it nor the cache travels with a pickle.
    """

    def __init__(
        self,
        image_root: str | Path | None = None,
        s3: S3Config | None = None,
        limits: ImageLimits = TRAINING_LIMITS,
        expected_sha256: Mapping[str, str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.root = None if image_root is None else Path(image_root)
        self.s3 = s3
        self.limits = limits
        self.expected = dict(expected_sha256) if expected_sha256 is not None else None
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0  # bytes in the cache
        self._client: Any = None
        self._client_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict(), "_cached": 0, "_client": None, "_client_pid": None}

    def __call__(self, reference: str) -> np.ndarray:
        return decode_image(self.read_bytes(reference), self.limits)

    def uri(self, reference: str) -> str:
        """The file:// or s3:// uri a reference names (relative paths resolved under image_root)."""
        parsed = urlparse(reference)
        if parsed.scheme in ("s3", "file"):
            return reference
        if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
            raise ValueError(f"image {reference!r}: scheme {parsed.scheme}:// is not read (local files and s3:// are)")
        path = Path(reference)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return Path(os.path.abspath(path)).as_uri()

    def read_bytes(self, reference: str) -> bytes:
        """The file's bytes, from the cache or the source, checked against expected_sha256."""
        uri = self.uri(reference)
        data = self._cache.get(uri)
        if data is not None:
            self._cache.move_to_end(uri)
            return data
        want = None if self.expected is None else self.expected.get(uri)
        if want is None and self.expected is not None and uri.startswith("s3://"):
            raise ValueError(f"{uri}: not in the data manifest, so nothing pins its bytes")
        data = self._fetch(uri)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise ValueError(f"{uri}: its bytes changed since the data manifest recorded them (sha256 differs)")
        if len(data) <= self.cache_bytes:
            self._cache[uri] = data
            self._cached += len(data)
            while self._cached > self.cache_bytes:
                self._cached -= len(self._cache.popitem(last=False)[1])
        return data

    def _fetch(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            from spatialboost.data.sources import get_s3_object, split_s3_uri

            bucket, key = split_s3_uri(uri)
            return get_s3_object(self.client, bucket, key, self.limits.max_file_bytes)
        path = Path(unquote(urlparse(uri).path))
        try:  # a regular file only: a FIFO would block the DataLoader
            return read_regular_file(path, self.limits.max_file_bytes)
        except FileTooLarge:
            raise ValueError(f"{uri}: more than data.max_file_bytes {self.limits.max_file_bytes} bytes") from None

    @property
    def client_pid(self) -> int | None:
        """The process that made the current client (None before the first S3 read here)."""
        return self._client_pid

    @property
    def client(self) -> Any:
        """This process's boto3 S3 client (made again after a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            from spatialboost.config import S3Config
            from spatialboost.data.sources import s3_client

            self._client, self._client_pid = s3_client(self.s3 or S3Config()), os.getpid()
        return self._client


def local_image_loader(image_root: str | Path | None) -> ImageLoader:
    """Reads a relative path under `image_root`, an absolute path or a file:// uri, as RGB."""
    return ImageFetcher(image_root)


def manifest_sha256(path: str | Path) -> dict[str, str]:
    """uri -> sha256 of every image of a data manifest (data.manifest): what ImageFetcher checks."""
    from spatialboost.data.manifest import read_manifest

    return {entry.uri: entry.sha256 for entry in read_manifest(path)}


@dataclass
class SFTExample:
    """One tokenised conversation: ids and labels (T,) int64; pixels (1, 3, H, W) or None."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None = None


class ConversationDataset(Dataset):
    """LLaVA records as SFT examples (tokenised and preprocessed on access).

    preprocess: the encoder's own `ImagePreprocess` (uint8 images -> (B, 3, H, W) float32).
    image_loader: how to read a record's "image"; default: `ImageFetcher(image_root)` (local
    files, and s3:// through boto3's default credentials and endpoint).
    cache_images: keep each preprocessed image in memory after its first use (small datasets).
    build_example: how a conversation becomes (input_ids, labels); default the LLaVA-1.5 chat format.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        tokenizer: PreTrainedTokenizerBase,
        preprocess: Callable[[list[np.ndarray]], torch.Tensor] | None,
        *,
        image_root: str | Path | None = None,
        max_length: int | None = None,
        image_loader: ImageLoader | None = None,
        cache_images: bool = False,
        build_example: ExampleBuilder = build_sft_example,
    ) -> None:
        self.records = list(records)
        self.build_example = build_example
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.max_length = max_length
        self.load_image = image_loader or ImageFetcher(image_root)
        self._cache: dict[tuple[str, tuple[Mark, ...]], torch.Tensor] | None = {} if cache_images else None
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SFTExample:
        record = self.records[index]
        messages = to_messages(record)
        has_image = bool(record.get("image"))
        if not has_image and any(IMAGE_TOKEN in m["content"] for m in messages):
            raise ValueError(f"record {record.get('id')!r} has an {IMAGE_TOKEN} token but no image")
        ids, labels = self._tokenise(record, messages, has_image)
        try:
            pixels = self.pixels(record["image"], marks_of(record.get("marks"))) if has_image else None
        except (OSError, BadImage, ValueError) as err:
            raise ValueError(f"record {record.get('id')!r}: image {record['image']!r}: {err}") from err
        if pixels is not None and not (ids == self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).any():
            raise ValueError(f"record {record.get('id')!r}: the {IMAGE_TOKEN} token was cut by max_length {self.max_length}")
        return SFTExample(ids, labels, pixels)

    def lengths(self) -> list[int]:
        """Token count of every example (tokenised once, without images; for length grouping)."""
        if self._lengths is None:
            self._lengths = [len(self._tokenise(r, to_messages(r), bool(r.get("image")))[0]) for r in self.records]
        return self._lengths

    def _tokenise(
        self, record: Mapping[str, Any], messages: list[dict[str, str]], has_image: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """build_sft_example, with the record named in its errors (an empty conversation says so)."""
        try:
            return self.build_example(messages, self.tokenizer, self.max_length, add_image=has_image)
        except ValueError as err:
            raise ValueError(f"record {record.get('id')!r}: {err}") from err

    def pixels(self, reference: str, marks: Sequence[Mark] = ()) -> torch.Tensor:
        """(1, 3, H, W) float32 of an image reference with its point marks drawn (data/marks.py),
        through the encoder's preprocessing."""
        key = (reference, tuple(marks))
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        if self.preprocess is None:
            raise ValueError("this dataset has image records but no image preprocessing")
        pixels = self.preprocess([draw_marks(self.load_image(reference), marks)])
        if self._cache is not None:
            self._cache[key] = pixels
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
