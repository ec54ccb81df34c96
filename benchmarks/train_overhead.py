"""What the one training loop costs over a bare PyTorch loop: the boost stage on the demo-size models.

    PYTHONPATH=src:tests python benchmarks/train_overhead.py   # writes benchmarks/results/train_overhead.{json,md}

Models: the demo profile's bootstrap sizes (params.yaml), random weights: Dinov2 (hidden 96,
4 layers, 64 px, patch 8: 64 image tokens) -> projector -> Llama (hidden 128, 2 layers),
dual-channel attention added, LLM frozen (boost stage). Data: synthetic 6-turn conversations in
the spatial QA's words, one 128 px image each, global batch 16 in micro-batches of 8.

`bare`: a minimal loop over pre-collated batches on an identically prepared model: forward
(the model's own mean loss / accumulation steps), backward, clip, AdamW step. `train()`: the
library loop on the same conversations, from the dataset (collation in the loop), with
everything it does by default: global-batch loss normalisation, schedule, metrics, progress off,
and a final checkpoint (timed separately). Same number of optimizer steps; best of `--repeats`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatialboost.config import TrainConfig, load_config
from spatialboost.models.tokenizer import train_tokenizer
from spatialboost.train import ConversationDataset, SFTCollator, prepare_stage, train
from spatialboost.train.bootstrap import new_vlm
from spatialboost.train.bootstrap_data import language_record, template_texts, tokenizer_corpus
from spatialboost.train.bootstrap_encoder import build_encoder
from spatialboost.train.distributed import global_batches

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def conversations(n: int, turns: int, rng: np.random.Generator) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """n LLaVA records of `turns` spatial-sounding QA turns, each with its own random image."""
    questions = template_texts(rng, n_fills=1)[:-2]
    records, images = [], {}
    for i in range(n):
        messages = []
        for t in range(turns):
            answer = language_record(rng, i)["conversations"][1]["value"]
            question = questions[int(rng.integers(len(questions)))]
            messages += [{"from": "human", "value": ("<image>\n" if t == 0 else "") + question}, {"from": "gpt", "value": answer}]
        records.append({"id": f"bench-{i}", "image": f"img-{i}", "conversations": messages})
        images[f"img-{i}"] = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    return records, images


def build(cfg_path: Path, tokenizer_dir: Path, seed: int = 0):
    """(vlm, tokenizer) of the demo profile's bootstrap sizes, random weights."""
    cfg = load_config(cfg_path)
    encoder = build_encoder(cfg.bootstrap.encoder, seed)
    rng = np.random.default_rng(seed)
    corpus = tokenizer_corpus([language_record(rng, i) for i in range(200)], rng)
    tokenizer = train_tokenizer(corpus, cfg.bootstrap.llm.vocab_size, tokenizer_dir)
    return cfg, new_vlm(cfg, encoder, tokenizer), tokenizer


