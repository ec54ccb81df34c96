"""A new encoder inside LLaVA-1.5 (models/lvlm.py) and LLaVA-1.5's two stages for it
(train/lvlm_stage.py): every family through align -> instruct -> boost with tiny models saved in
the hub layout, what each stage trains, reuse by fingerprint, the pointer to a released LLaVA, and
the config rules of the encoder switch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spatialboost.config import ConfigError, SpatialBoostConfig, load_config
from spatialboost.hub import active_roles
from spatialboost.models.dual_channel import is_dual_channel
from spatialboost.models.export import load_encoder
from spatialboost.models.lvlm import (
    POINTER_FILE,
    build_lvlm,
    load_encoder_choice,
    load_language_model,
    resolve_lvlm_folder,
)
from spatialboost.models.tokenizer import IMAGE_TOKEN
from spatialboost.models.vlm import SpatialVLM
from spatialboost.runtime import torch_threads
from spatialboost.train.lvlm_stage import run_lvlm_stage
from spatialboost.train.stage import load_initial_model, run_train_stage
from tests.tiny_lvlm_hub import ENCODER_REPOS, save_encoder_repo, write_llava_data
from tests.tiny_models import save_openclip
from tests.tiny_vlm import NUM_PATCHES, random_images, save_tiny_llava, train_tiny_tokenizer
from tests.train_fixtures import changed, tensor_hashes, write_conversations

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ["openclip", "dinov2", "siglip", "dinov3", "siglip2"]  # every lvlm.encoder that trains
FAMILY = {"openclip": "open_clip", "dinov2": "dinov2", "siglip": "siglip", "dinov3": "dinov3", "siglip2": "siglip"}
PREFIX = {"openclip": 1, "dinov2": 1, "siglip": 0, "dinov3": 3, "siglip2": 0}  # CLS (+ the tiny DINOv3's 2 registers)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints of every encoder and of LLaVA-1.5, LLaVA-format data, boost conversations."""
    root = tmp_path_factory.mktemp("lvlm")
    paths = {"llava": save_tiny_llava(root / "llava", train_tiny_tokenizer(root / "tok"), seed=1)}
    paths["openclip"] = save_openclip(root / "openclip")[0]
    paths["openclip"].joinpath("open_clip_model.safetensors").rename(paths["openclip"] / "open_clip_pytorch_model.safetensors")
    for role in ENCODER_REPOS:
        paths[role] = save_encoder_repo(root / role, role)
    data = write_llava_data(root / "llava_data")
    paths |= {"pretrain": data.pretrain, "pretrain_images": data.pretrain_images, "mix": data.instruct,
              "mix_images": data.instruct_images, "qa_images": root / "qa"}  # fmt: skip
    (root / "qa.json").write_text(json.dumps(write_conversations(root / "qa", 4)))
    paths["qa"] = root / "qa.json"
    return paths


