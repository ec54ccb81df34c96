"""MLflow records: params from the config, the encoder registry with candidate/champion aliases,
and a pull in a fresh process that rebuilds the encoder from safetensors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.config import SpatialBoostConfig, TrackingConfig
from spatialboost.models.dual_channel import add_dual_channel
from spatialboost.models.export import export_encoder, load_exported_encoder
from spatialboost.tracking import CANDIDATE, CHAMPION, Tracker, download_encoder, embed_images, flatten
from tests.tiny_vlm import random_images, tiny_encoder


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    cfg = TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
        champion_metric="boosted.depth_rmse.mean",
        champion_mode="min",
    )
    return Tracker(cfg, profile="demo")


def _export(tmp_path: Path, seed: int) -> Path:
    encoder = tiny_encoder("dinov2", seed=seed)
    add_dual_channel(encoder)
    return export_encoder(encoder, tmp_path / f"export-{seed}")


def test_flatten_params() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_register_aliases_and_champion_rule(tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-never-logged")
    name = tracker.model_name("dinov2-tiny")
    versions = []
    for seed, rmse in [(0, 0.50), (1, 0.40), (2, 0.45)]:
        with tracker.run("pipeline", config=SpatialBoostConfig(), tags={"dvc.qa_hash": "abc"}) as run_id:
            tracker.log_metrics({"boosted.depth_rmse.mean": rmse})
            version = tracker.register_encoder(_export(tmp_path, seed), "dinov2-tiny")
            tracker.promote_if_better(name, version)
            versions.append(version)
        assert tracker.alias_version(name, CANDIDATE) == version  # candidate = latest
    assert versions == [1, 2, 3]
    assert tracker.alias_version(name, CHAMPION) == 2  # best rmse (0.40), not the latest (0.45)

    run = tracker.client.get_run(run_id)
    assert run.data.params["world.n_train"] == "256" and run.data.tags["dvc.qa_hash"] == "abc"
    assert run.data.tags["git.commit"]
    everything = json.dumps({**run.data.params, **run.data.tags})
    assert "s3cr3t-never-logged" not in everything


def test_pull_in_a_new_process_gives_the_same_features(tracker: Tracker, tmp_path: Path) -> None:
    export = _export(tmp_path, seed=3)
    with tracker.run("pipeline"):
        tracker.log_metrics({"boosted.depth_rmse.mean": 0.3})
        version = tracker.register_encoder(export, "dinov2-tiny")
        assert tracker.promote_if_better(tracker.model_name("dinov2-tiny"), version)
    images = np.stack(random_images(2, size=(32, 32)))
    np.save(tmp_path / "images.npy", images)
    expected = embed_images(load_exported_encoder(export), images)

    code = (
        "import sys, numpy as np\n"
        "from spatialboost.tracking import load_encoder, embed_images\n"
        "enc = load_encoder('models:/spatialboost-dinov2-tiny@champion', tracking_uri=sys.argv[1])\n"
        "np.save(sys.argv[2], embed_images(enc, np.load(sys.argv[3])))\n"
        "assert 'pickle' not in str(type(enc))\n"
    )
    subprocess.run([sys.executable, "-c", code, tracker.uri, str(tmp_path / "out.npy"), str(tmp_path / "images.npy")],
                   check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)

    # The CLI a user runs in a new shell: pull by alias, embed an image.
    Image.fromarray(images[0]).save(tmp_path / "img.png")
    shown = subprocess.run(
        [sys.executable, "-m", "spatialboost.cli", "pull", "spatialboost-dinov2-tiny@champion", "--out", str(tmp_path / "pulled"),
         "--image", str(tmp_path / "img.png"), "-S", f"tracking.tracking_uri={tracker.uri}"],
        check=True, timeout=300, capture_output=True, text=True,
    )
    assert json.loads(shown.stdout.strip().splitlines()[-1])["embedding_shape"] == [1, 32]

    # The registered model holds safetensors + JSON only: nothing a loader would unpickle.
    folder = download_encoder(f"models:/spatialboost-dinov2-tiny/{version}", tracking_uri=tracker.uri, dst=tmp_path / "dl")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "configuration_spatialboost.py", "encoder.json", "image_processing_spatialboost.py",
        "model.safetensors", "modeling_spatialboost.py", "preprocessor_config.json",
    ]  # fmt: skip
    assert not list((tmp_path / "dl").rglob("*.pkl"))
    np.testing.assert_allclose(embed_images(load_exported_encoder(folder), images), expected, atol=1e-6)


def test_mlflow_pyfunc_loads_without_pickle(tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    with tracker.run("pipeline"):
        tracker.register_encoder(_export(tmp_path, seed=4), "dinov2-tiny")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracker.uri)
    model = mlflow.pyfunc.load_model("models:/spatialboost-dinov2-tiny@candidate")
    images = np.stack(random_images(3, size=(32, 32)))
    assert model.predict(images).shape == (3, 32)


def test_registering_leaves_mlflow_as_it_was(tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """register_encoder points MLflow's fluent API at the tracker for the block only: the
    environment and whether this process set a tracking URI are as before (public API only)."""
    import os

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nowhere/else.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    was_set = mlflow.tracking.is_tracking_uri_set()
    before = mlflow.get_tracking_uri()
    with tracker.run("pipeline"):
        tracker.register_encoder(_export(tmp_path, seed=5), "dinov2-tiny")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nowhere/else.db" and "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.tracking.is_tracking_uri_set() == was_set and mlflow.get_tracking_uri() == before
    assert tracker.alias_version("spatialboost-dinov2-tiny", CANDIDATE) == 1  # registered where the tracker points
