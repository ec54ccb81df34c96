"""hub.py downloads only what is pinned, only the files allow_patterns name, into its role's
folder, once; offline it reads a mirror laid out like the hub; `hub lock` pins commits; the hub
stage checks that the profile's model paths exist after the fetch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from spatialboost.cli import app
from spatialboost.config import HubConfig, ModelPin, load_config
from spatialboost.hub import (
    PIN_FILE,
    SUMMARY_FILE,
    HubError,
    fetch_models,
    lock_revisions,
    missing_model_files,
    preflight,
    run_hub_stage,
)
from spatialboost.profiles import render_profile
from tests.tiny_hub import NOT_FETCHED, PAPER_REPOS, save_paper_mirror
from tests.tiny_lvlm_hub import ENCODER_REPOS

ROOT = Path(__file__).resolve().parents[1]
SHA = "a" * 40
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class RecordingDownloader:
    """Stands in for huggingface_hub.snapshot_download: records its arguments, writes what the
    real one would (the repository's files that allow_patterns admit)."""

    def __init__(self, repo_files: list[str]) -> None:
        self.repo_files = repo_files
        self.calls: list[dict] = []

    def __call__(self, repo_id: str, *, revision: str | None, local_dir: Path, allow_patterns: list[str] | None) -> str:
        from huggingface_hub.utils import filter_repo_objects

        self.calls.append({"repo_id": repo_id, "revision": revision, "local_dir": Path(local_dir), "allow_patterns": allow_patterns})
        for name in filter_repo_objects(self.repo_files, allow_patterns=allow_patterns):
            (Path(local_dir) / name).write_text(f"{repo_id}@{revision}")
        return str(local_dir)


def _hub(tmp_path: Path, revision: str | None = SHA) -> HubConfig:
    depth = ModelPin(repo_id="apple/DepthPro-hf", revision=revision, allow_patterns=("*.json", "*.safetensors"))
    return HubConfig(cache_dir=str(tmp_path / "hub"), models={"depth": depth})


def test_demo_profile_downloads_nothing_and_its_stage_is_a_stable_summary(tmp_path: Path) -> None:
    download = RecordingDownloader([])
    cfg = load_config(ROOT / "params.yaml", [f"hub.cache_dir={tmp_path / 'hub'}"])
    assert fetch_models(cfg.hub, download=download) == {}
    metrics = run_hub_stage(cfg, download=download)
    assert download.calls == []
    assert metrics == {"roles": 0, "fetched": [], "already_there": [], "source": "none"}
    summary = (tmp_path / "hub" / SUMMARY_FILE).read_bytes()
    run_hub_stage(cfg, download=download)
    assert (tmp_path / "hub" / SUMMARY_FILE).read_bytes() == summary  # the demo's second `dvc repro`: nothing moves
    assert json.loads(summary) == {"schema_version": 1, "models": {}}


def test_the_downloader_gets_the_pin_and_only_the_allowed_files(tmp_path: Path) -> None:
    download = RecordingDownloader(["config.json", "model.safetensors", "pytorch_model.bin", "README.md"])
    hub = _hub(tmp_path)
    records = fetch_models(hub, download=download)
    assert download.calls == [{"repo_id": "apple/DepthPro-hf", "revision": SHA, "local_dir": tmp_path / "hub" / "depth",
                               "allow_patterns": ["*.json", "*.safetensors"]}]  # fmt: skip
    assert records["depth"].files == ("config.json", "model.safetensors") and records["depth"].fetched
    marker = json.loads((tmp_path / "hub" / "depth" / PIN_FILE).read_text())
    assert marker["pin"]["revision"] == SHA and marker["source"] == "hub"

    again = fetch_models(hub, download=download)
    assert len(download.calls) == 1 and not again["depth"].fetched  # already there: no second download

    moved = HubConfig(cache_dir=hub.cache_dir, models={
        "depth": ModelPin(repo_id="apple/DepthPro-hf", revision="b" * 40, allow_patterns=("*.json",))})  # fmt: skip
    fetch_models(moved, download=download)
    assert len(download.calls) == 2  # a new pin is fetched again ...
    assert not (tmp_path / "hub" / "depth" / "model.safetensors").exists()  # ... and the old pin's files are gone


def test_an_unpinned_role_is_refused_with_the_command_that_pins_it(tmp_path: Path) -> None:
    hub = _hub(tmp_path, revision=None)
    problem = preflight(hub)
    assert problem is not None and "no revision pinned for depth (apple/DepthPro-hf)" in problem
    assert "spatialboost hub lock" in problem
    with pytest.raises(HubError, match="has no revision"):
        fetch_models(hub, download=RecordingDownloader(["config.json"]))
    paper = load_config(ROOT / "configs" / "paper.yaml").hub  # shipped unpinned: no sha is invented here
    assert sorted(paper.models) == sorted(PAPER_REPOS) and all(pin.revision is None for pin in paper.pins().values())
    assert {role: pin.repo_id for role, pin in paper.encoders.items()} == ENCODER_REPOS


def test_lock_asks_the_hub_for_main_only_for_unpinned_roles(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    def resolve(repo_id: str, branch: str) -> str:
        asked.append((repo_id, branch))
        return COMMIT

    hub = HubConfig(cache_dir=str(tmp_path), models={
        "depth": ModelPin(repo_id="apple/DepthPro-hf"), "lvlm": ModelPin(repo_id="llava-hf/llava-1.5-7b-hf", revision=SHA)})  # fmt: skip
    assert lock_revisions(hub, resolve=resolve) == {"depth": COMMIT, "lvlm": SHA}
    assert asked == [("apple/DepthPro-hf", "main")]
    assert lock_revisions(hub, resolve=resolve, update=True) == {"depth": COMMIT, "lvlm": COMMIT}


def test_lock_pins_the_roles_in_use_and_every_other_one_it_can(tmp_path: Path) -> None:
    """One `hub lock` pins the encoders a later `-S lvlm.encoder=...` may choose; a gated repository
    the hub refuses, or one a mirror lacks, is left unpinned unless the active params load it."""

    def resolve(repo_id: str, branch: str) -> str:
        if repo_id.startswith("facebook/dinov3"):
            raise PermissionError(f"401: {repo_id} is gated")
        return COMMIT

    hub = HubConfig(cache_dir=str(tmp_path), models={"lvlm": ModelPin(repo_id="llava-hf/llava-1.5-7b-hf")}, encoders={
        "dinov2": ModelPin(repo_id="facebook/dinov2-large"), "dinov3": ModelPin(repo_id="facebook/dinov3-vitl16-pretrain-lvd1689m")})  # fmt: skip
    assert lock_revisions(hub, resolve=resolve) == {"lvlm": COMMIT, "dinov2": COMMIT}  # dinov3 stays unpinned
    with pytest.raises(PermissionError, match="gated"):
        lock_revisions(hub, resolve=resolve, required=["lvlm", "dinov3"])  # lvlm.encoder=dinov3 needs it
    with pytest.raises(PermissionError, match="gated"):
        lock_revisions(HubConfig(models={"dinov3": hub.encoders["dinov3"]}), resolve=resolve)  # a hub.models role must pin
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    absent = HubConfig(cache_dir=str(tmp_path), encoders={"dinov2": hub.encoders["dinov2"]})
    assert lock_revisions(absent, mirror=mirror) == {}  # not in the mirror, not needed
    with pytest.raises(HubError, match="hub mirror has no folder .*facebook/dinov2-large"):
        lock_revisions(absent, mirror=mirror, required=["dinov2"])
    problem = preflight(hub)  # only hub.models by default: an encoder not chosen needs no pin
    assert problem is not None and "lvlm" in problem and "dinov" not in problem
    assert "dinov3" in (preflight(hub, roles=["lvlm", "dinov3"]) or "")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_paper_mirror(tmp_path_factory.mktemp("mirror"), COMMIT)


def _paper_repo(tmp_path: Path) -> Path:
    """A working directory with the paper profile active (configs/ + params.yaml), outputs inside it."""
    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "configs" / "paper.yaml", work / "configs" / "paper.yaml")
    (work / "params.yaml").write_text(render_profile(work / "configs" / "paper.yaml", root=work))
    return work


def test_lock_then_fetch_the_paper_profile_offline_from_a_mirror(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _paper_repo(tmp_path)
    monkeypatch.chdir(work)
    runner = CliRunner()
    unpinned = runner.invoke(app, ["hub", "fetch", "--mirror", str(mirror)])
    assert unpinned.exit_code == 2 and "run `spatialboost hub lock`" in unpinned.output
    assert len(unpinned.output.strip().splitlines()) == 1  # one line, no traceback

    locked = runner.invoke(app, ["hub", "lock", "--mirror", str(mirror)])
    assert locked.exit_code == 0, locked.output
    assert json.loads(locked.output)["revisions"] == dict.fromkeys(PAPER_REPOS, COMMIT)
    for path in (work / "configs" / "paper.yaml", work / "params.yaml"):  # the source, and the active file from it
        hub = load_config(path).hub
        assert all(pin.revision == COMMIT for pin in hub.models.values())
        assert all(pin.revision is None for pin in hub.encoders.values())  # not in this mirror, not chosen: unpinned
    assert "# the recipe's 4 GPUs" in (work / "configs" / "paper.yaml").read_text()  # comments kept

    cfg = load_config(work / "params.yaml", [f"hub.mirror={mirror}"])
    metrics = run_hub_stage(cfg)
    assert metrics == {"roles": 4, "fetched": sorted(PAPER_REPOS), "already_there": [], "source": "mirror"}
    cache = work / cfg.hub.cache_dir
    for role, repo in PAPER_REPOS.items():
        fetched = {p.relative_to(cache / role).as_posix() for p in (cache / role).rglob("*") if p.is_file()}
        assert not fetched & set(NOT_FETCHED[repo]), (role, fetched)  # .bin / .pt / transformers copies stay out
    assert {p.name for p in (cache / "labeler").iterdir()} == {"open_clip_config.json", "open_clip_pytorch_model.safetensors", PIN_FILE}
    assert (cache / "lvlm" / "tokenizer.json").is_file() and (cache / "lvlm" / "model.safetensors").is_file()
    assert missing_model_files(cfg) == []  # every path the paper profile loads is there under its real name

    from transformers import DepthProForDepthEstimation, LlavaForConditionalGeneration

    DepthProForDepthEstimation.from_pretrained(cfg.extract.depth.model_path)  # what the stages load, as they load it
    LlavaForConditionalGeneration.from_pretrained(cfg.lvlm.language_model)
    summary = json.loads((cache / SUMMARY_FILE).read_text())
    assert summary["models"]["labeler"]["revision"] == COMMIT
    assert run_hub_stage(cfg)["already_there"] == sorted(PAPER_REPOS)  # a rerun copies nothing


def test_a_mirror_of_another_commit_is_refused(mirror: Path, tmp_path: Path) -> None:
    hub = HubConfig(cache_dir=str(tmp_path / "hub"), mirror=str(mirror), models={
        "depth": ModelPin(repo_id="apple/DepthPro-hf", revision=SHA, allow_patterns=("*.json",))})  # fmt: skip
    with pytest.raises(HubError, match=f"config.json is from commit {COMMIT}, the pin says {SHA}"):
        fetch_models(hub)
    assert not (tmp_path / "hub" / "depth" / PIN_FILE).exists()
    absent = HubConfig(cache_dir=str(tmp_path), mirror=str(mirror), models={"x": ModelPin(repo_id="org/absent", revision=SHA)})
    assert "has no folder for org/absent" in (preflight(absent) or "")


def test_a_wrong_model_file_name_fails_at_the_hub_stage_naming_what_was_fetched(mirror: Path, tmp_path: Path) -> None:
    """The bug of issue #16: the profile named open_clip_model.safetensors, which laion does not ship."""
    work = _paper_repo(tmp_path)
    pins = [f"hub.models.{role}.revision={COMMIT}" for role in PAPER_REPOS]
    old_name = "models/hub/labeler/open_clip_model.safetensors"
    cfg = load_config(work / "params.yaml", [*pins, f"hub.mirror={mirror}", f"hub.cache_dir={work / 'models/hub'}",
                                             f"extract.labeler.pretrained={work / old_name}",
                                             f"extract.depth.model_path={work / 'models/hub/depth'}",
                                             f"extract.segmenter.model_path={work / 'models/hub/segmenter'}"])  # fmt: skip
    with pytest.raises(HubError, match=r"extract.labeler.pretrained: .*open_clip_model.safetensors does not exist \(hub role 'labeler' fetched: open_clip_config.json, open_clip_pytorch_model.safetensors\)"):
        run_hub_stage(cfg)


def test_a_local_dir_labeler_without_weights_fails_at_the_hub_stage(mirror: Path, tmp_path: Path) -> None:
    """The paper profile's labeler is `local-dir:models/hub/labeler`: open_clip reads its
    architecture and weights from the fetched folder, so both files are checked there."""
    work = _paper_repo(tmp_path)
    pins = [f"hub.models.{role}.revision={COMMIT}" for role in PAPER_REPOS]
    cache = work / "models/hub"
    cfg = load_config(work / "params.yaml", [*pins, f"hub.mirror={mirror}", f"hub.cache_dir={cache}",
                                             f"extract.labeler.model_name=local-dir:{cache / 'labeler'}",
                                             f"extract.depth.model_path={cache / 'depth'}",
                                             f"extract.segmenter.model_path={cache / 'segmenter'}",
                                             f"train.init={cache / 'lvlm'}"])  # fmt: skip
    assert cfg.extract.labeler.pretrained is None
    run_hub_stage(cfg)
    assert missing_model_files(cfg) == []
    (cache / "labeler" / "open_clip_pytorch_model.safetensors").unlink()
    assert missing_model_files(cfg) == [
        f"extract.labeler.model_name: {cache / 'labeler'}/*.safetensors does not exist (hub role 'labeler' fetched: "
        "open_clip_config.json, open_clip_pytorch_model.safetensors)"
    ]


def test_the_hub_stage_refuses_unpinned_models_before_starting_prefect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows._stage import run_stage
    from flows.hub import _preflight, hub_flow

    params = tmp_path / "params.yaml"
    params.write_text(render_profile(ROOT / "configs" / "paper.yaml"))
    with pytest.raises(SystemExit) as exited:
        run_stage(hub_flow, "hub", ["--params", str(params)], check=_preflight)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: hub.models: no revision pinned for depth (apple/DepthPro-hf)") and "\n" not in err
    assert yaml.safe_load(params.read_text())["hub"]["models"]["depth"]["revision"] is None
