"""2 gloo processes on 127.0.0.1 compute the same steps as 1 process with the same global batch:
DDP (replicated) and FSDP2 (sharded), through the one training loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from spatialboost.train import ConversationDataset, train
from spatialboost.train.distributed import launch_local
from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer
from tests.train_fixtures import distributed_cfg, distributed_worker, write_conversations

TOL = 1e-5
STRATEGIES = ("ddp", "fsdp")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(single-process run folder, 2-process run folder); each holds one subfolder per strategy."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("distributed")
    tokenizer = train_tiny_tokenizer(root / "tok")
    records = write_conversations(root / "data", 8)
    (root / "data" / "records.json").write_text(json.dumps(records))

    single = root / "single"
    vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-1)
    dataset = ConversationDataset(records, tokenizer, vlm.encoder.preprocess, image_root=root / "data", max_length=256)
    result = train(vlm, dataset, distributed_cfg(), single, progress=False)
    (single / "history.json").write_text(json.dumps(result.history))

    launch_local(distributed_worker, 2, str(root / "two"), str(root / "data"), str(root / "tok"), STRATEGIES)
    return single, root / "two"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_processes_match_one_process(runs: tuple[Path, Path], strategy: str) -> None:
    single, two = runs
    history_1 = json.loads((single / "history.json").read_text())
    history_2 = json.loads((two / strategy / "history.json").read_text())
    assert len(history_1) == len(history_2) == 3
    assert history_1[-1]["loss"] != history_1[0]["loss"]  # it trained
    for key in ("loss", "grad_norm", "tokens"):  # grad_norm: AdamW alone would hide a gradient scale error
        pairs = [(a[key], b[key]) for a, b in zip(history_1, history_2, strict=True)]
        assert all(abs(a - b) <= TOL * max(1.0, abs(a)) for a, b in pairs), (key, pairs)

    params_1 = load_file(single / "checkpoints" / "step-000003" / "trainable.safetensors")
    params_2 = load_file(two / strategy / "checkpoints" / "step-000003" / "trainable.safetensors")
    assert set(params_1) == set(params_2) and len(params_1) > 0
    worst = max((params_1[k] - params_2[k]).abs().max().item() for k in params_1)
    assert worst <= TOL, worst
    files = sorted(p.name for p in (two / strategy / "checkpoints" / "step-000003").iterdir())
    assert "rng-rank0.pt" in files and "rng-rank1.pt" in files


def test_torchrun_runs_the_training_stage(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """`torchrun -m spatialboost.train` end to end: 2 gloo processes, then the saved outputs."""
    root = runs[0].parent
    from spatialboost.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(root / "tok")
    init = tiny_vlm(tokenizer, "dinov2", feature_layer=-1).save(tmp_path / "init")
    tokenizer.save_pretrained(init / "language_model")
    train_section = {"init": str(init), "data": str(root / "data" / "records.json"), "image_root": str(root / "data"),
                     "output": str(tmp_path / "out"), "max_steps": 2, "global_batch_size": 8, "micro_batch_size": 2,
                     "checkpoint_every": 0, "max_length": 256}  # fmt: skip
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"device": "cpu", "train": train_section}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "spatialboost.train", "--params", str(params), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2/2 steps" in done.stdout
    out = tmp_path / "out"
    assert (out / "vlm" / "vlm.json").exists() and (out / "encoder" / "encoder.json").exists()
    assert {"rng-rank0.pt", "rng-rank1.pt"} <= {p.name for p in (out / "checkpoints" / "step-000002").iterdir()}