def lvlm_config(world: dict[str, Path], out: Path, encoder: str, *extra: str) -> SpatialBoostConfig:
    """The paper profile with lvlm.encoder=`encoder`, the tiny checkpoints and data, CPU sizes."""
    phases: list[str] = []
    for phase, data, images in (("align", "pretrain", "pretrain_images"), ("instruct", "mix", "mix_images")):
        phases += [f"lvlm.{phase}.data={world[data]}", f"lvlm.{phase}.image_root={world[images]}",
                   f"lvlm.{phase}.output={out / phase}", f"lvlm.{phase}.global_batch_size=4",
                   f"lvlm.{phase}.micro_batch_size=2", f"lvlm.{phase}.max_steps=2", f"lvlm.{phase}.precision=fp32",
                   f"lvlm.{phase}.num_workers=0", f"lvlm.{phase}.gradient_checkpointing=false",
                   f"lvlm.{phase}.strategy=ddp", f"lvlm.{phase}.max_length=256", f"lvlm.{phase}.checkpoint_every=0"]  # fmt: skip
    path = world["llava"] if encoder == "llava" else world[encoder]
    overrides = [
        "device=cpu", "orchestration.train_nproc_per_node=1", f"lvlm.encoder={encoder}",
        f"lvlm.encoders.{encoder}.path={path}", f"lvlm.language_model={world['llava']}", f"train.init={out / 'instruct'}",
        f"train.data={world['qa']}", f"train.image_root={world['qa_images']}", f"train.output={out / 'boosted'}",
        "train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=2", "train.precision=fp32",
        "train.num_workers=0", "train.gradient_checkpointing=false", "train.max_length=256", "train.checkpoint_every=0",
        *phases, *extra,
    ]  # fmt: skip
    return load_config(ROOT / "configs" / "paper.yaml", overrides)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_goes_through_align_instruct_and_boost(world, tmp_path: Path, encoder: str) -> None:
    cfg = lvlm_config(world, tmp_path, encoder)
    choice = cfg.lvlm.chosen()
    assert choice.feature_layer == -2 and cfg.registered_encoder_name() == choice.name

    align = run_lvlm_stage(cfg, "align", progress=False)
    assert align["steps"] == 2 and align["data"]["records"] == 8 and not align["reused"]
    assert align["trainable"]["stage"] == "align" and align["encoder"] == encoder
    projector = load_file(tmp_path / "align" / encoder / "projector.safetensors")
    assert set(projector) == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}

    instruct = run_lvlm_stage(cfg, "instruct", progress=False)
    assert instruct["steps"] == 2 and instruct["data"]["sources"]["text"] == 2 and instruct["data"]["region_records"] == 2
    vlm, tokenizer = load_initial_model(cfg.train.init)  # train.init: the instruct folder, through its lvlm.json
    assert resolve_lvlm_folder(cfg.train.init) == tmp_path / "instruct" / encoder / "vlm"
    assert vlm.encoder.family == FAMILY[encoder] and vlm.encoder.feature_layer == -2
    assert vlm.encoder.num_prefix_tokens == PREFIX[encoder] and not vlm.include_cls
    pixels = vlm.encoder.preprocess(random_images(1))
    assert vlm.image_features(pixels).shape == (1, NUM_PATCHES, 32)
    trained_projector = vlm.projector.state_dict()
    assert any(not torch.equal(trained_projector[k], projector[k]) for k in projector)  # instruct trained it further
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == vlm.image_token_id

    result = run_train_stage(cfg, progress=False)  # the boost, as today, from the new LVLM
    assert result.steps == 2 and result.trainable["adapter"] == "dual_channel"
    boosted = load_encoder(tmp_path / "boosted" / "encoder")
    assert boosted.family == FAMILY[encoder] and is_dual_channel(boosted) and boosted.feature_layer == -2


def test_align_trains_the_projector_alone_and_instruct_the_projector_and_llm(world, tmp_path: Path) -> None:
    cfg = lvlm_config(world, tmp_path, "dinov2")
    run_lvlm_stage(cfg, "align", progress=False)
    lm, tokenizer = load_language_model(world["llava"])
    fresh = build_lvlm(load_encoder_choice(cfg.lvlm.chosen()), lm, tokenizer, seed=cfg.lvlm.seed)
    before = tensor_hashes(fresh)
    aligned = build_lvlm(load_encoder_choice(cfg.lvlm.chosen()), *load_language_model(world["llava"]), seed=cfg.lvlm.seed,
                         projector_state=load_file(tmp_path / "align" / "dinov2" / "projector.safetensors"))  # fmt: skip
    assert changed(before, tensor_hashes(aligned)) == {f"projector.{k}" for k in ("linear_1.weight", "linear_1.bias",
                                                                                   "linear_2.weight", "linear_2.bias")}  # fmt: skip
    run_lvlm_stage(cfg, "instruct", progress=False)
    instructed = SpatialVLM.load(tmp_path / "instruct" / "dinov2" / "vlm")
    moved = changed(tensor_hashes(aligned), tensor_hashes(instructed))
    names = set(before)
    assert not {n for n in moved if n.startswith("encoder.")}  # the encoder is frozen in both stages
    assert {n for n in names if n.startswith("projector.")} <= moved
    assert {n for n in moved if n.startswith("language_model.")}  # the LLM trains in instruct
    # the fresh projector is seeded: the same seed gives the same weights, another seed others
    again = build_lvlm(load_encoder_choice(cfg.lvlm.chosen()), lm, tokenizer, seed=cfg.lvlm.seed)
    other = build_lvlm(load_encoder_choice(cfg.lvlm.chosen()), lm, tokenizer, seed=cfg.lvlm.seed + 1)
    assert tensor_hashes(again.projector) == tensor_hashes(fresh.projector) != tensor_hashes(other.projector)


