"""Conversations on disk: LLaVA JSON, a parquet that `datasets` loads, and the typed sidecar.

LLaVA record (one per conversation; a shard's file is a JSON list of them):

    {"id": "test-000001", "image": "rgb/test-000001.png",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is the depth at (40, 61)?"},
                       {"from": "gpt", "value": "The depth at (40, 61) is 2.1 m."}, ...]}

`image` is the image's path relative to the dataset root when it lies under it, else its uri.
With drawn point marks (synthesize.point_refs = marks) a record also has "marks": [{"label", "x",
"y"}], the points to draw on the image (data/marks.py) before the model reads it.
The parquet has the same columns (conversations: list<struct<from, value>>, marks: null without
marks) plus image_id, order and n_turns, so `datasets.Dataset.from_parquet(path)` reads it as is.

Sidecar: one JSON line per conversation, {"schema_version", "id", "image_id", "image",
"order", "unit", "levels", "skipped", "objects", "turns": [Turn.to_dict(), ...]}: turns in the
order of the LLaVA conversation with the same id; objects: the askable objects as the text
names them ({object_id, label, colour, name, bbox}).

Every writer goes through spatialboost.io (temporary name, then rename) and writes stable
bytes: the same conversations give the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from spatialboost.io import open_text_atomic, write_atomic
from spatialboost.qa.conversation import Conversation
from spatialboost.qa.turns import SCHEMA_VERSION, Turn

IMAGE_TOKEN = "<image>\n"
"""Prefix of the first human turn: where LLaVA puts the image features."""

PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.string()),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("image_id", pa.string()),
        ("order", pa.string()),
        ("n_turns", pa.int32()),
        ("marks", pa.list_(pa.struct([("label", pa.string()), ("x", pa.int32()), ("y", pa.int32())]))),
    ]
)


def image_reference(uri: str, image_root: str | os.PathLike[str] | None) -> str:
    """The path of a file:// uri (or plain path) relative to image_root when it lies under it,
    else the uri unchanged."""
    if image_root is None:
        return uri
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return uri
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(image_root)).as_posix()
    except ValueError:
        return uri


def llava_record(
    conv_id: str, image: str, turns: Sequence[Turn], marks: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """One LLaVA conversation: human/gpt messages alternating, the image token first; "marks"
    ([{label, x, y}], only when there are any): points to draw on the image before it is read."""
    messages = []
    for i, turn in enumerate(turns):
        question = IMAGE_TOKEN + turn.question if i == 0 else turn.question
        messages.append({"from": "human", "value": question})
        messages.append({"from": "gpt", "value": turn.answer})
    record: dict[str, Any] = {"id": conv_id, "image": image, "conversations": messages}
    if marks:
        record["marks"] = [dict(m) for m in marks]
    return record


def sidecar_record(
    conv_id: str, image: str, order: str, conversation: Conversation, turns: Sequence[Turn]
) -> dict[str, Any]:
    """The typed record of one conversation (turns as listed in its LLaVA record)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "id": conv_id,
        "image_id": conversation.image_id,
        "image": image,
        "order": order,
        "unit": conversation.unit,
        "levels": conversation.levels,
        "skipped": conversation.skipped,
        "objects": list(conversation.objects),
        "marks": conversation.marks_of(turns),
        "turns": [turn.to_dict() for turn in turns],
    }


def write_llava_json(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """A JSON list of LLaVA records (one record per line, so diffs and greps stay readable)."""
    with open_text_atomic(path) as f:
        f.write("[\n")
        f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in records))
        f.write("\n]\n" if records else "]\n")


def write_parquet(path: str | os.PathLike[str], records: list[dict[str, Any]], sidecar: list[dict[str, Any]]) -> None:
    """The LLaVA records as parquet (PARQUET_SCHEMA); sidecar gives image_id, order and n_turns."""
    table = pa.Table.from_pylist(
        [
            {"marks": None, **r, "image_id": s["image_id"], "order": s["order"], "n_turns": len(s["turns"])}
            for r, s in zip(records, sidecar, strict=True)
        ],
        schema=PARQUET_SCHEMA,
    )
    write_atomic(path, lambda f: pq.write_table(table, f, compression="zstd"))


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    """One compact JSON object per line."""
    with open_text_atomic(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
