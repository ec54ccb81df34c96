"""S3 where users need it, against real servers on 127.0.0.1: `mlflow server` with a SQLite store
and S3 artefacts on moto (register, alias, pull from a separate process without AWS keys), and a
DVC remote on moto (push, lose everything local, pull back)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from spatialboost.config import TrackingConfig
from spatialboost.models.dual_channel import add_dual_channel
from spatialboost.models.export import export_encoder, load_exported_encoder
from spatialboost.tracking import Tracker, embed_images
from tests.servers import free_port, stop_process, wait_http
from tests.tiny_vlm import random_images, tiny_encoder

pytestmark = pytest.mark.integration
KEYS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-never-logged",
        "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="spatialboost-test")
    try:
        yield endpoint
    finally:
        server.stop()


def test_mlflow_server_with_s3_artifacts_register_alias_pull(moto_s3: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": moto_s3}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", "s3://spatialboost-test/mlflow", "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", server, timeout=120)
        tracker = Tracker(TrackingConfig(tracking_uri=uri, champion_metric="score", champion_mode="max"), profile="demo")
        encoder = tiny_encoder("dinov2", seed=5)
        add_dual_channel(encoder)
        export = export_encoder(encoder, tmp_path / "export")
        with tracker.run("pipeline"):
            tracker.log_metrics({"score": 1.0})
            version = tracker.register_encoder(export, "dinov2-tiny")
            assert tracker.promote_if_better("spatialboost-dinov2-tiny", version)

        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_s3).list_objects_v2(
            Bucket="spatialboost-test", Prefix="mlflow/")["Contents"]]
        assert any(k.endswith("model.safetensors") for k in keys)  # artefacts really live on S3

        images = np.stack(random_images(2, size=(32, 32)))
        np.save(tmp_path / "images.npy", images)
        code = (
            "import sys, numpy as np\n"
            "from spatialboost.tracking import load_encoder, embed_images\n"
            "enc = load_encoder('models:/spatialboost-dinov2-tiny@champion', tracking_uri=sys.argv[1])\n"
            "np.save(sys.argv[2], embed_images(enc, np.load(sys.argv[3])))\n"
        )
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        subprocess.run([sys.executable, "-c", code, uri, str(tmp_path / "out.npy"), str(tmp_path / "images.npy")],
                       check=True, timeout=300, env=clean_env)  # no AWS keys: the server proxies artefacts
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), embed_images(load_exported_encoder(export), images),
                                   atol=1e-6)
        run = tracker.client.search_runs([tracker.experiment_id()])[0]
        assert KEYS["AWS_SECRET_ACCESS_KEY"] not in json.dumps({**run.data.params, **run.data.tags})
    finally:
        stop_process(server)


def test_dvc_remote_on_s3_push_and_pull(moto_s3: str, tiny_dvc_repo: Path) -> None:
    def dvc(*args: str) -> str:
        return subprocess.run(["dvc", *args], cwd=tiny_dvc_repo, check=True, capture_output=True, text=True).stdout

    dvc("repro")
    dvc("remote", "add", "-d", "s3", "s3://spatialboost-test/dvc")
    dvc("remote", "modify", "s3", "endpointurl", moto_s3)
    dvc("remote", "modify", "--local", "s3", "access_key_id", KEYS["AWS_ACCESS_KEY_ID"])
    dvc("remote", "modify", "--local", "s3", "secret_access_key", KEYS["AWS_SECRET_ACCESS_KEY"])
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in (tiny_dvc_repo / ".dvc" / "config").read_text()  # git-tracked config
    dvc("push")

    (tiny_dvc_repo / "out.txt").unlink()
    shutil.rmtree(tiny_dvc_repo / ".dvc" / "cache")
    dvc("pull")
    assert (tiny_dvc_repo / "out.txt").read_text() == "hello world"
