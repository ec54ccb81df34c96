"""Artefacts are byte-reproducible: the same inputs give the same bytes in a fresh process, and a
resumed training run writes the same bytes as an uninterrupted one.

Each run is its own Python process with its own PYTHONHASHSEED (set and dict orders, and
safetensors' metadata order, differ between processes): `spatialboost data manifest`,
`extract` and `synthesize` on a small world, and `python -m spatialboost.train` (the train
stage's command) on a tiny VLM. Every file under the outputs is hashed; the trees must be equal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spatialboost.config import WorldConfig
from spatialboost.world import render_dataset
from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer
from tests.train_fixtures import write_conversations

ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(*folders: Path) -> dict[str, str]:
    """sha256 of every file below the folders, by path relative to each folder's parent."""
    out = {}
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            out[path.relative_to(folder.parent).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run(args: list[str], hash_seed: int) -> None:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed),
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_manifest_extract_and_synthesize_give_the_same_bytes_in_fresh_processes(tmp_path: Path) -> None:
    world = tmp_path / "world"
    render_dataset(WorldConfig(n_train=6, n_test=2, width=64, height=64), world, progress=False)
    out = tmp_path / "run"
    overrides = [
        f"data.uri={world}", f"data.watch={world}", f"data.manifest={out / 'manifest.jsonl'}",
        f"data.quarantine={out / 'quarantine.jsonl'}", f"extract.output={out / 'scenes'}", f"synthesize.output={out / 'qa'}",
        "extract.n_overlays=2", "synthesize.n_renderings=2", "synthesize.shard_size=4", "extract.shard_size=4",
    ]  # fmt: skip
    flags = [arg for o in overrides for arg in ("-S", o)]
    hashes = []
    for hash_seed in (1, 2):
        shutil.rmtree(out, ignore_errors=True)
        for command in (["data", "manifest"], ["extract"], ["synthesize"]):
            run(["-m", "spatialboost.cli", *command, *flags, "--no-progress"], hash_seed)
        hashes.append(tree_hashes(out))
    assert len(hashes[0]) >= 20 and any(name.endswith(".parquet") for name in hashes[0])
    assert hashes[0] == hashes[1], sorted(k for k in hashes[0] if hashes[0][k] != hashes[1].get(k))


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A params file for the boost stage of a tiny VLM on 8 conversations (4 steps, a checkpoint every 2)."""
    root = tmp_path_factory.mktemp("train")
    tokenizer = train_tiny_tokenizer(root / "tokenizer")
    vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-1)
    vlm.save(root / "init")
    tokenizer.save_pretrained(root / "init" / "language_model")
    records = write_conversations(root / "images", 8)
    (root / "data.json").write_text(json.dumps(records))
    train = {"init": str(root / "init"), "data": str(root / "data.json"), "image_root": str(root / "images"), "split": None,
             "output": str(root / "out"), "max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": 2, "global_batch_size": 4,
             "micro_batch_size": 2, "max_length": 256, "lr": 3e-3, "warmup_ratio": 0.25}  # fmt: skip
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"device": "cpu", "train": train}))
    return params


def test_training_gives_the_same_bytes_in_fresh_processes_and_after_a_resume(train_setup: Path) -> None:
    out = train_setup.parent / "out"
    command = ["-m", "spatialboost.train", "--params", str(train_setup), "--no-progress"]
    hashes = []
    for hash_seed in (1, 2):
        shutil.rmtree(out, ignore_errors=True)
        run(command, hash_seed)
        hashes.append(tree_hashes(out))
    names = set(hashes[0])
    assert {"out/encoder/model.safetensors", "out/vlm/projector.safetensors", "out/boost_result.json",
            "out/checkpoints/step-000004/trainable.safetensors"} <= names  # fmt: skip
    assert hashes[0] == hashes[1], sorted(k for k in names if hashes[0][k] != hashes[1].get(k))

    # A run killed after step 3: its last checkpoint is step 2, nothing of the end was written.
    checkpoints = out / "checkpoints"
    shutil.rmtree(checkpoints / "step-000004")
    (checkpoints / "latest.json").write_text(json.dumps({"step": 2, "path": "step-000002"}))
    for name in ("vlm", "encoder"):
        shutil.rmtree(out / name)
    (out / "boost_result.json").unlink()
    run(command, 3)
    resumed = tree_hashes(out)
    changed = sorted(k for k in names if hashes[0][k] != resumed.get(k))
    assert set(resumed) == names and not changed, changed
