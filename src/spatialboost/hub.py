"""The only module that downloads: the pinned checkpoints of `hub.models`, on request.

    lock_revisions(cfg.hub)                        # role -> commit sha (asks the hub, or reads a mirror)
    fetch_models(cfg.hub)                          # every pinned role into hub.cache_dir/<role>
    fetch_models(cfg.hub, mirror="/mnt/hub")       # the same, offline, from a folder laid out like the hub
    active_roles(cfg)                              # what the config loads (not the encoders it does not boost)
    run_hub_stage(cfg)                             # the `hub` DVC stage: fetch the active roles, check, summarise

Every role is pinned to a commit (`revision`, 40 hex) and fetches only the files its
`allow_patterns` name, so a run downloads exactly what the pipeline reads and the same bytes every
time. An unpinned role is refused: `spatialboost hub lock` resolves the commit once and writes it
into the profile. The demo pins nothing (config validation enforces it), so the demo and the tests
never reach the network. Tokens for gated repositories come from the environment (HF_TOKEN) or
the Hugging Face login cache, never from params.

A mirror is a local folder with one sub-folder per repository, `<mirror>/<repo_id>/<files>`,
e.g. made on a connected machine by `hf download REPO --revision SHA --local-dir MIRROR/REPO`.
Such a download records each file's commit in `.cache/huggingface/download/<file>.metadata`;
when those records are there, a fetch checks them against the pin (a hand-made mirror without
them is trusted to hold the pinned commit).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialboost.config import HubConfig, ModelPin, SpatialBoostConfig
from spatialboost.io import write_json_atomic

Downloader = Callable[..., Any]
"""`huggingface_hub.snapshot_download`-compatible: (repo_id, *, revision, local_dir, allow_patterns) -> path."""
Resolver = Callable[[str, str], str]
"""(repo_id, branch) -> the branch's current commit sha (default: `HfApi().model_info(...).sha`)."""

PIN_FILE = "spatialboost-pin.json"
SUMMARY_FILE = "hub.json"
METADATA_DIR = Path(".cache") / "huggingface" / "download"  # huggingface_hub's local-dir download records


class HubError(ValueError):
    """A fetch that cannot proceed (unpinned role, missing mirror folder, wrong file); one line."""


@dataclass(frozen=True)
class FetchRecord:
    """What one role's fetch did."""

    role: str
    folder: Path
    files: tuple[str, ...]
    fetched: bool  # False: the folder already held exactly this pin


def unpinned_roles(cfg: HubConfig) -> list[str]:
    """Roles whose revision is not pinned yet."""
    return [role for role, pin in cfg.models.items() if pin.revision is None]


def active_roles(cfg: SpatialBoostConfig) -> list[str]:
    """The roles this config fetches: every hub.models role, and of hub.encoders only the chosen
    lvlm.encoder's. So the paper profile fetches DINOv2 only with lvlm.encoder=dinov2, and never a
    gated repository it does not use."""
    chosen = cfg.lvlm.chosen()
    extra = [chosen.hub_role] if chosen is not None and chosen.hub_role in cfg.hub.encoders else []
    return [*cfg.hub.models, *extra]


def role_folder(cfg: HubConfig, role: str) -> Path:
    """Where a role is fetched: cache_dir/<role> (models) or encoder_dir/<role> (encoders)."""
    return Path(cfg.encoder_dir if role in cfg.encoders else cfg.cache_dir) / role


