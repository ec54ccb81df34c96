"""The LLaVA-1.5 chat format, SFT examples with assistant-only labels, and a small trained tokenizer.

A conversation is a list of messages {"role": "system" | "user" | "assistant", "content": str},
user and assistant alternating, user first (an optional system message before them replaces the
default system prompt). It renders exactly like LLaVA-1.5's "vicuna_v1" conversation:

    <s>SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>

`build_sft_example` tokenises the rendered text once and keeps labels only on the tokens of each
assistant answer (the space after "ASSISTANT:", the answer and its EOS), found through the
tokenizer's character offsets, so it works for any fast tokenizer (BPE, SentencePiece) without
the per-turn length bookkeeping LLaVA's own code needs. The same format as a Jinja chat template
(`LLAVA_CHAT_TEMPLATE`, with `{% generation %}` blocks) is installed on trained tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IGNORE_INDEX = -100  # label of tokens the loss skips (transformers' convention)
IMAGE_TOKEN = "<image>"
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN)
SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
USER, ASSISTANT = "USER", "ASSISTANT"

Message = Mapping[str, str]

LLAVA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + SYSTEM_PROMPT.replace("'", "\\'") + "') -%}"
    "{%- if messages[0]['role'] == 'system' %}{% set ns.system = messages[0]['content'] %}{% endif -%}"
    "{{- bos_token + ns.system + ' ' -}}"
    "{%- for m in messages if m['role'] != 'system' -%}"
    "{%- if m['role'] == 'user' -%}{{- '" + USER + ": ' + m['content'] + ' ' -}}"
    "{%- else -%}{{- '" + ASSISTANT + ":' -}}"
    "{%- generation -%}{{- ' ' + m['content'] + eos_token -}}{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + ASSISTANT + ":' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class RenderedConversation:
    text: str
    assistant_spans: tuple[tuple[int, int], ...]  # [start, end) character spans the loss trains on


def render_conversation(
    messages: Sequence[Message],
    bos: str = BOS_TOKEN,
    eos: str = EOS_TOKEN,
    add_generation_prompt: bool = False,
    add_image: bool = True,
) -> RenderedConversation:
    """LLaVA-1.5 text of a conversation and the character spans of its assistant answers.

    add_image: put "<image>\\n" before the first user message when no message has "<image>".
    add_generation_prompt: end with "ASSISTANT:" (the conversation must then end with a user turn).
    """
    system, turns = _split_system(messages)
    if add_image and not any(IMAGE_TOKEN in m["content"] for m in turns):
        turns = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{turns[0]['content']}"}, *turns[1:]]
    text, spans = f"{bos}{system} ", []
    for m in turns:
        if m["role"] == "user":
            text += f"{USER}: {m['content']} "
        else:
            text += f"{ASSISTANT}:"
            start = len(text)
            text += f" {m['content']}{eos}"
            spans.append((start, len(text)))
    if add_generation_prompt:
        if turns[-1]["role"] != "user":
            raise ValueError("a generation prompt needs the conversation to end with a user message")
        text += f"{ASSISTANT}:"
    return RenderedConversation(text, tuple(spans))


def build_sft_example(
    messages: Sequence[Message],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None = None,
    add_image: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (T,), labels (T,)) int64; labels are IGNORE_INDEX except on assistant answers + EOS.

    max_length truncates the text tokens (the image token's N patch embeddings are not counted here).
    """
    rendered = render_conversation(messages, tokenizer.bos_token, tokenizer.eos_token, add_image=add_image)
    if not rendered.assistant_spans:
        raise ValueError("the conversation has no assistant message to train on")
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, (start, end) in enumerate(enc["offset_mapping"]):
        if any(start < span_end and end > span_start for span_start, span_end in rendered.assistant_spans):
            labels[i] = ids[i]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


PLAIN_SEPARATOR = "\n"  # LLaVA's conv_llava_plain: sep "\n", no system prompt, no roles


def build_plain_example(
    messages: Sequence[Message],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None = None,
    add_image: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaVA's "plain" format of its feature-alignment stage (--version plain): the question is
    dropped, the text is `<s><image>CAPTION\n`, and only the caption and its "\n" are trained
    (haotian-liu/LLaVA llava/train/train.py `preprocess_plain`). The caption is the first
    assistant message. (input_ids (T,), labels (T,)) int64, like `build_sft_example`."""
    if not add_image:
        raise ValueError("the plain (alignment) format needs an image record")
    _, turns = _split_system(messages)
    answers = [m["content"] for m in turns if m["role"] == "assistant"]
    if not answers:
        raise ValueError("the conversation has no assistant message to train on")
    prefix = f"{tokenizer.bos_token}{IMAGE_TOKEN}"
    text = f"{prefix}{answers[0]}{PLAIN_SEPARATOR}"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)
    labels = ids.clone()
    for i, (start, _) in enumerate(enc["offset_mapping"]):
        if start < len(prefix):
            labels[i] = IGNORE_INDEX
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


def build_generation_prompt(
    messages: Sequence[Message], tokenizer: PreTrainedTokenizerBase, add_image: bool = True
) -> torch.Tensor:
    """(T,) int64 ids of the conversation so far followed by "ASSISTANT:", for greedy answers."""
    text = render_conversation(
        messages, tokenizer.bos_token, tokenizer.eos_token, add_generation_prompt=True, add_image=add_image
    ).text
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE tokenizer on `texts`, save it to the folder `path`, return it loaded back.

    Special tokens: <pad> (0), <s> (1), </s> (2), <image> (3). Byte-level: any text encodes, no
    unknown token. Every digit is a token of its own, as in Llama's tokenizer: "(103, 56)" is
    "(", "1", "0", "3", ",", " ", "5", "6", ")", so that copying a coordinate or a measurement is
    copying digits seen thousands of times, not one of hundreds of rare number tokens (with merged
    numbers the demo LLM copied no coordinate of a held-out question right).
    `tokenizer(text)` adds <s> like Llama's tokenizer; the chat template is installed.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    min_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise ValueError(f"vocab_size must be >= {min_size} (256 bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IMAGE_TOKEN],
        padding_side="right",
    )
    wrapped.chat_template = LLAVA_CHAT_TEMPLATE
    wrapped.save_pretrained(path)
    return load_tokenizer(path)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer saved in a local folder (ours, or a LLaVA checkpoint's)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {path}")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _split_system(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    messages = list(messages)
    system = SYSTEM_PROMPT
    if messages and messages[0].get("role") == "system":
        system, messages = messages[0]["content"], messages[1:]
    if not messages:
        raise ValueError("the conversation has no user message")
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != expected:
            raise ValueError(
                f"message {i}: expected role {expected!r} (user/assistant alternate), got {m.get('role')!r}"
            )
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be a string")
    return system, messages
