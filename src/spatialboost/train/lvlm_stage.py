"""LLaVA-1.5's two stages for a new encoder, each a DVC stage, both through the one training loop.

    metrics = run_lvlm_stage(cfg, "align")       # projector only, LCS-558K, LLaVA's plain format
    metrics = run_lvlm_stage(cfg, "instruct")    # projector + LLM, the 665K mix, chat format, padded images
    torchrun --standalone --nproc_per_node 8 -m spatialboost.train --stage instruct --params params.yaml

`cfg.lvlm.encoder` decides: a new encoder (openclip, dinov2, siglip, dinov3, siglip2) trains; LLaVA's
own CLIP (`llava`, released weights) or none skips (SKIPPED.json, and for a released LLaVA the
instruct folder's lvlm.json points at it). Outputs, one sub-folder per encoder so that switching
encoders keeps what was trained (the DVC outputs are persisted, not cached: tens of GB):

    <lvlm.align.output>/<encoder>/      projector.safetensors, align.json, runs/ (the loop's), stage.json
    <lvlm.instruct.output>/<encoder>/   vlm/ (SpatialVLM.save + tokenizer), runs/, stage.json
    <lvlm.instruct.output>/lvlm.json    which LVLM the boost starts from (train.init is this folder)

A stage whose inputs are those of its finished run (stage.json: the fingerprint of the phase's
settings, the encoder's and the LLM's checkpoints, the annotation file's sha256, the align run it
starts from and the training code) is not trained again: `dvc repro` reruns these stages whenever
anything in hub.cache_dir changes (an extraction model's pin, say), and that costs a fingerprint,
not a day of GPUs. DVC does not hash LLaVA's images (hundreds of GB); replacing files in place needs
`dvc repro -f align instruct`, like re-listing an S3 bucket.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from spatialboost.config import LVLMPhase, SpatialBoostConfig, TrainConfig
from spatialboost.hub import PIN_FILE
from spatialboost.io import write_json_atomic
from spatialboost.models.lvlm import build_lvlm, load_encoder_choice, load_language_model, write_pointer
from spatialboost.models.tokenizer import build_plain_example, build_sft_example
from spatialboost.models.vlm import SpatialVLM
from spatialboost.runtime import torch_threads
from spatialboost.skipping import SKIP_FILE, mark_skipped
from spatialboost.train.data import ConversationDataset, ImageFetcher
from spatialboost.train.distributed import DistContext, barrier, init_distributed
from spatialboost.train.llava_data import (
    LLAVA_IMAGE_LIMITS,
    LlavaData,
    PadToSquare,
    missing_images,
    read_llava_instruct,
    read_llava_pretrain,
    subset_records,
)
from spatialboost.train.loop import TrainResult, resolve_precision, train

Phase = Literal["align", "instruct"]
PHASES: tuple[Phase, ...] = ("align", "instruct")
STAGE_FILE = "stage.json"
ALIGN_FILE = "align.json"
PROJECTOR_FILE = "projector.safetensors"
SCHEMA_VERSION = 1


def lvlm_skip_reason(cfg: SpatialBoostConfig, phase: Phase) -> str | None:
    """Why `phase` does not train for this config (one line), or None when it does."""
    choice = cfg.lvlm.chosen()
    if choice is None:
        return f"lvlm.encoder is null: the boost starts from train.init ({cfg.train.init}) as it is"
    if choice.released:
        return (f"lvlm.encoder is {cfg.lvlm.encoder}: {choice.name}'s released weights ({choice.path}) "
                "already passed LLaVA-1.5's align and instruct stages")  # fmt: skip
    return None


def run_lvlm_stage(cfg: SpatialBoostConfig, phase: Phase, progress: bool = True) -> dict[str, Any]:
    """Train (or skip, or reuse) `phase` for cfg.lvlm.encoder; returns the stage's metrics."""
    if phase not in PHASES:
        raise ValueError(f"unknown LLaVA stage {phase!r}; known: {', '.join(PHASES)}")
    settings: LVLMPhase = getattr(cfg.lvlm, phase)
    reason = lvlm_skip_reason(cfg, phase)
    if reason is not None:
        return skip_lvlm_stage(cfg, phase, reason)
    ctx = init_distributed(cfg.device)
    encoder_dir = Path(settings.output) / str(cfg.lvlm.encoder)
    data = read_phase_data(cfg, phase)
    fingerprint = stage_fingerprint(cfg, phase, data)
    done = finished_run(encoder_dir, fingerprint)
    if done is not None:
        if ctx.is_main:
            _publish(cfg, phase)
        barrier(ctx)
        return {**done, "reused": True}
    run_dir = encoder_dir / "runs"
    if ctx.is_main:
        _clear_other_run(run_dir, fingerprint)
    barrier(ctx)
    dtype = resolve_precision(settings.precision, ctx.device) or torch.float32
    with torch_threads(settings.num_threads):
        vlm, tokenizer = initial_lvlm(cfg, phase, dtype)
        dataset = phase_dataset(cfg, phase, data.records, vlm, tokenizer)
        result = train(
            vlm,
            dataset,
            phase_loop_config(cfg, phase),
            run_dir,
            progress=progress,
            device=ctx.device,
            master_dtype=torch.float32,
            name=phase,
        )
    metrics = phase_metrics(cfg, phase, data, result, fingerprint)
    if ctx.is_main:
        save_phase(cfg, phase, vlm=vlm, tokenizer=tokenizer, result=result, ctx=ctx, dtype=dtype)
        write_json_atomic(
            encoder_dir / STAGE_FILE, {"schema_version": SCHEMA_VERSION, "fingerprint": fingerprint, "metrics": metrics}
        )
        _publish(cfg, phase)
    barrier(ctx)
    return {**metrics, "reused": False}


