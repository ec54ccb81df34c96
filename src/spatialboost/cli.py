"""The `spatialboost` command line. Each command validates the params file, calls one library
entry point and prints what it did; `--help` works on every command.

    spatialboost profile use paper           # make configs/paper.yaml the active params.yaml
    spatialboost config show                 # the resolved, validated config as YAML
    spatialboost world render --set world.n_train=16
    spatialboost data manifest
    spatialboost extract --params configs/paper.yaml      # any stage, as `dvc repro <stage>` runs it

Every stage of dvc.yaml has its command: hub (`hub fetch`: the downloads), world (`world render`),
manifest (`data manifest`), extract, synthesize, bootstrap (`bootstrap run`), train, evaluate,
register; each calls the stage's one library entry point, the same its flow calls, and prints the
summary the flow writes to metrics/<stage>.json. align and instruct run
`python -m spatialboost.train --stage align|instruct`.

Every failure a user can cause (a bad params file or override, a missing folder, an unreachable
S3 endpoint, a missing AWS profile, ...) ends in one line on stderr naming the file or the key
(errors.py) and a non-zero exit: 2 for bad params, 1 for the rest; `spatialboost --debug ...`
shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
import yaml

from spatialboost.config import ConfigError, SpatialBoostConfig, load_config, redact_secrets
from spatialboost.errors import describe_error, exit_code

app = typer.Typer(
    help="SpatialBoost: make vision encoders spatially aware through language.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and validate params files.", no_args_is_help=True)
world_app = typer.Typer(help="The procedural 3D world (the demo's data).", no_args_is_help=True)
data_app = typer.Typer(help="Image sources, manifests and quarantine.", no_args_is_help=True)
hub_app = typer.Typer(help="Pinned checkpoints of the paper profile (the only downloads).", no_args_is_help=True)
profile_app = typer.Typer(
    help="Profiles: configs/<name>.yaml are the sources, params.yaml the active one (what `dvc repro` runs).",
    no_args_is_help=True,
)
app.add_typer(profile_app, name="profile")
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")
app.add_typer(hub_app, name="hub")
bootstrap_app = typer.Typer(help="The demo's pre-trained LVLM: train it, or release it for fresh clones.", no_args_is_help=True)
app.add_typer(bootstrap_app, name="bootstrap")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (demo: params.yaml, GPU: configs/paper.yaml)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-S", help="override a value: section.key=value (repeatable)")
]

F = TypeVar("F", bound=Callable[..., Any])


_OPTIONS = {"debug": False}


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="on failure, show the full traceback instead of one line (or SPATIALBOOST_DEBUG=1)")
    ] = False,
) -> None:
    """SpatialBoost: make vision encoders spatially aware through language."""
    _OPTIONS["debug"] = debug or os.environ.get("SPATIALBOOST_DEBUG", "") not in ("", "0")


def _clean_errors(fn: F) -> F:
    """Turn any failure into one line on stderr (errors.describe_error) and a non-zero exit:
    2 for bad params (ConfigError), 1 otherwise; with --debug the exception propagates."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - the one place every failure becomes a line
            if _OPTIONS["debug"]:
                raise
            for line in describe_error(err).splitlines() or ["failed"]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(exit_code(err)) from None

    return wrapper  # type: ignore[return-value]


def _load(params: Path, overrides: list[str] | None) -> SpatialBoostConfig:
    return load_config(params, overrides or [])


def _stage_done(metrics: dict[str, Any]) -> None:
    """A stage's summary, the one its flow writes to metrics/<stage>.json (`dvc repro` owns that file)."""
    typer.echo(json.dumps(metrics))


