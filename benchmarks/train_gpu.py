"""The boost stage at the paper's size on one GPU: tokens/s, peak memory and MFU through `train()`.

    PYTHONPATH=src:tests python benchmarks/train_gpu.py                    # GPU: writes results/train_gpu.{json,md}
    PYTHONPATH=src:tests python benchmarks/train_gpu.py --tiny --device cpu   # smoke check anywhere (prints only)

Models are random and built directly on the device in bf16 (no download, no fp32 copy first):
CLIPVisionModel ViT-L/14 at 336 px (LLaVA-1.5's tower: hidden 1024, 24 layers, 577 tokens,
feature layer -2) -> projector -> a 7B-shaped LlamaForCausalLM (hidden 4096, 32 layers,
intermediate 11008, vocab 32000). Dual-channel attention is added; the trainable Attn+, gates
and projector are kept in fp32 (master weights) under bf16 autocast; the LLM is frozen;
gradient checkpointing on. Synthetic conversations: one image + `--text-tokens` text tokens, half
of them assistant tokens.

MFU counts model FLOPs only (no recomputation), per optimizer step:
    LLM (frozen):      forward 2 N_llm T + input-gradient backward 2 N_llm T, plus attention
                       3 x 4 L d T_seq^2 per sequence (forward + two backward matmul pairs)
    encoder:           forward 2 (N_enc + N_plus) P, input-gradient backward through the blocks
                       below the feature layer 2 (N_enc + N_plus) P, weight gradients 2 N_trainable_enc P,
                       plus attention 3 x 4 L d P^2 for both channels
    projector:         6 N_proj P
N = non-embedding parameters, T = LLM tokens (text + image patches), P = encoder tokens. Peak
bf16 dense throughput: `--peak-tflops` (default 989, H100 SXM; the H200 has the same compute).
CPU numbers are never written as results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM

from spatialboost.config import TrainConfig
from spatialboost.models.dual_channel import dual_channel_parameters
from spatialboost.models.encoders import CLIPVisionEncoder
from spatialboost.models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocess
from spatialboost.models.tokenizer import IGNORE_INDEX
from spatialboost.models.vlm import SpatialVLM
from spatialboost.train import SFTExample, prepare_stage, train

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_TOKEN_ID = 32000  # LLaVA-1.5's <image> id: one past Llama's 32000-token vocabulary
SIZES = {
    "full": {
        "vision": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       image_size=336, patch_size=14, projection_dim=768),
        "llm": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                    intermediate_size=11008, vocab_size=32064, max_position_embeddings=4096),
    },
    "tiny": {
        "vision": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                       image_size=56, patch_size=14, projection_dim=32),
        "llm": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                    intermediate_size=128, vocab_size=32064, max_position_embeddings=1024),
    },
}  # fmt: skip


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(size: str, device: torch.device, dtype: torch.dtype) -> SpatialVLM:
    """The random LLaVA-1.5-shaped VLM, allocated on `device` in `dtype` from the start."""
    spec = SIZES[size]
    preprocess = ImagePreprocess((spec["vision"]["image_size"],) * 2, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    with torch.device(device), default_dtype(dtype):
        encoder = CLIPVisionEncoder.from_config(CLIPVisionConfig(**spec["vision"]), preprocess, feature_layer=-2)
        llm = LlamaForCausalLM(LlamaConfig(**spec["llm"], pad_token_id=0, bos_token_id=1, eos_token_id=2))
        vlm = SpatialVLM(encoder, llm, IMAGE_TOKEN_ID)
    return vlm


@dataclass
class SyntheticConversations(Dataset):
    """n examples: <s> <image> + random text tokens; labels on the second half of the text."""

    n: int
    text_tokens: int
    image_size: int
    vocab: int = 32000

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> SFTExample:
        generator = torch.Generator().manual_seed(index)
        ids = torch.randint(3, self.vocab, (self.text_tokens,), generator=generator)
        ids[0], ids[1] = 1, IMAGE_TOKEN_ID
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[self.text_tokens // 2 :] = ids[self.text_tokens // 2 :]
        pixels = torch.randn(1, 3, self.image_size, self.image_size, generator=generator)
        return SFTExample(ids, labels, pixels)


def non_embedding(module: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if "embed" not in n)


def model_flops_per_step(vlm: SpatialVLM, global_batch: int, text_tokens: int) -> dict[str, float]:
    """Model FLOPs of one boost optimizer step (see the module docstring)."""
    enc, llm = vlm.encoder, vlm.language_model
    vision = enc.model.config
    patches = (vision.image_size // vision.patch_size) ** 2
    p_tokens = patches + 1
    n_plus = sum(p.numel() for p in dual_channel_parameters(enc))
    n_enc = non_embedding(enc) - n_plus
    used_layers = enc.num_layers + enc.feature_layer + 1 if enc.feature_layer < 0 else enc.feature_layer
    frac = used_layers / enc.num_layers  # blocks past the feature layer are not run for the gradient
    t_seq = text_tokens - 1 + patches  # the <image> token becomes `patches` tokens
    text = llm.config
    llm_linear = 4 * non_embedding(llm) * t_seq  # forward + input-gradient backward (lm_head included)
    llm_attention = 3 * 4 * text.num_hidden_layers * text.hidden_size * t_seq**2
    enc_linear = (4 * (n_enc + n_plus) * frac + 2 * n_plus * frac) * p_tokens
    enc_attention = 2 * 3 * 4 * used_layers * vision.hidden_size * p_tokens**2
    n_proj = sum(p.numel() for p in vlm.projector.parameters())
    per_example = {"llm": llm_linear + llm_attention, "encoder": enc_linear + enc_attention, "projector": 6 * n_proj * patches}
    return {k: v * global_batch for k, v in per_example.items()}


def timed_training(
    vlm: SpatialVLM, cfg: TrainConfig, args: argparse.Namespace, device: torch.device
) -> tuple[Any, list[dict[str, float]], float, float, float]:
    """`train()` on synthetic conversations: (result, the steps after warm-up, their seconds, their
    tokens, the whole wall time). Peak GPU memory counts from here."""
    image_size = vlm.encoder.preprocess.size[0]
    dataset = SyntheticConversations(args.global_batch * (args.warmup + args.steps), args.text_tokens, image_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train(vlm, dataset, cfg, Path(out), progress=False, device=device, master_dtype=torch.float32)
        wall = time.perf_counter() - start
    timed = result.history[args.warmup :]
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed)
    return result, timed, seconds, sum(r["tokens"] for r in timed), wall


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    size = "tiny" if args.tiny else "full"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    vlm = build(size, device, dtype)
    cfg = TrainConfig(
        stage="boost", adapter="dual_channel", train_projector=True, max_steps=args.warmup + args.steps,
        global_batch_size=args.global_batch, micro_batch_size=args.micro_batch, lr=2e-5, warmup_ratio=0.0,
        precision="bf16" if device.type == "cuda" else "fp32", gradient_checkpointing=args.gradient_checkpointing,
        checkpoint_every=0, max_length=args.text_tokens, shuffle=False, num_workers=args.workers,
    )  # fmt: skip
    report = prepare_stage(vlm, cfg)  # train() finds the adapter in place and keeps it
    result, timed, seconds, tokens, wall = timed_training(vlm, cfg, args, device)
    flops = model_flops_per_step(vlm, args.global_batch, args.text_tokens)
    achieved = sum(flops.values()) * len(timed) / seconds
    return {
        "size": size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "dtype": str(dtype),
        "global_batch": args.global_batch,
        "micro_batch": args.micro_batch,
        "text_tokens": args.text_tokens,
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps_timed": len(timed),
        "step_s": seconds / len(timed),
        "tokens_per_s": tokens / seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "model_tflops_per_step": {k: v / 1e12 for k, v in flops.items()},
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (args.peak_tflops * 1e12),
        "parameters": {"total": report.n_total, "trainable": report.n_trainable},
        "losses": result.losses,
        "wall_s": wall,
    }


def run_key(r: dict[str, Any]) -> str:
    return f"micro{r['micro_batch']}-ckpt{'on' if r.get('gradient_checkpointing', True) else 'off'}"


def markdown(runs: dict[str, dict[str, Any]]) -> str:
    """One table row per configuration measured (results/train_gpu.json keeps them all)."""
    lines = [
        "# Boost stage at the paper's size on one GPU",
        "",
        "Random CLIP ViT-L/14-336 + 7B-shaped Llama, bf16 autocast (fp32 trainable weights), dual-channel",
        "attention, LLM frozen; 1 image + text tokens per example, timed steps after warm-up.",
        "Command: `PYTHONPATH=src:tests python benchmarks/train_gpu.py [--micro-batch N] [--no-gradient-checkpointing]`.",
        "",
        "| date | device, torch | global / micro batch | text tokens | grad. ckpt | tokens/s | step s | peak GiB | TFLOP/s | MFU | trainable / total |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in runs.values():
        r = result["result"]
        lines.append(
            f"| {result['date']} | {r['device_name']}, {result['torch']} | {r['global_batch']} / {r['micro_batch']} "
            f"| {r['text_tokens']} | {'on' if r.get('gradient_checkpointing', True) else 'off'} | {r['tokens_per_s']:.0f} "
            f"| {r['step_s']:.2f} | {r['peak_memory_gib']:.1f} | {r['achieved_tflops']:.0f} | {r['mfu']:.1%} "
            f"| {r['parameters']['trainable'] / 1e6:.0f}M / {r['parameters']['total'] / 1e9:.2f}B |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small models: a smoke check of the script itself")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of the GPU")
    parser.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
        help="keep activations instead of recomputing them (faster, more memory)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__}
    result["result"] = measure(args)
    print(json.dumps(result, indent=2))
    if args.device.startswith("cuda") and not args.tiny:  # never commit CPU or tiny numbers as GPU results
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "train_gpu.json"
        runs = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
        runs[run_key(result["result"])] = result
        path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        (args.out / "train_gpu.md").write_text(markdown(runs))


if __name__ == "__main__":
    main()
