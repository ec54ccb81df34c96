"""Issue #17's acceptance, as a new user would run it: the paper profile boosts DINOv2, then OpenCLIP,
under `dvc repro`: hub -> align -> instruct -> train (boost) -> evaluate -> register, with tiny models
of the real classes in the hub layout (tests/tiny_hub.py + tests/tiny_lvlm_hub.py) and LLaVA-1.5's
data in its released formats at the profile's paths. The registered `spatialboost-dinov2-vit-l-14`
and `spatialboost-openclip-vit-l-14` load in a new process.

What differs from configs/paper.yaml (and why): CPU sizes and precision; a local MLflow store; the
boost's conversations come from the world's ground-truth extractor (data.source world, extract
ground_truth) and evaluate runs the world probes, because this test is about the encoder stages:
tests/test_paper_profile.py runs Depth Pro + SAM 2 extraction and the paper's benchmarks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.checkout import copy_checkout
from tests.tiny_hub import save_paper_mirror
from tests.tiny_lvlm_hub import save_encoder_repos, write_llava_data

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMIT = "e17e" * 10
STAGES = ["hub", "world", "manifest", "extract", "synthesize", "bootstrap", "align", "instruct", "train", "evaluate", "register"]
BENCHMARKS = ["nyu", "kitti", "ade20k", "voc", "imagenet", "cifar100", "blink", "spatialrgpt", "vqav2", "gqa",
              "mmbench", "mme"]  # fmt: skip
PHASE_SIZES = [f"lvlm.{phase}.{key}" for phase in ("align", "instruct") for key in (
    "global_batch_size=4", "micro_batch_size=2", "max_steps=2", "precision=fp32", "num_workers=0",
    "gradient_checkpointing=false", "strategy=ddp", "max_length=256", "num_threads=1")]  # fmt: skip
CPU = [
    "device=cpu", "orchestration.train_nproc_per_node=1", "extract.dtype=float32",
    "world.n_train=12", "world.n_test=2", "world.width=64", "world.height=64", "data.source=world", "data.uri=data/world",
    "data.watch=data/world", "extract.backend=ground_truth", "extract.shard_size=4", "synthesize.shard_size=4",
    "train.image_root=data/world", "train.global_batch_size=4", "train.micro_batch_size=2", "train.max_steps=2",
    "train.precision=fp32",
    "train.num_workers=0", "train.gradient_checkpointing=false", "train.max_length=768", "train.num_threads=1",
    "evaluate.seeds=[0]", "evaluate.learning_rates=[0.01]", "evaluate.epochs=1", "evaluate.max_new_tokens=4",
    "evaluate.vqa_batch_size=4", "evaluate.probe_threads=1", "evaluate.max_vqa_items=4", "evaluate.n_depth_examples=0",
    *[f"evaluate.benchmarks.{name}=null" for name in BENCHMARKS],
    "tracking.tracking_uri=sqlite:///mlflow.db", "tracking.artifact_location=mlartifacts",
    "tracking.champion_metric=boosted.vqa_relative_depth_acc.mean", *PHASE_SIZES,
]  # fmt: skip


@dataclass
class Repo:
    path: Path
    env: dict[str, str]


def _run(cmd: list[str], repo: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
    return done.stdout + done.stderr


def _set(repo: Repo, overrides: list[str]) -> None:
    """What `dvc exp run -S key=value` does to params.yaml before it reproduces."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(repo.path / "params.yaml", overrides)


@pytest.fixture(scope="module")
def repo(prefect_server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    tmp = tmp_path_factory.mktemp("paper-encoders")
    path = tmp / "repo"
    path.mkdir()
    copy_checkout(path)
    (path / ".gitignore").write_text("__pycache__/\n/data/llava\n/mlflow.db\n/mlartifacts\n/.prefect\n")
    mirror = save_encoder_repos(save_paper_mirror(tmp / "mirror", COMMIT), COMMIT, roles=("dinov2",))
    write_llava_data(path / "data" / "llava")  # where configs/paper.yaml's lvlm.align/instruct look for it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env |= {**prefect_server_env, "PYTHONPATH": f"{path / 'src'}{os.pathsep}{path}", "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}  # fmt: skip
    cli = [sys.executable, "-m", "spatialboost.cli"]
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [*cli, "profile", "use", "paper"],
                [*cli, "hub", "lock", "--mirror", str(mirror)]):  # fmt: skip
        _run(cmd, path, env)
    repo = Repo(path, env)
    _set(repo, [*CPU, f"hub.mirror={mirror}"])
    _run(["git", "add", "-A"], path, env)
    _run(["git", "commit", "-qm", "paper profile, CPU sizes"], path, env)
    yield repo