def skip_lvlm_stage(cfg: SpatialBoostConfig, phase: Phase, reason: str) -> dict[str, Any]:
    """SKIPPED.json in the phase's folder; for a released LLaVA the instruct folder's lvlm.json
    points at it (with its hub pin: a new pin changes the folder, so the boost reruns)."""
    output = Path(getattr(cfg.lvlm, phase).output)
    metrics = mark_skipped(output, phase, reason)
    choice = cfg.lvlm.chosen()
    pointer = output / "lvlm.json"
    if phase == "instruct" and choice is not None and choice.released:
        pin = cfg.hub.models.get(choice.hub_role) if choice.hub_role else None
        write_pointer(output, str(cfg.lvlm.encoder), released=choice.path, pin=None if pin is None else pin.model_dump(mode="json"))
    elif pointer.is_file():
        pointer.unlink()  # no LVLM is built here any more
    return metrics


def _publish(cfg: SpatialBoostConfig, phase: Phase) -> None:
    """Mark the phase's folder as holding the chosen encoder's run: no SKIPPED.json; for instruct,
    lvlm.json points at its vlm (written last)."""
    output = Path(getattr(cfg.lvlm, phase).output)
    (output / SKIP_FILE).unlink(missing_ok=True)
    if phase == "instruct":
        write_pointer(output, str(cfg.lvlm.encoder), vlm=f"{cfg.lvlm.encoder}/vlm")


# --- data -------------------------------------------------------------------------------------------


def read_phase_data(cfg: SpatialBoostConfig, phase: Phase) -> LlavaData:
    """The phase's records (LCS-558K or the 665K mix), the seeded max_records subset, every image
    checked to exist (a ValueError naming the missing ones otherwise)."""
    settings: LVLMPhase = getattr(cfg.lvlm, phase)
    data = read_llava_pretrain(settings.data) if phase == "align" else read_llava_instruct(settings.data)
    data.records = subset_records(data.records, settings.max_records, cfg.lvlm.seed)
    problem = missing_images(data.records, settings.image_root)
    if problem:
        raise ValueError(f"lvlm.{phase}: {problem}")
    return data


def phase_dataset(
    cfg: SpatialBoostConfig,
    phase: Phase,
    records: list[dict[str, Any]],
    vlm: SpatialVLM,
    tokenizer: PreTrainedTokenizerBase,
) -> ConversationDataset:
    """SFT examples in the phase's template, images through the encoder's preprocessing (padded
    to a square first for image_aspect_ratio pad)."""
    settings: LVLMPhase = getattr(cfg.lvlm, phase)
    preprocess = vlm.encoder.preprocess
    if settings.image_aspect_ratio == "pad":
        preprocess = PadToSquare(preprocess)
    builder = build_plain_example if settings.template == "plain" else build_sft_example
    return ConversationDataset(
        records,
        tokenizer,
        preprocess,
        max_length=settings.max_length,
        image_loader=ImageFetcher(settings.image_root, limits=LLAVA_IMAGE_LIMITS),
        build_example=builder,
    )


