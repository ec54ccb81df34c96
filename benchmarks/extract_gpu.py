"""Throughput of the extraction backends at the paper's resolutions: Depth Pro and SAM 2, random weights.

    PYTHONPATH=src python benchmarks/extract_gpu.py            # cuda, bf16 -> benchmarks/results/extract_gpu.json
    PYTHONPATH=src python benchmarks/extract_gpu.py --device cpu --tiny --out /tmp/extract_smoke.json   # smoke check

Full size: Depth Pro = `DepthProConfig` with its FOV head and ViT-L/16 DINOv2 encoders (952M
parameters, 1536x1536 input); SAM 2 = hiera-large shapes (144 channels, stages 2-6-36-4, 1024x1024 input,
32x32 point grid, 64 points per decoder batch). Random weights cost the same FLOPs as real ones,
but SAM's filters drop every random mask early, so `segment` times the encoder, the point grid
and the filtering of nothing: real masks add their upsampling and deduplication on top.
Each model is saved to a temporary folder and loaded back through the backend, as in production.
Numbers per stage: `forward` (the model on ready tensors) and `end_to_end` (the backend on uint8
images: preprocessing, model, post-processing). Best of --iters timed runs after one warm-up.
`--tiny` uses the test suite's tiny models (tests/tiny_models.py) to check the script runs; its
numbers mean nothing and never go to the GPU results file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from spatialboost.extract.depth_pro import DepthProEstimator
from spatialboost.extract.runtime import resolve_dtype
from spatialboost.extract.sam2_hf import HFSam2Segmenter

RESULTS = Path(__file__).resolve().parent / "results"
TESTS = Path(__file__).resolve().parent.parent / "tests"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(run: Callable[[], object], iters: int, device: torch.device) -> dict[str, object]:
    """Seconds of the fastest of `iters` calls after one warm-up call, and all of them."""
    run()
    synchronize(device)
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return {"best_s": min(seconds), "all_s": seconds}


def rate(timing: dict[str, object], items: int) -> dict[str, object]:
    return {**timing, "items_per_s": items / timing["best_s"]}


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def save_depth_pro(folder: Path, device: torch.device, dtype: torch.dtype, tiny: bool) -> int:
    """Save a random Depth Pro to `folder`; returns its input side in pixels."""
    if tiny:
        import tiny_models

        tiny_models.save_depth_pro(folder)
        return tiny_models.DEPTH_PRO_INPUT_PX
    from transformers import DepthProConfig, DepthProForDepthEstimation, DepthProImageProcessor

    # DepthProConfig's own dinov2 defaults are ViT-B/14-sized (297M in all); Depth Pro (apple/DepthPro-hf,
    # transformers' conversion script) uses ViT-L/16 for its image, patch and FOV encoders: 952M.
    vit_l16 = dict(
        model_type="dinov2",
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=16,
        image_size=384,
    )
    config = DepthProConfig(
        use_fov_model=True,
        image_model_config=dict(vit_l16),
        patch_model_config=dict(vit_l16),
        fov_model_config=dict(vit_l16),
    )
    with torch.device(device):  # initialise on the GPU: a CPU init of ~950M parameters takes minutes
        model = DepthProForDepthEstimation(config)
    model.to(dtype).save_pretrained(folder)
    processor = DepthProImageProcessor()
    processor.save_pretrained(folder)
    return processor.size["height"]


def save_sam2_large(folder: Path, device: torch.device, dtype: torch.dtype, tiny: bool) -> int:
    """Save a random hiera-large SAM 2 (transformers classes) to `folder`; returns its input side."""
    if tiny:
        import tiny_models

        tiny_models.save_sam2_hf(folder)
        return tiny_models.SAM2_INPUT_PX
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2Model,
        Sam2Processor,
        Sam2VisionConfig,
    )

    # configs/sam2.1/sam2.1_hiera_l.yaml of the sam2 package, in transformers' names
    backbone = Sam2HieraDetConfig(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 16, 8],
        global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7],
    )
    config = Sam2Config(
        vision_config=Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[1152, 576, 288, 144])
    )
    with torch.device(device):
        model = Sam2Model(config)
    model.to(dtype).save_pretrained(folder)
    image_processor = Sam2ImageProcessor()
    Sam2Processor(image_processor=image_processor).save_pretrained(folder)
    return image_processor.size["height"]


def bench_depth_pro(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, folder: Path) -> dict:
    side = save_depth_pro(folder, device, dtype, args.tiny)
    estimator = DepthProEstimator(str(folder), device=device, dtype=dtype, batch_size=args.depth_batch)
    b = args.depth_batch
    pixels = torch.randn(b, 3, side, side, device=device, dtype=dtype)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(b)]
    reset_peak(device)
    with torch.inference_mode():
        forward = rate(best_time(lambda: estimator.model(pixel_values=pixels), args.iters, device), b)
    end_to_end = rate(best_time(lambda: estimator.estimate(images, [None] * b), args.iters, device), b)
    return {
        "input_px": side,
        "batch_size": b,
        "parameters": sum(p.numel() for p in estimator.model.parameters()),
        "forward": forward,
        "end_to_end": end_to_end,
        "peak_memory_gib": peak_memory_gib(device),
    }


def bench_sam2(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, folder: Path) -> dict:
    side = save_sam2_large(folder, device, dtype, args.tiny)
    points_per_side = 4 if args.tiny else 32
    segmenter = HFSam2Segmenter(
        str(folder),
        device=device,
        dtype=dtype,
        batch_size=args.sam_batch,
        points_per_side=points_per_side,
        points_per_batch=64,
    )
    b, model = args.sam_batch, segmenter.model
    pixels = torch.randn(b, 3, side, side, device=device, dtype=dtype)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(b)]
    reset_peak(device)
    with torch.inference_mode():
        encoder = rate(best_time(lambda: model.get_image_embeddings(pixels), args.iters, device), b)
        embeddings = model.get_image_embeddings(pixels)
        points = torch.rand(b, 64, 1, 2, device=device, dtype=dtype) * side
        labels = torch.ones(b, 64, 1, dtype=torch.long, device=device)

        def decode() -> object:
            return model(image_embeddings=embeddings, input_points=points, input_labels=labels, multimask_output=True)

        decoder = rate(best_time(decode, args.iters, device), b * 64)
    segment = rate(best_time(lambda: segmenter.segment(images), args.iters, device), b)
    return {
        "input_px": side,
        "batch_size": b,
        "points_per_side": points_per_side,
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_forward": encoder,
        "decoder_forward_prompts": decoder,
        "segment_end_to_end": segment,
        "peak_memory_gib": peak_memory_gib(device),
    }


def machine(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", help="float32, bf16 or fp16")
    parser.add_argument("--tiny", action="store_true", help="tiny test models: a smoke check, not a measurement")
    parser.add_argument("--depth-batch", type=int, default=4, help="images per Depth Pro forward")
    parser.add_argument("--sam-batch", type=int, default=8, help="images per SAM 2 encoder forward")
    parser.add_argument("--iters", type=int, default=5, help="timed runs after one warm-up; the best is kept")
    parser.add_argument("--only", choices=["depth_pro", "sam2"], default=None)
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/extract_gpu.json (GPU, full size only)"
    )
    args = parser.parse_args()
    device, dtype = torch.device(args.device), resolve_dtype(args.dtype)
    out = args.out
    if out is None:
        if args.tiny or device.type != "cuda":
            parser.error("--tiny or a non-GPU device needs an explicit --out (never the GPU results file)")
        out = RESULTS / "extract_gpu.json"
    if args.tiny:
        sys.path.insert(0, str(TESTS))
    torch.manual_seed(0)
    result: dict[str, object] = {
        "benchmark": "extract_gpu",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device),
        "dtype": str(dtype),
        "tiny": args.tiny,
        "iters": args.iters,
    }
    benches = {"depth_pro": bench_depth_pro, "sam2": bench_sam2}
    for name, bench in benches.items():
        if args.only not in (None, name):
            continue
        with tempfile.TemporaryDirectory() as folder:
            result[name] = bench(args, device, dtype, Path(folder))
        print(name, json.dumps(result[name], indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
