"""LLaVA-1.5's align and instruct stages for a new encoder at real size on one GPU: tokens/s, MFU and
peak memory through `train()`, the loop every stage uses.

    PYTHONPATH=src:tests python benchmarks/lvlm_gpu.py --stage align      # GPU: results/lvlm_gpu.{json,md}
    PYTHONPATH=src:tests python benchmarks/lvlm_gpu.py --stage instruct --micro-batch 4
    PYTHONPATH=src:tests python benchmarks/lvlm_gpu.py --tiny --device cpu --stage instruct   # smoke check (prints only)

Random weights, built directly on the device in bf16: DINOv2 ViT-L/14 at 224 px (facebook/dinov2-large:
hidden 1024, 24 layers, 257 tokens, feature layer -2, no final norm) -> a fresh 2-layer GELU projector
-> the 7B-shaped Llama of benchmarks/train_gpu.py (LLaVA-1.5's Vicuna-7B shape). The trainable part
(align: the projector; instruct: projector + LLM) is kept in fp32 (master weights) under bf16 autocast,
gradient checkpointing on, as LLaVA-1.5's scripts. Instruct on one GPU holds the 7B LLM's fp32
weights, gradients and AdamW state (about 108 GB): the real run shards them (FSDP) over 8 GPUs.

MFU counts model FLOPs only (no recomputation), per optimizer step, N = non-embedding parameters,
T = LLM tokens per example (text + image patches), P = encoder tokens:
    align     LLM frozen: forward 2 N_llm T + input-gradient backward 2 N_llm T + attention 3 x 4 L d T^2;
              encoder frozen, forward only up to the feature layer: 2 N_enc' P + 4 L' d P^2; projector 6 N_proj P
    instruct  LLM trained: 6 N_llm T + attention 3 x 4 L d T^2; the encoder and projector as above
Peak bf16 dense throughput: `--peak-tflops` (default 989, H100 SXM; the H200 has the same compute).
CPU and tiny numbers are never written as results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

import torch
from train_gpu import SIZES, default_dtype, non_embedding, timed_training
from transformers import Dinov2Config, LlamaConfig, LlamaForCausalLM

from spatialboost.config import TrainConfig
from spatialboost.models.encoders import Dinov2Encoder
from spatialboost.models.lvlm import build_lvlm
from spatialboost.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from spatialboost.models.vlm import SpatialVLM
from spatialboost.train import prepare_stage

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_TOKEN_ID = 32000
VISION = {
    "full": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, image_size=224,
                 patch_size=14),
    "tiny": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, image_size=56, patch_size=14),
}  # fmt: skip


class _Tokenizer:
    """What build_lvlm asks of a tokenizer: the <image> token's id."""

    def convert_tokens_to_ids(self, token: str) -> int:
        return IMAGE_TOKEN_ID


def build(size: str, device: torch.device, dtype: torch.dtype) -> SpatialVLM:
    """The random DINOv2 + projector + 7B-shaped Llama LVLM, on `device` in `dtype` from the start."""
    vision = VISION[size]
    preprocess = ImagePreprocess((vision["image_size"],) * 2, IMAGENET_MEAN, IMAGENET_STD, "shortest")
    with torch.device(device), default_dtype(dtype):
        encoder = Dinov2Encoder.from_config(Dinov2Config(**vision), preprocess, feature_layer=-2)
        llm = LlamaForCausalLM(LlamaConfig(**SIZES[size]["llm"], pad_token_id=0, bos_token_id=1, eos_token_id=2))
        return build_lvlm(encoder, llm, _Tokenizer(), seed=0)  # type: ignore[arg-type]