def test_a_finished_stage_is_reused_and_a_changed_one_trains_again(world, tmp_path: Path) -> None:
    cfg = lvlm_config(world, tmp_path, "dinov2")
    first = run_lvlm_stage(cfg, "align", progress=False)
    stamp = (tmp_path / "align" / "dinov2" / "projector.safetensors").stat().st_mtime_ns
    again = run_lvlm_stage(cfg, "align", progress=False)  # what `dvc repro` does after an unrelated hub change
    assert again["reused"] and again["final_loss"] == first["final_loss"]
    assert (tmp_path / "align" / "dinov2" / "projector.safetensors").stat().st_mtime_ns == stamp
    changed_lr = run_lvlm_stage(lvlm_config(world, tmp_path, "dinov2", "lvlm.align.lr=0.01"), "align", progress=False)
    assert not changed_lr["reused"] and changed_lr["final_loss"] != first["final_loss"]


def test_llava_s_own_clip_skips_both_stages_and_points_at_the_released_weights(world, tmp_path: Path) -> None:
    from spatialboost.skipping import SKIP_FILE

    cfg = lvlm_config(world, tmp_path, "dinov2")
    run_lvlm_stage(cfg, "align", progress=False)
    run_lvlm_stage(cfg, "instruct", progress=False)
    released = lvlm_config(world, tmp_path, "llava")
    for phase in ("align", "instruct"):
        metrics = run_lvlm_stage(released, phase)
        assert metrics["skipped"] is True and "already passed LLaVA-1.5's align and instruct" in metrics["reason"]
        assert (tmp_path / phase / SKIP_FILE).is_file()
    pointer = json.loads((tmp_path / "instruct" / POINTER_FILE).read_text())
    assert pointer["encoder"] == "llava" and pointer["released"] == str(world["llava"])
    assert resolve_lvlm_folder(released.train.init) == world["llava"]
    vlm, _ = load_initial_model(released.train.init)
    reference = SpatialVLM.from_llava(world["llava"])
    assert tensor_hashes(vlm) == tensor_hashes(reference)
    assert (tmp_path / "instruct" / "dinov2" / "vlm" / "vlm.json").is_file()  # DINOv2's LVLM is kept for a switch back
    back = run_lvlm_stage(cfg, "instruct", progress=False)
    assert back["reused"] and not (tmp_path / "instruct" / SKIP_FILE).exists()
    assert resolve_lvlm_folder(cfg.train.init) == tmp_path / "instruct" / "dinov2" / "vlm"