@config_app.command("show")
@_clean_errors
def config_show(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    section: Annotated[str | None, typer.Option(help="print only this section")] = None,
) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML."""
    data = _load(params, overrides).model_dump(mode="json")
    if section is not None:
        if section not in data:
            raise ConfigError(f"no section {section!r}; sections: {', '.join(data)}")
        data = {section: data[section]}
    typer.echo(redact_secrets(yaml.safe_dump(data, sort_keys=False).rstrip()))


@config_app.command("validate")
@_clean_errors
def config_validate(files: Annotated[list[Path], typer.Argument(help="params files to check")]) -> None:
    """Validate params files; exit 2 naming every bad key."""
    problems = []
    for path in files:
        try:
            load_config(path)
            typer.echo(f"{path}: ok")
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))


@world_app.command("render")
@_clean_errors
def world_render(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """The `world` stage: render the world dataset (train + test splits) into world.root, resuming
    if interrupted; prints metrics/world.json's summary."""
    from spatialboost.world.dataset import run_world_stage

    cfg = _load(params, overrides)
    _stage_done(run_world_stage(cfg.world, progress=progress))


@data_app.command("manifest")
@_clean_errors
def data_manifest(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """The `manifest` stage: read every image of data.source, write the manifest and the quarantine
    records; prints what metrics/manifest.json holds."""
    from spatialboost.data.manifest import run_manifest_stage

    cfg = _load(params, overrides)
    _stage_done(run_manifest_stage(cfg.data, progress))


@app.command("extract")
@_clean_errors
def extract(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """The `extract` stage: every image of data.manifest into a canonical 3D scene record
    (extract.output), resuming; with ground truth at hand its accuracy; prints what
    metrics/extract.json holds."""
    from spatialboost.extract.pipeline import run_extract_stage

    cfg = _load(params, overrides)
    _stage_done(run_extract_stage(cfg, progress=progress))


@app.command("synthesize")
@_clean_errors
def synthesize(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """The `synthesize` stage: every scene record into a multi-turn spatial conversation
    (synthesize.output), resuming; with ground truth at hand every answer checked; prints what
    metrics/synthesize.json holds."""
    from spatialboost.qa.pipeline import run_synthesize_stage

    cfg = _load(params, overrides)
    _stage_done(run_synthesize_stage(cfg, progress=progress))


@bootstrap_app.command("run")
@_clean_errors
def bootstrap_run(params: ParamsOpt = Path("params.yaml"), overrides: SetOpt = None) -> None:
    """The `bootstrap` stage: skipped (bootstrap.enabled false), installed from bootstrap.release
    (verified against the recipe), or trained into bootstrap.output (-S bootstrap.release=null);
    prints what metrics/bootstrap.json holds."""
    from spatialboost.train.bootstrap import run_bootstrap_stage

    cfg = _load(params, overrides)
    _stage_done(run_bootstrap_stage(cfg))


@bootstrap_app.command("release")
@_clean_errors
def bootstrap_release(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    output: Annotated[Path | None, typer.Option(help="release folder (default: bootstrap.release)")] = None,
    trained: Annotated[
        Path | None, typer.Option(help="package this finished bootstrap instead of training one now")
    ] = None,
) -> None:
    """Run the bootstrap recipe (or take --trained) and write a release folder: weights, model
    card, recipe.json and sha256 manifest, to commit; the stage then installs it in a clone."""
    from spatialboost.train.bootstrap import run_bootstrap
    from spatialboost.train.release import write_release

    cfg = _load(params, overrides)
    target = output or (Path(cfg.bootstrap.release) if cfg.bootstrap.release else None)
    if target is None:
        raise ConfigError("no release folder: give --output or set bootstrap.release")
    source = trained
    if source is None:
        source = Path(cfg.bootstrap.output)
        run_bootstrap(cfg, source)
    folder = write_release(cfg, source, target)
    typer.echo(json.dumps({"release": str(folder), "from": str(source)}))


@app.command("train")
@_clean_errors
def train(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """The `train` stage: the boost (train.stage) from train.init into train.output, resumable, on
    orchestration.train_nproc_per_node processes; prints what metrics/train.json holds."""
    from spatialboost.train.launch import run_boost_stage

    cfg = _load(params, overrides)
    _stage_done(run_boost_stage(cfg, params, overrides or [], progress=progress))


@app.command("evaluate")
@_clean_errors
def evaluate(params: ParamsOpt = Path("params.yaml"), overrides: SetOpt = None) -> None:
    """The `evaluate` stage: baseline vs boosted, probes on frozen features and spatial VQA (or the
    paper's benchmarks), the report in evaluate.output; prints what metrics/evaluate.json holds."""
    from spatialboost.evaluate.run import evaluate_pipeline

    cfg = _load(params, overrides)
    _stage_done(evaluate_pipeline(cfg)["metrics"])


@app.command("register")
@_clean_errors
def register(params: ParamsOpt = Path("params.yaml"), overrides: SetOpt = None) -> None:
    """The `register` stage: one MLflow run of the pipeline, the boosted encoder a new registry
    version (candidate; champion if it beats the current one); prints what metrics/register.json holds."""
    from spatialboost.register import register_pipeline

    cfg = _load(params, overrides)
    _stage_done(register_pipeline(cfg))


@app.command("robot")
@_clean_errors
def robot(params: ParamsOpt = Path("params.yaml"), overrides: SetOpt = None) -> None:
    """The `robot` stage (robot/dvc.yaml): CortexBench behaviour cloning on the frozen encoders of
    this run (floor, baseline, boosted), one unit after another; the report in robot.output; prints
    what metrics/robot.json holds."""
    from spatialboost.evaluate.robot.protocol import robot_learning

    cfg = _load(params, overrides)
    _stage_done(robot_learning(cfg, progress=True)["metrics"])


ParamsFileOpt = Annotated[Path, typer.Option("--params", "-p", help="the active params file")]
MirrorOpt = Annotated[
    Path | None, typer.Option(help="offline: a folder laid out like the hub, <repo_id>/<files> (default: hub.mirror)")
]


@profile_app.command("use")
@_clean_errors
def profile_use(
    name: Annotated[str, typer.Argument(help="a shipped profile (demo, paper) or a profile YAML file")],
    params: ParamsFileOpt = Path("params.yaml"),
) -> None:
    """Write params.yaml from a profile, fully resolved (every key, defaults included, comments
    kept), so that `dvc repro` and `dvc exp run -S` run it."""
    from spatialboost.profiles import use_profile

    source = use_profile(name, params)
    typer.echo(f"{params}: profile {name} (from {source}); run it with `dvc repro`")


@profile_app.command("show")
@_clean_errors
def profile_show(params: ParamsFileOpt = Path("params.yaml")) -> None:
    """Which profile params.yaml holds, whether it still matches its source, and the shipped ones."""
    from spatialboost.profiles import available_profiles, profile_status

    status = profile_status(params)
    if status.source is None:
        state = "no shipped source of that name"
    elif status.in_sync:
        state = f"matches {status.source}"
    else:
        state = f"differs from {status.source} at: " + "; ".join(status.differences)
    typer.echo(f"{params}: profile {status.profile} ({state})")
    typer.echo(f"shipped: {', '.join(f'{n} ({p})' for n, p in available_profiles().items())}")


@hub_app.command("fetch")
@_clean_errors
def hub_fetch(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    role: Annotated[list[str] | None, typer.Option(help="fetch only this role (repeatable)")] = None,
    mirror: MirrorOpt = None,
) -> None:
    """Fetch the pinned checkpoints the config loads (hub.models, and of hub.encoders the chosen
    lvlm.encoder's) into hub.cache_dir/<role> or hub.encoder_dir/<role> (skips fetched ones). The whole `hub` stage (with its checks and
    summary) is `dvc repro hub`."""
    from spatialboost.hub import HubError, active_roles, fetch_models, preflight

    cfg = _load(params, overrides)
    roles = role or active_roles(cfg)
    try:
        problem = preflight(cfg.hub, mirror, roles)
        if problem:
            raise HubError(problem)
        records = fetch_models(cfg.hub, roles=roles, mirror=mirror)
    except HubError as err:
        raise ConfigError(str(err)) from None
    typer.echo(
        json.dumps(
            {
                name: {"folder": str(r.folder), "files": list(r.files), "fetched": r.fetched}
                for name, r in records.items()
            }
        )
    )


@hub_app.command("lock")
@_clean_errors
def hub_lock(
    params: ParamsFileOpt = Path("params.yaml"),
    mirror: MirrorOpt = None,
    update: Annotated[bool, typer.Option(help="re-pin every role to its current commit, not only the unpinned")] = False,
) -> None:
    """Pin every unpinned role of the active profile to a commit sha: the repository's current
    `main` (asks the hub), or what a mirror holds. The roles the active params load must pin; the
    other encoders' pin when the hub or the mirror has them (for a later `-S lvlm.encoder=...`).
    Writes the shas into the profile's source (configs/<profile>.yaml, comments kept) and
    regenerates params.yaml from it; commit both."""
    from spatialboost.hub import HubError, active_roles, lock_revisions
    from spatialboost.profiles import profile_status, set_profile_values, use_profile

    status = profile_status(params)
    if status.source is None:
        raise ConfigError(f"{params}: profile {status.profile!r} has no source in configs/ to write the pins into")
    try:
        required = active_roles(load_config(params))
        shas = lock_revisions(load_config(status.source).hub, mirror=mirror, update=update, required=required)
    except HubError as err:
        raise ConfigError(str(err)) from None
    hub = load_config(status.source).hub
    set_profile_values(
        status.source,
        {f"hub.{'encoders' if role in hub.encoders else 'models'}.{role}.revision": sha for role, sha in shas.items()},
    )
    use_profile(status.source, params)
    typer.echo(json.dumps({"profile": str(status.source), "revisions": shas}))


@app.command("pull")
@_clean_errors
def pull(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION, e.g. spatialboost-dinov2-demo@champion")],
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", "--out", help="the encoder folder to write (default: models/pulled/NAME-ALIAS)"),
    ] = None,
    force: Annotated[bool, typer.Option(help="replace OUTPUT if it exists")] = False,
    image: Annotated[Path | None, typer.Option(help="embed this image and print the embedding's shape")] = None,
) -> None:
    """Write a registry version's encoder folder (safetensors, configs, transformers remote code,
    model card) and check it loads. Then: AutoModel.from_pretrained(OUTPUT, trust_remote_code=True),
    spatialboost.open_clip.create_model(OUTPUT, ...) for OpenCLIP towers, or load_encoder."""
    cfg = _load(params, overrides)
    name, sep, alias = ref.partition("@")
    uri = f"models:/{name}@{alias}" if sep else f"models:/{ref}"
    # no "@" in the folder name: transformers imports the remote code under the folder's name
    dst = output or Path("models/pulled") / ref.replace("@", "-").replace("/", "-")
    if dst.exists() and not force:  # before the slow imports and the download
        raise ConfigError(f"{dst} exists; pass --force to replace it")
    from spatialboost.models.export import load_exported_encoder
    from spatialboost.tracking import embed_images, pull_encoder, resolve_tracking_uri

    try:
        folder = pull_encoder(uri, dst, tracking_uri=resolve_tracking_uri(cfg.tracking.tracking_uri), force=force)
    except FileExistsError as err:
        raise ConfigError(str(err).replace("force=True (--force)", "--force")) from None
    encoder = load_exported_encoder(folder)
    result: dict[str, object] = {"model_uri": uri, "folder": str(folder)}
    if image is not None:
        from spatialboost.data import BadImage, ImageLimits, decode_image
        from spatialboost.io import read_regular_file

        try:
            pixels = decode_image(read_regular_file(image, cfg.data.max_file_bytes), ImageLimits.from_config(cfg.data))
        except BadImage as bad:
            raise ValueError(f"{image}: not a usable image ({bad})") from None
        result["embedding_shape"] = list(embed_images(encoder, pixels[None]).shape)
    typer.echo(json.dumps(result))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
