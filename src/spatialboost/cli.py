"""The `spatialboost` command line. Each command validates the params file, calls one library
entry point and prints what it did; `--help` works on every command.

    spatialboost config show                 # the resolved, validated config as YAML
    spatialboost world render --set world.n_train=16
    spatialboost data manifest
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from spatialboost.config import ConfigError, SpatialBoostConfig, load_config

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
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")
app.add_typer(hub_app, name="hub")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (demo: params.yaml, GPU: configs/paper.yaml)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-S", help="override a value: section.key=value (repeatable)")
]

F = TypeVar("F", bound=Callable[..., Any])


def _clean_errors(fn: F) -> F:
    """Turn a ConfigError into its message on stderr and exit code 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _load(params: Path, overrides: list[str] | None) -> SpatialBoostConfig:
    return load_config(params, overrides or [])


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
    typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


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
    """Render the world dataset (train + test splits) into world.root; resumes if interrupted."""
    from spatialboost.world import render_dataset

    cfg = _load(params, overrides)
    counts = render_dataset(cfg.world, Path(cfg.world.root), progress=progress)
    typer.echo(json.dumps(counts))


@data_app.command("manifest")
@_clean_errors
def data_manifest(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Read every image of data.source, write the manifest and the quarantine records."""
    from spatialboost.data import build_manifest_for

    report = build_manifest_for(_load(params, overrides).data, progress)
    typer.echo(json.dumps(report.as_dict()))


@app.command("extract")
@_clean_errors
def extract(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Turn every image of data.manifest into a canonical 3D scene record (extract.output)."""
    from spatialboost.extract.observe import build_observer
    from spatialboost.extract.pipeline import manifest_ids, run_extraction

    cfg = _load(params, overrides)
    observer = build_observer(cfg.extract, cfg.data, cfg.device)
    summary = run_extraction(cfg, manifest_ids(cfg.data.manifest), observer, progress=progress)
    typer.echo(json.dumps(summary))


@app.command("synthesize")
@_clean_errors
def synthesize(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Turn every scene record into a multi-turn spatial conversation (synthesize.output)."""
    from spatialboost.qa.pipeline import RGBDDepthReader
    from spatialboost.qa.pipeline import synthesize as run_synthesis

    cfg = _load(params, overrides)
    depth = RGBDDepthReader(cfg.data.uri) if cfg.data.source == "world" else None
    summary = run_synthesis(cfg.extract.output, cfg.synthesize, cfg.data.uri, depth, progress=progress)
    typer.echo(json.dumps(summary))


@hub_app.command("fetch")
@_clean_errors
def hub_fetch(
    params: ParamsOpt = Path("configs/paper.yaml"),
    overrides: SetOpt = None,
    role: Annotated[list[str] | None, typer.Option(help="fetch only this role (repeatable)")] = None,
) -> None:
    """Download the pinned checkpoints of hub.models into hub.cache_dir/<role> (skips fetched ones)."""
    from spatialboost.hub import fetch_models

    paths = fetch_models(_load(params, overrides).hub, roles=role or None)
    typer.echo(json.dumps({name: str(path) for name, path in paths.items()}))


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
        from spatialboost.data import ImageLimits, decode_image

        pixels = decode_image(image.read_bytes(), ImageLimits.from_config(cfg.data))
        result["embedding_shape"] = list(embed_images(encoder, pixels[None]).shape)
    typer.echo(json.dumps(result))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
