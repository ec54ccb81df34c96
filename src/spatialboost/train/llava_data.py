"""LLaVA-1.5's training data, read as released: the LCS-558K captions (align) and the 665K mix (instruct).

    pretrain = read_llava_pretrain("data/llava/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json")
    mix = read_llava_instruct("data/llava/llava_v1_5_mix665k.json")
    mix.records[0]      # {"id", "image"?, "conversations": [{"from", "value"}, ...]}, normalised
    mix.skipped         # {reason: count} of records that cannot train, never silently
    mix.sources         # {"coco": n, "gqa": n, "ocr_vqa": n, "textvqa": n, "vg": n, "text": n, ...}

The formats (haotian-liu/LLaVA: README "Train", docs/Data.md, llava/train/train.py):
- blip_laion_cc_sbu_558k.json (liuhaotian/LLaVA-Pretrain): a JSON list of {"id", "image", "conversations"}
  with two turns, a human prompt that holds `<image>` (before or after the text) and the BLIP caption;
  "image" is relative to the images.zip folder (LLaVA-Pretrain/images/00453/004539375.jpg).
- llava_v1_5_mix665k.json (liuhaotian/LLaVA-Instruct-150K): a JSON list of multi-turn records. Images
  are relative to one folder holding coco/train2017, gqa/images, ocr_vqa/images (all .jpg),
  textvqa/train_images, vg/VG_100K and vg/VG_100K_2; ShareGPT records are text only (no "image").
  Region-level records (Visual Genome, RefCOCO) state boxes in the text as [x1, y1, x2, y2]
  normalised to [0, 1]; for VG they refer to the image padded to a square with the processor's mean
  colour (haotian-liu/LLaVA#606), which `image_aspect_ratio: pad` reproduces (`PadToSquare`).

Normalisation follows LLaVA's own preprocessing: `<image>` is moved to the start of its turn and
followed by "\\n" (`preprocess_multimodal`), a conversation that opens with the assistant loses that
turn (`preprocess_v1` skips it), ids become strings. Records LLaVA's code would assert on or train
wrongly are counted under a reason and left out: an image token in a text-only record, several
image tokens for one image, roles that do not alternate, no assistant turn, an image path that
leaves the image folder, a malformed record. `missing_images` says which image files are absent
before a multi-hour run starts, not at step 10,000.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from spatialboost.data.records import ImageLimits, formats_for_extensions
from spatialboost.models.tokenizer import IMAGE_TOKEN

LLAVA_IMAGE_LIMITS = ImageLimits(
    max_file_bytes=50_000_000,
    max_pixels=100_000_000,
    min_side_px=1,
    formats=formats_for_extensions((".jpg", ".png", ".gif", ".webp", ".bmp")),
)
"""The decoder's limits for LLaVA's images: whatever format a file really is (OCR-VQA's book covers
come from Amazon and are saved as .jpg per LLaVA's README, whatever they were), any size a photo has."""

SOURCES = ("coco", "gqa", "ocr_vqa", "textvqa", "vg")
"""The image sources of the 665K mix, by the first folder of an image path."""
HUMAN, GPT = "human", "gpt"

_NUMBER = r"\s*(-?\d*\.?\d+)\s*"
REGION_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
"""A region box in the text: [x1, y1, x2, y2] (the 665K mix writes them with 2 or 3 decimals)."""


class LlavaDataError(ValueError):
    """An annotation file that cannot be read at all (not a file, not a JSON list); one line."""


@dataclass
class LlavaData:
    """The records of one annotation file that can train, and what was left out and why."""

    path: str
    records: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records left out
    sources: dict[str, int] = field(default_factory=dict)  # image source -> records ("text": no image)
    region_records: int = 0  # records whose text holds a normalised [x1, y1, x2, y2] box
    leading_assistant_dropped: int = 0  # conversations that opened with the assistant (that turn dropped)

    def summary(self) -> dict[str, Any]:
        """The counts, for the stage's metrics."""
        return {"records": len(self.records), "skipped": dict(sorted(self.skipped.items())),
                "sources": dict(sorted(self.sources.items())), "region_records": self.region_records,
                "leading_assistant_dropped": self.leading_assistant_dropped}  # fmt: skip


def read_llava_pretrain(path: str | Path) -> LlavaData:
    """LCS-558K (blip_laion_cc_sbu_558k.json): two-turn image + caption records."""
    return _read(path, pretrain=True)


def read_llava_instruct(path: str | Path) -> LlavaData:
    """The 665K instruction mix (llava_v1_5_mix665k.json) or any file in its format."""
    return _read(path, pretrain=False)


def _read(path: str | Path, pretrain: bool) -> LlavaData:
    path = Path(path)
    if not path.is_file():
        raise LlavaDataError(f"{path}: no such annotation file (LLaVA's data is not downloaded by the pipeline: see README)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LlavaDataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, list):
        raise LlavaDataError(f"{path}: expected a JSON list of LLaVA records, got {type(raw).__name__}")
    data = LlavaData(str(path), [])
    skipped: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for item in raw:
        record, reason, dropped = normalise_record(item, pretrain)
        if record is None:
            skipped[reason] += 1
            continue
        data.leading_assistant_dropped += dropped
        data.records.append(record)
        sources[image_source(record.get("image"))] += 1
        data.region_records += any(region_boxes(turn["value"]) for turn in record["conversations"])
    data.skipped, data.sources = dict(skipped), dict(sources)
    if not data.records:
        raise LlavaDataError(f"{path}: no usable record ({len(raw)} read; left out: {dict(skipped)})")
    return data


def normalise_record(item: Any, pretrain: bool = False) -> tuple[dict[str, Any] | None, str, bool]:
    """(record, "", leading assistant turn dropped) or (None, reason, False); see the module docstring."""
    if not isinstance(item, Mapping) or not isinstance(item.get("conversations"), list) or "id" not in item:
        return None, "malformed", False
    image = item.get("image")
    if image is not None and (not isinstance(image, str) or not _inside(image)):
        return None, "bad_image_path", False
    turns = []
    for turn in item["conversations"]:
        if not isinstance(turn, Mapping) or turn.get("from") not in (HUMAN, GPT) or not isinstance(turn.get("value"), str):
            return None, "bad_turn", False
        turns.append({"from": turn["from"], "value": turn["value"]})
    dropped = bool(turns) and turns[0]["from"] == GPT
    if dropped:
        turns = turns[1:]
    if not any(t["from"] == GPT for t in turns):
        return None, "no_assistant_turn", False
    if any(t["from"] != (HUMAN if i % 2 == 0 else GPT) for i, t in enumerate(turns)):
        return None, "roles_do_not_alternate", False
    n_tokens = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    if image is None and n_tokens:
        return None, "image_token_without_image", False
    if image is not None and n_tokens > 1:
        return None, "several_image_tokens", False
    if pretrain and (image is None or len(turns) != 2):
        return None, "not_an_image_caption_pair", False
    if image is not None:
        holder = next((i for i, t in enumerate(turns) if IMAGE_TOKEN in t["value"]), 0)
        text = turns[holder]["value"].replace(IMAGE_TOKEN, "").strip()
        turns[holder]["value"] = f"{IMAGE_TOKEN}\n{text}".strip()  # LLaVA's preprocess_multimodal
    record: dict[str, Any] = {"id": str(item["id"]), "conversations": turns}
    if image is not None:
        record["image"] = image
    return record, "", dropped


def _inside(image: str) -> bool:
    """A relative path that stays inside the image folder."""
    parts = PurePosixPath(image.replace("\\", "/"))
    return bool(image) and not parts.is_absolute() and ".." not in parts.parts and not re.match(r"^[A-Za-z]:", image)


def image_source(image: str | None) -> str:
    """The 665K mix's source of an image path (its first folder), "text" without one, else "other"."""
    if image is None:
        return "text"
    head = PurePosixPath(image).parts[0]
    return head if head in SOURCES else "other"


def region_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """The normalised [x1, y1, x2, y2] boxes in a text (values in [0, 1], x1 <= x2, y1 <= y2)."""
    boxes = []
    for match in REGION_BOX.finditer(text):
        x1, y1, x2, y2 = (float(v) for v in match.groups())
        if all(0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)) and x1 <= x2 and y1 <= y2:
            boxes.append((x1, y1, x2, y2))
    return boxes


def padded_box_to_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float]:
    """A box normalised to the image padded to a square (LLaVA's expand2square: the image centred
    on a max(W, H) square) -> pixel coordinates (x1, y1, x2, y2) of the original W x H image."""
    side = max(width, height)
    dx, dy = (side - width) // 2, (side - height) // 2
    x1, y1, x2, y2 = box
    return x1 * side - dx, y1 * side - dy, x2 * side - dx, y2 * side - dy


