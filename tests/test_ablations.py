"""The ablation runner: variants from params, the comparison table and the paper's claims checked
on the numbers, and one set run for real through `dvc exp run` on a tiny DVC repository."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from spatialboost.config import ConfigError, load_config, validate_config
from spatialboost.evaluate.ablations import (
    Variant,
    VariantResult,
    ablation_table,
    check_claims,
    variants,
    write_ablation_report,
)

REPO = Path(__file__).resolve().parents[1]


def _metrics(base: dict[str, float], boosted: dict[str, float]) -> dict:
    return {"baseline": {m: {"mean": v, "std": 0.01} for m, v in base.items()},
            "boosted": {m: {"mean": v, "std": 0.02} for m, v in boosted.items()}}  # fmt: skip


def _result(set_name: str, key: str, value: object, base: dict, boosted: dict, loss=(2.0, 1.0)) -> VariantResult:
    variant = Variant(set_name, key, value, (f"{key}={value}",))
    return VariantResult(variant, _metrics(base, boosted), {"first_loss": loss[0], "final_loss": loss[1]})


def test_the_demo_params_define_every_ablation_the_issue_asks_for() -> None:
    todo = variants(load_config(REPO / "params.yaml"))
    by_set: dict[str, list] = {}
    for v in todo:
        by_set.setdefault(v.set_name, []).append(v.value)
        assert "registry.enabled=false" in v.overrides  # variants never register an encoder version
    assert by_set["turn_order"] == ["forward", "reversed", "shuffled", "single_turn"]
    assert by_set["adapter"] == ["dual_channel", "full", "lora"]
    assert len(by_set["data_scale"]) >= 3
    assert variants(load_config(REPO / "params.yaml"), ["adapter"])[1].overrides[0] == "train.adapter=full"
    with pytest.raises(ValueError, match="unknown ablation set"):
        variants(load_config(REPO / "params.yaml"), ["nope"])


def test_a_bad_variant_fails_when_the_params_load_not_an_hour_later() -> None:
    with pytest.raises(ConfigError, match="ablations.sets.x: train.adapter"):
        validate_config({"ablations": {"sets": {"x": {"train.adapter": ["dual_channel", "qlora"]}}}})
    with pytest.raises(ConfigError, match="exactly one dotted key"):
        validate_config({"ablations": {"sets": {"x": {"train.adapter": ["full"], "train.lr": [1.0]}}}})


def test_claims_are_decided_by_the_numbers() -> None:
    base = {"depth_rmse_objects": 5.0, "cls_top1": 0.50, "vqa_relative_depth_acc": 0.5}
    order = [
        _result("turn_order", "synthesize.order", "forward", base, {"depth_rmse_objects": 4.0, "vqa_relative_depth_acc": 0.8}),
        _result("turn_order", "synthesize.order", "reversed", base, {"depth_rmse_objects": 4.5, "vqa_relative_depth_acc": 0.6}),
        _result("turn_order", "synthesize.order", "shuffled", base, {"depth_rmse_objects": 3.9, "vqa_relative_depth_acc": 0.65}),
    ]
    verdicts = {c["metric"]: c["verdict"] for c in check_claims(order)}
    assert verdicts == {"vqa_relative_depth_acc": "met", "depth_rmse_objects": "missed"}  # shuffled: lower RMSE
    noisy = [_result(r.variant.set_name, r.variant.key, r.variant.value, base, {}, ) for r in order]
    for r, values in zip(noisy, ({"vqa_relative_depth_acc": 0.70}, {"vqa_relative_depth_acc": 0.66},
                                 {"vqa_relative_depth_acc": 0.69}), strict=True):  # fmt: skip
        r.evaluate["boosted"]["vqa_relative_depth_acc"] = {"mean": values["vqa_relative_depth_acc"], "std": 0.03}
    verdicts = {c["metric"]: c["verdict"] for c in check_claims(noisy)}
    assert verdicts["vqa_relative_depth_acc"] == "no difference beyond the seed spread"  # +0.01..0.04 vs 2 x 0.042
    adapter = [
        _result("adapter", "train.adapter", "dual_channel", base, {"cls_top1": 0.49}),
        _result("adapter", "train.adapter", "full", base, {"cls_top1": 0.40}),
    ]
    (claim,) = check_claims(adapter)
    assert claim["verdict"] == "met" and claim["values"] == pytest.approx({"dual_channel": -0.01, "full": -0.10})
    assert check_claims(adapter[1:])[0]["verdict"] == "not run"


def test_the_report_has_a_row_per_variant_with_deltas_and_writes_md_json_png(tmp_path) -> None:
    base = {"depth_rmse": 5.0, "cls_top1": 0.5}
    rows = [_result("data_scale", "train.max_conversations", n, base, {"depth_rmse": 5.0 - n / 100, "cls_top1": 0.5})
            for n in (64, 128, 256)]  # fmt: skip
    table = ablation_table(rows)
    rows_by_value = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert rows_by_value["64"].startswith("| 64 | 2.000 → 1.000 |") and "| 4.360 ± 0.020 (-0.640) |" in rows_by_value["64"]
    assert "256" in rows_by_value and "| 5.000 |" in rows_by_value["baseline encoder"]
    paths = write_ablation_report(rows, tmp_path)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(paths["json"].read_text())
    assert [v["value"] for v in saved["variants"]] == [64, 128, 256]
    assert saved["variants"][2]["evaluate"]["boosted"]["depth_rmse"]["mean"] == pytest.approx(2.44)
    assert table in paths["md"].read_text()


FAKE_STAGE = """\
import json, yaml
p = yaml.safe_load(open("params.yaml"))
adapter = p["train"]["adapter"]
cls = {"dual_channel": 0.48, "full": 0.30}[adapter]
m = {"baseline": {"cls_top1": {"mean": 0.5, "std": 0.0}}, "boosted": {"cls_top1": {"mean": cls, "std": 0.0}}}
json.dump(m, open("metrics/evaluate.json", "w"))
json.dump({"first_loss": 3.0, "final_loss": 1.0, "adapter": adapter}, open("metrics/train.json", "w"))
open("model.txt", "w").write(adapter)
"""


@pytest.mark.integration
def test_a_set_runs_as_dvc_experiments_and_the_workspace_comes_back(prefect_harness, tmp_path) -> None:
    from flows.ablations import ablations_flow

    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "params.yaml").write_text(textwrap.dedent("""\
        train: {adapter: dual_channel}
        ablations:
          output: reports/ablations
          common: []
          sets: {adapter: {train.adapter: [full, dual_channel, lora]}}
        """))  # fmt: skip
    (repo / "fake_stage.py").write_text(FAKE_STAGE)
    (repo / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          fake:
            cmd: python fake_stage.py
            deps: [fake_stage.py]
            params: [train.adapter]
            outs: [model.txt]
            metrics:
              - metrics/evaluate.json: {cache: false}
              - metrics/train.json: {cache: false}
        """))  # fmt: skip
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
    before = {p: (repo / p).read_bytes() for p in ("params.yaml", "dvc.lock", "metrics/evaluate.json", "model.txt")}

    paths = ablations_flow(params="params.yaml", repo=str(repo))

    saved = json.loads(Path(paths["adapter"]["json"]).read_text())
    assert [v["train"].get("adapter") for v in saved["variants"]] == ["full", "dual_channel", None]  # each ran with its value
    assert [v["evaluate"]["boosted"]["cls_top1"]["mean"] for v in saved["variants"][:2]] == [0.30, 0.48]
    assert "KeyError" in saved["variants"][2]["error"]  # the fake stage knows no lora: a failed row, the set went on
    assert "| lora | failed: " in Path(paths["adapter"]["md"]).read_text()
    assert saved["claims"][0]["verdict"] == "met"  # dual-channel lost 0.02 of classification, full 0.20
    assert {p: (repo / p).read_bytes() for p in before} == before  # params, lock, metrics and outputs put back
    exps = subprocess.run(["dvc", "exp", "ls", "--name-only"], cwd=repo, check=True, capture_output=True, text=True).stdout
    assert sum(line.startswith("adapter-") for line in exps.split()) == 2

    again = json.loads(Path(ablations_flow(params="params.yaml", repo=str(repo))["adapter"]["json"]).read_text())
    assert again["variants"][:2] == saved["variants"][:2]  # finished variants are reused, not rerun
    exps = subprocess.run(["dvc", "exp", "ls", "--name-only"], cwd=repo, check=True, capture_output=True, text=True).stdout
    assert sum(line.startswith("adapter-") for line in exps.split()) == 2
    assert {p: (repo / p).read_bytes() for p in before} == before
