"""Shared pieces of the training tests: a few LLaVA conversations on disk, tensor hashes, configs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from spatialboost.config import TrainConfig
from tests.tiny_vlm import random_images

QA = [
    ("Which point is closer to the camera, A or B?", "Point A is closer."),
    ("What is the depth at pixel (12, 20)?", "The depth there is 2.4 meters."),
    ("Is the chair above or below the table?", "The chair is below the table."),
    ("How far is the lamp from the sofa?", "The lamp is 85 centimeters from the sofa."),
    ("Where is the red cube?", "The red cube is to the left of the blue sphere."),
    ("What is in the kitchen?", "A green cylinder on the floor."),
    ("Which point is nearer, A or B?", "Point B is closer."),
    ("How far apart are they?", "About 1.3 meters apart."),
]


def write_conversations(folder: Path, n: int, turns: int = 1) -> list[dict]:
    """n LLaVA records with their own random image each (folder/<i>.png) and `turns` QA turns."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, image in enumerate(random_images(n, seed=1)):
        Image.fromarray(image).save(folder / f"{i}.png")
        messages = []
        for t in range(turns):
            question, answer = QA[(i + t) % len(QA)]
            messages.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + question})
            messages.append({"from": "gpt", "value": answer})
        records.append({"id": f"conv-{i}", "image": f"{i}.png", "conversations": messages})
    return records


def tensor_hashes(module: nn.Module) -> dict[str, str]:
    """sha256 of every parameter and buffer (bytes of the tensor), by name."""
    out = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        data = tensor.detach().cpu().contiguous()
        out[name] = hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Names whose tensors differ (the name sets must match)."""
    assert set(before) == set(after), sorted(set(before) ^ set(after))[:5]
    return {name for name in before if before[name] != after[name]}


def train_cfg(**overrides) -> TrainConfig:
    """A fast CPU config: fp32, no warmup to speak of, checkpoints only at the end."""
    values = dict(
        global_batch_size=4, micro_batch_size=2, max_steps=3, lr=1e-3, warmup_ratio=0.0, checkpoint_every=0,
        precision="fp32", max_length=256,
    )
    return TrainConfig(**{**values, **overrides})


def distributed_worker(out_dir: str, conversations_dir: str, tokenizer_dir: str, strategies: tuple[str, ...]) -> None:
    """One process of a local multi-process run (distributed.launch_local): boost-train the tiny
    VLM with each strategy; the final checkpoint (full tensors, rank 0) and losses land in
    out_dir/<strategy>/."""
    import json

    from spatialboost.models.tokenizer import load_tokenizer
    from spatialboost.train import ConversationDataset, DistContext, train
    from tests.tiny_vlm import tiny_vlm

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(tokenizer_dir)
    records = json.loads((Path(conversations_dir) / "records.json").read_text())
    for strategy in strategies:
        vlm = tiny_vlm(tokenizer, "dinov2", feature_layer=-1)
        dataset = ConversationDataset(records, tokenizer, vlm.encoder.preprocess, image_root=conversations_dir, max_length=256)
        result = train(vlm, dataset, distributed_cfg(strategy), Path(out_dir) / strategy, progress=False)
        if DistContext.current("cpu").is_main:
            (Path(out_dir) / strategy / "history.json").write_text(json.dumps(result.history))


def distributed_cfg(strategy: str = "ddp") -> TrainConfig:
    """8 conversations per step in micro-batches of 2: 4 accumulation steps on 1 process, 2 on 2."""
    return train_cfg(global_batch_size=8, micro_batch_size=2, max_steps=3, lr=3e-3, strategy=strategy)