def subset_records(records: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """n records by a seeded permutation, in file order (all when None or n >= len)."""
    if n is None or n >= len(records):
        return records
    keep = np.sort(np.random.default_rng(seed).permutation(len(records))[:n])
    return [records[i] for i in keep]


def missing_images(records: Iterable[Mapping[str, Any]], image_root: str | Path, show: int = 3) -> str | None:
    """One line naming the image files absent under `image_root` (count + the first few), or None."""
    root = Path(image_root)
    missing = [r["image"] for r in records if r.get("image") and not (root / r["image"]).is_file()]
    if not missing:
        return None
    examples = ", ".join(str(root / m) for m in missing[:show])
    return f"{len(missing)} images missing under {root} (e.g. {examples}): see README, LLaVA-1.5's data"


class PadToSquare:
    """LLaVA's expand2square before an encoder's preprocessing: each image centred on a square of
    its longer side, filled with the preprocessing's mean colour (as uint8, `int(m * 255)`)."""

    def __init__(self, preprocess: Callable[[list[np.ndarray]], torch.Tensor]) -> None:
        self.preprocess = preprocess
        mean = getattr(preprocess, "mean", (0.5, 0.5, 0.5))
        self.fill = np.array([int(m * 255) for m in mean], dtype=np.uint8)

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        return self.preprocess([self.pad(image) for image in images])

    def pad(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) uint8, S = max(H, W), the image at ((S - W) // 2, (S - H) // 2)."""
        height, width = image.shape[:2]
        side = max(height, width)
        out = np.empty((side, side, 3), np.uint8)
        out[:] = self.fill
        top, left = (side - height) // 2, (side - width) // 2
        out[top : top + height, left : left + width] = image
        return out
