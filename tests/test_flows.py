"""The stage flows wire library calls correctly: run them for real on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.extract import extract_flow
from flows.manifest import manifest_flow
from flows.world import world_flow
from spatialboost.data import RGBDDataset, read_manifest
from spatialboost.extract.records import SceneRecord

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["world"].update(root=str(tmp_path / "world"), n_train=5, n_test=3, width=48, height=40, shard_size=3)
    params["data"].update(
        uri=str(tmp_path / "world"),
        watch=str(tmp_path / "world"),
        manifest=str(tmp_path / "manifest.jsonl"),
        quarantine=str(tmp_path / "q.jsonl"),
    )
    params["orchestration"]["metrics_dir"] = str(tmp_path / "metrics")
    params["extract"].update(output=str(tmp_path / "scenes"), shard_size=4, n_overlays=2)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_world_then_manifest_flows_produce_the_dataset_and_metrics(
    prefect_harness: None, tiny_params: Path, tmp_path: Path
) -> None:
    metrics = world_flow(params=str(tiny_params))
    assert metrics["images"] == 8 and metrics["rendered"] == 8
    dataset = RGBDDataset(tmp_path / "world")
    assert sorted(dataset.ids()) == sorted([f"train-{i:06d}" for i in range(5)] + [f"test-{i:06d}" for i in range(3)])
    assert dataset.rgb("test-000002").shape == (40, 48, 3)
    assert json.loads((tmp_path / "metrics" / "world.json").read_text())["images"] == 8

    again = world_flow(params=str(tiny_params), overrides=["world.n_train=6"])
    assert again["rendered"] == 1 and again["images"] == 9  # resumes: only the new image is rendered

    counts = manifest_flow(params=str(tiny_params), overrides=["world.n_train=6"])
    assert counts == {"n_ok": 9, "n_quarantined": 0, "n_total": 9, "by_reason": {}, "n_skipped": 0, "skipped_by_reason": {}}
    assert len(read_manifest(tmp_path / "manifest.jsonl")) == 9

    extracted = extract_flow(params=str(tiny_params), overrides=["world.n_train=6"])
    assert extracted["n_images"] == 9 and extracted["n_shards"] == 3 and extracted["n_shards_skipped"] == 0
    assert extracted["n_records"] + extracted["n_quarantined"] == 9
    records = [SceneRecord.from_json(line) for path in sorted((tmp_path / "scenes").glob("shard-*[0-9].jsonl"))
               for line in path.read_text().splitlines()]
    assert sorted(r.image_id for r in records) == sorted(
        i for i in dataset.ids() + ["train-000005"] if i not in {q["id"] for q in _quarantined(tmp_path)})
    assert extracted["accuracy"]["n_scenes"] == 3  # measured on the test split against the world's truth
    assert extract_flow(params=str(tiny_params), overrides=["world.n_train=6"])["n_shards_skipped"] == 3  # resume


def _quarantined(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for path in (tmp_path / "scenes").glob("*.quarantine.jsonl") for line in path.read_text().splitlines()]


def test_the_cli_runs_the_same_stage_as_the_flow(prefect_harness: None, tiny_params: Path, tmp_path: Path) -> None:
    """One way through each stage: `spatialboost extract` and the extract flow call the same
    library entry point and give the same summary (here the second run resumes every shard)."""
    from typer.testing import CliRunner

    from spatialboost.cli import app

    world_flow(params=str(tiny_params))
    manifest_flow(params=str(tiny_params))
    flow_metrics = extract_flow(params=str(tiny_params))
    result = CliRunner().invoke(app, ["extract", "--params", str(tiny_params), "--no-progress"])
    assert result.exit_code == 0, result.output
    cli_metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert cli_metrics["n_shards_skipped"] == cli_metrics["n_shards"]

    def same(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k not in {"seconds", "n_shards_skipped"}}

    assert same(cli_metrics) == same(flow_metrics)


STAGE_COMMANDS = [
    ["hub", "fetch"],
    ["world", "render"],
    ["data", "manifest"],
    ["extract"],
    ["synthesize"],
    ["bootstrap", "run"],
    ["train"],
    ["evaluate"],
    ["register"],
    ["robot"],
]


@pytest.mark.parametrize("command", STAGE_COMMANDS)
def test_every_stage_has_a_command_with_help(command: list[str]) -> None:
    from typer.testing import CliRunner

    from spatialboost.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--params" in result.output, result.output
