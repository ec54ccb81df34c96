"""The demo's bootstrap stage on a tiny world: semantic-only data, every phase through the one loop,
outputs that load through the paper profile's code paths, determinism and resume."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialboost.config import SpatialBoostConfig, validate_config
from spatialboost.data import RGBDDataset
from spatialboost.models.encoders import Dinov2Encoder
from spatialboost.models.tokenizer import load_tokenizer
from spatialboost.models.vlm import SpatialVLM
from spatialboost.runtime import torch_threads
from spatialboost.train.bootstrap import conversation_records, pretraining_images, run_bootstrap, spatial_text_samples
from spatialboost.train.bootstrap_data import (
    LABELS,
    caption,
    language_record,
    multilabel_targets,
    nonspatial_questions,
    point_questions,
    referring_points,
    visible_objects,
)
from spatialboost.train.spatial_text import spatial_text_records
from spatialboost.world import render_dataset
from tests.train_fixtures import tensor_hashes

GEOMETRY_WORDS = re.compile(r"\b(left|right|above|below|front|behind|closer|farther|near|far|metres?|meters?|cm|depth|tall|distance)\b")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def tiny_config(world_root: Path) -> SpatialBoostConfig:
    """A world of 12 + 4 scenes at 64 px and models of hidden 32: seconds per phase."""
    phase = {
        "epochs": 1, "lr": 3e-3, "global_batch_size": 8, "micro_batch_size": 4, "warmup_ratio": 0.0,
        "checkpoint_every": 0, "max_length": 200,
    }
    return validate_config({
        "world": {"root": str(world_root), "n_train": 12, "n_test": 4, "width": 64, "height": 64, "objects_per_scene": [2, 4]},
        "bootstrap": {
            "extra_scenes": 4, "eval_scenes": 4, "language_conversations": 8, "questions_per_image": 2,
            "spatial_text_scenes": 3,
            "encoder": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                        "epochs": 2, "batch_size": 8, "min_visible_px": 10, "checkpoint_every": 0},
            "llm": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 400,
                    "max_position_embeddings": 256},
            "language": phase, "align": phase, "instruct": {**phase, "epochs": 2},
        },
        "train": {"max_length": 8, "epochs": 9},  # the boost's settings: no bootstrap phase reads them
    })  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    render_dataset(tiny_config(root).world, root, progress=False)
    return root


@pytest.fixture(scope="module")
def first_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bootstrap")
    return out, run_bootstrap(tiny_config(world), out, progress=False)


def test_every_phase_reports_and_the_outputs_load_like_released_checkpoints(first_run, world):
    out, metrics = first_run
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for phase in ("encoder", "language", "align", "instruct"):
        assert metrics[phase]["steps"] > 0 and np.isfinite(metrics[phase]["final_loss"])
    assert set(metrics["encoder"]["test"]) == {"f1", "shape_f1", "colour_f1", "exact_set_accuracy"}
    assert set(metrics["instruct"]["test"]["by_kind"]) <= {"count", "presence", "colour", "shape", "choice", "point"}
    assert "point" in metrics["instruct"]["test"]["by_kind"]
    assert metrics["instruct"]["test"]["n"] == 4 * (2 + 2)  # questions_per_image + point_questions
    data = dict(metrics["data"])
    texts = data.pop("spatial_text_conversations")
    assert data == {"pretrain_images": 12 + 4, "test_images": 4, "spatial_text_scenes": 3} and 1 <= texts <= 3

    encoder = Dinov2Encoder.from_pretrained(out / "encoder", feature_layer=-1, apply_final_norm=True)
    assert encoder.preprocess.size == (32, 32) and encoder.preprocess.mode == "squash"
    vlm = SpatialVLM.load(out / "vlm")
    tokenizer = load_tokenizer(out / "vlm" / "language_model")
    assert tokenizer.get_vocab() == load_tokenizer(out / "tokenizer").get_vocab()
    image = np.zeros((64, 64, 3), np.uint8)
    with torch.no_grad():
        assert torch.equal(encoder.encode([image]).patch_tokens, vlm.encoder.encode([image]).patch_tokens)
    assert vlm.language_model.config.hidden_size == 32 and len(tokenizer) <= 400
    for phase in ("encoder", "language", "align", "instruct"):
        assert (out / "runs" / phase / "checkpoints" / "latest.json").exists()


def test_the_same_seed_gives_the_same_models_and_a_rerun_resumes(first_run, world, tmp_path):
    out, metrics = first_run
    again = run_bootstrap(tiny_config(world), tmp_path, progress=False)
    assert _no_times(again) == _no_times(metrics)
    assert tensor_hashes(SpatialVLM.load(tmp_path / "vlm")) == tensor_hashes(SpatialVLM.load(out / "vlm"))
    checkpoints = tmp_path / "runs" / "instruct" / "checkpoints"
    written = {p: p.stat().st_mtime_ns for p in checkpoints.rglob("*") if p.is_file()}
    result_bytes = (tmp_path / "runs" / "instruct" / "instruct_result.json").read_bytes()
    resumed = run_bootstrap(tiny_config(world), tmp_path, progress=False)  # every phase resumes at its last step
    assert _no_times(resumed) == _no_times(metrics)
    # Resumed at its last step: no step ran, no checkpoint was rewritten, and the result file has
    # the same bytes (whether a run resumed is logged, not written into artefacts).
    assert {p: p.stat().st_mtime_ns for p in checkpoints.rglob("*") if p.is_file()} == written
    assert (tmp_path / "runs" / "instruct" / "instruct_result.json").read_bytes() == result_bytes


def _no_times(metrics: dict) -> dict:
    """Metrics without wall-clock fields (at any depth)."""
    if isinstance(metrics, dict):
        return {k: _no_times(v) for k, v in metrics.items() if "wall" not in k}
    return metrics


def test_language_phase_reads_image_conversations_only_when_asked(world):
    cfg = tiny_config(world)
    images = pretraining_images(cfg)
    with_text = conversation_records(cfg, images)
    bootstrap = cfg.bootstrap.model_copy(update={"language_image_text": False})
    without = conversation_records(cfg.model_copy(update={"bootstrap": bootstrap}), images)
    image_ids = {r["id"] for r in with_text["align"] + with_text["instruct"] if "image" in r}
    assert image_ids & {r["id"] for r in with_text["language"]} == image_ids  # their text, without the image
    assert not image_ids & {r["id"] for r in without["language"]}
    assert all("image" not in r for r in without["language"]) and len(without["language"]) == 8  # language_conversations
    assert without["align"] == with_text["align"] and without["instruct"] == with_text["instruct"]


def test_bootstrap_data_is_semantic_only(world):
    cfg = tiny_config(world)
    images = pretraining_images(cfg)
    records = conversation_records(cfg, images)
    for record in records["align"] + records["instruct"]:
        if "image" not in record:
            continue  # text-only spatial language: its facts are in the question, never from an image
        for turn in record["conversations"]:
            assert not GEOMETRY_WORDS.search(turn["value"]), turn["value"]
    assert LABELS[:7] == ("cube", "sphere", "cylinder", "cone", "pyramid", "ellipsoid", "capsule") and len(LABELS) == 15


def test_referring_points_name_what_the_world_has_there(world):
    dataset = RGBDDataset(world)
    rng = np.random.default_rng(0)
    kinds = set()
    for image_id in dataset.ids():
        s = dataset.sample(image_id)
        names = {o["instance_id"]: f"the {o['colour']} {o['label']}" for o in s.annotation["objects"]}
        points = referring_points(s.instances, s.depth, s.annotation, rng, n=6, min_pixels=10)
        assert len(points) == 6
        for x, y, what in points:
            instance = int(s.instances[y, x])
            if instance:
                assert what == names[instance] and s.annotation["objects"][instance - 1]["pixel_count"] >= 10
                kinds.add("object")
            else:
                assert what == ("the ground" if s.depth[y, x] > 0 else "the sky")
                kinds.add(what)
        for question, answer, kind in point_questions(points, rng):
            x, y, what = next(p for p in points if f"({p[0]}, {p[1]})" in question)
            assert kind == "point" and f"({x}, {y})" in answer
            assert what in answer or (what.split()[1] in answer and "colour" in question)
    assert kinds == {"object", "the ground", "the sky"}


def test_captions_targets_and_questions_say_what_is_visible():
    annotation = {"objects": [
        {"label": "sphere", "colour": "blue", "pixel_count": 50},
        {"label": "cube", "colour": "red", "pixel_count": 400},
        {"label": "cone", "colour": "orange", "pixel_count": 3},  # too small to count
        {"label": "cube", "colour": "blue", "pixel_count": 90},
    ]}  # fmt: skip
    objects = visible_objects(annotation, min_pixels=30)
    assert objects == [("cube", "red"), ("cube", "blue"), ("sphere", "blue")]
    assert caption(objects) == "A red cube, a blue cube and a blue sphere."
    target = multilabel_targets(objects)
    assert {LABELS[i] for i in np.flatnonzero(target)} == {"cube", "sphere", "red", "blue"}
    asked = {q: (a, kind) for q, a, kind in nonspatial_questions(objects, np.random.default_rng(0))}
    assert asked["How many objects are there?"] == ("There are 3 objects.", "count")
    assert asked["What colour is the sphere?"] == ("The sphere is blue.", "colour")
    assert asked["What shape is the red object?"] == ("The red object is a cube.", "shape")
    assert "What colour is the cube?" not in asked and "What shape is the blue object?" not in asked  # ambiguous
    presence = [(q, a) for q, (a, kind) in asked.items() if kind == "presence"]
    assert len(presence) == 1 and presence[0][1].startswith("Yes" if ("cube" in presence[0][0] or "sphere" in presence[0][0]) else "No")


def test_language_records_answer_from_the_question():
    rng = np.random.default_rng(0)
    for i in range(50):
        record = language_record(rng, i)
        question, answer = (turn["value"] for turn in record["conversations"])
        assert "image" not in record and "<image>" not in question
        numbers = re.findall(r"\d+(?:\.\d+)? (?:m|cm)\b", answer)
        assert all(n in question for n in numbers)


def test_spatial_text_is_the_synthesized_conversation_of_own_scenes_without_the_image(world):
    """The frozen LLM's answer language: full 10-turn conversations, as text, whose depth answers
    are the rendered depth at the asked pixel, from scenes that are not the world's."""
    base = tiny_config(world)
    cfg = base.model_copy(update={"bootstrap": base.bootstrap.model_copy(update={"spatial_text_scenes": 6})})
    samples = list(spatial_text_samples(cfg))
    records = spatial_text_records(cfg, samples)
    assert 0 < len(records) <= 6 and len({r["id"] for r in records}) == len(records)
    depth_of = {s.row.id: s.depth for s in samples}
    world_ids = {p.stem for p in (world / "rgb").iterdir()}
    checked = 0
    for record in records:
        assert "image" not in record and all("<image>" not in t["value"] for t in record["conversations"])
        turns = len(record["conversations"]) // 2
        assert 1 <= turns <= 10 and [t["from"] for t in record["conversations"]] == ["human", "gpt"] * turns
        image_id = next(i for i in depth_of if i in record["id"])
        assert image_id not in world_ids
        for turn in record["conversations"][1::2]:
            said = re.fullmatch(r"The depth at \((\d+), (\d+)\) is (\d+(?:\.\d+)?) (m|cm)\.", turn["value"])
            if said:
                x, y, value, unit = int(said[1]), int(said[2]), float(said[3]), said[4]
                metres = value / 100 if unit == "cm" else value
                assert abs(metres - float(depth_of[image_id][y, x])) <= 0.051, turn["value"]
                checked += 1
    assert checked > 0


