"""Profiles DVC runs: params.yaml written from configs/<name>.yaml, fully resolved, comments kept;
dvc.yaml renders against every shipped profile (DVC's own parser), `dvc exp run -S` reaches every
key, and stages that do not apply to a profile are skipped cleanly."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from spatialboost.cli import app
from spatialboost.config import ConfigError, load_config, validate_config
from spatialboost.profiles import (
    DEFAULTS_MARKER,
    available_profiles,
    profile_source,
    profile_status,
    render_profile,
    set_profile_values,
    use_profile,
)
from spatialboost.skipping import SKIP_FILE, mark_skipped, skip_reason

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(available_profiles(ROOT))


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]} if prefix else set()
    return set().union(*(_keys(value, f"{prefix}{key}.") for key, value in tree.items()))


def test_the_shipped_profiles_are_demo_and_paper() -> None:
    assert SHIPPED == ["demo", "paper"]
    assert profile_source("paper", ROOT) == ROOT / "configs" / "paper.yaml"
    with pytest.raises(ConfigError, match=r"no profile 'gpu': shipped profiles are demo, paper"):
        profile_source("gpu", ROOT)


def test_committed_params_is_the_demo_profile_rendered() -> None:
    """params.yaml is exactly `spatialboost profile use demo`: edit configs/demo.yaml, then rerun it."""
    rendered = render_profile(ROOT / "configs" / "demo.yaml", name="demo", root=ROOT)
    assert (ROOT / "params.yaml").read_text() == rendered, "params.yaml is stale: run `spatialboost profile use demo`"


@pytest.mark.parametrize("name", SHIPPED)
def test_rendering_fills_every_key_and_keeps_values_and_comments(name: str) -> None:
    source = ROOT / "configs" / f"{name}.yaml"
    text = render_profile(source, root=ROOT)
    raw_source = yaml.safe_load(source.read_text())
    rendered = yaml.safe_load(text)
    cfg = load_config(source)
    # every schema key is in the file (what DVC interpolates and `-S` overrides), with the profile's values
    assert _keys(rendered) == _keys(cfg.model_dump(mode="json"))
    assert validate_config(rendered) == cfg
    assert _keys(raw_source) < _keys(rendered)  # the source leaves some to defaults
    # comments survive: every comment line of the source is in the output, the header names the source
    comments = [line.strip() for line in source.read_text().splitlines() if "#" in line]
    assert all(any(c.split("#", 1)[1].strip() in out for out in text.splitlines()) for c in comments)
    assert f"`spatialboost profile use {name}` from configs/{name}.yaml" in text.splitlines()[0]
    assert f"# {DEFAULTS_MARKER}" in text
    assert render_profile(source, root=ROOT) == text  # deterministic


def test_defaults_follow_the_profiles_own_keys_in_each_section() -> None:
    text = render_profile(ROOT / "configs" / "paper.yaml")
    world = text[text.index("\nworld:") : text.index("\ndata:")]
    lines = [line.strip() for line in world.splitlines() if line.strip()]
    marker = lines.index(f"# {DEFAULTS_MARKER}")
    assert "n_train: 0" in lines[:marker] and "seed: 0" in lines[marker:]  # the profile's value, then defaults
    assert "\n\ndata:" in text  # the blank line between sections stays where it was


def _dvc_stages(tmp_path: Path, params_text: str) -> tuple[Any, dict[str, Any]]:
    """DVC's own view of dvc.yaml against `params_text`, in a temporary copy of the repository's graph."""
    from dvc.repo import Repo

    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo_dir / "dvc.yaml")
    (repo_dir / "params.yaml").write_text(params_text)
    Repo.init(str(repo_dir), no_scm=True)
    repo = Repo(str(repo_dir))
    return repo, {stage.name: stage for stage in repo.index.stages}


@pytest.mark.parametrize("name", SHIPPED)
def test_dvc_yaml_renders_against_every_shipped_profile(name: str, tmp_path: Path) -> None:
    from dvc.dependency.param import ParamsDependency

    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    repo, stages = _dvc_stages(tmp_path, render_profile(ROOT / "configs" / f"{name}.yaml"))
    assert list(stages) == ["hub", "world", "manifest", "extract", "synthesize", "bootstrap", "align", "instruct", "train",
                            "evaluate", "register"]  # fmt: skip
    for stage in stages.values():
        paths = [dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)]
        paths += [out.def_path for out in stage.outs]
        assert not any("${" in p or "://" in p for p in paths), (stage.name, paths)  # resolved, all local
        for dep in stage.deps:
            if isinstance(dep, ParamsDependency):
                values = dep.read_params()
                assert set(dep.params) <= set(values), (stage.name, dep.params)  # no missing params
    assert {out.def_path for out in stages["hub"].outs} == {cfg.hub.cache_dir, cfg.hub.encoder_dir,
                                                            f"{cfg.orchestration.metrics_dir}/hub.json"}  # fmt: skip
    assert cfg.hub.encoder_dir not in {dep.def_path for dep in stages["extract"].deps}  # choosing an encoder re-extracts nothing
    hub_out = next(out for out in stages["hub"].outs if out.def_path == cfg.hub.cache_dir)
    assert not hub_out.use_cache and hub_out.persist
    manifest_deps = {dep.def_path for dep in stages["manifest"].deps}
    assert cfg.data.watch in manifest_deps and cfg.data.uri.startswith("s3://") == (name == "paper")

    import networkx as nx

    graph = repo.index.graph  # builds the DAG: overlapping outputs or cycles would raise here
    assert nx.is_directed_acyclic_graph(graph)
    needs = {stage: set(graph.successors(stages[stage])) for stage in stages}  # edges: stage -> what it depends on
    assert stages["hub"] in needs["extract"]
    assert (stages["instruct"] in needs["train"]) == (name == "paper")  # the paper's LVLM: the instruct stage's folder
    assert stages["align"] in needs["instruct"] and stages["hub"] in needs["align"]  # ... built from the hub's checkpoints
    assert (stages["bootstrap"] in needs["train"]) == (name == "demo")


def test_dvc_exp_run_set_reaches_a_key_the_profile_leaves_to_defaults(tmp_path: Path) -> None:
    """`dvc exp run -S` applies Hydra overrides in struct mode: only keys present in the file."""
    from dvc.utils.hydra import apply_overrides

    rendered, source_copy = tmp_path / "params.yaml", tmp_path / "paper.yaml"
    rendered.write_text(render_profile(ROOT / "configs" / "paper.yaml"))
    shutil.copy(ROOT / "configs" / "paper.yaml", source_copy)
    apply_overrides(rendered, ["train.adam_eps=1e-6", "orchestration.train_nproc_per_node=2"])
    cfg = load_config(rendered)
    assert cfg.train.adam_eps == 1e-6 and cfg.orchestration.train_nproc_per_node == 2
    assert "# the boost stage: one epoch" in rendered.read_text()  # DVC's rewrite keeps the comments
    with pytest.raises(Exception, match="Invalid `--set-param` value") as refused:
        apply_overrides(source_copy, ["train.adam_eps=1e-6"])  # why params.yaml is written fully resolved
    assert "adam_eps" in str(refused.value.__cause__)


def test_profile_use_and_show_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # profiles are found under configs/ of the working directory
    params = tmp_path / "params.yaml"
    runner = CliRunner()
    used = runner.invoke(app, ["profile", "use", "paper", "--params", str(params)])
    assert used.exit_code == 0, used.output
    assert load_config(params).profile == "paper" and load_config(params).hub.models
    shown = runner.invoke(app, ["profile", "show", "--params", str(params)])
    assert shown.exit_code == 0 and "profile paper (matches configs/paper.yaml)" in shown.output

    from dvc.utils.hydra import apply_overrides

    apply_overrides(params, ["train.lr=1e-4"])  # what `dvc exp run -S train.lr=1e-4` does
    status = profile_status(params, ROOT)
    assert not status.in_sync and status.differences == ["train.lr: 2e-05 -> 0.0001"]
    shown = runner.invoke(app, ["profile", "show", "--params", str(params)])
    assert "differs from configs/paper.yaml at: train.lr: 2e-05 -> 0.0001" in shown.output

    bad = runner.invoke(app, ["profile", "use", "gpu", "--params", str(params)])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error: no profile 'gpu'")
    assert load_config(params).train.lr == 1e-4  # a failed `use` leaves the active file alone


def test_use_profile_refuses_an_invalid_profile_and_writes_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("profile: paper\nworld:\n  n_trian: 3\n")
    params = tmp_path / "params.yaml"
    with pytest.raises(ConfigError, match="world.n_trian: unknown key"):
        use_profile(broken, params, ROOT)
    assert not params.exists()


def test_set_profile_values_keeps_comments_and_validates(tmp_path: Path) -> None:
    source = tmp_path / "paper.yaml"
    shutil.copy(ROOT / "configs" / "paper.yaml", source)
    sha = "0123456789abcdef0123456789abcdef01234567"
    set_profile_values(source, {"hub.models.depth.revision": sha})
    assert load_config(source).hub.models["depth"].revision == sha
    assert source.read_text().count("#") == (ROOT / "configs" / "paper.yaml").read_text().count("#")
    with pytest.raises(ConfigError, match="revision must be a 40-hex commit sha"):
        set_profile_values(source, {"hub.models.depth.revision": "main"})
    assert load_config(source).hub.models["depth"].revision == sha  # unchanged after the refusal


# --- stages that do not apply ----------------------------------------------------------------


def test_bootstrap_is_skipped_with_a_marker_in_the_paper_profile(tmp_path: Path) -> None:
    paper = load_config(ROOT / "configs" / "paper.yaml")
    assert skip_reason(load_config(ROOT / "params.yaml"), "bootstrap") is None
    reason = skip_reason(paper, "bootstrap")
    assert reason is not None and "bootstrap.enabled is false" in reason and "models/lvlm/instruct" in reason
    metrics = mark_skipped(tmp_path / "bootstrap", "bootstrap", reason)
    assert metrics == {"skipped": True, "reason": reason}
    marker = yaml.safe_load((tmp_path / "bootstrap" / SKIP_FILE).read_text())
    assert marker == {"stage": "bootstrap", "skipped": True, "reason": reason}


def test_bootstrap_flow_skips_instead_of_raising(prefect_harness: None, tmp_path: Path) -> None:
    from flows.bootstrap import bootstrap_flow

    params = tmp_path / "params.yaml"
    params.write_text(render_profile(ROOT / "configs" / "paper.yaml"))
    out, metrics_dir = tmp_path / "models" / "bootstrap", tmp_path / "metrics"
    result = bootstrap_flow(str(params), [f"bootstrap.output={out}", f"orchestration.metrics_dir={metrics_dir}"])
    assert result["skipped"] is True
    assert yaml.safe_load((metrics_dir / "bootstrap.json").read_text()) == result
    assert (out / SKIP_FILE).is_file()


def test_world_with_no_training_scenes_still_renders_its_test_split(tmp_path: Path) -> None:
    """The paper profile renders only held-out world scenes (n_train 0) for its geometry checks."""
    from spatialboost.data import RGBDDataset
    from spatialboost.world import render_dataset

    cfg = load_config(ROOT / "configs" / "paper.yaml", [f"world.root={tmp_path / 'world'}", "world.n_test=2",
                                                         "world.width=32", "world.height=32"]).world  # fmt: skip
    counts = render_dataset(cfg, Path(cfg.root), progress=False)
    assert counts["train"] == 0 and counts["test"] == 2
    assert RGBDDataset(cfg.root).ids("train") == [] and len(RGBDDataset(cfg.root).ids("test")) == 2


# --- data.watch: what DVC hashes for the image source -----------------------------------------


def test_data_watch_is_the_images_for_local_sources_and_nothing_remote_for_s3() -> None:
    assert load_config(ROOT / "params.yaml").data.watch == "data/world"
    assert load_config(ROOT / "configs" / "paper.yaml").data.watch == "flows/manifest.py"
    folder = load_config(ROOT / "params.yaml", ["data.source=folder", "data.uri=/mnt/images", "data.watch=null"])
    assert folder.data.watch == "/mnt/images"
    moved = load_config(ROOT / "params.yaml", ["data.source=folder", "data.uri=/mnt/images"])  # watch still data/world
    problem = moved.data.watch_problem()
    assert problem is not None and "DVC would hash the wrong images" in problem and "-S data.watch=X" in problem
    assert folder.data.watch_problem() is None and load_config(ROOT / "configs" / "paper.yaml").data.watch_problem() is None
    with pytest.raises(ConfigError, match="must be a local path"):
        load_config(ROOT / "configs" / "paper.yaml", ["data.watch=s3://my-bucket/sa1b"])


@pytest.mark.parametrize("stage", ["manifest", "extract"])
def test_the_dvc_stages_refuse_a_watch_that_is_not_the_images(stage: str) -> None:
    """What `dvc repro` runs: the stage exits with one error line before Prefect starts."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"flows.{stage}", "-S", "data.uri=/mnt/images"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: data.watch 'data/world' is not data.uri '/mnt/images': DVC would hash the wrong images for this "
        "world source; set both (e.g. dvc exp run -S data.uri=X -S data.watch=X)"
    )