def preflight(cfg: HubConfig, mirror: str | Path | None = None, roles: Iterable[str] | None = None) -> str | None:
    """Why the hub stage cannot start (one line), or None: checked before anything is fetched.

    roles: the roles to check (default: all; the stage checks `active_roles`)."""
    pins = cfg.models if roles is None else {r: cfg.pins()[r] for r in roles if r in cfg.pins()}
    cfg = cfg.model_copy(update={"models": pins, "encoders": {}})
    unpinned = unpinned_roles(cfg)
    if unpinned:
        names = ", ".join(f"{role} ({cfg.models[role].repo_id})" for role in unpinned)
        return (f"hub.models: no revision pinned for {names}: run `spatialboost hub lock` once (it writes each "
                "repository's current commit sha into the profile; add --mirror DIR offline), then commit the profile")  # fmt: skip
    mirror = mirror or cfg.mirror
    if mirror is not None:
        absent = [pin.repo_id for pin in cfg.models.values() if not (Path(mirror) / pin.repo_id).is_dir()]
        if absent:
            return f"hub mirror {mirror} has no folder for {', '.join(absent)} (expected <mirror>/<repo_id>/<files>)"
    return None


def is_fetched(folder: Path, pin: ModelPin) -> bool:
    """Whether `folder` already holds exactly this pin (its marker is written last by `fetch_model`)."""
    marker = folder / PIN_FILE
    return marker.is_file() and json.loads(marker.read_text()).get("pin") == pin.model_dump(mode="json")


def fetch_model(
    pin: ModelPin, folder: Path, download: Downloader | None = None, mirror: str | Path | None = None, role: str = "model"
) -> FetchRecord:
    """Fetch one pinned repository into `folder` (from `mirror` when given) unless it is there already."""
    if pin.revision is None:
        raise HubError(f"hub.models.{role} ({pin.repo_id}) has no revision: run `spatialboost hub lock`")
    folder = Path(folder)
    if is_fetched(folder, pin):
        return FetchRecord(role, folder, tuple(json.loads((folder / PIN_FILE).read_text())["files"]), fetched=False)
    if (folder / PIN_FILE).exists():  # another pin: none of its files may linger beside the new ones
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if mirror is not None:
        files = copy_from_mirror(pin, Path(mirror) / pin.repo_id, folder)
    else:
        if download is None:
            from huggingface_hub import snapshot_download as download
        allow = list(pin.allow_patterns) if pin.allow_patterns is not None else None
        download(pin.repo_id, revision=pin.revision, local_dir=folder, allow_patterns=allow)
        files = _listing(folder)
    if not files:
        raise HubError(f"hub.models.{role}: {pin.repo_id}@{pin.revision} has no file matching {list(pin.allow_patterns or [])}")
    marker = {"pin": pin.model_dump(mode="json"), "source": "mirror" if mirror is not None else "hub", "files": files}
    write_json_atomic(folder / PIN_FILE, marker)  # last: marks the fetch complete
    return FetchRecord(role, folder, tuple(files), fetched=True)


def fetch_models(
    cfg: HubConfig,
    roles: Iterable[str] | None = None,
    download: Downloader | None = None,
    mirror: str | Path | None = None,
) -> dict[str, FetchRecord]:
    """Fetch the pinned checkpoints of `roles` (default: every hub.models role) into
    cfg.cache_dir/<role>, or cfg.encoder_dir/<role> for hub.encoders roles.

    mirror: a local folder laid out like the hub (default: cfg.mirror; None = the network).
    """
    pins = cfg.pins()
    wanted = list(cfg.models) if roles is None else list(roles)
    unknown = sorted(set(wanted) - set(pins))
    if unknown:
        raise HubError(f"no pinned model for roles {unknown}; pinned: {sorted(pins)}")
    mirror = mirror if mirror is not None else cfg.mirror
    return {role: fetch_model(pins[role], role_folder(cfg, role), download, mirror, role) for role in wanted}