def phase_loop_config(cfg: SpatialBoostConfig, phase: Phase) -> TrainConfig:
    """The loop settings of a phase: its own values; everything else the train section's schema
    defaults (not the boost's values: a boost setting never changes, or reruns, these stages)."""
    s: LVLMPhase = getattr(cfg.lvlm, phase)
    return TrainConfig(
        stage=phase,
        seed=cfg.lvlm.seed,
        epochs=s.epochs,
        max_steps=s.max_steps,
        lr=s.lr,
        warmup_ratio=s.warmup_ratio,
        weight_decay=s.weight_decay,
        global_batch_size=s.global_batch_size,
        micro_batch_size=s.micro_batch_size,
        max_length=s.max_length,
        group_by_length=s.group_by_length,
        precision=s.precision,
        gradient_checkpointing=s.gradient_checkpointing,
        strategy=s.strategy,
        checkpoint_every=s.checkpoint_every,
        num_workers=s.num_workers,
        num_threads=s.num_threads,
        init=s.output,
        output=s.output,
        data=s.data,
        image_root=s.image_root,
        split=None,
        find_unused_parameters=phase == "instruct",  # a text-only micro-batch gives the projector no gradient
    )


# --- the model of each phase ------------------------------------------------------------------------


def initial_lvlm(cfg: SpatialBoostConfig, phase: Phase, dtype: torch.dtype) -> tuple[SpatialVLM, PreTrainedTokenizerBase]:
    """align: encoder + fresh projector + LLM; instruct: the same with the align run's projector."""
    choice = cfg.lvlm.chosen()
    assert choice is not None and not choice.released
    projector = None
    if phase == "instruct":
        align_dir = Path(cfg.lvlm.align.output) / str(cfg.lvlm.encoder)
        if not (align_dir / STAGE_FILE).is_file():
            raise FileNotFoundError(f"{align_dir}: no finished align run for lvlm.encoder={cfg.lvlm.encoder} (run the align stage first)")
        projector = load_file(align_dir / PROJECTOR_FILE)
    encoder = load_encoder_choice(choice, dtype)
    lm, tokenizer = load_language_model(cfg.lvlm.language_model, dtype)
    return build_lvlm(encoder, lm, tokenizer, cfg.lvlm.seed, projector_state=projector), tokenizer


def save_phase(
    cfg: SpatialBoostConfig,
    phase: Phase,
    *,
    vlm: SpatialVLM,
    tokenizer: PreTrainedTokenizerBase,
    result: TrainResult,
    ctx: DistContext,
    dtype: torch.dtype,
) -> None:
    """Rank 0: align -> the trained projector (LLaVA's mm_projector.bin, as safetensors) + align.json;
    instruct -> the whole SpatialVLM in the load dtype, tokenizer in vlm/language_model/. The
    trained tensors come from the loop's final checkpoint (full tensors, also after FSDP)."""
    encoder_dir = Path(getattr(cfg.lvlm, phase).output) / str(cfg.lvlm.encoder)
    if result.checkpoint is None:
        raise RuntimeError(f"the {phase} run wrote no checkpoint")
    trained = {k.removeprefix("vlm."): v for k, v in load_file(Path(result.checkpoint) / "trainable.safetensors").items()}
    if phase == "align":
        projector = {k.removeprefix("projector."): v.contiguous() for k, v in trained.items() if k.startswith("projector.")}
        save_file(projector, encoder_dir / PROJECTOR_FILE)
        write_json_atomic(
            encoder_dir / ALIGN_FILE,
            {
                "schema_version": SCHEMA_VERSION,
                "encoder": cfg.lvlm.encoder,
                "choice": cfg.lvlm.chosen().model_dump(mode="json"),
                "language_model": cfg.lvlm.language_model,
                "projector": {
                    "vision_dim": vlm.projector.linear_1.in_features,
                    "text_dim": vlm.projector.linear_1.out_features,
                },
            },
        )
        return
    if ctx.distributed and getattr(cfg.lvlm, phase).strategy == "fsdp":
        vlm, tokenizer = initial_lvlm(cfg, phase, dtype)  # sharded in memory: rebuild, then load the trained tensors
        missing = sorted(set(trained) - {n for n, _ in vlm.named_parameters()})
        if missing:
            raise RuntimeError(f"the instruct checkpoint has tensors the LVLM lacks: {missing[:3]}")
        with torch.no_grad():
            params = dict(vlm.named_parameters())
            for name, tensor in trained.items():
                params[name].copy_(tensor)
    vlm.to(dtype).save(encoder_dir / "vlm")
    tokenizer.save_pretrained(encoder_dir / "vlm" / "language_model")


