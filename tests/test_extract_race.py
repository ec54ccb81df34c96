"""Two extraction threads in bf16 share one complete set of models (issue #16).

`from_pretrained(dtype=torch.bfloat16)` from two threads at once races on torch's process-wide
default dtype: one thread restores float32 while the other still creates parameters, giving a
Depth Pro of mixed bf16/fp32 parameters ("expected scalar type BFloat16 but found Float") and,
as often, a process left with bf16 as its default dtype (measured here: 5 of 10 concurrent
loads of the tiny Depth Pro). The extract tasks build their observer through `shared_observer`,
once per worker process and under one lock; this test repeats the two-thread run.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from spatialboost.config import SpatialBoostConfig, validate_config
from spatialboost.extract.factory import shared_observer
from spatialboost.extract.pipeline import plan_extraction
from tasks.extract import extract_shard_task

TRIALS = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A 2-image world with its manifest, and tiny Depth Pro / SAM 2 / OpenCLIP checkpoints."""
    import open_clip

    from spatialboost.config import DataConfig, WorldConfig
    from spatialboost.data import build_manifest_for
    from spatialboost.world import render_dataset
    from tests.tiny_models import OPENCLIP_NAME, save_depth_pro, save_openclip, save_sam2_hf

    root = tmp_path_factory.mktemp("race")
    world = WorldConfig(root=str(root / "world"), n_train=2, n_test=0, width=48, height=40)
    render_dataset(world, Path(world.root), progress=False)
    data = DataConfig(uri=world.root, manifest=str(root / "m.jsonl"), quarantine=str(root / "q.jsonl"))
    build_manifest_for(data, progress=False)
    openclip_dir, openclip_ckpt = save_openclip(root / "openclip")
    open_clip.add_model_config(openclip_dir / f"{OPENCLIP_NAME}.json")
    extract = {
        "backend": "models", "dtype": "bfloat16", "shard_size": 1, "n_overlays": 0,
        "depth": {"model_path": str(save_depth_pro(root / "depth")), "batch_size": 1},
        "segmenter": {"model_path": str(save_sam2_hf(root / "sam2")), "points_per_side": 4, "points_per_batch": 8},
        "labeler": {"model_name": OPENCLIP_NAME, "pretrained": str(openclip_ckpt), "vocabulary": ["cube", "sphere"]},
    }  # fmt: skip
    return root, {"device": "cpu", "world": world.model_dump(), "data": data.model_dump(), "extract": extract}


def _extract_in_two_threads(cfg: SpatialBoostConfig, shards: list[list[str]]) -> tuple[dict, list[str]]:
    """Run the two shards' extract tasks in two threads started together; (reports, errors)."""
    start, errors, reports = threading.Barrier(2), [], {}

    def run(index: int, shard: list[str]) -> None:
        start.wait()  # both threads ask for the observer at the same moment
        try:
            reports[index] = extract_shard_task.fn(cfg, index, shard)
        except Exception as err:  # noqa: BLE001 - the test reports what went wrong in a thread
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(i, shard)) for i, shard in enumerate(shards)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return reports, errors


def _model_dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in module.parameters()} | {b.dtype for b in module.buffers() if b.is_floating_point()}


def test_two_bf16_threads_build_the_models_once_and_fully_cast(setup: tuple[Path, dict], tmp_path: Path) -> None:
    root, raw = setup
    builds: list[int] = []
    real_build = shared_observer._build

    def counting_build(*key: object) -> object:
        builds.append(threading.get_ident())
        return real_build(*key)

    shared_observer._build = counting_build
    try:
        for trial in range(TRIALS):
            shared_observer.clear()
            cfg: SpatialBoostConfig = validate_config({**raw, "extract": {**raw["extract"], "output": str(tmp_path / f"t{trial}")}})
            from spatialboost.extract.pipeline import manifest_ids

            shards = plan_extraction(cfg, manifest_ids(cfg.data.manifest))
            assert len(shards) == 2
            reports, errors = _extract_in_two_threads(cfg, shards)
            assert errors == [], f"trial {trial}: {errors}"
            assert sorted(reports) == [0, 1] and all(report is not None for report in reports.values())
            assert torch.get_default_dtype() == torch.float32, f"trial {trial}: the default dtype was left changed"
            observer = shared_observer(cfg.extract, cfg.data, cfg.device)
            for name, model in (("depth", observer.depth_estimator.model), ("segmenter", observer.segmenter.model),
                                ("labeler", observer.labeler.model)):  # fmt: skip
                assert _model_dtypes(model) == {torch.bfloat16}, f"trial {trial}: {name} has {_model_dtypes(model)}"
        assert len(builds) == TRIALS  # one build per trial (per worker), not one per thread
    finally:
        shared_observer._build = real_build
        shared_observer.clear()
        torch.set_default_dtype(torch.float32)
