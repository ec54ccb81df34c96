"""The training stage as one call (and a torchrun entry point): load, train, save.

    result = run_train_stage(load_config("params.yaml"))            # one process
    torchrun --standalone --nproc_per_node 4 -m spatialboost.train --params configs/paper.yaml

`cfg.train.init` is a SpatialVLM folder (SpatialVLM.save, e.g. the demo's bootstrap/vlm, with
its tokenizer in language_model/) or a LLaVA checkpoint folder (LlavaForConditionalGeneration
with its tokenizer, e.g. llava-hf/llava-1.5-7b-hf fetched by hub.py). Outputs under
`cfg.train.output`: checkpoints/ (the loop's), vlm/ (the trained SpatialVLM, tokenizer in
vlm/language_model/) and encoder/ (export_encoder: what the registry logs). A LoRA encoder is
merged first, so every adapter exports the same kind of encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from spatialboost.config import SpatialBoostConfig, TrainConfig
from spatialboost.data.records import ImageLimits
from spatialboost.evaluate.features import patch_grid
from spatialboost.models.export import export_encoder
from spatialboost.models.lvlm import resolve_lvlm_folder
from spatialboost.models.tokenizer import load_tokenizer
from spatialboost.models.vlm import SpatialVLM
from spatialboost.runtime import torch_threads
from spatialboost.train.adapters import has_lora, merge_lora, prepare_stage
from spatialboost.train.data import ConversationDataset, ImageFetcher, load_conversations, manifest_sha256
from spatialboost.train.depth_supervision import DepthDataset, DepthObjective, new_depth_head
from spatialboost.train.distributed import DistContext, barrier, init_distributed
from spatialboost.train.loop import MetricsLogger, TrainResult, fit, resolve_precision, train


def load_initial_model(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[SpatialVLM, PreTrainedTokenizerBase]:
    """(vlm, tokenizer) from a SpatialVLM folder or a LLaVA checkpoint folder, or the folder an
    instruct stage's lvlm.json points at (models/lvlm.py)."""
    folder = resolve_lvlm_folder(folder)
    if (folder / "vlm.json").is_file():
        return SpatialVLM.load(folder, dtype=dtype), load_tokenizer(folder / "language_model")
    if (folder / "config.json").is_file():
        return SpatialVLM.from_llava(folder, dtype=dtype), load_tokenizer(folder)
    raise FileNotFoundError(f"{folder}: neither a SpatialVLM folder (vlm.json) nor a LLaVA checkpoint (config.json)")


def run_train_stage(
    cfg: SpatialBoostConfig, tracker: MetricsLogger | None = None, progress: bool = True
) -> TrainResult:
    """Train every run of `planned_runs(cfg)` (the boost of train.seed, then its replicates and the
    depth control when asked for); returns the first run's result. Each run starts from
    `cfg.train.init`, trains on `cfg.train.data` and is saved on rank 0 into its own folder.

    With bf16 precision the frozen model loads in bf16 and the trainable parameters stay fp32
    (master weights); autocast does the rest. FSDP runs save the trainable state only (the
    loop's final checkpoint): the full model is init + checkpoints/<last>/trainable.safetensors.
    """
    ctx = init_distributed(cfg.device)
    records = split_conversations(load_conversations(cfg.train.data), cfg.train.image_root, cfg.train.split)
    results = [train_run(cfg, run, records, ctx, tracker, progress) for run in planned_runs(cfg.train)]
    return results[0]


def planned_runs(train_cfg: TrainConfig) -> list[TrainConfig]:
    """The runs of the train stage, each a TrainConfig with its own seed and output folder:
    the run itself (train.output), its replicates (train.output/seeds/<seed>: the seed spread
    every demo claim is read against), and with train.control the supervision control of each
    (objective=depth, train.output/control[/seeds/<seed>]). One code path: the loop and the
    adapter are the same; only the seed, the objective and the folder differ."""
    runs = []
    for objective, base in (("sft", Path(train_cfg.output)), ("depth", Path(train_cfg.output) / "control")):
        if objective == "depth" and not train_cfg.control:
            continue
        for i, seed in enumerate((train_cfg.seed, *train_cfg.replicate_seeds)):
            output = base if i == 0 else base / "seeds" / str(seed)
            update = {"seed": seed, "output": str(output), "replicate_seeds": (), "control": False}
            if objective == "depth":
                update["objective"] = "depth"
            runs.append(train_cfg.model_copy(update=update))
    return runs


def train_run(
    cfg: SpatialBoostConfig,
    run: TrainConfig,
    records: list[dict],
    ctx: DistContext,
    tracker: MetricsLogger | None,
    progress: bool,
) -> TrainResult:
    """One run of the train stage (`planned_runs`): load the initial model, train, save."""
    dtype = resolve_precision(run.precision, ctx.device) or torch.float32
    vlm, tokenizer = load_initial_model(run.init, dtype)
    records = subset_conversations(records, run.max_conversations, run.seed)
    with torch_threads(run.num_threads):
        if run.objective == "depth":
            result = train_depth_control(vlm, records, run, tracker, progress, ctx.device)
        else:
            dataset = ConversationDataset(
                records, tokenizer, vlm.encoder.preprocess, max_length=run.max_length, image_loader=training_images(cfg)
            )
            result = train(
                vlm,
                dataset,
                run,
                run.output,
                tracker=tracker,
                progress=progress,
                device=ctx.device,
                master_dtype=torch.float32,
            )
    if ctx.is_main and not (ctx.distributed and run.strategy == "fsdp"):
        save_trained(vlm, tokenizer, run.output)
    barrier(ctx)
    return result