def test_a_released_bootstrap_installs_verified_and_refuses_another_recipe(first_run, world, tmp_path):
    from spatialboost.train.release import ReleaseMismatch, install_release, verify_release, write_release

    out, metrics = first_run
    cfg = tiny_config(world)
    release = write_release(cfg, out, tmp_path / "releases" / "demo-bootstrap")
    manifest = verify_release(cfg, release)
    assert {"vlm/vlm.json", "encoder/config.json", "metrics.json", "recipe.json", "README.md"} <= set(manifest)
    assert "instruct exact match" in (release / "README.md").read_text()
    installed = install_release(cfg, release, tmp_path / "models" / "bootstrap")
    assert installed["installed_from"] == str(release) and installed["wall_s"] == metrics["wall_s"]
    for name, digest in manifest.items():  # the stage's output is the release, byte for byte
        assert hashlib.sha256((tmp_path / "models" / "bootstrap" / name).read_bytes()).hexdigest() == digest
    vlm = SpatialVLM.load(tmp_path / "models" / "bootstrap" / "vlm")
    assert vlm.language_model.config.hidden_size == 32

    other = validate_config({**cfg.model_dump(mode="json"), "bootstrap": {**cfg.bootstrap.model_dump(mode="json"),
                             "llm": {**cfg.bootstrap.llm.model_dump(), "num_layers": 2}}})  # fmt: skip
    with pytest.raises(ReleaseMismatch, match=r"bootstrap\.llm\.num_layers"):
        install_release(other, release, tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    reversed_turns = validate_config({**cfg.model_dump(mode="json"), "synthesize": {**cfg.synthesize.model_dump(mode="json"), "order": "reversed"}})
    assert verify_release(reversed_turns, release) == manifest  # the turn-order ablation keeps the release (spatial text is forward)
    boost = validate_config({**cfg.model_dump(mode="json"), "train": {**cfg.train.model_dump(mode="json"), "lr": 0.5}})
    assert verify_release(boost, release) == manifest  # a boost setting is no bootstrap setting
    fewer = validate_config({**cfg.model_dump(mode="json"), "extract": {**cfg.extract.model_dump(mode="json"), "min_objects": 3}})
    with pytest.raises(ReleaseMismatch, match=r"extract\.min_objects"):  # its spatial-text scenes extract with it
        verify_release(fewer, release)
    (release / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="sha256"):
        verify_release(cfg, release)