# --- metrics and reuse ----------------------------------------------------------------------------


def phase_metrics(
    cfg: SpatialBoostConfig, phase: Phase, data: LlavaData, result: TrainResult, fingerprint: dict[str, Any]
) -> dict[str, Any]:
    """metrics/<phase>.json: the encoder, the data's counts and hash, the run's losses and speed."""
    history = result.history or [{}]
    return {
        "encoder": cfg.lvlm.encoder, "name": cfg.lvlm.chosen().name, "phase": phase, "data": data.summary(),
        "data_sha256": fingerprint["data_sha256"], "steps": result.steps, "total_steps": result.total_steps,
        "first_loss": history[0].get("loss"), "final_loss": result.final_loss, "tokens_per_s": round(result.tokens_per_s, 1),
        "wall_s": round(result.wall_s, 1), "resumed_from": result.resumed_from, "trainable": result.trainable,
        "output": str(Path(getattr(cfg.lvlm, phase).output) / str(cfg.lvlm.encoder)),
    }  # fmt: skip


def stage_fingerprint(cfg: SpatialBoostConfig, phase: Phase, data: LlavaData) -> dict[str, Any]:
    """Everything a finished run of `phase` depends on (see the module docstring), as JSON."""
    settings: LVLMPhase = getattr(cfg.lvlm, phase)
    choice = cfg.lvlm.chosen()
    assert choice is not None
    fingerprint = {
        "phase": phase,
        "settings": settings.model_dump(mode="json", exclude={"num_workers", "checkpoint_every", "num_threads"}),
        "seed": cfg.lvlm.seed,
        "encoder": choice.model_dump(mode="json"),
        "encoder_checkpoint": folder_identity(choice.path),
        "language_model": folder_identity(cfg.lvlm.language_model),
        "data_sha256": file_sha256(settings.data),
        "records": len(data.records),
        "code": code_sha256(),
    }
    if phase == "instruct":
        align = Path(cfg.lvlm.align.output) / str(cfg.lvlm.encoder) / STAGE_FILE
        fingerprint["align"] = hashlib.sha256(align.read_bytes()).hexdigest() if align.is_file() else None
    return json.loads(json.dumps(fingerprint))  # as stage.json stores it (tuples -> lists)


def finished_run(encoder_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of the finished run in `encoder_dir` when its fingerprint is this one, else None."""
    path = encoder_dir / STAGE_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record["metrics"] if record.get("fingerprint") == fingerprint else None


def _clear_other_run(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Checkpoints resume only the run they belong to: another fingerprint's are removed first."""
    marker = run_dir / "fingerprint.json"
    if run_dir.exists() and (not marker.is_file() or json.loads(marker.read_text()) != fingerprint):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stale = run_dir.parent / STAGE_FILE
    stale.unlink(missing_ok=True)  # the folder no longer holds a finished run of these inputs
    write_json_atomic(marker, fingerprint)


def folder_identity(folder: str | Path) -> Any:
    """A checkpoint folder's identity: its hub pin when hub.py fetched it, else every file's
    (path, size, mtime) (a hand-made folder)."""
    folder = Path(folder)
    pin = folder / PIN_FILE
    if pin.is_file():
        return json.loads(pin.read_text())["pin"]
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder (the hub stage fetches it)")
    return [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()]  # fmt: skip


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file's bytes (llava_v1_5_mix665k.json is about 1 GB: a few seconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def code_sha256() -> str:
    """sha256 of the training and model code (spatialboost/train, spatialboost/models): what DVC
    watches for these stages, so a code change trains again."""
    import spatialboost

    package = Path(spatialboost.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*(package / "train").rglob("*.py"), *(package / "models").rglob("*.py")]):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
