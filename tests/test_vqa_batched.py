"""Batched greedy VQA: left-padded batches give exactly the answers asked one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spatialboost.evaluate.vqa import (
    BLINK_RELATIVE_DEPTH,
    VQAItem,
    run_vqa,
    run_vqa_batched,
    vlm_answer_fn,
    vlm_batch_answer_fn,
)
from spatialboost.models.tokenizer import build_generation_prompt
from spatialboost.runtime import torch_threads
from tests.tiny_vlm import random_images, tiny_vlm, train_tiny_tokenizer

QUESTIONS = [
    "Which point is closer?",
    "How far is the red cube from the camera in meters, roughly?",
    "A",
    "Is the chair left of the table?",
    "What is at the point (12, 20)?",
    "Red cube?",
]


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):  # a tiny model on 2 shared cores: one thread is several times faster
        yield


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    tokenizer = train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    vlm = tiny_vlm(tokenizer, family="clip")
    with torch.no_grad():  # make EOS likely enough that some answers stop early and others do not
        vlm.language_model.lm_head.weight[tokenizer.eos_token_id] *= 2
    return vlm, tokenizer


def test_batched_answers_equal_one_at_a_time(model) -> None:
    vlm, tokenizer = model
    images = random_images(len(QUESTIONS), seed=1)
    single = [vlm_answer_fn(vlm, tokenizer, 12)(image, q) for image, q in zip(images, QUESTIONS, strict=True)]
    for batch_size in (2, len(QUESTIONS)):
        batched = vlm_batch_answer_fn(vlm, tokenizer, 12)
        answers = [
            a
            for s in range(0, 6, batch_size)
            for a in batched(images[s : s + batch_size], QUESTIONS[s : s + batch_size])
        ]
        assert answers == single
    lengths = []
    for image, q in zip(images, QUESTIONS, strict=True):  # the comparison covers rows of different lengths
        ids = build_generation_prompt([{"role": "user", "content": q}], tokenizer)[None]
        out = vlm.generate(ids, pixel_values=vlm.encoder.preprocess([image]), max_new_tokens=12)[0].tolist()
        lengths.append(out.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in out else len(out))
    assert min(lengths) < 12 == max(lengths)


def test_run_vqa_batched_scores_like_run_vqa(model, tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    vlm, tokenizer = model
    items = []
    for k, image in enumerate(random_images(5, seed=2)):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        items.append(
            VQAItem(
                id=f"val_Relative_Depth_{k}",
                benchmark=BLINK_RELATIVE_DEPTH,
                question=QUESTIONS[k],
                answer="(A)",
                qa_type="multiple_choice",
                category="Relative_Depth",
                image_bytes=buffer.getvalue(),
            )
        )
    one = run_vqa(vlm_answer_fn(vlm, tokenizer, 6), items)
    batched = run_vqa_batched(vlm_batch_answer_fn(vlm, tokenizer, 6), items, batch_size=2)
    assert batched.records == one.records and batched.metrics == one.metrics
    with pytest.raises(ValueError, match="2 answers for 3"):
        run_vqa_batched(lambda images, questions: ["A", "B"], items[:3], batch_size=3)
    assert np.isfinite(batched.metrics["relative_depth_acc"])