def bare_loop(vlm, batches: list[list[Any]], cfg: TrainConfig) -> float:
    """Seconds for len(batches) optimizer steps of a minimal loop (model already prepared)."""
    params = [p for p in vlm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    vlm.train()
    start = time.perf_counter()
    for micro_batches in batches:
        for batch in micro_batches:
            loss = vlm(**batch.inputs(torch.device("cpu"))).loss / len(micro_batches)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="train_overhead-"))
    cfg, _, tokenizer = build(args.params, tmp / "tok")
    n = args.global_batch * args.steps
    records, images = conversations(n, args.turns, np.random.default_rng(1))
    loop_cfg = TrainConfig(stage="boost", adapter="dual_channel", max_steps=args.steps, global_batch_size=args.global_batch,
                           micro_batch_size=args.micro_batch, lr=2e-4, warmup_ratio=0.0, checkpoint_every=0,
                           max_length=cfg.train.max_length, precision="fp32", shuffle=False)  # fmt: skip

    def fresh():
        vlm = build(args.params, tmp / "tok")[1]
        dataset = ConversationDataset(records, tokenizer, vlm.encoder.preprocess, max_length=loop_cfg.max_length,
                                      image_loader=images.__getitem__, cache_images=True)  # fmt: skip
        for i in range(len(dataset)):  # warm the image cache: both loops start from preprocessed pixels
            dataset[i]
        return vlm, dataset

    collate = SFTCollator(tokenizer.pad_token_id)
    bare, ours, in_loop, checkpoint, collate_s = [], [], [], [], []
    for repeat in range(args.repeats):
        vlm, dataset = fresh()
        prepare_stage(vlm, loop_cfg)
        start = time.perf_counter()
        order = global_batches(len(dataset), args.global_batch, loop_cfg.seed, 0, shuffle=False)
        batches = [[collate([dataset[i] for i in b[j : j + args.micro_batch]]) for j in range(0, len(b), args.micro_batch)]
                   for b in order]  # fmt: skip
        collate_s.append(time.perf_counter() - start)
        bare.append(bare_loop(vlm, batches, loop_cfg))

        vlm, dataset = fresh()
        start = time.perf_counter()
        result = train(vlm, dataset, loop_cfg, tmp / f"run-{repeat}", progress=False)
        ours.append(time.perf_counter() - start)
        in_loop.append(result.wall_s)
        checkpoint.append(result.wall_s - sum(r["tokens"] / r["tokens_per_s"] for r in result.history))
        tokens = sum(r["tokens"] for r in result.history)
    best_bare, best_ours = min(bare), min(ours)
    return {
        "steps": args.steps,
        "global_batch": args.global_batch,
        "micro_batch": args.micro_batch,
        "turns": args.turns,
        "lm_tokens_per_step": tokens / args.steps,
        "bare_s": best_bare,
        "bare_steps_per_s": args.steps / best_bare,
        "bare_collate_s": min(collate_s),
        "train_call_s": best_ours,
        "train_loop_s": min(in_loop),
        "train_steps_per_s": args.steps / best_ours,
        "train_outside_steps_s": min(checkpoint),
        "overhead_ratio": best_ours / best_bare,
        "overhead_ratio_incl_collation": best_ours / (best_bare + min(collate_s)),
        "all": {"bare_s": bare, "train_call_s": ours, "train_loop_s": in_loop, "collate_s": collate_s},
    }


def machine() -> dict[str, object]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from world_render import machine as base_machine

    return {**base_machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def markdown(result: dict) -> str:
    m, r = result["machine"], result["result"]
    return "\n".join([
        "# Training loop overhead: `train()` vs a bare PyTorch loop (boost stage, demo-size models)",
        "",
        f"{result['date']}, {m['platform']}, {m['cpu_count']} CPUs (1-min load {m['load_average_1min']:.1f} at start),",
        f"torch {m['torch']} on CPU, {m['torch_threads']} thread(s), fp32. Dinov2 96x4 (64 px, 64 image tokens) -> projector ->",
        f"Llama 128x2, dual-channel attention, LLM frozen. {r['steps']} optimizer steps of {r['global_batch']} conversations",
        f"({r['turns']} turns, about {r['lm_tokens_per_step'] / r['global_batch']:.0f} LM tokens each) in micro-batches of "
        f"{r['micro_batch']}; best of {len(r['all']['bare_s'])}.",
        "",
        "| loop | seconds | steps/s |",
        "|---|---|---|",
        f"| bare (pre-collated batches) | {r['bare_s']:.2f} | {r['bare_steps_per_s']:.3f} |",
        f"| bare + collation of the same batches | {r['bare_s'] + r['bare_collate_s']:.2f} | "
        f"{r['steps'] / (r['bare_s'] + r['bare_collate_s']):.3f} |",
        f"| `train()` (whole call: setup, loop, final checkpoint) | {r['train_call_s']:.2f} | {r['train_steps_per_s']:.3f} |",
        "",
        f"Overhead ratio `train()` / bare: **{r['overhead_ratio']:.3f}** "
        f"({r['overhead_ratio_incl_collation']:.3f} against bare + collation). Inside `train()`, "
        f"{r['train_outside_steps_s']:.2f} s of the loop's {r['train_loop_s']:.2f} s fall outside the optimizer steps "
        "(data loading and collation, the final checkpoint, logging).",
        "",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these sizes on a busy box)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    result["result"] = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "train_overhead.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
