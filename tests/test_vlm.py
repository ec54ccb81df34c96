"""The spatial VLM: chat format and labels, <image> splicing, loss/generation semantics, LLaVA loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from spatialboost.models.dual_channel import add_dual_channel, dual_channel_parameters
from spatialboost.models.tokenizer import (
    ASSISTANT,
    IGNORE_INDEX,
    IMAGE_TOKEN,
    build_generation_prompt,
    build_sft_example,
    load_tokenizer,
    render_conversation,
    train_tokenizer,
)
from spatialboost.models.vlm import SpatialVLM, expand_image_tokens
from tests.tiny_vlm import NUM_PATCHES, random_images, save_tiny_llava, tiny_vlm, train_tiny_tokenizer

CONVERSATION = [
    {"role": "user", "content": "What is the depth at pixel (12, 20)?"},
    {"role": "assistant", "content": "The depth there is 2.4 meters."},
    {"role": "user", "content": "Which point is closer to the camera, A or B?"},
    {"role": "assistant", "content": "Point A is closer."},
    {"role": "user", "content": "How far is the lamp from the sofa?"},
    {"role": "assistant", "content": "85 centimeters."},
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _batch(tokenizer, conversations):
    """Right-padded (input_ids, attention_mask, labels) of several conversations."""
    examples = [build_sft_example(c, tokenizer) for c in conversations]
    ids = pad_sequence([e[0] for e in examples], batch_first=True, padding_value=tokenizer.pad_token_id)
    labels = pad_sequence([e[1] for e in examples], batch_first=True, padding_value=IGNORE_INDEX)
    mask = pad_sequence([torch.ones_like(e[0]) for e in examples], batch_first=True, padding_value=0)
    return ids, mask, labels


# --- tokenizer and chat format ------------------------------------------------------------------


def test_trained_tokenizer_round_trip(tmp_path: Path, tokenizer) -> None:
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "</s>", IMAGE_TOKEN)] == [0, 1, 2, 3]
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2
    text = "The chair is 1.5 m behind the table, ünïcode too."
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id  # like Llama's tokenizer
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless
    assert tokenizer(f"a {IMAGE_TOKEN} b", add_special_tokens=False)["input_ids"].count(3) == 1
    reloaded = load_tokenizer(tokenizer.name_or_path)  # the folder train_tokenizer saved to
    assert reloaded(text)["input_ids"] == ids
    digits = [tokenizer.decode([i]) for i in tokenizer("(103, 56) is 12.5 m", add_special_tokens=False)["input_ids"]]
    assert [t.strip() for t in digits if t.strip().isdigit()] == list("10356125")  # one token per digit, like Llama
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["x"], 100, tmp_path / "small")


def test_chat_format_is_llava_v1(tokenizer) -> None:
    text = render_conversation(CONVERSATION[:2]).text
    assert text.startswith("<s>A chat between a curious human and an artificial intelligence assistant.")
    assert text.endswith(
        "questions. USER: <image>\nWhat is the depth at pixel (12, 20)? ASSISTANT: The depth there is 2.4 meters.</s>"
    )
    multi = render_conversation(CONVERSATION).text
    assert "meters.</s>USER: Which point" in multi and multi.count(IMAGE_TOKEN) == 1
    prompt = render_conversation(CONVERSATION[:3], add_generation_prompt=True).text
    assert prompt.endswith(f"A or B? {ASSISTANT}:")
    # the Jinja template on the tokenizer renders the same text
    with_image = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{CONVERSATION[0]['content']}"}, *CONVERSATION[1:]]
    assert tokenizer.apply_chat_template(with_image, tokenize=False) == multi
    system = [{"role": "system", "content": "Be brief."}, *CONVERSATION[:2]]
    assert render_conversation(system).text.startswith("<s>Be brief. USER:")
    with pytest.raises(ValueError, match="alternate"):
        render_conversation([CONVERSATION[1], CONVERSATION[0]])
    with pytest.raises(ValueError, match="end with a user"):
        render_conversation(CONVERSATION[:2], add_generation_prompt=True)


def test_labels_mask_everything_but_assistant_answers(tokenizer) -> None:
    ids, labels = build_sft_example(CONVERSATION, tokenizer)
    assert ids.shape == labels.shape and ids.dtype == labels.dtype == torch.long
    trained = labels != IGNORE_INDEX
    assert torch.equal(labels[trained], ids[trained])
    # contiguous runs of trained tokens decode to exactly the assistant turns (+ their EOS)
    runs, current = [], []
    for token, keep in zip(ids.tolist(), trained.tolist(), strict=True):
        if keep:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    answers = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    assert [tokenizer.decode(r) for r in runs] == [f" {a}</s>" for a in answers]
    # the untrained tokens are the system prompt, the user turns and the role tags
    untrained = tokenizer.decode(ids[~trained])
    assert "USER: <image>" in untrained and "How far is the lamp" in untrained and "85" not in untrained
    # HF's {% generation %} assistant mask on our template agrees
    with_image = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{CONVERSATION[0]['content']}"}, *CONVERSATION[1:]]
    hf = tokenizer.apply_chat_template(with_image, return_dict=True, return_assistant_tokens_mask=True)
    assert hf["input_ids"] == ids.tolist()
    assert hf["assistant_masks"] == trained.long().tolist()


def test_generation_prompt_is_the_training_prefix(tokenizer) -> None:
    ids, labels = build_sft_example(CONVERSATION[:2], tokenizer)
    prompt = build_generation_prompt(CONVERSATION[:1], tokenizer)
    first_answer = int((labels != IGNORE_INDEX).nonzero()[0])
    assert torch.equal(prompt, ids[:first_answer])  # the model sees at inference what it saw in training
    short_ids, short_labels = build_sft_example(CONVERSATION, tokenizer, max_length=20)
    assert len(short_ids) == len(short_labels) == 20


# --- <image> splicing ---------------------------------------------------------------------------------


def test_expand_image_tokens_left_and_right() -> None:
    ids = torch.tensor([[5, 3, 6, 0], [3, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, 6, -100], [-100, 7, 8, 9]])
    right = expand_image_tokens(ids, attention_mask=mask, labels=labels, image_token_id=3, num_patches=3)
    assert right.input_ids.tolist() == [[5, 3, 3, 3, 6, 0], [3, 3, 3, 7, 8, 9]]
    assert right.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert right.labels.tolist() == [[-100, -100, -100, -100, 6, -100], [-100, -100, -100, 7, 8, 9]]
    assert right.image_mask.sum() == 6
    left = expand_image_tokens(
        ids, attention_mask=mask, labels=None, image_token_id=3, num_patches=3, padding_side="left"
    )
    assert left.input_ids.tolist() == [[0, 5, 3, 3, 3, 6], [3, 3, 3, 7, 8, 9]]
    assert left.attention_mask[0].tolist() == [0, 1, 1, 1, 1, 1] and left.labels is None


def test_image_token_count_mismatch_raises(tokenizer) -> None:
    vlm = tiny_vlm(tokenizer)
    ids, mask, labels = _batch(tokenizer, [CONVERSATION[:2]])
    pixels = vlm.encoder.preprocess(random_images(2))
    with pytest.raises(ValueError, match="Image features and image tokens do not match: 1 <image> tokens.*2 images"):
        vlm(ids, mask, pixels, labels)
    with pytest.raises(ValueError, match="do not match: 1 <image> tokens.*0 images"):
        vlm(ids, mask, None, labels)
    two = torch.cat([ids[:, :5], ids[ids == vlm.image_token_id][:, None], ids[:, 5:]], dim=1)
    with pytest.raises(ValueError, match="2 <image> tokens.*1 images"):
        vlm(two, None, pixels[:1])
    # ids already expanded by a LLaVA processor (N tokens per image) are refused too
    expanded = expand_image_tokens(
        ids, attention_mask=mask, labels=None, image_token_id=vlm.image_token_id, num_patches=NUM_PATCHES
    ).input_ids
    with pytest.raises(ValueError, match=f"{NUM_PATCHES} <image> tokens"):
        vlm(expanded, None, pixels[:1])


def test_forward_loss_is_shifted_cross_entropy_on_assistant_tokens(tokenizer) -> None:
    vlm = tiny_vlm(tokenizer)
    ids, mask, labels = _batch(tokenizer, [CONVERSATION, CONVERSATION[:2]])
    pixels = vlm.encoder.preprocess(random_images(2))
    out = vlm(ids, mask, pixels, labels)
    assert out.logits.shape == (2, ids.shape[1] + NUM_PATCHES - 1, len(tokenizer))
    _, _, expanded = vlm.embed(ids, mask, pixels, labels)
    assert (expanded != IGNORE_INDEX).sum() == (labels != IGNORE_INDEX).sum()
    manual = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), expanded[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(out.loss, manual)
    # the image really enters: other pixels, other logits
    other = vlm(ids, mask, vlm.encoder.preprocess(random_images(2, seed=5)), labels)
    assert (other.logits - out.logits).abs().max() > 1e-4


def test_boost_stage_gradients_reach_attn_plus_and_projector_only(tokenizer) -> None:
    vlm = tiny_vlm(tokenizer)
    add_dual_channel(vlm.encoder)
    vlm.language_model.requires_grad_(False)
    ids, mask, labels = _batch(tokenizer, [CONVERSATION])
    vlm(ids, mask, vlm.encoder.preprocess(random_images(1)), labels).loss.backward()
    assert all(p.grad is None for p in vlm.language_model.parameters())
    assert all(p.grad is not None for p in vlm.projector.parameters())
    boosted = dual_channel_parameters(vlm.encoder)
    first_layer_plus = [p for p in boosted[: len(boosted) // 2] if p.ndim == 2]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first_layer_plus)


# --- generation -------------------------------------------------------------------------------------


def _greedy_reference(vlm: SpatialVLM, prompt: torch.Tensor, pixels: torch.Tensor, steps: int) -> list[int]:
    """Naive greedy decoding: a full forward per new token, argmax of the last logits."""
    tokens = prompt.tolist()
    new: list[int] = []
    eos = vlm.language_model.generation_config.eos_token_id
    with torch.no_grad():
        for _ in range(steps):
            logits = vlm(torch.tensor([tokens]), None, pixels).logits[0, -1]
            token = int(logits.argmax())
            new.append(token)
            tokens.append(token)
            if token == eos:
                break
    return new


def test_generate_is_greedy_and_batch_invariant(tokenizer) -> None:
    vlm = tiny_vlm(tokenizer, seed=3)
    pixels = vlm.encoder.preprocess(random_images(2, seed=1))
    prompts = [
        build_generation_prompt(CONVERSATION[:1], tokenizer),
        build_generation_prompt(CONVERSATION[:3], tokenizer),
    ]
    singles = []
    for prompt, px in zip(prompts, pixels, strict=True):
        generated = vlm.generate(prompt[None], px[None], max_new_tokens=6)[0].tolist()
        assert generated[: len(ref := _greedy_reference(vlm, prompt, px[None], 6))] == ref
        singles.append(generated)
    # a right-padded batch of different lengths gives the same answers (re-padded left inside)
    ids = pad_sequence(prompts, batch_first=True, padding_value=tokenizer.pad_token_id)
    mask = pad_sequence([torch.ones_like(p) for p in prompts], batch_first=True)
    batched = vlm.generate(ids, pixels, attention_mask=mask, max_new_tokens=6).tolist()
    for single, row in zip(singles, batched, strict=True):
        assert row[: len(single)] == single


# --- checkpoints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_llava_checkpoint_gives_the_same_logits(tmp_path: Path, tokenizer, strategy: str) -> None:
    from transformers import LlavaForConditionalGeneration

    folder = save_tiny_llava(tmp_path / "llava", tokenizer, seed=4, strategy=strategy)
    llava = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    vlm = SpatialVLM.from_llava(folder)
    assert vlm.encoder.feature_layer == -2 and vlm.include_cls == (strategy == "full")
    assert vlm.encoder.preprocess.size == (32, 32)

    ids, mask, _ = _batch(tokenizer, [CONVERSATION, CONVERSATION[:2]])
    pixels = vlm.encoder.preprocess(random_images(2, seed=2))
    n_tokens = NUM_PATCHES + (strategy == "full")
    expanded = expand_image_tokens(
        ids, attention_mask=mask, labels=None, image_token_id=vlm.image_token_id, num_patches=n_tokens
    )  # what LLaVA's processor does
    with torch.no_grad():
        ours = vlm(ids, mask, pixels).logits
        ref = llava(input_ids=expanded.input_ids, attention_mask=expanded.attention_mask, pixel_values=pixels).logits
    assert ours.shape == ref.shape
    valid = expanded.attention_mask.bool()
    assert (ours[valid] - ref[valid]).abs().max() <= 1e-4


def test_save_and_load_round_trip(tmp_path: Path, tokenizer) -> None:
    vlm = tiny_vlm(tokenizer, family="dinov2")
    add_dual_channel(vlm.encoder)
    with torch.no_grad():
        for p in dual_channel_parameters(vlm.encoder):
            p.add_(0.05 * torch.randn_like(p))
    vlm.save(tmp_path / "vlm")
    loaded = SpatialVLM.load(tmp_path / "vlm")
    ids, mask, labels = _batch(tokenizer, [CONVERSATION])
    pixels = vlm.encoder.preprocess(random_images(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, pixels).logits, vlm(ids, mask, pixels).logits, rtol=0, atol=0)