def model_flops_per_step(vlm: SpatialVLM, stage: str, global_batch: int, text_tokens: int) -> dict[str, float]:
    """Model FLOPs of one align or instruct optimizer step (see the module docstring)."""
    enc, llm = vlm.encoder, vlm.language_model
    vision = enc.model.config
    patches = (vision.image_size // vision.patch_size) ** 2
    p_tokens = patches + enc.num_prefix_tokens
    used_layers = enc.num_layers + enc.feature_layer + 1 if enc.feature_layer < 0 else enc.feature_layer
    n_enc = non_embedding(enc) * used_layers / enc.num_layers
    t_seq = text_tokens - 1 + patches
    text = llm.config
    llm_linear = (6 if stage == "instruct" else 4) * non_embedding(llm) * t_seq
    llm_attention = 3 * 4 * text.num_hidden_layers * text.hidden_size * t_seq**2
    enc_flops = 2 * n_enc * p_tokens + 4 * used_layers * vision.hidden_size * p_tokens**2
    n_proj = sum(p.numel() for p in vlm.projector.parameters())
    per_example = {"llm": llm_linear + llm_attention, "encoder": enc_flops, "projector": 6 * n_proj * patches}
    return {k: v * global_batch for k, v in per_example.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    size = "tiny" if args.tiny else "full"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    vlm = build(size, device, dtype)
    lr = 1e-3 if args.stage == "align" else 2e-5  # LLaVA-1.5's pretrain.sh / finetune.sh
    cfg = TrainConfig(
        stage=args.stage, max_steps=args.warmup + args.steps, global_batch_size=args.global_batch,
        micro_batch_size=args.micro_batch, lr=lr, warmup_ratio=0.0, precision="bf16" if device.type == "cuda" else "fp32",
        gradient_checkpointing=args.gradient_checkpointing, checkpoint_every=0, max_length=args.text_tokens,
        shuffle=False, num_workers=args.workers,
    )  # fmt: skip
    report = prepare_stage(vlm, cfg)
    result, timed, seconds, tokens, wall = timed_training(vlm, cfg, args, device)
    flops = model_flops_per_step(vlm, args.stage, args.global_batch, args.text_tokens)
    achieved = sum(flops.values()) * len(timed) / seconds
    return {
        "stage": args.stage, "encoder": "dinov2-vit-l-14" if size == "full" else "dinov2-tiny", "size": size,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "dtype": str(dtype), "global_batch": args.global_batch, "micro_batch": args.micro_batch,
        "text_tokens": args.text_tokens, "gradient_checkpointing": args.gradient_checkpointing, "steps_timed": len(timed),
        "step_s": seconds / len(timed), "tokens_per_s": tokens / seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "model_tflops_per_step": {k: v / 1e12 for k, v in flops.items()}, "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (args.peak_tflops * 1e12), "parameters": {"total": report.n_total, "trainable": report.n_trainable},
        "losses": result.losses, "wall_s": wall,
    }  # fmt: skip


def markdown(runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# LLaVA-1.5's align and instruct for a new encoder, at real size on one GPU",
        "",
        "Random DINOv2 ViT-L/14 (224 px) + fresh projector + 7B-shaped Llama, bf16 autocast (fp32 trainable weights),",
        "gradient checkpointing; 1 image + text tokens per example, timed steps after warm-up.",
        "Command: `PYTHONPATH=src:tests python benchmarks/lvlm_gpu.py --stage align|instruct [--micro-batch N]`.",
        "",
        "| date | stage | device, torch | global / micro batch | text tokens | tokens/s | step s | peak GiB | TFLOP/s | MFU | trainable / total |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in runs.values():
        r = result["result"]
        lines.append(
            f"| {result['date']} | {r['stage']} | {r['device_name']}, {result['torch']} | {r['global_batch']} / {r['micro_batch']} "
            f"| {r['text_tokens']} | {r['tokens_per_s']:.0f} | {r['step_s']:.2f} | {r['peak_memory_gib']:.1f} "
            f"| {r['achieved_tflops']:.0f} | {r['mfu']:.1%} | {r['parameters']['trainable'] / 1e6:.0f}M / {r['parameters']['total'] / 1e9:.2f}B |"
        )  # fmt: skip
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["align", "instruct"], default="align")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small models: a smoke check of the script itself")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of the GPU")
    parser.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__}
    result["result"] = measure(args)
    print(json.dumps(result, indent=2))
    if args.device.startswith("cuda") and not args.tiny:  # never commit CPU or tiny numbers as GPU results
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "lvlm_gpu.json"
        runs = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
        runs[f"{args.stage}-micro{args.micro_batch}"] = result
        path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        (args.out / "lvlm_gpu.md").write_text(markdown(runs))


if __name__ == "__main__":
    main()
