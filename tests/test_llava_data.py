"""LLaVA-1.5's data formats: the LCS-558K and 665K-mix readers on small files written in them, the
plain (alignment) template, padding to a square and the region boxes that refer to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialboost.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from spatialboost.models.tokenizer import IGNORE_INDEX, IMAGE_TOKEN, build_plain_example, build_sft_example
from spatialboost.train.data import ConversationDataset, ImageFetcher, to_messages
from spatialboost.train.llava_data import (
    LlavaDataError,
    PadToSquare,
    image_source,
    missing_images,
    padded_box_to_pixels,
    read_llava_instruct,
    read_llava_pretrain,
    region_boxes,
    subset_records,
)
from tests.tiny_lvlm_hub import CAPTIONS, instruct_records, write_llava_data
from tests.tiny_vlm import train_tiny_tokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return write_llava_data(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_lcs558k_records_are_image_caption_pairs_with_the_image_token_first(data) -> None:
    pretrain = read_llava_pretrain(data.pretrain)
    assert len(pretrain.records) == 8 and pretrain.skipped == {} and pretrain.sources == {"other": 8}
    first = pretrain.records[0]
    assert first["id"] == "004539375" and first["image"] == "00453/004539375.jpg"
    # "Render a clear ... photo.\n<image>" -> "<image>\nRender a clear ... photo." (LLaVA's preprocess_multimodal)
    assert first["conversations"][0]["value"] == f"{IMAGE_TOKEN}\nRender a clear and concise summary of the photo."
    assert [turn["value"] for turn in pretrain.records[1]["conversations"]] == [
        f"{IMAGE_TOKEN}\nDescribe the image concisely.", CAPTIONS[1]]
    assert missing_images(pretrain.records, data.pretrain_images) is None


def test_the_665k_mix_reads_every_source_text_only_records_and_region_boxes(data) -> None:
    mix = read_llava_instruct(data.instruct)
    assert mix.skipped == {}
    assert mix.sources == {"coco": 1, "gqa": 1, "ocr_vqa": 1, "textvqa": 1, "vg": 2, "text": 2}
    assert mix.region_records == 2 and mix.leading_assistant_dropped == 1
    by_id = {r["id"]: r for r in mix.records}
    assert len(by_id["000000033471"]["conversations"]) == 4  # multi-turn kept whole
    textvqa = by_id["0054c91397f2fe05"]["conversations"][0]["value"]
    assert textvqa == f"{IMAGE_TOKEN}\nWhat is the brand of this camera?\nReference OCR token: nous, les"
    sharegpt = by_id["i6IyJda_0"]
    assert "image" not in sharegpt and set(sharegpt) == {"id", "conversations"}  # "model" dropped, no image
    opened_by_assistant = by_id["1024"]  # an integer id becomes a string; the leading gpt turn is dropped
    assert [t["from"] for t in opened_by_assistant["conversations"]] == ["human", "gpt"]
    assert image_source("vg/VG_100K_2/2.jpg") == "vg" and image_source(None) == "text"
    assert missing_images(mix.records, data.instruct_images) is None
    assert mix.summary()["records"] == 8


def test_records_llava_would_train_wrongly_are_left_out_with_their_reason(tmp_path: Path) -> None:
    good = instruct_records()[1]
    h, g = "human", "gpt"
    bad = [
        {"id": "a", "conversations": [{"from": h, "value": "<image>\nNo image here?"}, {"from": g, "value": "x"}]},
        {"id": "b", "image": "coco/train2017/1.jpg", "conversations": [
            {"from": h, "value": "<image>\n<image>\nTwo?"}, {"from": g, "value": "x"}]},
        {"id": "c", "image": "coco/train2017/1.jpg", "conversations": [
            {"from": h, "value": "a"}, {"from": h, "value": "b"}, {"from": g, "value": "c"}]},
        {"id": "d", "image": "coco/train2017/1.jpg", "conversations": [{"from": h, "value": "<image>\nonly a question"}]},
        {"id": "e", "image": "../../etc/passwd", "conversations": good["conversations"]},
        {"id": "f", "image": "/abs/x.jpg", "conversations": good["conversations"]},
        {"id": "g", "conversations": [{"from": "system", "value": "x"}, {"from": g, "value": "y"}]},
        {"conversations": good["conversations"]},
        "not a record",
    ]  # fmt: skip
    path = tmp_path / "mix.json"
    path.write_text(json.dumps([good, *bad]))
    mix = read_llava_instruct(path)
    assert [r["id"] for r in mix.records] == ["2354786"]
    assert mix.skipped == {"image_token_without_image": 1, "several_image_tokens": 1, "roles_do_not_alternate": 1,
                           "no_assistant_turn": 1, "bad_image_path": 2, "bad_turn": 1, "malformed": 2}  # fmt: skip
    more = [{"from": h, "value": "And then?"}, {"from": g, "value": "Nothing."}]
    caption_triple = [{"id": "t", "image": "1/1.jpg", "conversations": [*good["conversations"], *more]}]
    path.write_text(json.dumps([*caption_triple, *instruct_records()[:1]]))
    with pytest.raises(LlavaDataError, match=r"no usable record \(2 read; left out: \{'not_an_image_caption_pair': 2\}\)"):
        read_llava_pretrain(path)  # LCS-558K is image + caption pairs only
    path.write_text('{"id": 1}')
    with pytest.raises(LlavaDataError, match="expected a JSON list of LLaVA records, got dict"):
        read_llava_instruct(path)
    path.write_text("[{")
    with pytest.raises(LlavaDataError, match="not valid JSON"):
        read_llava_instruct(path)
    with pytest.raises(LlavaDataError, match="no such annotation file .* see README"):
        read_llava_instruct(tmp_path / "absent.json")


def test_missing_images_are_named_before_training(data, tmp_path: Path) -> None:
    records = read_llava_instruct(data.instruct).records
    problem = missing_images(records, tmp_path)
    assert problem is not None and problem.startswith(f"6 images missing under {tmp_path} (e.g. {tmp_path}/coco/train2017/")
    assert subset_records(records, 3, seed=0) == subset_records(records, 3, seed=0)
    assert len(subset_records(records, 3, seed=0)) == 3 and subset_records(records, None, 0) == records


def test_region_boxes_refer_to_the_image_padded_to_a_square() -> None:
    assert region_boxes("the region [0.12, 0.34, 0.56, 0.78] and [0.5,0.5,0.9,0.95]") == [
        (0.12, 0.34, 0.56, 0.78), (0.5, 0.5, 0.9, 0.95)]
    assert region_boxes("[1, 2, 3, 4] [0.6, 0.1, 0.2, 0.9] [0.1, 0.2]") == []  # not normalised, not ordered, not a box
    # a 40 x 100 image padded to 100 x 100: a pixel box maps to its normalised box on the square and back
    height, width = 40, 100
    image = np.zeros((height, width, 3), np.uint8)
    image[10:20, 60:80] = 255  # the object: x 60..80, y 10..20 in the original
    pad = PadToSquare(ImagePreprocess((32, 32), IMAGENET_MEAN, IMAGENET_STD, "squash"))
    square = pad.pad(image)
    assert square.shape == (100, 100, 3)
    assert (square[0, 0] == [int(m * 255) for m in IMAGENET_MEAN]).all()  # LLaVA's fill: the mean colour
    ys, xs = np.nonzero(square[..., 0] == 255)
    box = (xs.min() / 100, ys.min() / 100, (xs.max() + 1) / 100, (ys.max() + 1) / 100)  # normalised on the square
    assert padded_box_to_pixels(box, width, height) == pytest.approx((60, 10, 80, 20))
    assert pad([image]).shape == (1, 3, 32, 32)


def test_the_plain_template_trains_only_the_caption(tokenizer) -> None:
    messages = [{"role": "user", "content": f"{IMAGE_TOKEN}\nDescribe the image."},
                {"role": "assistant", "content": "The chair is below the table."}]  # fmt: skip
    ids, labels = build_plain_example(messages, tokenizer)
    assert ids[0] == tokenizer.bos_token_id and ids[1] == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert "Describe" not in tokenizer.decode(ids)  # the prompt is dropped (LLaVA's preprocess_plain)
    assert tokenizer.decode(ids[labels != IGNORE_INDEX]) == "The chair is below the table.\n"
    assert (labels[:2] == IGNORE_INDEX).all()
    chat_ids, _ = build_sft_example(messages, tokenizer)
    assert len(chat_ids) > len(ids)  # the chat format has the system prompt and roles
    with pytest.raises(ValueError, match="needs an image"):
        build_plain_example(messages, tokenizer, add_image=False)


@pytest.mark.parametrize("template", ["plain", "vicuna_v1"])
def test_llava_records_become_sft_examples(data, tokenizer, template: str) -> None:
    mix = read_llava_instruct(data.instruct).records
    preprocess = ImagePreprocess((32, 32), IMAGENET_MEAN, IMAGENET_STD, "shortest", 32)
    builder = build_plain_example if template == "plain" else build_sft_example
    records = [r for r in mix if "image" in r] if template == "plain" else mix
    dataset = ConversationDataset(records, tokenizer, PadToSquare(preprocess), image_loader=ImageFetcher(data.instruct_images),
                                  build_example=builder)  # fmt: skip
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for i, record in enumerate(records):
        example = dataset[i]
        assert (example.labels != IGNORE_INDEX).any()
        assert int((example.input_ids == image_id).sum()) == (1 if "image" in record else 0)
        assert (example.pixel_values is None) == ("image" not in record)
        if example.pixel_values is not None:
            assert example.pixel_values.shape == (1, 3, 32, 32) and torch.isfinite(example.pixel_values).all()
    assert to_messages(records[0])[0]["role"] == "user"


def test_an_ocr_vqa_cover_that_is_not_really_a_jpeg_still_decodes(tmp_path: Path) -> None:
    """LLaVA's README: OCR-VQA's images are saved as .jpg; a GIF or PNG inside one is read as what it is."""
    from PIL import Image

    from spatialboost.data.records import BadImage
    from spatialboost.train.data import TRAINING_LIMITS
    from spatialboost.train.llava_data import LLAVA_IMAGE_LIMITS

    cover = tmp_path / "ocr_vqa" / "images" / "1.jpg"
    cover.parent.mkdir(parents=True)
    Image.new("P", (20, 30), 3).save(cover, format="GIF")
    image = ImageFetcher(tmp_path, limits=LLAVA_IMAGE_LIMITS)("ocr_vqa/images/1.jpg")
    assert image.shape == (30, 20, 3) and image.dtype == np.uint8
    with pytest.raises(BadImage):
        ImageFetcher(tmp_path, limits=TRAINING_LIMITS)("ocr_vqa/images/1.jpg")