def test_a_plain_causal_lm_gets_the_image_token(world, tmp_path: Path) -> None:
    """lvlm.language_model may be a Vicuna folder (LLaVA-1.5's own start) instead of llava-hf's LLM:
    its tokenizer has no <image> and no pad token, as Vicuna's; both are added, the embeddings grow."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.tiny_vlm import CORPUS

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    vicuna = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert IMAGE_TOKEN not in vicuna.get_vocab() and vicuna.pad_token is None
    vicuna.save_pretrained(tmp_path / "vicuna")
    torch.manual_seed(0)
    llama = LlamaConfig(vocab_size=len(vicuna), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2)  # fmt: skip
    LlamaForCausalLM(llama).save_pretrained(tmp_path / "vicuna")
    lm, tokenizer = load_language_model(tmp_path / "vicuna")
    assert IMAGE_TOKEN in tokenizer.get_vocab() and tokenizer.pad_token == "<unk>"  # LLaVA's choice for Vicuna v1
    assert lm.get_input_embeddings().num_embeddings == len(tokenizer) == len(vicuna) + 1
    choice = lvlm_config(world, tmp_path, "dinov2").lvlm.chosen()
    vlm = build_lvlm(load_encoder_choice(choice), lm, tokenizer, seed=0)
    ids = torch.tensor([[tokenizer.bos_token_id, vlm.image_token_id, 5, 6]])
    out = vlm(ids, pixel_values=vlm.encoder.preprocess(random_images(1)))
    assert out.logits.shape == (1, 3 + NUM_PATCHES, len(tokenizer))


def test_the_encoder_switch_rules(world, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lvlm.encoder=dinov2: train.init must be the instruct stage's output 'models/lvlm/instruct'"):
        load_config(ROOT / "configs" / "paper.yaml", ["lvlm.encoder=dinov2", "train.init=models/hub/lvlm"])
    with pytest.raises(ConfigError, match=r"encoder 'resnet' is not one of encoders: dinov2, dinov3, llava, openclip, siglip, siglip2"):
        load_config(ROOT / "configs" / "paper.yaml", ["lvlm.encoder=resnet"])
    with pytest.raises(ConfigError, match=r"train_nproc_per_node=3: lvlm.align.global_batch_size 256 is not a multiple of lvlm.align.micro_batch_size 32 x 3"):
        load_config(ROOT / "configs" / "paper.yaml", ["lvlm.encoder=dinov2", "orchestration.train_nproc_per_node=3",
                                                      "train.global_batch_size=96", "train.micro_batch_size=32"])  # fmt: skip
    paper = load_config(ROOT / "configs" / "paper.yaml")
    assert paper.registered_encoder_name() == "clip-vit-l-14-336-llava-1.5"
    names = {e: load_config(ROOT / "configs" / "paper.yaml", [f"lvlm.encoder={e}"]).registered_encoder_name() for e in ENCODERS}
    assert names == {"openclip": "openclip-vit-l-14", "dinov2": "dinov2-vit-l-14", "siglip": "siglip-so400m-14-384",
                     "dinov3": "dinov3-vit-l-16", "siglip2": "siglip2-so400m-14-384"}  # fmt: skip
    # only the chosen encoder's checkpoint is fetched; the labeler's OpenCLIP always is (extraction reads it)
    assert sorted(active_roles(paper)) == ["depth", "labeler", "lvlm", "segmenter"]
    dinov3 = load_config(ROOT / "configs" / "paper.yaml", ["lvlm.encoder=dinov3"])
    assert sorted(active_roles(dinov3)) == ["depth", "dinov3", "labeler", "lvlm", "segmenter"]
    assert load_config(ROOT / "params.yaml").lvlm.encoder is None  # the demo builds its LVLM in its bootstrap


def test_the_demo_builds_no_lvlm_here(tmp_path: Path) -> None:
    """lvlm.encoder null (the demo: its bootstrap stage makes the LVLM): both stages skip and say why."""
    demo = load_config(ROOT / "params.yaml", [f"lvlm.align.output={tmp_path / 'align'}", f"lvlm.instruct.output={tmp_path / 'instruct'}"])
    for phase in ("align", "instruct"):
        metrics = run_lvlm_stage(demo, phase)
        assert metrics == {"skipped": True, "reason": "lvlm.encoder is null: the boost starts from train.init "
                                                      "(models/bootstrap/vlm) as it is"}  # fmt: skip
    assert not (tmp_path / "instruct" / POINTER_FILE).exists() and resolve_lvlm_folder(demo.train.init) == Path(demo.train.init)
