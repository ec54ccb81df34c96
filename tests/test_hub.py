"""hub.py downloads only what is pinned, into its role's folder, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatialboost.config import HubConfig, ModelPin, load_config
from spatialboost.hub import fetch_models

ROOT = Path(__file__).resolve().parents[1]


class RecordingDownloader:
    """Stands in for huggingface_hub.snapshot_download: writes a file where the real one would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, Path]] = []

    def __call__(self, repo_id: str, *, revision: str | None, local_dir: Path) -> str:
        self.calls.append((repo_id, revision, Path(local_dir)))
        (Path(local_dir) / "config.json").write_text("{}")
        return str(local_dir)


def test_demo_profile_downloads_nothing() -> None:
    download = RecordingDownloader()
    assert fetch_models(load_config(ROOT / "params.yaml").hub, download=download) == {}
    assert download.calls == []


def test_pins_go_to_their_role_folder_once(tmp_path: Path) -> None:
    sha = "a" * 40
    hub = HubConfig(cache_dir=str(tmp_path), models={"depth": ModelPin(repo_id="apple/DepthPro-hf", revision=sha)})
    download = RecordingDownloader()
    paths = fetch_models(hub, download=download)
    assert paths == {"depth": tmp_path / "depth"}
    assert download.calls == [("apple/DepthPro-hf", sha, tmp_path / "depth")]
    fetch_models(hub, download=download)
    assert len(download.calls) == 1  # already fetched: no second download

    moved = HubConfig(cache_dir=str(tmp_path), models={"depth": ModelPin(repo_id="apple/DepthPro-hf", revision="b" * 40)})
    fetch_models(moved, download=download)
    assert len(download.calls) == 2  # a new pin is fetched again


def test_unknown_role_is_an_error() -> None:
    with pytest.raises(KeyError, match="no pinned model"):
        fetch_models(load_config(ROOT / "configs" / "paper.yaml").hub, roles=["teleporter"], download=RecordingDownloader())