def copy_from_mirror(pin: ModelPin, repo_dir: Path, folder: Path) -> list[str]:
    """Link (or copy) the files of `repo_dir` that `pin.allow_patterns` admit into `folder`.

    Files recorded by a huggingface_hub local-dir download must come from the pinned commit.
    """
    from huggingface_hub.utils import filter_repo_objects

    if not repo_dir.is_dir():
        raise HubError(f"hub mirror has no folder {repo_dir} (expected <mirror>/<repo_id>/<files>)")
    allow = list(pin.allow_patterns) if pin.allow_patterns is not None else None
    files = sorted(filter_repo_objects(_listing(repo_dir), allow_patterns=allow))
    for name in files:
        commit = recorded_commit(repo_dir, name)
        if commit is not None and commit != pin.revision:
            raise HubError(f"hub mirror {repo_dir}: {name} is from commit {commit}, the pin says {pin.revision}")
    for name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.link(repo_dir / name, tmp)  # no copy of a 14 GB model when the mirror is on the same disk
        except OSError:
            shutil.copyfile(repo_dir / name, tmp)
        os.replace(tmp, target)
    return files


def recorded_commit(repo_dir: Path, name: str) -> str | None:
    """The commit huggingface_hub recorded for `name` in a local-dir download, or None."""
    record = repo_dir / METADATA_DIR / f"{name}.metadata"
    if not record.is_file():
        return None
    return record.read_text().splitlines()[0].strip() or None


def lock_revisions(
    cfg: HubConfig,
    resolve: Resolver | None = None,
    mirror: str | Path | None = None,
    update: bool = False,
    required: Iterable[str] | None = None,
) -> dict[str, str]:
    """role -> the commit sha to pin: the pinned one, else (or with update=True, always) the
    repository's current `main` commit, or with a mirror the commit its download records hold.

    required: roles that must be pinned (default: every hub.models role). Any other role (the
    hub.encoders not chosen) is pinned when it can be (a mirror without its folder, or a repository
    the hub refuses, leaves it out), so that one `hub lock` pins every encoder an offline mirror or
    the hub has, for a later `-S lvlm.encoder=...`."""
    needed = set(cfg.models) if required is None else set(required)
    mirror = mirror if mirror is not None else cfg.mirror
    if resolve is None and mirror is None:
        from huggingface_hub import HfApi

        api = HfApi()

        def resolve(repo_id: str, branch: str) -> str:
            return str(api.model_info(repo_id, revision=branch).sha)

    shas = {}
    for role, pin in cfg.pins().items():
        if pin.revision is not None and not update:
            shas[role] = pin.revision
        elif mirror is not None:
            if role not in needed and not (Path(mirror) / pin.repo_id).is_dir():
                continue
            shas[role] = mirror_commit(pin, Path(mirror) / pin.repo_id)
        else:
            assert resolve is not None
            try:
                shas[role] = resolve(pin.repo_id, "main")
            except Exception:  # noqa: BLE001 - a gated or absent repository only matters when it is used
                if role in needed:
                    raise
    return shas


def mirror_commit(pin: ModelPin, repo_dir: Path) -> str:
    """The one commit the mirror's download records give for the pinned files."""
    from huggingface_hub.utils import filter_repo_objects

    if not repo_dir.is_dir():
        raise HubError(f"hub mirror has no folder {repo_dir} (expected <mirror>/<repo_id>/<files>)")
    allow = list(pin.allow_patterns) if pin.allow_patterns is not None else None
    files = list(filter_repo_objects(_listing(repo_dir), allow_patterns=allow))
    commits = {recorded_commit(repo_dir, name) for name in files}
    if None in commits or len(commits) != 1:
        raise HubError(
            f"hub mirror {repo_dir}: its files record {'no commit' if None in commits else 'several commits'}; "
            "set the revision by hand, or mirror it with `hf download REPO --revision SHA --local-dir ...`"
        )
    return str(commits.pop())


