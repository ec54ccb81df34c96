"""Spatial conversations as text only: the answer language the frozen LLM of the boost stage needs.

The paper boosts an encoder inside LLaVA-1.5-7B, whose LLM already writes "The chair is 1.2 m
to the left of the table" and reasons over earlier turns. The boost stage freezes the LLM, so
the encoder can only supply visual facts, never new phrasing. The demo's LLM is trained from
nothing; without this module it has never read a spatial answer, and the boost stage's SFT loss
on its conversations starts above uniform (8.3 nats per answer token against 0.2 on the
non-spatial questions it was instructed on): the gradient reaching the encoder is then about
language the frozen LLM cannot learn, not about the image.

So the bootstrap's LLM reads spatial conversations as text, made by the same extraction and
synthesis code as the boost data, from the bootstrap's own scenes (rendered in memory with their
own seed, never the world's train or test split), with the image left out. It learns the
answer formats, the units and the chain-of-thought over earlier turns, and a language prior for
the numbers; the facts of a new image can only come through the encoder.

    records = spatial_text_records(cfg, samples)   # [{"id", "conversations"}], no "image"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from spatialboost.config import SpatialBoostConfig
from spatialboost.data.rgbd import IndexRow, RGBDSample
from spatialboost.extract.ground_truth import observation_of
from spatialboost.extract.pipeline import scene_or_failure
from spatialboost.extract.records import Provenance, SceneRecord
from spatialboost.models.tokenizer import IMAGE_TOKEN
from spatialboost.qa.conversation import ordered, synthesize_conversation
from spatialboost.qa.formats import llava_record
from spatialboost.world.render import Rendering

PROVENANCE = Provenance(backend="ground_truth", models={"dataset": "bootstrap-in-memory"})


def rendered_sample(image_id: str, split: str, rendering: Rendering, annotation: dict[str, Any]) -> RGBDSample:
    """An in-memory world rendering as the RGB-D sample a dataset would give for it."""
    row = IndexRow(
        id=image_id,
        split=split,
        rgb="",
        depth="",
        instances="",
        annotation="",
        width=int(annotation["width"]),
        height=int(annotation["height"]),
        **{k: float(v) for k, v in annotation["intrinsics"].items()},
        gravity_cam=tuple(float(g) for g in annotation["gravity_cam"]),
        n_objects=len(annotation["objects"]),
    )
    return RGBDSample(row, rendering.rgb, rendering.depth, rendering.instances.astype(np.int32), annotation)


def spatial_text_records(cfg: SpatialBoostConfig, samples: Iterable[RGBDSample]) -> list[dict[str, Any]]:
    """One text-only forward-order conversation per sample whose scene extracts (ground truth,
    cfg.extract's geometry; cfg.synthesize's templates, units and turn mix). Scenes the
    extraction quarantines (too few usable objects) give none."""
    return [text for text, _, _ in spatial_conversations(cfg, samples)]


def spatial_conversations(
    cfg: SpatialBoostConfig, samples: Iterable[RGBDSample]
) -> list[tuple[dict[str, Any], dict[str, Any], np.ndarray]]:
    """(text-only record, image record, image) per sample whose scene extracts: the same
    conversation without and with its image (the image record names the sample's id as its
    image, with its point marks, for an image loader keyed by id)."""
    out = []
    for sample in samples:
        scene = scene_or_failure(observation_of(sample, "", PROVENANCE), cfg.extract, cfg.seed)
        if not isinstance(scene, SceneRecord):
            continue
        conversation = synthesize_conversation(scene, cfg.synthesize, depth=sample.depth)
        for conv_id, turns in ordered(conversation, "forward", cfg.synthesize.seed):
            if not turns:
                continue
            ref = sample.row.id
            with_image = llava_record(f"spatial-image-{conv_id}", ref, turns, conversation.marks_of(turns))
            record = llava_record(f"spatial-text-{conv_id}", "", turns)
            first = record["conversations"][0]
            first["value"] = first["value"].removeprefix(IMAGE_TOKEN).removeprefix("\n")
            out.append(({"id": record["id"], "conversations": record["conversations"]}, with_image, sample.rgb))
    return out