def train_depth_control(
    vlm: SpatialVLM,
    records: list[dict],
    cfg: TrainConfig,
    tracker: MetricsLogger | None,
    progress: bool,
    device: torch.device,
) -> TrainResult:
    """The supervision control (train.objective=depth, train/depth_supervision.py): the boost's
    adapter on the encoder, trained on the conversations' images by a linear log-depth head on
    its patch tokens, through the same loop. The projector and LLM do not train."""
    from spatialboost.data import RGBDDataset

    root = Path(cfg.image_root)
    if not (root / "index.parquet").is_file():
        raise ValueError(f"train.objective=depth needs the training images' depth: an RGB-D dataset at train.image_root ({root})")
    dataset = RGBDDataset(root)
    by_rgb = {dataset.row(i).rgb: i for i in dataset.ids()}
    images = sorted({r["image"] for r in records if r.get("image")})
    missing = [image for image in images if image not in by_rgb]
    if missing:
        raise ValueError(f"{len(missing)} training images are not in the RGB-D dataset at {root}, e.g. {missing[0]!r}")
    ids = [by_rgb[image] for image in images]
    with torch.no_grad():
        n_patches = vlm.encoder(torch.zeros(1, 3, *vlm.encoder.preprocess.size)).patch_tokens.shape[1]
    grid = patch_grid(vlm.encoder.preprocess, n_patches)
    data = DepthDataset(
        lambda i: (dataset.rgb(ids[i]), dataset.depth(ids[i])),
        len(ids),
        vlm.encoder.preprocess,
        grid,
        (1e-3, float("inf")),
    )
    report = prepare_stage(vlm, cfg.model_copy(update={"train_projector": False}))
    objective = DepthObjective(vlm.encoder, new_depth_head(vlm.encoder, cfg.seed, data.mean_log_depth()))
    objective.head.requires_grad_(True)
    result = fit(
        objective,
        data,
        data.collate,
        cfg,
        cfg.output,
        tracker=tracker,
        progress=progress,
        name="boost_depth",
        device=device,
    )
    result.trainable = report.to_dict()
    return result


def train_metrics(cfg: SpatialBoostConfig, result: TrainResult) -> dict:
    """The train stage's metrics (metrics/train.json) from a run's result: the same on 1 or N processes."""
    return {
        "stage": cfg.train.stage,
        "adapter": cfg.train.adapter,
        "processes": cfg.orchestration.train_nproc_per_node,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "first_loss": result.losses[0] if result.losses else None,
        "final_loss": result.final_loss,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "wall_s": round(result.wall_s, 1),
        "resumed_from": result.resumed_from,
        "trainable": result.trainable,
        "runs": [run_summary(run) for run in planned_runs(cfg.train)],
    }


def run_summary(run: TrainConfig) -> dict:
    """seed, objective, output, steps and losses of one finished run (its result file, which
    keeps no timings: checkpoint.RUN_LOG_KEYS)."""
    name = "boost_depth" if run.objective == "depth" else run.stage
    path = Path(run.output) / f"{name}_result.json"
    summary = {"seed": run.seed, "objective": run.objective, "output": run.output}
    if path.is_file():
        done = json.loads(path.read_text())
        history = done.get("history") or [{}]
        summary |= {"steps": done["steps"], "first_loss": history[0].get("loss"), "final_loss": done["final_loss"]}
    return summary


def training_images(cfg: SpatialBoostConfig) -> ImageFetcher:
    """The loader of the conversations' images: local files under train.image_root, and s3:// uris
    read through boto3 with data.s3's endpoint, region and profile, every file checked against
    the sha256 that data.manifest recorded (when there is one), decoded with data's limits."""
    manifest = Path(cfg.data.manifest)
    return ImageFetcher(
        cfg.train.image_root,
        s3=cfg.data.s3,
        limits=ImageLimits.from_config(cfg.data),
        expected_sha256=manifest_sha256(manifest) if manifest.is_file() else None,
    )


def split_conversations(records: list[dict], image_root: str | Path, split: str | None) -> list[dict]:
    """Only the conversations of `split` of the RGB-D dataset at `image_root` (all when split is
    None or image_root is no such dataset): held-out scenes must never reach training. A record
    belongs to the split by its id (an image id) or its image (single-turn ids are "<id>-tNN")."""
    if split is None or not (Path(image_root) / "index.parquet").is_file():
        return records
    from spatialboost.data import RGBDDataset

    dataset = RGBDDataset(image_root)
    ids = dataset.ids(split)
    allowed, images = set(ids), {dataset.row(i).rgb for i in ids}
    kept = [record for record in records if record["id"] in allowed or record.get("image") in images]
    if not kept:
        raise ValueError(f"no conversation belongs to split {split!r} of {image_root}")
    return kept


def subset_conversations(records: list[dict], n: int | None, seed: int) -> list[dict]:
    """`n` records drawn without replacement by a seeded permutation, in their original order
    (all when n is None). Subsets are nested: the first n of one permutation, so a smaller data
    scale is part of every larger one. n larger than the records is an error, not a silent cap."""
    if n is None:
        return records
    if n > len(records):
        raise ValueError(f"train.max_conversations={n} but only {len(records)} conversations are in the split")
    keep = np.sort(np.random.default_rng(seed).permutation(len(records))[:n])
    return [records[i] for i in keep]


def save_trained(vlm: SpatialVLM, tokenizer: PreTrainedTokenizerBase, output: str | Path) -> None:
    """output/vlm (SpatialVLM.save + tokenizer) and output/encoder (export_encoder); LoRA merged."""
    output = Path(output)
    if has_lora(vlm.encoder):
        merge_lora(vlm.encoder)
    vlm.save(output / "vlm")
    tokenizer.save_pretrained(output / "vlm" / "language_model")
    export_encoder(vlm.encoder, output / "encoder")