def missing_model_files(cfg: SpatialBoostConfig) -> list[str]:
    """The config's paths into hub.cache_dir that no fetched role provides, one line each.

    These are what the later stages load: a wrong file name in the profile fails here, at the
    hub stage, with the files the role did fetch, not an hour later in extraction.
    """
    wanted: list[tuple[str, str | None, tuple[str, ...]]] = [("train.init", cfg.train.init, ("config.json",))]
    if cfg.extract.backend == "models":  # (key, path, files it must hold; () = the path is the file)
        seg, lab = cfg.extract.segmenter, cfg.extract.labeler
        wanted += [("extract.depth.model_path", cfg.extract.depth.model_path, ("config.json",)),
                   ("extract.segmenter.model_path", seg.model_path, ("config.json",) if seg.backend == "hf" else ()),
                   ("extract.labeler.pretrained", lab.pretrained, ())]  # fmt: skip
        if lab.model_name.startswith("local-dir:"):  # open_clip reads the architecture and the weights from the folder
            wanted.append(("extract.labeler.model_name", lab.model_name.removeprefix("local-dir:"), ("open_clip_config.json", "*.safetensors")))
    choice = cfg.lvlm.chosen()
    if choice is not None:
        wanted.append(("lvlm.language_model", cfg.lvlm.language_model, ("config.json",)))
        marker = "open_clip_config.json" if choice.family == "open_clip" else "config.json"
        wanted.append((f"lvlm.encoders.{cfg.lvlm.encoder}.path", choice.path, (marker,)))
    roots = [Path(d).resolve() for d in (cfg.hub.cache_dir, cfg.hub.encoder_dir)]
    problems = []
    for key, path, files in wanted:
        cache = next((d for d in roots if path is not None and Path(path).resolve().is_relative_to(d)), None)
        if path is None or cache is None:
            continue  # not the hub's: another stage makes it (e.g. the demo's bootstrap/vlm)
        for needed in [Path(path) / name for name in files] or [Path(path)]:
            if any(p.is_file() for p in needed.parent.glob(needed.name)):
                continue
            role = Path(path).resolve().relative_to(cache).parts[0] if Path(path).resolve() != cache else "?"
            marker = cache / role / PIN_FILE
            got = json.loads(marker.read_text())["files"] if marker.is_file() else []
            problems.append(f"{key}: {needed} does not exist (hub role {role!r} fetched: {', '.join(got) or 'nothing'})")
    return problems


def run_hub_stage(cfg: SpatialBoostConfig, download: Downloader | None = None, mirror: str | Path | None = None) -> dict[str, Any]:
    """The `hub` stage: fetch every pinned role, check the config's model paths, write
    hub.cache_dir/hub.json (what is there, by role); returns the stage's metrics.

    The demo pins nothing: the summary alone is written, so the stage is a stable no-op.
    """
    roles = active_roles(cfg)
    problem = preflight(cfg.hub, mirror, roles)
    if problem:
        raise HubError(problem)
    records = fetch_models(cfg.hub, roles=roles, download=download, mirror=mirror)
    problems = missing_model_files(cfg) if records else []
    if problems:
        raise HubError("; ".join(problems))
    pins = cfg.hub.pins()

    def summary(group: dict[str, ModelPin]) -> dict[str, Any]:
        return {"schema_version": 1, "models": {role: {"repo_id": pins[role].repo_id, "revision": pins[role].revision,
                                                       "files": list(r.files)} for role, r in records.items() if role in group}}  # fmt: skip

    for folder, group in ((cfg.hub.cache_dir, cfg.hub.models), (cfg.hub.encoder_dir, cfg.hub.encoders)):
        Path(folder).mkdir(parents=True, exist_ok=True)  # both are outputs of the stage, in every profile
        write_json_atomic(Path(folder) / SUMMARY_FILE, summary(group))
    return {
        "roles": len(records),
        "fetched": sorted(role for role, r in records.items() if r.fetched),
        "already_there": sorted(role for role, r in records.items() if not r.fetched),
        "source": "none" if not records else ("mirror" if (mirror or cfg.hub.mirror) else "hub"),
    }


def _listing(folder: Path) -> list[str]:
    """Files under `folder` as POSIX paths, without download records, markers or temporaries."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in {".cache", ".git"} and rel.name != PIN_FILE and not rel.name.endswith(".tmp"):
            out.append(rel.as_posix())
    return out
