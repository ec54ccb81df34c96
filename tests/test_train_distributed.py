"""2 gloo processes on 127.0.0.1 compute the same steps as 1 process with the same global batch:
DDP (replicated) and FSDP2 (sharded), through the one training loop."""

from __future__ import annotations

import json
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


def test_train_flow_starts_torchrun_itself_and_keeps_rank_0_metrics(
    runs: tuple[Path, Path], tmp_path: Path, prefect_harness: None
) -> None:
    """orchestration.train_nproc_per_node=2: the train stage's flow (what `dvc repro` runs) launches
    `torchrun -m spatialboost.train` itself (2 gloo processes), then writes metrics/train.json."""
    from flows.train import train_flow
    from spatialboost.models.tokenizer import load_tokenizer

    root = runs[0].parent
    tokenizer = load_tokenizer(root / "tok")
    init = tiny_vlm(tokenizer, "dinov2", feature_layer=-1).save(tmp_path / "init")
    tokenizer.save_pretrained(init / "language_model")
    train_section = {"init": str(init), "data": str(root / "data" / "records.json"), "image_root": str(root / "data"),
                     "output": str(tmp_path / "out"), "max_steps": 2, "global_batch_size": 8, "micro_batch_size": 2,
                     "checkpoint_every": 0, "max_length": 256}  # fmt: skip
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"device": "cpu", "train": train_section,
                                      "orchestration": {"metrics_dir": str(tmp_path / "metrics")}}))  # fmt: skip
    returned = train_flow(str(params), ["orchestration.train_nproc_per_node=2"])
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert metrics == returned
    assert metrics["processes"] == 2 and metrics["steps"] == metrics["total_steps"] == 2
    assert metrics["final_loss"] is not None and metrics["trainable"]  # rank 0 trained and reported
    out = tmp_path / "out"
    assert (out / "vlm" / "vlm.json").exists() and (out / "encoder" / "encoder.json").exists()
    assert {"rng-rank0.pt", "rng-rank1.pt"} <= {p.name for p in (out / "checkpoints" / "step-000002").iterdir()}


def test_torchrun_command_hands_on_params_and_overrides() -> None:
    from spatialboost.train.launch import torchrun_command

    command = torchrun_command("configs/paper.yaml", ["train.lr=1e-5", "train.adapter=lora"], 4, "/tmp/result.json")
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m",
                           "spatialboost.train", "--params", "configs/paper.yaml", "-S", "train.lr=1e-5",
                           "-S", "train.adapter=lora", "--result", "/tmp/result.json"]  # fmt: skip
    align = torchrun_command("params.yaml", [], 8, "/tmp/r.json", stage="align")  # LLaVA-1.5's stage 1 of a new encoder
    assert align[align.index("spatialboost.train") + 1 :][:2] == ["--stage", "align"]


def test_more_processes_than_gpus_is_a_clear_error() -> None:
    from spatialboost.config import ConfigError, load_config
    from spatialboost.train.launch import check_devices

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "paper.yaml")  # device cuda, 4 processes
    if torch.cuda.device_count() >= 4:
        pytest.skip("this machine has the 4 GPUs")
    with pytest.raises(ValueError, match=r"orchestration.train_nproc_per_node=4 but \d+ GPUs are visible"):
        check_devices(cfg)
    with pytest.raises(ConfigError, match="train_nproc_per_node=3: train.global_batch_size 128 is not a multiple"):
        load_config(root / "configs" / "paper.yaml", ["orchestration.train_nproc_per_node=3"])
