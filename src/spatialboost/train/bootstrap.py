"""The demo's `bootstrap` stage: a pre-trained small LVLM from nothing, offline, on CPU.

The paper boosts released encoders inside LLaVA-1.5-7B; the demo has neither, so it makes
small ones with the same transformers classes, on the procedural world, without ever showing
them depth or geometry:

    (a) encoder    Dinov2Model, multi-label "which shapes / colours are in the image" (BCE)
    (b) tokenizer  byte-level BPE trained on every text the LLM will see + the spatial QA
                   templates' vocabulary; a random LlamaForCausalLM over it
        language   the LLM alone on the text of all conversations, images left out, plus
                   text-only ones that state a spatial fact and ask it back (answer language
                   and copying; no visual fact), plus the spatial conversations of scenes of
                   its own as text (spatial_text.py: the boost stage freezes the LLM, so it
                   must already speak the answer language): LLaVA starts from a language
                   model, so do we
    (c) align      LLaVA-1.5 phase 1: projector only, on captions ("A red cube and a blue sphere.")
    (d) instruct   LLaVA-1.5 phase 2: projector + LLM, on non-spatial QA (colour, shape, count,
                   presence) plus more of the text-only conversations and the spatial text
                   again (so that instruct does not make the LLM forget it)
    metrics        encoder multi-label F1 and the align / instruct models' exact-match, on the
                   world's test split (held out from every phase)

Every training phase runs through the one training loop, so each checkpoints and a killed run
resumes where it stopped (a finished phase is restored from its last checkpoint, not redone).
Outputs under `out_dir`:

    encoder/      Dinov2Model + preprocessor_config.json (Dinov2Encoder.from_pretrained)
    tokenizer/    the trained tokenizer (load_tokenizer)
    vlm/          SpatialVLM.save after instruct: what the boost stage starts from
                  (its language_model/ folder holds the tokenizer too)
    vlm_align/    SpatialVLM.save after align
    runs/         the loop's checkpoints and per-phase results
    metrics.json  wall times, losses and held-out scores of every phase

    metrics = run_bootstrap_stage(cfg)     # the stage: skipped, installed from the release, or trained
    metrics = run_bootstrap(load_config("params.yaml"), "models/bootstrap")   # train the recipe
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from spatialboost.config import BootstrapPhase, SpatialBoostConfig, TrainConfig
from spatialboost.data import RGBDDataset
from spatialboost.data.marks import Mark, draw_marks, marks_of
from spatialboost.data.rgbd import RGBDSample
from spatialboost.io import write_json_atomic
from spatialboost.models.encoders import Dinov2Encoder, VisionEncoder
from spatialboost.models.tokenizer import IMAGE_TOKEN, build_generation_prompt, train_tokenizer
from spatialboost.models.vlm import SpatialVLM
from spatialboost.runtime import torch_threads
from spatialboost.skipping import mark_skipped, skip_reason
from spatialboost.train.bootstrap_data import (
    CAPTION_PROMPTS,
    Point,
    caption,
    caption_record,
    instruct_record,
    language_record,
    mark_record,
    multilabel_targets,
    referring_points,
    tokenizer_corpus,
    visible_objects,
)
from spatialboost.train.bootstrap_encoder import (
    build_encoder,
    multilabel_scores,
    new_head,
    pretrain_encoder,
    save_hf_encoder,
)
from spatialboost.train.data import ConversationDataset
from spatialboost.train.loop import MetricsLogger, TrainResult, train
from spatialboost.train.release import install_release
from spatialboost.train.spatial_text import rendered_sample, spatial_conversations
from spatialboost.world.dataset import render_image

HeldOut = tuple[str, str, str, str, tuple[Mark, ...]]
"""A held-out question: (image ref, question, answer, kind, marks drawn on the image)."""

EXTRA_SPLIT = "bootstrap"
SPATIAL_TEXT_SPLIT = "bootstrap-text"
"""Split name of the extra scenes: their seeds differ from every train/test scene's."""


