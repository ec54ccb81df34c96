"""The paper profile end to end (issue #16, item 5): `dvc repro` from `hub` through `register` in a
temporary clone, on params derived from configs/paper.yaml by changing only the device, paths and
sizes, with every server real on 127.0.0.1 (Prefect, `mlflow server` with S3 artefacts, moto's S3).

What runs on the real classes, loaded by the pipeline's own code from the hub layout under the
real repositories' file names (`spatialboost hub lock` + the hub stage read a mirror):
- Depth Pro (`DepthProForDepthEstimation`) and SAM 2 (`Sam2Model`) with hand-set weights
  (tests/tiny_scene_models.py): the test camera's ground-plane depth, hue-keyed masks. The images
  are world renders from that camera, saved as JPEG with the EXIF focal length, on moto's S3
  (and, second, in a folder): the extractor finds their coloured objects.
- OpenCLIP (`local-dir:models/hub/labeler`, a random tiny CLIP: the labels are arbitrary names of
  the vocabulary), LLaVA (`LlavaForConditionalGeneration`, CLIP tower + Llama, random tiny) whose
  CLIP tower is boosted, DINOv2-protocol probes and VQA on tiny fixtures of every benchmark.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from spatialboost.config import SpatialBoostConfig, load_config
from spatialboost.evaluate.fixtures import write_benchmark_fixtures
from tests.checkout import copy_checkout
from tests.servers import free_port, stop_process, wait_http
from tests.tiny_hub import save_paper_mirror
from tests.tiny_scene_models import GroundCamera, scene_jpegs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["hub", "world", "manifest", "extract", "synthesize", "bootstrap", "align", "instruct", "train", "evaluate", "register"]
LEVELS = {"pixel", "object", "scene"}
BENCHMARKS = ["nyu", "kitti", "ade20k", "voc", "imagenet", "cifar100", "blink", "spatialrgpt", "vqav2", "gqa",
              "mmbench", "mme"]  # fmt: skip
CAMERA = GroundCamera()
COMMIT = "e2e0" * 10
N_IMAGES = 8
BUCKET = "sb-paper-e2e"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIAPAPERE2EFAKE0001", "AWS_SECRET_ACCESS_KEY": "paper/e2e+Fake+Secret+Never+Logged0"}

SIZES = [
    "world.n_test=2", "world.width=64", "world.height=64",
    "extract.shard_size=4", "extract.depth.batch_size=4", "extract.segmenter.points_per_side=16",
    "extract.segmenter.points_per_batch=64", "extract.labeler.batch_size=32", "synthesize.shard_size=4",
    "train.global_batch_size=4", "train.micro_batch_size=2", "train.num_workers=1",
    "evaluate.seeds=[0]", "evaluate.learning_rates=[0.01]", "evaluate.epochs=1", "evaluate.max_new_tokens=4",
    "evaluate.vqa_batch_size=4", "evaluate.probe_threads=1", "evaluate.benchmarks.feature_batch_size=8",
    *(f"evaluate.benchmarks.{name}.{cap}={n}" for name in ("nyu", "kitti", "ade20k", "voc")
      for cap, n in (("max_train_images", 2), ("max_test_images", 1))),  # sliding windows: the slow part
    "orchestration.train_nproc_per_node=1",
]  # fmt: skip
DEVICE = ["device=cpu", "extract.dtype=float32", "train.precision=fp32"]
"""What a CPU runner changes: the device and the precision it runs at."""


def _paths(endpoint: str, tracking_uri: str, mirror: Path) -> list[str]:
    return [
        f"data.uri=s3://{BUCKET}/sa1b/images", f"data.s3.endpoint_url={endpoint}", f"hub.mirror={mirror}",
        f"tracking.tracking_uri={tracking_uri}",
        "evaluate.benchmarks.spatialrgpt.image_root=data/benchmarks/SpatialRGPT-Bench/omni3d/datasets",
    ]  # fmt: skip


FOLDER = ["data.source=folder", "data.uri=data/photos", "data.watch=data/photos", "train.image_root=data/photos"]
"""The same images from a folder (the conversations then name them relative to it)."""
ALLOWED = {o.split("=")[0] for o in SIZES + DEVICE + _paths("", "", Path()) + FOLDER}
"""Every key the test may change against configs/paper.yaml."""


@dataclass
class PaperRun:
    repo: Path
    env: dict[str, str]
    cfg: SpatialBoostConfig
    jpegs: dict[str, bytes]
    tracking_uri: str
    repro_log: str


def _run(cmd: list[str], repo: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def paper_run(prefect_server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperRun]:
    from moto.server import ThreadedMotoServer

    tmp = tmp_path_factory.mktemp("paper")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env = {**clean, **prefect_server_env, **KEYS, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
           "PYTHONPATH": f"{tmp / 'repo' / 'src'}{os.pathsep}{tmp / 'repo'}", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "MPLBACKEND": "Agg"}  # fmt: skip
    moto_port, mlflow_port = free_port(), free_port()
    endpoint, tracking_uri = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{mlflow_port}"
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    mlflow = subprocess.Popen(  # starting takes ~15 s: meanwhile the clone, the mirror and the images are made
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", f"s3://{BUCKET}/mlflow"],
        env={**env, "MLFLOW_S3_ENDPOINT_URL": endpoint}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        repo = tmp / "repo"
        copy_checkout(repo)
        mirror = save_paper_mirror(tmp / "mirror", COMMIT, camera=CAMERA)
        jpegs = scene_jpegs(CAMERA, tmp / "renders", N_IMAGES)
        for name, data in jpegs.items():
            s3.put_object(Bucket=BUCKET, Key=f"sa1b/images/{name}", Body=data)
        write_benchmark_fixtures(repo / "data" / "benchmarks")
        wait_http(f"{tracking_uri}/health", mlflow, timeout=180)

        # README's paper-profile commands, then what a CPU runner changes (as `dvc exp run -S` would).
        cli = [sys.executable, "-m", "spatialboost.cli"]
        for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [*cli, "profile", "use", "paper"],
                    [*cli, "hub", "lock", "--mirror", str(mirror)]):  # fmt: skip
            _run(cmd, repo, env)
        from dvc.utils.hydra import apply_overrides

        apply_overrides(repo / "params.yaml", DEVICE + _paths(endpoint, tracking_uri, mirror) + SIZES)
        _run([*cli, "hub", "fetch"], repo, env)
        for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "paper profile, CPU sizes"]):
            _run(cmd, repo, env)
        log = _run([str(BIN / "dvc"), "repro"], repo, env, timeout=1500)
        yield PaperRun(repo, env, load_config(repo / "params.yaml"), jpegs, tracking_uri, log)
    finally:
        stop_process(mlflow)
        moto.stop()


def test_the_params_differ_from_the_paper_profile_only_in_device_paths_and_sizes(paper_run: PaperRun) -> None:
    from spatialboost.profiles import profile_status

    status = profile_status(paper_run.repo / "params.yaml", paper_run.repo)
    assert status.profile == "paper" and status.source == paper_run.repo / "configs" / "paper.yaml"
    changed = {line.split(":")[0] for line in status.differences}
    assert changed and changed <= ALLOWED, changed - ALLOWED
    cfg = paper_run.cfg
    assert all(pin.revision == COMMIT for pin in cfg.hub.models.values())  # `hub lock` pinned the profile itself
    assert cfg.extract.backend == "models" and cfg.data.source == "s3" and cfg.registry.enabled
    assert cfg.extract.labeler.model_name == "local-dir:models/hub/labeler" and cfg.train.init == "models/lvlm/instruct"
    assert cfg.lvlm.encoder == "llava"  # LLaVA-1.5 itself: released, align and instruct point at its weights


def test_every_stage_ran_under_dvc_repro(paper_run: PaperRun) -> None:
    repo = paper_run.repo
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert list(lock) == STAGES
    metrics = {stage: json.loads((repo / "metrics" / f"{stage}.json").read_text()) for stage in STAGES}
    assert metrics["hub"]["source"] == "mirror" and metrics["hub"]["roles"] == 4
    assert metrics["bootstrap"]["skipped"] is True  # LLaVA-1.5 comes from the hub
    assert metrics["align"]["skipped"] is True and metrics["instruct"]["skipped"] is True  # released weights
    assert metrics["manifest"]["n_ok"] == N_IMAGES and metrics["manifest"]["n_quarantined"] == 0
    extract, synthesize = metrics["extract"], metrics["synthesize"]
    assert extract["n_records"] == N_IMAGES and extract["n_quarantined"] == 0
    assert extract["n_objects"] >= 2 * N_IMAGES  # the hue-keyed SAM 2 finds the coloured objects
    assert synthesize["n_conversations"] == N_IMAGES and synthesize["n_quarantined"] == 0
    assert metrics["train"]["steps"] >= 2
    subprocess.run([str(BIN / "dvc"), "status", "-q", "dvc.yaml"], cwd=repo, env=paper_run.env, check=True)  # nothing left to rerun


def test_every_conversation_has_pixel_object_and_scene_turns(paper_run: PaperRun) -> None:
    qa = paper_run.repo / paper_run.cfg.synthesize.output
    sidecars = [json.loads(line) for path in sorted(qa.glob("shard-?????.jsonl")) for line in path.read_text().splitlines()]
    assert len(sidecars) == N_IMAGES
    for conversation in sidecars:
        assert {turn["level"] for turn in conversation["turns"]} >= LEVELS, conversation["id"]
        assert conversation["image"].startswith(f"s3://{BUCKET}/sa1b/images/")
    written = json.loads((qa / "conversations.json").read_text())
    assert len(written) == N_IMAGES and all(len(c["conversations"]) >= 2 * len(LEVELS) for c in written)


def test_evaluate_holds_every_benchmark_and_the_report_the_papers_tables(paper_run: PaperRun) -> None:
    metrics = json.loads((paper_run.repo / "metrics" / "evaluate.json").read_text())
    configured = {name for name in BENCHMARKS if getattr(paper_run.cfg.evaluate.benchmarks, name) is not None}
    assert configured == set(BENCHMARKS)  # configs/paper.yaml sets all twelve
    for run in ("baseline", "boosted"):
        assert set(metrics[run]) == configured
        for scores in metrics[run].values():
            assert all(np.isfinite(s["mean"]) for s in scores.values() if s["mean"] is not None)
    assert metrics["baseline"] != metrics["boosted"]
    report = (paper_run.repo / paper_run.cfg.evaluate.output / "report.md").read_text()
    assert "Table 1" in report and "Table 3" in report


def test_the_registered_encoder_loads_in_a_new_process_with_the_trained_features(paper_run: PaperRun, tmp_path: Path) -> None:
    from PIL import Image

    from spatialboost.models.export import load_exported_encoder
    from spatialboost.tracking import embed_images

    repo, cfg = paper_run.repo, paper_run.cfg
    record = json.loads((repo / "metrics" / "register.json").read_text())
    name = f"{cfg.tracking.registry_prefix}{cfg.registered_encoder_name()}"
    assert record["model"] == name == "spatialboost-clip-vit-l-14-336-llava-1.5" and record["version"] == 1
    assert record["champion"] is True  # the first version with the champion metric
    images = np.stack([np.asarray(Image.open(io.BytesIO(data))) for data in list(paper_run.jpegs.values())[:2]])
    np.save(tmp_path / "images.npy", images)
    expected = embed_images(load_exported_encoder(repo / cfg.train.output / "encoder"), images)
    code = (
        "import sys, numpy as np\n"
        "from spatialboost.tracking import load_encoder, embed_images\n"
        "enc = load_encoder(sys.argv[1], tracking_uri=sys.argv[2])\n"
        "np.save(sys.argv[3], embed_images(enc, np.load(sys.argv[4])))\n"
    )
    no_keys = {k: v for k, v in paper_run.env.items() if not k.startswith("AWS_")}  # artefacts come through the server
    subprocess.run([sys.executable, "-c", code, f"models:/{name}@champion", paper_run.tracking_uri, str(tmp_path / "out.npy"),
                    str(tmp_path / "images.npy")], check=True, timeout=300, env=no_keys, cwd=tmp_path)  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
    Image.fromarray(images[0]).save(tmp_path / "image.png")
    pulled = subprocess.run([sys.executable, "-m", "spatialboost.cli", "pull", f"{name}@candidate", "--image", str(tmp_path / "image.png"),
                             "--out", str(tmp_path / "pulled")], cwd=repo, env=no_keys, capture_output=True, text=True,
                            check=True, timeout=300)  # fmt: skip
    assert json.loads(pulled.stdout.strip().splitlines()[-1])["embedding_shape"] == [1, 32]  # the tiny CLIP tower's width

    import mlflow

    client = mlflow.MlflowClient(paper_run.tracking_uri)
    run = client.get_run(record["run_id"])
    assert run.data.params["device"] == "cpu" and "boosted.blink.relative_depth_acc.mean" in run.data.metrics
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in json.dumps({**run.data.params, **run.data.tags})
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in paper_run.repro_log


def test_the_folder_source_through_training(paper_run: PaperRun) -> None:
    """The same JPEGs from a folder: the stages up to train rerun (evaluate and register would
    repeat the S3 run's work on the same kind of model, so they are left out for time)."""
    from dvc.utils.hydra import apply_overrides

    repo = paper_run.repo
    photos = repo / "data" / "photos"
    photos.mkdir(parents=True)
    for name, data in paper_run.jpegs.items():
        (photos / name).write_bytes(data)
    apply_overrides(repo / "params.yaml", FOLDER)
    _run([str(BIN / "dvc"), "repro", "train"], repo, paper_run.env)
    cfg = load_config(repo / "params.yaml")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["manifest"]["params"]["params.yaml"]["data"]["source"] == "folder"
    train = json.loads((repo / "metrics" / "train.json").read_text())
    assert train["steps"] >= 2 and train["resumed_from"] is None  # a fresh run on the folder's images
    extract = json.loads((repo / "metrics" / "extract.json").read_text())
    assert extract["n_records"] == N_IMAGES and extract["n_objects"] >= 2 * N_IMAGES
    qa = repo / cfg.synthesize.output
    sidecars = [json.loads(line) for path in sorted(qa.glob("shard-?????.jsonl")) for line in path.read_text().splitlines()]
    assert len(sidecars) == N_IMAGES and {c["image"] for c in sidecars} == set(paper_run.jpegs)  # relative to data.uri
    assert all({turn["level"] for turn in c["turns"]} >= LEVELS for c in sidecars)
