"""The only module that downloads: pinned checkpoints of the paper profile, on request.

    fetch_models(cfg.hub)                     # every pinned role into hub.cache_dir/<role>
    fetch_models(cfg.hub, roles=["depth"])

The demo profile pins nothing (config validation enforces it), so the demo and the tests never
reach the network. Tokens for gated repositories come from the environment (HF_TOKEN) or the
Hugging Face login cache, never from params.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from spatialboost.config import HubConfig, ModelPin
from spatialboost.io import write_json_atomic

Downloader = Callable[..., Any]
"""`huggingface_hub.snapshot_download`-compatible: (repo_id, *, revision, local_dir) -> path."""

PIN_FILE = "spatialboost-pin.json"


def is_fetched(folder: Path, pin: ModelPin) -> bool:
    """Whether `folder` already holds exactly this pin (written last by `fetch_model`)."""
    marker = folder / PIN_FILE
    return marker.exists() and json.loads(marker.read_text()) == pin.model_dump()


def fetch_model(pin: ModelPin, folder: Path, download: Downloader | None = None) -> Path:
    """Download one pinned repository into `folder` unless it is there already; returns `folder`."""
    if is_fetched(folder, pin):
        return folder
    if download is None:
        from huggingface_hub import snapshot_download as download
    folder.mkdir(parents=True, exist_ok=True)
    download(pin.repo_id, revision=pin.revision, local_dir=folder)
    write_json_atomic(folder / PIN_FILE, pin.model_dump())  # last: marks the download complete
    return folder


def fetch_models(cfg: HubConfig, roles: Iterable[str] | None = None, download: Downloader | None = None) -> dict[str, Path]:
    """Fetch the pinned checkpoints of `roles` (default: all) into cfg.cache_dir/<role>."""
    wanted = list(cfg.models) if roles is None else list(roles)
    unknown = sorted(set(wanted) - set(cfg.models))
    if unknown:
        raise KeyError(f"no pinned model for roles {unknown}; pinned: {sorted(cfg.models)}")
    return {role: fetch_model(cfg.models[role], Path(cfg.cache_dir) / role, download) for role in wanted}