@dataclass
class WorldImages:
    """Images with what is visible in them: refs (ids), uint8 (H, W, 3) images, objects, and
    referring points (x, y, what is there) for the instruct phase."""

    refs: list[str]
    images: list[np.ndarray]
    objects: list[list[tuple[str, str]]]
    points: list[list[Point]]

    def add(
        self,
        ref: str,
        *,
        rgb: np.ndarray,
        instances: np.ndarray,
        depth: np.ndarray,
        annotation: dict[str, Any],
        cfg: SpatialBoostConfig,
        rng: np.random.Generator,
    ) -> None:
        min_px = cfg.bootstrap.encoder.min_visible_px
        self.refs.append(ref)
        self.images.append(rgb)
        self.objects.append(visible_objects(annotation, min_px))
        self.points.append(referring_points(instances, depth, annotation, rng, cfg.bootstrap.point_questions, min_px))

    def lookup(self) -> dict[str, np.ndarray]:
        return dict(zip(self.refs, self.images, strict=True))


def run_bootstrap_stage(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """The `bootstrap` stage, what `spatialboost bootstrap run` and flows/bootstrap.py both run:
    with bootstrap.enabled false (the paper profile) a SKIPPED.json marker and metrics saying why;
    with bootstrap.release set that release, verified against the configured recipe, installed
    into bootstrap.output; else the recipe trained there. Returns metrics/bootstrap.json."""
    reason = skip_reason(cfg, "bootstrap")
    if reason:
        return mark_skipped(cfg.bootstrap.output, "bootstrap", reason)
    if cfg.bootstrap.release:
        return install_release(cfg, cfg.bootstrap.release, cfg.bootstrap.output)
    return run_bootstrap(cfg, cfg.bootstrap.output, progress=True)


def run_bootstrap(
    cfg: SpatialBoostConfig, out_dir: str | Path, progress: bool = True, tracker: MetricsLogger | None = None
) -> dict[str, Any]:
    """Pre-train encoder, tokenizer + LLM, then align and instruct (see the module docstring).

    Deterministic by cfg.bootstrap.seed (and the world seed); returns the metrics it writes.
    """
    if not cfg.bootstrap.enabled:
        raise ValueError("bootstrap.enabled is false: this profile loads released weights instead")
    run = BootstrapRun(cfg, Path(out_dir), progress, tracker)
    run.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch_threads(cfg.bootstrap.num_threads):
        with run.timed("data"):
            train_images = pretraining_images(cfg)
            test_images = split_images(cfg, "test", cfg.bootstrap.eval_scenes)
            run.metrics["data"] = {"pretrain_images": len(train_images.refs), "test_images": len(test_images.refs)}
        encoder = run.encoder_phase(train_images, test_images)
        records = conversation_records(cfg, train_images)
        with run.timed("spatial_text"):
            spatial = spatial_conversations(cfg, spatial_text_samples(cfg))
            spatial_text = [text for text, _, _ in spatial]
            records["language"] += spatial_text
            # instruct: with their images (spatial_images) the LLM + projector learn to read the frozen
            # encoder's tokens for spatial answers, as LLaVA does on its mix's spatial QA; else text only
            records["instruct"] += [image for _, image, _ in spatial] if cfg.bootstrap.spatial_images else spatial_text
            run.metrics["data"] |= {"spatial_text_scenes": cfg.bootstrap.spatial_text_scenes,  # the rest: quarantined or empty
                                    "spatial_text_conversations": len(spatial_text)}  # fmt: skip
        tokenizer = run.tokenizer_phase(records)
        vlm = new_vlm(cfg, encoder, tokenizer)
        images = {**train_images.lookup(), **test_images.lookup(), **{rec["image"]: rgb for _, rec, rgb in spatial}}
        run.language_phase(vlm, tokenizer, records["language"])
        run.align_phase(vlm, tokenizer, records["align"], images, test_images)
        run.instruct_phase(vlm, tokenizer, records["instruct"], images, test_images)
    run.metrics["wall_s"] = round(time.perf_counter() - start, 2)
    write_json_atomic(run.out / "metrics.json", run.metrics)
    return run.metrics


# --- data ----------------------------------------------------------------------------------------


def pretraining_images(cfg: SpatialBoostConfig) -> WorldImages:
    """The world's train split (read from cfg.world.root) plus cfg.bootstrap.extra_scenes scenes
    rendered in memory with the world's params under their own split name and seed."""
    images = split_images(cfg, "train", None)
    world = cfg.world.model_copy(update={"seed": cfg.world.seed + 7919 * (cfg.bootstrap.seed + 1)})
    rng = np.random.default_rng([cfg.bootstrap.seed, 6, 1])
    for index in range(cfg.bootstrap.extra_scenes):
        ref = f"{EXTRA_SPLIT}-{index:06d}"
        rendering, annotation = render_image(world, EXTRA_SPLIT, index, ref)
        images.add(
            ref,
            rgb=rendering.rgb,
            instances=rendering.instances,
            depth=rendering.depth,
            annotation=annotation,
            cfg=cfg,
            rng=rng,
        )
    return images


def spatial_text_samples(cfg: SpatialBoostConfig) -> Iterator[RGBDSample]:
    """cfg.bootstrap.spatial_text_scenes scenes rendered in memory under their own split name
    and seed (neither the world's splits nor the encoder's extra scenes): their spatial
    conversations are read as text only (spatial_text.py)."""
    world = cfg.world.model_copy(update={"seed": cfg.world.seed + 7919 * (cfg.bootstrap.seed + 1) + 1})
    for index in range(cfg.bootstrap.spatial_text_scenes):
        ref = f"{SPATIAL_TEXT_SPLIT}-{index:06d}"
        rendering, annotation = render_image(world, SPATIAL_TEXT_SPLIT, index, ref)
        yield rendered_sample(ref, SPATIAL_TEXT_SPLIT, rendering, annotation)


def split_images(cfg: SpatialBoostConfig, split: str, limit: int | None) -> WorldImages:
    """The first `limit` images (all when None) of a split of the world dataset at cfg.world.root."""
    dataset = RGBDDataset(cfg.world.root)
    rng = np.random.default_rng([cfg.bootstrap.seed, 6, 0 if split == "train" else 2])
    images = WorldImages([], [], [], [])
    for image_id in dataset.ids(split)[:limit]:
        s = dataset.sample(image_id)
        images.add(
            dataset.row(image_id).rgb,
            rgb=s.rgb,
            instances=s.instances,
            depth=s.depth,
            annotation=s.annotation,
            cfg=cfg,
            rng=rng,
        )
    return images


def conversation_records(cfg: SpatialBoostConfig, images: WorldImages) -> dict[str, list[dict[str, Any]]]:
    """Each phase's conversations, each from its own seeded stream.

    align: one caption conversation per image. instruct: one non-spatial QA conversation per
    image, plus the text-only spatial-language ones. language: the text of all of them without
    the images (what the LLM reads before it sees any image), plus more spatial-language ones.
    """
    seed, n_language = cfg.bootstrap.seed, cfg.bootstrap.language_conversations
    marks = cfg.synthesize.point_refs == "marks"  # refer to points as the boost stage's conversations will
    captions, questions = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    language = np.random.default_rng([seed, 3])
    align = [caption_record(ref, objects, captions) for ref, objects in zip(images.refs, images.objects, strict=True)]
    instruct = [
        instruct_record(ref, objects, questions, cfg.bootstrap.questions_per_image, points, marks)[0]
        for ref, objects, points in zip(images.refs, images.objects, images.points, strict=True)
    ]
    mark_rng = np.random.default_rng([seed, 7])
    marked = [  # image-only: their text alone answers nothing, so they stay out of the language phase
        mark_record(ref, points[j % len(points)], mark_rng, j)
        for ref, points in zip(images.refs, images.points, strict=True) if marks and points
        for j in range(cfg.bootstrap.mark_conversations)
    ]  # fmt: skip
    spatial_language = [language_record(language, i) for i in range(2 * n_language)]
    image_text = align + instruct if cfg.bootstrap.language_image_text else []
    text_only = [{k: v for k, v in r.items() if k != "image"} | {"conversations": _without_image(r)} for r in image_text]
    return {
        "language": text_only + spatial_language[n_language:],
        "align": align,
        "instruct": instruct + marked + spatial_language[:n_language],
    }


def _without_image(record: dict[str, Any]) -> list[dict[str, str]]:
    return [{**turn, "value": turn["value"].replace(f"{IMAGE_TOKEN}\n", "")} for turn in record["conversations"]]


# --- phases --------------------------------------------------------------------------------------


@dataclass
class BootstrapRun:
    """One bootstrap run: where it writes, how it reports, and the metrics it collects."""

    cfg: SpatialBoostConfig
    out: Path
    progress: bool = True
    tracker: MetricsLogger | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.metrics.setdefault("wall_s_by_phase", {})[name] = round(time.perf_counter() - start, 2)

    def encoder_phase(self, train_images: WorldImages, test_images: WorldImages) -> Dinov2Encoder:
        """(a): multi-label pre-training; test-split F1; saved as a transformers checkpoint."""
        enc_cfg, seed = self.cfg.bootstrap.encoder, self.cfg.bootstrap.seed
        with self.timed("encoder"):
            encoder = build_encoder(enc_cfg, seed)
            head = new_head(encoder, seed + 1)
            pixels, targets = _pixels_and_targets(encoder, train_images)
            batch = min(enc_cfg.batch_size, len(pixels))
            loop_cfg = TrainConfig(
                stage="align",  # unused by fit: the objective decides what trains
                seed=seed,
                epochs=enc_cfg.epochs,
                lr=enc_cfg.lr,
                global_batch_size=batch,
                micro_batch_size=batch,
                warmup_ratio=enc_cfg.warmup_ratio,
                weight_decay=enc_cfg.weight_decay,
                checkpoint_every=enc_cfg.checkpoint_every,
            )
            result = pretrain_encoder(
                encoder,
                head,
                pixels=pixels,
                targets=targets,
                cfg=loop_cfg,
                out_dir=self.out / "runs" / "encoder",
                tracker=self.tracker,
                progress=self.progress,
            )
            self.metrics["encoder"] = {
                **_summary(result),
                "parameters": sum(p.numel() for p in encoder.parameters()),
                "train": multilabel_scores(encoder, head, pixels, targets),
            }
            if test_images.refs:
                test_pixels, test_targets = _pixels_and_targets(encoder, test_images)
                self.metrics["encoder"]["test"] = multilabel_scores(encoder, head, test_pixels, test_targets)
                self.metrics["encoder"]["test_label_rate"] = float(test_targets.mean())
            encoder.requires_grad_(False)
            save_hf_encoder(encoder, self.out / "encoder")
        return encoder

    def tokenizer_phase(self, records: dict[str, list[dict[str, Any]]]) -> PreTrainedTokenizerBase:
        """(b): byte-level BPE on every text the LLM will train on + the spatial templates."""
        with self.timed("tokenizer"):
            texts = [r for phase in records.values() for r in phase]
            corpus = tokenizer_corpus(texts, np.random.default_rng([self.cfg.bootstrap.seed, 4]))
            tokenizer = train_tokenizer(corpus, self.cfg.bootstrap.llm.vocab_size, self.out / "tokenizer")
            self.metrics["tokenizer"] = {"vocab_size": len(tokenizer), "corpus_texts": len(corpus)}
        return tokenizer

    def language_phase(self, vlm: SpatialVLM, tokenizer: PreTrainedTokenizerBase, records: list[dict[str, Any]]) -> None:
        """(b): the LLM learns the language of its conversations, text only (no image yet)."""
        with self.timed("language"):
            self.metrics["language"] = self._train(
                vlm, tokenizer, records, images={}, phase=self.cfg.bootstrap.language, stage="instruct", name="language"
            )

    def align_phase(
        self,
        vlm: SpatialVLM,
        tokenizer: PreTrainedTokenizerBase,
        records: list[dict[str, Any]],
        images: dict[str, np.ndarray],
        test_images: WorldImages,
    ) -> None:
        """(c): projector only, on captions; caption exact-match on the test split."""
        with self.timed("align"):
            result = self._train(
                vlm, tokenizer, records, images=images, phase=self.cfg.bootstrap.align, stage="align", name="align"
            )
            items = [(ref, CAPTION_PROMPTS[0], caption(objects), "caption", ())
                     for ref, objects in zip(test_images.refs, test_images.objects, strict=True)]  # fmt: skip
            self.metrics["align"] = {**result, "test": exact_match(vlm, tokenizer, items, images)}
            vlm.save(self.out / "vlm_align")

    def instruct_phase(
        self,
        vlm: SpatialVLM,
        tokenizer: PreTrainedTokenizerBase,
        records: list[dict[str, Any]],
        images: dict[str, np.ndarray],
        test_images: WorldImages,
    ) -> None:
        """(d): projector + LLM on non-spatial QA; exact-match on held-out questions; the saved VLM."""
        with self.timed("instruct"):
            result = self._train(
                vlm,
                tokenizer,
                records,
                images=images,
                phase=self.cfg.bootstrap.instruct,
                stage="instruct",
                name="instruct",
            )
            items = held_out_questions(self.cfg, test_images)
            self.metrics["instruct"] = {**result, "test": exact_match(vlm, tokenizer, items, images)}
            vlm.save(self.out / "vlm")
            tokenizer.save_pretrained(self.out / "vlm" / "language_model")

    def _train(
        self,
        vlm: SpatialVLM,
        tokenizer: PreTrainedTokenizerBase,
        records: list[dict[str, Any]],
        *,
        images: dict[str, np.ndarray],
        phase: BootstrapPhase,
        stage: str,
        name: str,
    ) -> dict[str, Any]:
        loop_cfg = phase_loop_config(phase, stage, self.cfg.bootstrap.seed)
        dataset = ConversationDataset(
            records,
            tokenizer,
            vlm.encoder.preprocess,
            max_length=loop_cfg.max_length,
            image_loader=images.__getitem__,
            cache_images=True,
        )
        result = train(
            vlm, dataset, loop_cfg, self.out / "runs" / name, tracker=self.tracker, progress=self.progress, name=name
        )
        return {**_summary(result), "conversations": len(records), "n_trainable": result.trainable["n_trainable"]}


def new_vlm(cfg: SpatialBoostConfig, encoder: VisionEncoder, tokenizer: PreTrainedTokenizerBase) -> SpatialVLM:
    """Encoder + fresh projector + a random LlamaForCausalLM over the tokenizer's vocabulary."""
    llm_cfg = cfg.bootstrap.llm
    torch.manual_seed(cfg.bootstrap.seed + 2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=llm_cfg.hidden_size,
        intermediate_size=llm_cfg.intermediate_size,
        num_hidden_layers=llm_cfg.num_layers,
        num_attention_heads=llm_cfg.num_heads,
        num_key_value_heads=llm_cfg.num_heads,
        max_position_embeddings=llm_cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return SpatialVLM(encoder, LlamaForCausalLM(config), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def _pixels_and_targets(encoder: VisionEncoder, images: WorldImages) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = encoder.preprocess(images.images)  # (N, 3, S, S)
    targets = torch.from_numpy(np.stack([multilabel_targets(o) for o in images.objects]))  # (N, L)
    return pixels, targets


def _summary(result: TrainResult) -> dict[str, Any]:
    return {"steps": result.steps, "first_loss": result.losses[0], "final_loss": result.final_loss,
            "train_wall_s": round(result.wall_s, 2)}  # fmt: skip


def phase_loop_config(phase: BootstrapPhase, stage: Literal["align", "instruct"], seed: int) -> TrainConfig:
    """The loop settings of a bootstrap phase: its own values; everything else the loop's schema
    defaults (not the `train` section's: a boost setting never changes, or reruns, the bootstrap)."""
    return TrainConfig(
        stage=stage,
        seed=seed,
        epochs=phase.epochs,
        max_steps=phase.max_steps,
        lr=phase.lr,
        global_batch_size=phase.global_batch_size,
        micro_batch_size=phase.micro_batch_size,
        warmup_ratio=phase.warmup_ratio,
        weight_decay=phase.weight_decay,
        max_length=phase.max_length,
        checkpoint_every=phase.checkpoint_every,
        group_by_length=True,  # captions, QA and 10-turn text mix
    )


# --- held-out evaluation ---------------------------------------------------------------------------


def held_out_questions(cfg: SpatialBoostConfig, test_images: WorldImages) -> list[HeldOut]:
    """(image ref, question, answer, kind, marks): up to questions_per_image non-spatial
    questions per test image (one of each kind first) and its referring points, from their own
    seeded stream; marks: what to draw on the image (point_refs = marks), else ()."""
    rng = np.random.default_rng([cfg.bootstrap.seed, 5])
    marks = cfg.synthesize.point_refs == "marks"
    items = []
    for ref, objects, points in zip(test_images.refs, test_images.objects, test_images.points, strict=True):
        record, asked = instruct_record(ref, objects, rng, cfg.bootstrap.questions_per_image, points, marks)
        items += [(ref, q, a, kind, tuple(marks_of(record.get("marks")))) for q, a, kind in asked]
    return items


@torch.no_grad()
def exact_match(
    vlm: SpatialVLM,
    tokenizer: PreTrainedTokenizerBase,
    items: list[HeldOut],
    images: dict[str, np.ndarray],
    batch_size: int = 64,
    max_new_tokens: int = 40,
) -> dict[str, Any]:
    """Greedy single-turn answers to (image ref, question, answer, kind, marks) items (marks
    drawn on the image); exact match of the stripped text, overall and per kind, and a few
    examples."""
    if not items:
        return {}
    vlm.eval()
    correct: dict[str, list[bool]] = {}
    examples = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        prompts = [(draw_marks(images[ref], marks), q) for ref, q, _, _, marks in chunk]
        answers = generate_answers(vlm, tokenizer, prompts, max_new_tokens)
        for (_, question, truth, kind, _), answer in zip(chunk, answers, strict=True):
            correct.setdefault(kind, []).append(answer == truth)
            if len(examples) < 6:
                examples.append({"question": question, "truth": truth, "answer": answer})
    every = [ok for oks in correct.values() for ok in oks]
    return {
        "exact_match": float(np.mean(every)),
        "n": len(every),
        "by_kind": {kind: float(np.mean(oks)) for kind, oks in sorted(correct.items())},
        "examples": examples,
    }


def generate_answers(
    vlm: SpatialVLM, tokenizer: PreTrainedTokenizerBase, items: list[tuple[np.ndarray, str]], max_new_tokens: int
) -> list[str]:
    """Greedy answers to single-turn (image, question) prompts, decoded and stripped."""
    prompts = [build_generation_prompt([{"role": "user", "content": q}], tokenizer) for _, q in items]
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)], mask[row, : len(prompt)] = prompt, 1
    pixels = vlm.encoder.preprocess([image for image, _ in items])
    device = vlm.encoder.device
    out = vlm.generate(ids.to(device), pixels.to(device), mask.to(device), max_new_tokens=max_new_tokens)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


# --- helpers -------------------------------------------------------------------------------------------
