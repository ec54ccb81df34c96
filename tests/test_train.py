"""The one SFT loop: what trains per stage and adapter (tensor hashes), overfitting, exact resume,
checkpoint files, the data order, the schedule and the batch format. Tiny models, CPU, fp32."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spatialboost.config import ConfigError, TrainConfig, validate_config
from spatialboost.models.dual_channel import add_dual_channel, dual_channel_layers, gate_values, is_dual_channel
from spatialboost.models.export import load_encoder
from spatialboost.models.tokenizer import IGNORE_INDEX
from spatialboost.models.vlm import SpatialVLM
from spatialboost.runtime import torch_threads
from spatialboost.train import ConversationDataset, SFTCollator, load_conversations, merge_lora, prepare_stage, train
from spatialboost.train.adapters import has_lora
from spatialboost.train.distributed import GlobalBatchSampler, global_batches, rank_micro_batches
from spatialboost.train.optim import WarmupCosine
from spatialboost.train.stage import run_train_stage
from tests.tiny_vlm import save_tiny_llava, tiny_vlm, train_tiny_tokenizer
from tests.train_fixtures import changed, tensor_hashes, train_cfg, write_conversations


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices on a shared 2-core machine: one thread is ~10x faster than two (no OpenMP spinning)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def conversations(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("conversations")
    return folder, write_conversations(folder, 8)


def _dataset(vlm, tokenizer, conversations, n: int = 8) -> ConversationDataset:
    folder, records = conversations
    return ConversationDataset(records[:n], tokenizer, vlm.encoder.preprocess, image_root=folder, max_length=256)


def _split(names: set[str], prefix: str) -> set[str]:
    return {n for n in names if n.startswith(prefix)}


# --- what trains --------------------------------------------------------------------------------


@pytest.mark.parametrize("train_projector", [True, False])
def test_boost_changes_only_attn_plus_gates_and_the_flagged_projector(tokenizer, conversations, tmp_path, train_projector):
    vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-1)
    add_dual_channel(vlm.encoder)  # before hashing: Attn+ starts as a copy of Attn
    before = tensor_hashes(vlm)
    result = train(vlm, _dataset(vlm, tokenizer, conversations), train_cfg(train_projector=train_projector), tmp_path, progress=False)
    moved = changed(before, tensor_hashes(vlm))

    names = set(before)
    plus = {n for n in names if ".attn_plus." in n or n.endswith(".gate")}
    assert len(plus) == 2 * 9  # per block: q, k, v, o (weight + bias) and the gate
    assert moved & plus == plus, sorted(plus - moved)  # every Attn+ tensor and gate moved (gates from step 2 on)
    projector = _split(names, "projector.")
    assert (moved & projector == projector) if train_projector else not (moved & projector)
    assert moved <= plus | projector, sorted(moved - plus - projector)[:5]
    assert not _split(moved, "language_model.")  # LLM bit-identical
    assert not {n for n in moved if ".attention.attn." in n}  # the original attention bit-identical
    assert (gate_values(vlm.encoder) != 0.5).any()
    assert result.trainable["adapter"] == "dual_channel" and result.steps == 3


def test_align_changes_only_the_projector(tokenizer, conversations, tmp_path):
    vlm = tiny_vlm(tokenizer, "clip")
    before = tensor_hashes(vlm)
    train(vlm, _dataset(vlm, tokenizer, conversations), train_cfg(stage="align"), tmp_path, progress=False)
    moved = changed(before, tensor_hashes(vlm))
    assert moved == _split(set(before), "projector.")


def test_instruct_changes_projector_and_llm_not_the_encoder(tokenizer, conversations, tmp_path):
    vlm = tiny_vlm(tokenizer, "siglip")
    before = tensor_hashes(vlm)
    train(vlm, _dataset(vlm, tokenizer, conversations), train_cfg(stage="instruct"), tmp_path, progress=False)
    moved = changed(before, tensor_hashes(vlm))
    params = {n for n, _ in vlm.named_parameters()}
    expected = _split(params, "projector.") | _split(params, "language_model.")
    assert moved == expected, sorted(moved ^ expected)[:5]


def test_full_finetuning_changes_every_reachable_encoder_tensor_only(tokenizer, conversations, tmp_path):
    vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-2)  # LLaVA's choice: the last block feeds nothing
    before = tensor_hashes(vlm)
    cfg = train_cfg(adapter="full", train_projector=False)
    result = train(vlm, _dataset(vlm, tokenizer, conversations), cfg, tmp_path, progress=False)
    moved = changed(before, tensor_hashes(vlm))

    params = {n for n, _ in vlm.named_parameters()}
    unreachable = {f"encoder.{n}" for n in result.trainable["unreachable"]}
    assert "encoder.model.embeddings.mask_token" in unreachable
    assert "encoder.model.layernorm.weight" in unreachable
    assert all(n in unreachable for n in params if n.startswith("encoder.model.encoder.layer.1."))
    assert moved == _split(params, "encoder.") - unreachable, sorted(moved ^ (_split(params, "encoder.") - unreachable))[:5]


def test_lora_changes_only_lora_weights_and_merges_back(tokenizer, conversations, tmp_path):
    torch.manual_seed(0)
    vlm = tiny_vlm(tokenizer, "clip", feature_layer=-1)
    before = tensor_hashes(vlm)
    cfg = train_cfg(adapter="lora", train_projector=False, lora={"r": 4, "alpha": 8.0})
    train(vlm, _dataset(vlm, tokenizer, conversations), cfg, tmp_path, progress=False)
    after = tensor_hashes(vlm)
    lora = {n for n in after if "lora_" in n}
    assert len(lora) == 2 * 2 * 4  # 2 blocks x (q, k, v, out) x (A, B)
    assert all(before[n.replace(".base_layer", "")] == after[n] for n in after if ".base_layer." in n)  # base frozen
    unchanged = {n for n in set(after) - lora if ".base_layer." not in n}
    assert all(before[n] == after[n] for n in unchanged)  # LLM, projector, rest of the encoder
    assert all(before.get(n) != after[n] for n in lora)

    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        adapted = vlm.encoder(pixels).patch_tokens
        assert merge_lora(vlm.encoder) == 8 and not has_lora(vlm.encoder)
        merged = vlm.encoder(pixels).patch_tokens
    assert set(tensor_hashes(vlm)) == set(before)  # plain names again: exports like any encoder
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert changed(before, tensor_hashes(vlm)) == {
        f"encoder.model.encoder.layers.{i}.self_attn.{p}_proj.weight" for i in range(2) for p in ("q", "k", "v", "out")
    }


# --- learning, resume, checkpoints ------------------------------------------------------------


def test_loss_falls_when_overfitting_four_conversations(tokenizer, conversations, tmp_path):
    vlm = tiny_vlm(tokenizer, "dinov2")
    cfg = train_cfg(stage="instruct", max_steps=40, lr=5e-3, warmup_ratio=0.1)
    result = train(vlm, _dataset(vlm, tokenizer, conversations, n=4), cfg, tmp_path, progress=False)
    assert len(result.losses) == 40
    assert result.losses[-1] < 0.5 * result.losses[0], (result.losses[0], result.losses[-1])


def test_resumed_run_reproduces_the_uninterrupted_run_exactly(tokenizer, conversations, tmp_path):
    # 8 conversations, 4 per step, 2 micro-batches: 2 steps per epoch, 7 steps cross 3 epoch boundaries
    cfg = train_cfg(max_steps=7, checkpoint_every=2, keep_checkpoints=2, lr=3e-3, warmup_ratio=0.2)

    def run(out: Path, stop: int | None = None):
        vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-1)
        return vlm, train(vlm, _dataset(vlm, tokenizer, conversations), cfg, out, progress=False, stop_after_steps=stop)

    whole_vlm, whole = run(tmp_path / "whole")
    _, first = run(tmp_path / "split", stop=5)  # "killed" after step 5: the latest checkpoint is step 4
    assert first.steps == 5 and first.losses == whole.losses[:5]
    resumed_vlm, resumed = run(tmp_path / "split")
    assert resumed.resumed_from == 4
    assert resumed.losses == whole.losses  # exact, step for step (steps 1-4 restored, 5-7 recomputed)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in whole.history]
    assert tensor_hashes(resumed_vlm) == tensor_hashes(whole_vlm)

    # litgpt-style check of what is on disk
    root = tmp_path / "split" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-000006", "step-000007"]
    assert json.loads((root / "latest.json").read_text()) == {"step": 7, "path": "step-000007"}
    files = sorted(p.name for p in (root / "step-000007").iterdir())
    assert files == ["optimizer.pt", "rng-rank0.pt", "scheduler.pt", "trainable.safetensors", "trainer_state.json"]
    saved = load_file(root / "step-000007" / "trainable.safetensors")
    trainable = {f"vlm.{n}": p for n, p in resumed_vlm.named_parameters() if p.requires_grad}
    assert set(saved) == set(trainable)
    assert sum(t.numel() for t in saved.values()) == resumed.trainable["n_trainable"]
    assert all(torch.equal(saved[n], p.detach()) for n, p in trainable.items())
    state = json.loads((root / "step-000007" / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["step_in_epoch"], state["sampler_seed"]) == (7, 3, 1, 0)
    assert (tmp_path / "split" / "boost_result.json").exists()


def test_checkpoint_of_another_run_is_refused(tokenizer, conversations, tmp_path):
    vlm = tiny_vlm(tokenizer, "dinov2")
    train(vlm, _dataset(vlm, tokenizer, conversations), train_cfg(stage="align", max_steps=1), tmp_path, progress=False)
    vlm = tiny_vlm(tokenizer, "dinov2")
    with pytest.raises(ValueError, match=r"another run .*stage: 'align' -> 'instruct'"):
        train(vlm, _dataset(vlm, tokenizer, conversations), train_cfg(stage="instruct", max_steps=1), tmp_path, progress=False)


def test_metrics_reach_the_tracker(tokenizer, conversations, tmp_path):
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[dict, int]] = []

        def log_metrics(self, metrics: dict, step: int = 0) -> None:
            self.calls.append((dict(metrics), step))

    tracker = Recorder()
    vlm = tiny_vlm(tokenizer, "dinov2")
    result = train(vlm, _dataset(vlm, tokenizer, conversations), train_cfg(stage="align", max_steps=2), tmp_path,
                   tracker=tracker, progress=False)
    assert [step for _, step in tracker.calls] == [1, 2]
    assert set(tracker.calls[0][0]) == {"align.loss", "align.lr", "align.grad_norm", "align.tokens_per_s"}
    assert tracker.calls[1][0]["align.loss"] == result.losses[1]


def test_gradient_checkpointing_gives_the_same_step(tokenizer, conversations, tmp_path):
    losses = []
    for flag in (False, True):
        vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-1)
        cfg = train_cfg(max_steps=2, gradient_checkpointing=flag)
        losses.append(train(vlm, _dataset(vlm, tokenizer, conversations), cfg, tmp_path / str(flag), progress=False).losses)
        assert vlm.language_model.is_activation_checkpointing == flag
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


# --- data order, schedule, batches ------------------------------------------------------------


def test_global_batches_do_not_depend_on_the_number_of_processes():
    n, global_batch = 50, 8
    for epoch in range(3):
        batches = global_batches(n, global_batch, seed=3, epoch=epoch)
        assert len(batches) == 6 and all(len(b) == 8 for b in batches) and len({i for b in batches for i in b}) == 48
        for world in (1, 2, 4):
            for batch in batches:
                parts = [rank_micro_batches(batch, 2, rank, world) for rank in range(world)]
                assert [i for part in parts for micro in part for i in micro] == batch
    assert global_batches(n, global_batch, 3, 0) != global_batches(n, global_batch, 3, 1)  # reshuffled per epoch
    assert global_batches(n, global_batch, 3, 1) == global_batches(n, global_batch, 3, 1)  # deterministic
    with pytest.raises(ValueError, match="does not split"):
        rank_micro_batches(list(range(8)), 3, 0, 2)


def test_sampler_resumes_mid_epoch():
    sampler = GlobalBatchSampler(20, global_batch=8, micro_batch=2, rank=1, world_size=2, seed=0)
    assert (sampler.steps_per_epoch, sampler.accumulation_steps) == (2, 2)
    full = list(sampler)
    sampler.set_position(0, 1)
    assert list(sampler) == full[2:] and len(sampler) == 2
    with pytest.raises(ValueError, match="fewer than one global batch"):
        GlobalBatchSampler(5, global_batch=8, micro_batch=2, rank=0, world_size=1, seed=0)


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(total_steps=10, warmup_steps=2, min_ratio=0.1)
    values = [schedule(s) for s in range(10)]
    assert values[:2] == [0.5, 1.0]
    assert values[2] == pytest.approx(1.0) and all(a > b for a, b in zip(values[2:], values[3:], strict=False))
    assert schedule(10) == pytest.approx(0.1)


def test_collator_pads_right_and_keeps_image_order(tokenizer, conversations):
    vlm = tiny_vlm(tokenizer, "dinov2")
    folder, records = conversations
    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    dataset = ConversationDataset([records[0], text_only, records[1]], tokenizer, vlm.encoder.preprocess, image_root=folder)
    examples = [dataset[i] for i in range(3)]
    batch = SFTCollator(tokenizer.pad_token_id)(examples)
    lengths = [len(e.input_ids) for e in examples]
    assert batch.input_ids.shape == (3, max(lengths))
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert (batch.labels[batch.attention_mask == 0] == IGNORE_INDEX).all()
    assert torch.equal(batch.pixel_values, torch.cat([examples[0].pixel_values, examples[2].pixel_values]))
    assert batch.n_targets == int((batch.labels[:, 1:] != IGNORE_INDEX).sum()) > 0
    assert examples[1].pixel_values is None
    out = vlm(**batch.inputs(torch.device("cpu")))  # the model accepts the batch as is
    assert torch.isfinite(out.loss)


def test_load_conversations_reads_json_jsonl_and_folders(conversations, tmp_path):
    _, records = conversations
    (tmp_path / "a.json").write_text(json.dumps(records[:3]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records[3:5]))
    assert load_conversations(tmp_path / "a.json") == records[:3]
    assert load_conversations(tmp_path / "b.jsonl") == records[3:5]
    assert load_conversations(tmp_path) == records[:3]  # a folder: its .json lists


def test_prepare_stage_is_idempotent_for_dual_channel(tokenizer):
    vlm = tiny_vlm(tokenizer, "clip", feature_layer=-2)
    report = prepare_stage(vlm, TrainConfig(stage="boost"))
    assert len(dual_channel_layers(vlm.encoder)) == 2
    assert any(".layers.1." in n for n in report.unreachable)  # the last block does not feed the projector
    again = prepare_stage(vlm, TrainConfig(stage="boost"))
    assert again.trainable == report.trainable


def test_train_config_explains_bad_batches_and_adapters():
    with pytest.raises(ConfigError, match=r"train: global_batch_size 10 is not a multiple of micro_batch_size 4"):
        validate_config({"train": {"global_batch_size": 10, "micro_batch_size": 4}})
    with pytest.raises(ConfigError, match=r"adapter 'lora' applies to the boost stage only"):
        validate_config({"train": {"stage": "align", "adapter": "lora"}})
    with pytest.raises(ConfigError, match=r"bootstrap.encoder: image_size 60 is not a multiple of patch_size 8"):
        validate_config({"bootstrap": {"encoder": {"image_size": 60}}})


def test_train_stage_from_a_llava_checkpoint_then_from_its_own_output(tokenizer, conversations, tmp_path):
    folder, records = conversations
    (tmp_path / "data.json").write_text(json.dumps(records))
    llava = save_tiny_llava(tmp_path / "llava", tokenizer)

    def stage(init: Path, output: Path, adapter: str):
        train = {"init": str(init), "data": str(tmp_path / "data.json"), "image_root": str(folder), "output": str(output),
                 "adapter": adapter, "max_steps": 2, "global_batch_size": 4, "micro_batch_size": 2,
                 "checkpoint_every": 0, "max_length": 256, "lora": {"r": 2}}  # fmt: skip
        return run_train_stage(validate_config({"device": "cpu", "train": train}), progress=False)

    result = stage(llava, tmp_path / "lora", "lora")  # LLaVA-1.5's own loading path, the LoRA ablation
    assert result.steps == 2 and result.trainable["adapter"] == "lora"
    encoder = load_encoder(tmp_path / "lora" / "encoder")  # merged: a plain encoder again
    assert not has_lora(encoder) and not is_dual_channel(encoder) and encoder.family == "clip"

    stage(tmp_path / "lora" / "vlm", tmp_path / "boosted", "dual_channel")  # a SpatialVLM folder as init
    assert is_dual_channel(load_encoder(tmp_path / "boosted" / "encoder"))
    assert is_dual_channel(SpatialVLM.load(tmp_path / "boosted" / "vlm").encoder)


def test_held_out_scenes_never_reach_training(tmp_path) -> None:
    from spatialboost.config import WorldConfig
    from spatialboost.train.stage import split_conversations
    from spatialboost.world import render_dataset

    root = tmp_path / "world"
    render_dataset(WorldConfig(n_train=3, n_test=2, width=32, height=32), root, progress=False)
    records = [{"id": f"{split}-{i:06d}"} for split, n in (("train", 3), ("test", 2)) for i in range(n)]
    assert [r["id"] for r in split_conversations(records, root, "train")] == [f"train-{i:06d}" for i in range(3)]
    assert split_conversations(records, root, None) == records
    single_turn = [{"id": f"{split}-{i:06d}-t00", "image": f"rgb/{split}-{i:06d}.png"} for split, i in (("train", 1), ("test", 0))]
    assert split_conversations(single_turn, root, "train") == single_turn[:1]
    assert split_conversations(records, tmp_path / "not-a-dataset", "train") == records


def test_data_scale_subsets_are_seeded_nested_and_never_silently_capped() -> None:
    from spatialboost.train.stage import subset_conversations

    records = [{"id": f"train-{i:06d}"} for i in range(40)]
    small, large = subset_conversations(records, 10, seed=3), subset_conversations(records, 25, seed=3)
    ids = [r["id"] for r in large]
    assert len(small) == 10 and len(large) == 25 and ids == sorted(ids) and len(set(ids)) == 25
    assert {r["id"] for r in small} <= set(ids)  # nested: the smaller scale is part of the larger
    assert subset_conversations(records, 10, seed=3) == small
    assert subset_conversations(records, 10, seed=4) != small
    assert subset_conversations(records, None, seed=3) == records
    with pytest.raises(ValueError, match="only 40 conversations"):
        subset_conversations(records, 41, seed=3)


def test_length_grouping_cuts_padding_and_keeps_epochs_exact_and_deterministic():
    rng = np.random.default_rng(0)
    n, global_batch = 640, 16
    lengths = [int(x) for x in np.where(rng.random(n) < 0.1, rng.integers(400, 500, n), rng.integers(20, 60, n))]

    def padded(batches):  # tokens a batch costs when padded to its longest example
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    plain = global_batches(n, global_batch, seed=3, epoch=0)
    grouped = global_batches(n, global_batch, seed=3, epoch=0, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == sorted(i for b in plain for i in b)  # same examples, once each
    assert all(len(b) == global_batch for b in grouped)
    assert padded(grouped) < 0.5 * padded(plain)  # 10% long examples: nearly every random batch has one
    assert grouped == global_batches(n, global_batch, seed=3, epoch=0, lengths=lengths)
    assert grouped != global_batches(n, global_batch, seed=3, epoch=1, lengths=lengths)
    with pytest.raises(ValueError, match="lengths"):
        global_batches(n, global_batch, seed=3, epoch=0, lengths=lengths[:-1])


def test_replicate_seeds_and_the_depth_control_each_train_their_own_folder(tokenizer, tmp_path) -> None:
    """train.replicate_seeds and train.control: one loop, one adapter; only the seed, the
    objective and the folder differ. The control changes the encoder's Attn+ only (its depth
    head is not part of the VLM), lowers its own loss, and the replicates differ by data order."""

    from spatialboost.config import WorldConfig
    from spatialboost.train.stage import planned_runs
    from spatialboost.world import render_dataset

    root = tmp_path / "world"
    render_dataset(WorldConfig(n_train=8, n_test=1, width=32, height=32, seed=2), root, progress=False)
    turns = [{"from": "human", "value": "<image>\nWhat is the depth at point A?"}, {"from": "gpt", "value": "It is 2.5 m."}]
    records = [{"id": f"train-{i:06d}", "image": f"rgb/train-{i:06d}.png", "conversations": turns} for i in range(8)]
    (tmp_path / "data.json").write_text(json.dumps(records))
    init = tmp_path / "init"
    tiny_vlm(tokenizer, "dinov2").save(init)
    tokenizer.save_pretrained(init / "language_model")
    train = {"init": str(init), "data": str(tmp_path / "data.json"), "image_root": str(root), "output": str(tmp_path / "b"),
             "max_steps": 6, "global_batch_size": 4, "micro_batch_size": 4, "checkpoint_every": 0, "max_length": 512,
             "lr": 1e-2, "replicate_seeds": [5], "control": True, "num_threads": 1}  # fmt: skip
    cfg = validate_config({"device": "cpu", "train": train})
    runs = planned_runs(cfg.train)
    assert [(r.seed, r.objective, Path(r.output).relative_to(tmp_path).as_posix()) for r in runs] == [
        (0, "sft", "b"), (5, "sft", "b/seeds/5"), (0, "depth", "b/control"), (5, "depth", "b/control/seeds/5")]
    run_train_stage(cfg, progress=False)
    before = SpatialVLM.load(init)
    for run in runs:
        vlm = SpatialVLM.load(Path(run.output) / "vlm")
        assert is_dual_channel(vlm.encoder)
        same_llm = all(torch.equal(a, b) for a, b in zip(vlm.language_model.state_dict().values(),
                                                          before.language_model.state_dict().values(), strict=True))  # fmt: skip
        assert same_llm  # the LLM is frozen in every run
        same_projector = all(torch.equal(a, b) for a, b in zip(vlm.projector.state_dict().values(),
                                                                before.projector.state_dict().values(), strict=True))  # fmt: skip
        assert same_projector == (run.objective == "depth")  # the control trains the encoder adapter only
    control = json.loads((tmp_path / "b" / "control" / "boost_depth_result.json").read_text())
    assert control["history"][-1]["loss"] < control["history"][0]["loss"]
    seed0 = load_file(tmp_path / "b" / "vlm" / "projector.safetensors")
    seed5 = load_file(tmp_path / "b" / "seeds" / "5" / "vlm" / "projector.safetensors")
    assert any(not torch.equal(seed0[k], seed5[k]) for k in seed0)
    with pytest.raises(ConfigError, match="must all differ"):
        validate_config({"train": {"seed": 1, "replicate_seeds": [1]}})
