"""The `evaluate` and `register` stages end to end on a tiny world with tiny saved VLMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spatialboost.config import SpatialBoostConfig, WorldConfig
from spatialboost.evaluate.report import JSON_METRICS, RUNS
from spatialboost.evaluate.run import evaluate_pipeline
from spatialboost.models.export import export_encoder
from spatialboost.tracking import CANDIDATE, CHAMPION, Tracker, download_encoder
from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> SpatialBoostConfig:
    """A tiny world, a baseline VLM and a 'boosted' one (another seed), and a config over them."""
    from spatialboost.world import render_dataset

    root = tmp_path_factory.mktemp("pipeline")
    world = WorldConfig(root=str(root / "world"), n_train=8, n_test=4, width=48, height=48, objects_per_scene=(2, 4))
    render_dataset(world, world.root, progress=False)
    tokenizer = train_tiny_tokenizer(root / "tok")
    boosted = root / "boosted"
    runs = ((0, root / "init"), (1, boosted / "vlm"), (2, boosted / "seeds" / "3" / "vlm"), (4, boosted / "control" / "vlm"),
            (5, boosted / "control" / "seeds" / "3" / "vlm"))  # fmt: skip
    for seed, folder in runs:
        vlm = tiny_vlm(tokenizer, family="dinov2", seed=seed)
        vlm.save(folder)
        tokenizer.save_pretrained(folder / "language_model")
        if seed == 1:
            export_encoder(vlm.encoder, root / "boosted" / "encoder")
    return SpatialBoostConfig.model_validate({
        "world": world.model_dump(),
        "data": {"uri": world.root},
        "train": {"init": str(root / "init"), "output": str(root / "boosted"), "replicate_seeds": [3], "control": True},
        "evaluate": {"output": str(root / "report"), "cache_dir": str(root / "features"), "bench_dir": str(root / "bench"),
                     "seeds": [0], "learning_rates": [1e-2], "epochs": 2, "max_vqa_items": 3, "max_new_tokens": 4,
                     "n_depth_examples": 2},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts")},
        "registry": {"encoder_name": "dinov2-tiny"},
        "orchestration": {"metrics_dir": str(root / "metrics")},
    })  # fmt: skip


def test_evaluate_pipeline_writes_metrics_and_report(pipeline: SpatialBoostConfig) -> None:
    result = evaluate_pipeline(pipeline)
    metrics = result["metrics"]
    assert list(metrics) == [*RUNS, "floor", "control", "effects"]
    assert all(list(metrics[run]) == list(JSON_METRICS) for run in RUNS)
    assert metrics["boosted"]["depth_rmse"]["n"] == 2 and metrics["control"]["depth_rmse"]["n"] == 2
    assert "vqa_relative_depth_acc" not in metrics["control"]  # the control is probed, not quizzed
    assert metrics["effects"]["depth_rmse_objects"]["verdict"] in {"better", "worse", "no effect"}
    low, high = metrics["boosted"]["vqa_relative_depth_acc"]["interval95"]
    assert 0.0 <= low <= metrics["boosted"]["vqa_relative_depth_acc"]["mean"] <= high <= 1.0
    assert set(result["detail"]) == {"baseline", "boosted-0", "boosted-1", "control-0", "control-1"}
    for run in RUNS:
        for name in ("depth_rmse", "depth_absrel", "seg_miou", "vqa_relative_depth_acc"):
            assert isinstance(metrics[run][name]["mean"], float), (run, name)
            assert isinstance(metrics[run][name]["std"], float), (run, name)
    assert 0.0 <= metrics["boosted"]["vqa_relative_depth_acc"]["mean"] <= 1.0
    report = Path(pipeline.evaluate.output)
    assert {"report.md", "metrics.png", "depth_examples.png", "vqa_baseline.json"} <= {p.name for p in report.iterdir()}
    assert (Path(pipeline.evaluate.bench_dir) / "BLINK").is_dir()
    metrics_dir = Path(pipeline.orchestration.metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    (metrics_dir / "evaluate.json").write_text(json.dumps(metrics))


def test_register_makes_version_1_candidate_and_champion(pipeline: SpatialBoostConfig, tmp_path: Path) -> None:
    from spatialboost.register import numeric_metrics, qa_hash
    from tasks.register import register_task

    metrics_dir = Path(pipeline.orchestration.metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    evaluate = {run: {"depth_rmse": {"mean": 0.5, "std": 0.0}, "vqa_relative_depth_acc": {"mean": 0.6, "std": 0.1},
                      "cls_top1": {"mean": None, "std": None}} for run in RUNS}  # fmt: skip
    (metrics_dir / "evaluate.json").write_text(json.dumps(evaluate))
    lock = tmp_path / "dvc.lock"
    lock.write_text("stages:\n  synthesize:\n    outs:\n    - path: data/qa\n      md5: abc123.dir\n")
    assert qa_hash(lock, "data/qa") == "abc123.dir"
    assert "boosted.cls_top1.mean" not in numeric_metrics(evaluate)

    record = register_task.fn(pipeline, str(lock))
    tracker = Tracker(pipeline.tracking, pipeline.profile)
    assert record["model"] == "spatialboost-dinov2-tiny" and record["version"] == 1 and record["champion"] is True
    assert tracker.alias_version(record["model"], CANDIDATE) == 1 == tracker.alias_version(record["model"], CHAMPION)
    run = tracker.client.get_run(record["run_id"])
    assert run.data.metrics["boosted.vqa_relative_depth_acc.mean"] == 0.6
    assert run.data.tags["dvc.qa_hash"] == "abc123.dir" and run.data.tags["git.commit"]
    # the model card, filled from the stage's inputs, is in the version's files and its description
    folder = download_encoder(f"models:/{record['model']}@champion", tracking_uri=tracker.uri, dst=tmp_path / "dl")
    card = (folder / "README.md").read_text()
    assert f"Base encoder: `{pipeline.train.init}`" in card and "`abc123.dir`" in card
    assert f"`{run.data.tags['git.commit']}`" in card and f"MLflow run: `{record['run_id']}`" in card
    assert "| 0.6 ± 0.1 | 0.6 ± 0.1 | +0 |" in card and f"- epochs: `{pipeline.train.epochs}`" in card
    assert not (Path(pipeline.train.output) / "encoder" / "README.md").exists()
    version = tracker.client.get_model_version(record["model"], "1")
    assert version.description.startswith("A dinov2 vision encoder made spatially aware")
