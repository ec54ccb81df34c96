"""The paper's benchmarks: every reader on its fixture in the released layout, the protocol
transforms and caps, layout errors, and evaluate end to end on the fixtures with tiny VLMs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialboost.config import ConfigError, SpatialBoostConfig, load_config
from spatialboost.evaluate.benchmarks import (
    BenchmarkLayoutError,
    FeatureRun,
    pooled_features,
    read_probe_benchmark,
    read_vqa_benchmark,
    resolve_benchmarks,
)
from spatialboost.evaluate.fixtures import write_benchmark_fixtures
from spatialboost.evaluate.readers import IGNORE_INDEX
from spatialboost.evaluate.vqa import BLINK_RELATIVE_DEPTH, SPATIALRGPT
from spatialboost.runtime import torch_threads

PROBES = ("nyu", "kitti", "ade20k", "voc", "imagenet", "cifar100")


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    return write_benchmark_fixtures(tmp_path_factory.mktemp("benchmarks"))


def _paper(overrides: list[str]) -> SpatialBoostConfig:
    return load_config("configs/paper.yaml", overrides)


def _spec(mapping: dict, name: str, **caps):
    return _paper(
        [f"evaluate.benchmarks.{name}={json.dumps({**mapping[name], **caps})}"]
    ).evaluate.benchmarks.configured()[name]


# --- readers on the released layouts ---------------------------------------------------------------


def test_nyu_bts_layout_train_cropped_test_in_the_eigen_crop(mapping: dict) -> None:
    splits = read_probe_benchmark("nyu", _spec(mapping, "nyu"))
    assert (len(splits.train), len(splits.test)) == (3, 2)
    train, test = splits.train[0], splits.test[0]
    assert train.image.shape == (427, 565, 3) and train.depth.shape == (427, 565)  # NYUCrop [45:472, 43:608]
    assert splits.train.image(splits.train.ids[0]).shape == (427, 565, 3)
    assert test.image.shape == (480, 640, 3)  # test: the whole frame
    assert (test.depth[:45] == 0).all() and (test.depth[:, 601:] == 0).all() and test.depth[100, 100] > 1.0
    assert test.depth.max() < 10.0 and splits.protocol.name == "dinov2-linear-depth/nyu-eigen"


def test_kitti_eigen_lines_without_gt_are_skipped_kb_and_garg_crops(mapping: dict) -> None:
    splits = read_probe_benchmark("kitti", _spec(mapping, "kitti"))
    lines = (Path(mapping["kitti"]["path"]) / "eigen_test_files_with_gt.txt").read_text().splitlines()
    assert len(lines) == 3 and len(splits.test) == 2  # the "None" line is not scored
    sample = splits.test[0]
    assert sample.image.shape == (352, 1216, 3) and sample.depth.shape == (352, 1216)
    # Garg rows start at int(0.40810811 * 375) = 153 of the full frame = 130 of the KB crop
    assert (sample.depth[:130] == 0).all() and (sample.depth[130:] > 0).any()
    assert (splits.train[0].depth > 0).mean() > 0.1  # train: no Garg crop


def test_segmentation_layouts_ignore_other_and_borders(mapping: dict) -> None:
    ade = read_probe_benchmark("ade20k", _spec(mapping, "ade20k"))
    seg = ade.test[0].seg
    assert ade.train.num_classes == 150 and ade.train.class_names[0] == "class1"
    assert set(np.unique(seg)) == {IGNORE_INDEX, 0, 3, 11, 149}  # 0 = other -> ignored, k -> k - 1
    voc = read_probe_benchmark("voc", _spec(mapping, "voc"))
    assert (len(voc.train), len(voc.test)) == (3, 2) and voc.test.split == "val"
    assert set(np.unique(voc.test[0].seg)) == {IGNORE_INDEX, 0, 7, 15, 20}


def test_classification_layouts_and_labels_without_decoding(mapping: dict) -> None:
    imagenet = read_probe_benchmark("imagenet", _spec(mapping, "imagenet"))
    assert (len(imagenet.train), len(imagenet.test), imagenet.train.num_classes) == (12, 6, 3)
    assert [imagenet.test.label(i) for i in imagenet.test.ids] == [0, 0, 1, 1, 2, 2]
    cifar = read_probe_benchmark("cifar100", _spec(mapping, "cifar100"))
    assert cifar.train.num_classes == 100 and cifar.test[3].image.shape == (32, 32, 3)
    assert cifar.train.label(cifar.train.ids[5]) == cifar.train[5].label == 1


def test_vqa_layouts_val_only_and_image_root(mapping: dict) -> None:
    blink = read_vqa_benchmark("blink", _spec(mapping, "blink"))
    assert len(blink) == 4 and all(i.id.startswith("val_") and i.benchmark == BLINK_RELATIVE_DEPTH for i in blink)
    assert blink[0].image().shape == (96, 128, 3) and blink[1].answer == "(B)"
    srgpt = read_vqa_benchmark("spatialrgpt", _spec(mapping, "spatialrgpt"))
    assert len(srgpt) == 5 and {i.qa_type for i in srgpt} == {"qualitative", "quantitative"}
    assert srgpt[0].benchmark == SPATIALRGPT and srgpt[0].image().shape == (96, 128, 3) and len(srgpt[0].boxes) == 2


def test_layout_errors_are_one_line_naming_the_key(mapping: dict, tmp_path: Path) -> None:
    with pytest.raises(BenchmarkLayoutError, match=r"^evaluate\.benchmarks\.nyu\.path: no such folder .*nowhere$"):
        read_probe_benchmark("nyu", _spec({"nyu": {"path": str(tmp_path / "nowhere")}}, "nyu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        BenchmarkLayoutError, match=r"evaluate\.benchmarks\.kitti\.path: .*data_depth_annotated not found"
    ):
        read_probe_benchmark("kitti", _spec({"kitti": {"path": str(tmp_path / "empty")}}, "kitti"))
    with pytest.raises(
        BenchmarkLayoutError, match=r"evaluate\.benchmarks\.voc\.path: .* not in the released layout"
    ) as err:
        read_probe_benchmark("voc", _spec({"voc": {"path": str(tmp_path / "empty")}}, "voc"))
    assert "\n" not in str(err.value)
    with pytest.raises(BenchmarkLayoutError, match=r"evaluate\.benchmarks\.blink\.path: no blink items"):
        read_vqa_benchmark("blink", _spec({"blink": {"path": str(tmp_path / "empty")}}, "blink"))


def test_caps_are_seeded_and_recorded_so_a_capped_run_is_never_the_full_protocol(mapping: dict) -> None:
    capped = {
        **mapping,
        "imagenet": {**mapping["imagenet"], "max_train_images": 5},
        "blink": {**mapping["blink"], "max_items": 2},
    }
    cfg = _paper([f"evaluate.benchmarks={json.dumps({k: capped[k] for k in ('imagenet', 'blink')})}"])
    resolved = resolve_benchmarks(cfg.evaluate.benchmarks)
    info = resolved.protocol["imagenet"]
    assert (info["n_train"], info["available_train"], info["max_train_images"], info["full_protocol"]) == (
        5,
        12,
        5,
        False,
    )
    labels = {resolved.probes["imagenet"].train.label(i) for i in resolved.probes["imagenet"].train.ids}
    assert len(labels) > 1  # a seeded subset, not the first (class-sorted) ids
    assert resolved.protocol["blink"]["n_test"] == 2 and not resolved.protocol["blink"]["full_protocol"]
    again = resolve_benchmarks(cfg.evaluate.benchmarks)
    assert again.probes["imagenet"].train.ids == resolved.probes["imagenet"].train.ids


def test_benchmark_config_validates_with_clear_messages() -> None:
    cfg = _paper([])  # the paper profile: world.n_train 0, every benchmark configured
    assert cfg.world.n_train == 0 and len(cfg.evaluate.benchmarks.configured()) == 12
    assert cfg.tracking.champion_metric == "boosted.blink.relative_depth_acc.mean"
    with pytest.raises(
        ConfigError, match=r"evaluate\.benchmarks\.nyu\.max_trian: unknown key \(allowed here: max_test_images"
    ):
        _paper(["evaluate.benchmarks.nyu={path: x, max_trian: 3}"])
    with pytest.raises(ConfigError, match=r"blink\.image_root: BLINK embeds its images"):
        _paper(["evaluate.benchmarks.blink={path: x, image_root: y}"])
    with pytest.raises(ConfigError, match=r"mme\.image_root: MME keeps its images in its own folders"):
        _paper(["evaluate.benchmarks.mme={path: x, image_root: y}"])
    assert _paper(["evaluate.benchmarks.vqav2={path: x, image_root: coco/val2014}"]).evaluate.benchmarks.vqav2.image_root
    with pytest.raises(ConfigError, match=r"evaluate\.benchmarks\.voc\.max_train_images"):
        _paper(["evaluate.benchmarks.voc={path: x, max_train_images: 1}"])


def test_pooled_features_keep_cls_and_mean_and_are_cached(mapping: dict, tmp_path: Path) -> None:
    from spatialboost.evaluate.features import compute_features
    from tests.tiny_vlm import tiny_encoder

    encoder = tiny_encoder("dinov2")
    splits = read_probe_benchmark("cifar100", _spec(mapping, "cifar100"))
    run = FeatureRun(encoder, "fp", str(tmp_path), batch_size=4, shard_images=7)
    pooled = pooled_features(run, splits.test, "cifar100/test")
    full = compute_features(encoder, splits.test.ids, splits.test.image)
    assert pooled.patch_tokens.shape == (10, 1, 1, 32) and len(list(tmp_path.glob("*.npz"))) == 2  # 2 shards
    np.testing.assert_allclose(pooled.mean_token, full.mean_token, atol=1e-5)
    np.testing.assert_allclose(pooled.cls_token, full.cls_token, atol=1e-5)
    assert pooled_features(run, splits.test, "cifar100/test").ids == pooled.ids  # read back


# --- evaluate end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_run(mapping: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[SpatialBoostConfig, dict]:
    """evaluate with the paper profile on every fixture benchmark: tiny baseline and boosted VLMs."""
    from spatialboost.evaluate.run import evaluate_pipeline
    from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer

    root = tmp_path_factory.mktemp("paper_run")
    tokenizer = train_tiny_tokenizer(root / "tok")
    for seed, folder in ((0, root / "init"), (1, root / "boosted" / "vlm")):
        tiny_vlm(tokenizer, family="dinov2", seed=seed).save(folder)
        tokenizer.save_pretrained(folder / "language_model")
    dense_caps = {"max_train_images": 2, "max_test_images": 1}
    benches = {k: {**v, **dense_caps} if k in ("nyu", "kitti", "ade20k", "voc") else v for k, v in mapping.items()}
    cfg = _paper([
        f"evaluate.benchmarks={json.dumps(benches)}", f"train.init={root / 'init'}", f"train.output={root / 'boosted'}",
        f"evaluate.output={root / 'report'}", f"evaluate.cache_dir={root / 'features'}", "evaluate.seeds=[0]",
        f"evaluate.bench_dir={root / 'bench'}",
        "evaluate.learning_rates=[0.01]", "evaluate.epochs=1", "evaluate.probe_threads=1", "evaluate.max_new_tokens=4",
        "evaluate.vqa_batch_size=3", "device=cpu", "train.precision=fp32",
    ])  # fmt: skip
    with torch_threads(1):  # tiny models on 2 shared cores: one thread is several times faster
        return cfg, evaluate_pipeline(cfg)


def test_paper_profile_evaluates_every_benchmark_for_baseline_and_boosted(paper_run: tuple) -> None:
    cfg, result = paper_run
    metrics = result["metrics"]
    assert cfg.world.n_train == 0 and list(metrics) == ["baseline", "boosted", "protocol"]
    expected = {
        "nyu": {"depth_rmse", "depth_absrel", "depth_delta1"}, "kitti": {"depth_rmse", "depth_absrel", "depth_delta1"},
        "ade20k": {"seg_miou", "seg_pixel_acc"}, "voc": {"seg_miou", "seg_pixel_acc"}, "imagenet": {"cls_top1", "cls_majority"},
        "cifar100": {"cls_top1", "cls_majority"}, "blink": {"relative_depth_acc"},
        "spatialrgpt": {"qualitative_acc", "quantitative_acc", "overall_acc"}, "vqav2": {"accuracy"},
        "gqa": {"accuracy"}, "mmbench": {"circular_acc"},
        "mme": {"perception", "cognition", "perception_acc", "perception_acc_plus", "cognition_acc", "cognition_acc_plus"},
    }  # fmt: skip
    for run in ("baseline", "boosted"):
        assert {k: set(v) for k, v in metrics[run].items()} == expected
        for bench in PROBES:
            assert all(isinstance(s["mean"], float) and np.isfinite(s["mean"]) for s in metrics[run][bench].values())
        assert metrics[run]["nyu"]["depth_rmse"]["mean"] > 0 and 0 <= metrics[run]["voc"]["seg_miou"]["mean"] <= 1
        assert 0.0 <= metrics[run]["blink"]["relative_depth_acc"]["mean"] <= 1.0
        assert metrics[run]["spatialrgpt"]["overall_acc"]["mean"] is not None
        for bench, key in (("vqav2", "accuracy"), ("gqa", "accuracy"), ("mmbench", "circular_acc")):
            assert 0.0 <= metrics[run][bench][key]["mean"] <= 1.0
        assert 0.0 <= metrics[run]["mme"]["perception"]["mean"] <= 400.0  # 2 perception subtasks in the fixture
    assert metrics["baseline"]["nyu"] != metrics["boosted"]["nyu"]  # two different encoders
    protocol = metrics["protocol"]
    assert protocol["nyu"]["n_train"] == 2 and protocol["nyu"]["full_protocol"] is False
    assert protocol["blink"]["n_test"] == 4 and protocol["blink"]["expected_test"] == 124
    assert protocol["vqav2"]["expected_test"] == 214_354 and protocol["vqav2"]["full_protocol"] is False  # 3 questions
    assert protocol["mmbench"]["n_test"] == 2 and protocol["mmbench"]["n_asked"] == 6  # 2 questions, 6 circular rows
    assert protocol["mmbench"]["circular_copies"] == "in the file"
    assert protocol["mme"]["subtasks"] == ["count", "artwork", "code_reasoning"] and not protocol["mme"]["full_protocol"]
    json.dumps(metrics, allow_nan=False)
    # bench_dir is a DVC output of the stage in every profile: here it only says why it is empty
    from spatialboost.skipping import SKIP_FILE

    marker = json.loads((Path(cfg.evaluate.bench_dir) / SKIP_FILE).read_text())
    assert marker["skipped"] is True and "evaluate.benchmarks is set" in marker["reason"]
    assert sorted(p.name for p in Path(cfg.evaluate.bench_dir).iterdir()) == [SKIP_FILE]
    from spatialboost.register import numeric_metrics

    assert "boosted.blink.relative_depth_acc.mean" in numeric_metrics(metrics)  # the paper profile's champion metric


def test_paper_report_sets_ours_beside_the_papers_rows(paper_run: tuple) -> None:
    cfg, result = paper_run
    text = Path(result["report"]).read_text()
    assert "| NYUd v2 | RMSE (m) ↓ |" in text and "| 0.38 | 0.32 | Table 3, NYUd |" in text  # DINOv2 rows
    assert "| 55.2 | 87.5 | Table 1, BLINK-bench |" in text and "not comparable to the paper" in text
    out = Path(cfg.evaluate.output)
    assert (out / "metrics.png").is_file()
    records = json.loads((out / "vqa_boosted.json").read_text())
    assert set(records) == {"blink", "spatialrgpt", "vqav2", "gqa", "mmbench", "mme"}
    assert len(records["blink"]["records"]) == 4 and len(records["mme"]["records"]) == 12
    assert "score/count" in records["mme"]["metrics"] and "vanilla_acc" in records["mmbench"]["metrics"]
    assert "## General VQA (Table 1)" in text and "| LLaVA-1.5-7B (paper) | DINOv2 | 75.2 | 61.5 | 64.0 | 1506.2 | – |" in text


def test_world_profile_without_scenes_or_benchmarks_says_what_to_set(tmp_path: Path) -> None:
    from spatialboost.config import WorldConfig
    from spatialboost.evaluate.run import evaluate_pipeline
    from spatialboost.world import render_dataset

    world = WorldConfig(
        root=str(tmp_path / "world"), n_train=0, n_test=1, width=32, height=32, objects_per_scene=(1, 2)
    )
    render_dataset(world, world.root, progress=False)
    cfg = SpatialBoostConfig.model_validate({"world": world.model_dump(), "data": {"uri": world.root}})
    with pytest.raises(ValueError, match="no evaluate.benchmarks path is set: nothing to probe"):
        evaluate_pipeline(cfg)


def test_eval_model_loads_in_the_training_precision(tmp_path: Path) -> None:
    from spatialboost.evaluate.benchmarks import load_eval_model
    from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    tiny_vlm(tokenizer, family="clip").save(tmp_path / "vlm")
    tokenizer.save_pretrained(tmp_path / "vlm" / "language_model")
    for precision, dtype in (("bf16", torch.bfloat16), ("auto", torch.float32)):  # auto on CPU: fp32
        cfg = SpatialBoostConfig.model_validate({"device": "cpu", "train": {"precision": precision}})
        vlm, _ = load_eval_model(cfg, tmp_path / "vlm")
        assert {p.dtype for p in vlm.parameters()} == {dtype} and not vlm.training
        assert vlm.encoder.device.type == "cpu"