def _metrics(repo: Repo, stage: str) -> dict:
    return json.loads((repo.path / "metrics" / f"{stage}.json").read_text())


def test_hub_lock_pins_the_encoders_the_mirror_has(repo: Repo) -> None:
    hub = yaml.safe_load((repo.path / "configs" / "paper.yaml").read_text())["hub"]
    assert hub["encoders"]["dinov2"]["revision"] == COMMIT and hub["models"]["lvlm"]["revision"] == COMMIT
    assert hub["encoders"]["dinov3"]["revision"] is None  # not in the mirror (a gated repository): left unpinned, not an error


def test_dvc_repro_boosts_dinov2_through_align_and_instruct(repo: Repo) -> None:
    _set(repo, ["lvlm.encoder=dinov2"])
    log = _run([str(BIN / "dvc"), "repro"], repo.path, repo.env, timeout=1500)
    assert list(yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"]) == STAGES
    assert _metrics(repo, "hub")["fetched"] == ["depth", "dinov2", "labeler", "lvlm", "segmenter"]  # not SigLIP's, DINOv3's, ...
    assert (repo.path / "models" / "encoders" / "dinov2" / "model.safetensors").is_file()
    align, instruct = _metrics(repo, "align"), _metrics(repo, "instruct")
    assert align["encoder"] == instruct["encoder"] == "dinov2" and align["steps"] == instruct["steps"] == 2
    assert align["data"]["records"] == 8 and instruct["data"]["sources"] == {"coco": 1, "gqa": 1, "ocr_vqa": 1, "textvqa": 1,
                                                                              "text": 2, "vg": 2}  # fmt: skip
    assert align["trainable"]["stage"] == "align" and instruct["trainable"]["stage"] == "instruct"
    assert "Running stage 'align'" in log and "Running stage 'instruct'" in log
    pointer = json.loads((repo.path / "models" / "lvlm" / "instruct" / "lvlm.json").read_text())
    assert pointer == {"schema_version": 1, "encoder": "dinov2", "vlm": "dinov2/vlm"}
    spec = json.loads((repo.path / "models" / "boosted" / "encoder" / "encoder.json").read_text())
    assert spec["family"] == "dinov2" and spec["dual_channel"] and spec["feature_layer"] == -2
    register = _metrics(repo, "register")
    assert register["model"] == "spatialboost-dinov2-vit-l-14" and register["version"] == 1
    assert _metrics(repo, "train")["steps"] == 2 and "boosted" in _metrics(repo, "evaluate")


def test_switching_to_openclip_reruns_only_the_encoder_stages(repo: Repo) -> None:
    _set(repo, ["lvlm.encoder=openclip"])
    log = _run([str(BIN / "dvc"), "repro"], repo.path, repo.env, timeout=1500)
    for stage in ("world", "manifest", "extract", "synthesize"):
        assert f"Stage '{stage}' didn't change, skipping" in log, stage
    assert _metrics(repo, "align")["encoder"] == "openclip" and not _metrics(repo, "align")["reused"]
    assert _metrics(repo, "register")["model"] == "spatialboost-openclip-vit-l-14"
    spec = json.loads((repo.path / "models" / "boosted" / "encoder" / "encoder.json").read_text())
    assert spec["family"] == "open_clip" and spec["feature_layer"] == -2
    assert (repo.path / "models" / "lvlm" / "instruct" / "dinov2" / "vlm" / "vlm.json").is_file()  # kept for a switch back
    subprocess.run([str(BIN / "dvc"), "status", "-q", "dvc.yaml"], cwd=repo.path, env=repo.env, check=True)  # nothing left to rerun


_LOAD = """
import json, sys
import numpy as np
from spatialboost.tracking import load_encoder
out = {}
for name in sys.argv[2:]:
    extractor = load_encoder(f"models:/{name}@candidate", tracking_uri=sys.argv[1])
    feats = extractor(np.full((40, 48, 3), 128, np.uint8))
    out[name] = {"family": extractor.encoder.family, "shape": list(feats.patch_tokens.shape)}
print(json.dumps(out))
"""


def test_both_registered_encoders_load_in_a_new_process(repo: Repo) -> None:
    names = ["spatialboost-dinov2-vit-l-14", "spatialboost-openclip-vit-l-14"]
    env = {**repo.env, "PYTHONPATH": str(ROOT / "src")}  # the installed library, not the clone's
    done = subprocess.run([sys.executable, "-c", _LOAD, f"sqlite:///{repo.path / 'mlflow.db'}", *names], cwd=repo.path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["spatialboost-dinov2-vit-l-14"] == {"family": "dinov2", "shape": [1, 16, 32]}
    assert loaded["spatialboost-openclip-vit-l-14"] == {"family": "open_clip", "shape": [1, 16, 32]}
