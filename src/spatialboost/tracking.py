"""The only module that imports MLflow: runs, params, metrics, artefacts, the encoder registry.

    tracker = Tracker(cfg.tracking, profile=cfg.profile)
    with tracker.run("pipeline", config=cfg, tags={"dvc.qa_hash": ...}) as run_id:
        tracker.log_metrics({"boosted.depth_rmse.mean": 0.41})
        version = tracker.register_encoder(export_dir, "dinov2-small")   # alias `candidate`
        tracker.promote_if_better("spatialboost-dinov2-small", version)  # alias `champion` maybe
    encoder = load_encoder("models:/spatialboost-dinov2-small@champion")

Encoders are logged as an MLflow pyfunc model with this module as its `loader_module` and the
exported safetensors folder as its data: loading never unpickles anything (no cloudpickled
python_model), `mlflow.pyfunc.load_model` works, and `load_encoder` gives back the encoder
module itself. Credentials (S3 keys, tokens) are never logged: params come from the validated
config, which has no credential fields, and tags are ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from spatialboost import __version__
from spatialboost.config import SpatialBoostConfig, TrackingConfig

CANDIDATE = "candidate"
CHAMPION = "champion"
ENCODER_ARTIFACT = "encoder"
MAX_DESCRIPTION_CHARS = 4000


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: params for MLflow (which stores strings)."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


def git_commit(cwd: str | os.PathLike[str] = ".") -> str:
    """The checked-out commit (with `-dirty` if the tree has changes), or "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.strip() + ("-dirty" if dirty.strip() else "")


def resolve_tracking_uri(uri: str) -> str:
    """A sqlite URI with a relative path made absolute (MLflow resolves it against the cwd)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


@contextlib.contextmanager
def _mlflow_at(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (which `log_model` and a models:/ download need) at `uri` for a
    block, then leave it exactly as it was, through MLflow's public API only. With no tracking
    URI set in this process (the usual case) the block only sets MLFLOW_TRACKING_URI and
    MLFLOW_REGISTRY_URI in the environment; a URI the caller set with `mlflow.set_tracking_uri`
    or `set_registry_uri` is replaced for the block and put back. The environment is restored in
    every case (MLflow's setters export it too, which would leak into later callers)."""
    env_names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.pop(name, None) for name in env_names}
    # with the environment out of the way, what is left is what the caller set in this process
    caller_tracking = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    caller_registry = mlflow.get_registry_uri()
    os.environ.update({name: uri for name in env_names})
    registry_was_set = mlflow.get_registry_uri() != uri  # a set registry URI outranks the environment
    try:
        if caller_tracking is not None:
            mlflow.set_tracking_uri(uri)
        if registry_was_set:
            mlflow.set_registry_uri(uri)
        yield
    finally:
        if caller_tracking is not None:
            mlflow.set_tracking_uri(caller_tracking)
        if registry_was_set:
            mlflow.set_registry_uri(caller_registry)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Tracker:
    """Runs, metrics and the encoder registry of one profile's experiment."""

    def __init__(self, cfg: TrackingConfig, profile: str) -> None:
        self.cfg = cfg
        self.uri = resolve_tracking_uri(cfg.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.experiment_name = cfg.experiment.format(profile=profile)
        self._run_id: str | None = None

    def experiment_id(self) -> str:
        """The experiment's id, created on first use (artifacts under cfg.artifact_location)."""
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        location = self.cfg.artifact_location
        if self.uri.startswith(("http://", "https://")):
            location = None  # a tracking server decides (e.g. proxied S3 via --artifacts-destination)
        elif location and "://" not in location:
            location = Path(location).resolve().as_uri()
        return self.client.create_experiment(self.experiment_name, artifact_location=location or None)

    @contextlib.contextmanager
    def run(self, name: str, config: SpatialBoostConfig | None = None, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """A run with params flattened from `config` and tags (git commit, version, yours)."""
        all_tags = {"git.commit": git_commit(), "spatialboost.version": __version__, **(tags or {})}
        run = self.client.create_run(self.experiment_id(), run_name=name, tags=all_tags)
        self._run_id = run.info.run_id
        status = "FAILED"
        try:
            if config is not None:
                params = flatten(config.model_dump(mode="json"))
                for key, value in params.items():
                    self.client.log_param(self._run_id, key, value[:6000])
            yield self._run_id
            status = "FINISHED"
        finally:
            self.client.set_terminated(self._run_id, status=status)
            self._run_id = None

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            raise RuntimeError("no active run: use `with tracker.run(...)`")
        return self._run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log numeric metrics on the active run."""
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step)

    def log_artifacts(self, folder: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload a folder (plots, reports) to the active run."""
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def model_name(self, encoder: str) -> str:
        """Registered model name of an encoder: `spatialboost-<encoder>`."""
        return f"{self.cfg.registry_prefix}{encoder}"

    def register_encoder(self, export_dir: str | os.PathLike[str], encoder: str, model_card: str | None = None) -> int:
        """Log the exported encoder folder as a model of the active run, register a new version of
        `spatialboost-<encoder>`, point `candidate` at it; returns the version number.

        model_card: README.md text put in the logged folder (the export itself is left untouched:
        it is a DVC output) and, shortened if need be, the version's description in the registry."""
        name = self.model_name(encoder)
        with contextlib.ExitStack() as stack:
            folder = Path(export_dir)
            if model_card is not None:
                folder = _with_model_card(folder, model_card, Path(stack.enter_context(tempfile.TemporaryDirectory())))
            with _mlflow_at(self.uri):
                with mlflow.start_run(run_id=self.run_id):
                    info = mlflow.pyfunc.log_model(
                        name=ENCODER_ARTIFACT,
                        loader_module="spatialboost.tracking",
                        data_path=str(folder),
                        pip_requirements=[f"spatialboost=={__version__}"],
                        registered_model_name=name,
                    )
        version = int(info.registered_model_version)
        if model_card is not None:
            self.client.update_model_version(name, str(version), description=_description(model_card))
        self.client.set_registered_model_alias(name, CANDIDATE, str(version))
        return version

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version an alias points at, or None."""
        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except mlflow.exceptions.MlflowException:
            return None

    def version_metric(self, name: str, version: int, metric: str) -> float | None:
        """A metric of the run that produced `version`, or None."""
        run_id = self.client.get_model_version(name, str(version)).run_id
        return self.client.get_run(run_id).data.metrics.get(metric) if run_id else None

    def promote_if_better(self, name: str, version: int) -> bool:
        """Move `champion` to `version` if it beats the current champion on cfg.champion_metric
        (direction cfg.champion_mode), or if there is none. Returns whether it moved."""
        new = self.version_metric(name, version, self.cfg.champion_metric)
        if new is None or not np.isfinite(new):
            return False
        current = self.alias_version(name, CHAMPION)
        if current is not None and current != version:
            old = self.version_metric(name, current, self.cfg.champion_metric)
            if old is not None and np.isfinite(old):
                better = new > old if self.cfg.champion_mode == "max" else new < old
                if not better:
                    return False
        self.client.set_registered_model_alias(name, CHAMPION, str(version))
        return True


def _with_model_card(export_dir: Path, card: str, tmp: Path) -> Path:
    """A copy of `export_dir` under `tmp` (same folder name) with README.md; big files hard-linked
    when the file system allows, so a ViT-L's weights are not copied."""
    staged = tmp / export_dir.name

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(export_dir, staged, copy_function=link_or_copy)
    (staged / "README.md").write_text(card)
    return staged


def _description(card: str, limit: int = MAX_DESCRIPTION_CHARS) -> str:
    """The card without its YAML front matter and title (the registry shows the model's name; its
    versions table shows the description's first line), cut at a line under `limit` characters
    (MLflow's database column for descriptions is 5000 characters)."""
    body = card.split("---\n", 2)[2].lstrip() if card.startswith("---\n") else card
    if body.startswith("# "):
        body = body.split("\n", 1)[1].lstrip() if "\n" in body else ""
    if len(body) <= limit:
        return body
    note = "\n\n(the full model card is README.md in this version's files)"
    return body[: body.rfind("\n", 0, limit - len(note))] + note


def download_encoder(model_uri: str, tracking_uri: str | None = None, dst: str | os.PathLike[str] | None = None) -> Path:
    """Download `models:/NAME@ALIAS` (or a version) and return the exported encoder folder in it."""
    uri = resolve_tracking_uri(tracking_uri or mlflow.get_tracking_uri())
    with _mlflow_at(uri):  # download_artifacts' own tracking_uri / registry_uri do not reach a models:/ URI's registry lookup
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst) if dst else None))
    flavours = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
    return local / flavours["python_function"]["data"]


def pull_encoder(
    model_uri: str, output: str | os.PathLike[str], tracking_uri: str | None = None, force: bool = False
) -> Path:
    """Download `models:/NAME@ALIAS` and make `output` exactly the encoder folder (weights, configs,
    remote code, model card): what `AutoModel.from_pretrained(output, trust_remote_code=True)`,
    `spatialboost.open_clip` and `load_encoder` read. Written atomically; an existing `output` is
    replaced only with `force`."""
    output = Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass force=True (--force) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.pull-") as tmp:
        folder = download_encoder(model_uri, tracking_uri, dst=tmp)
        old = Path(tmp) / "previous"
        if output.exists():
            output.rename(old)
        folder.rename(output)
    return output


def load_encoder(model_uri: str, tracking_uri: str | None = None, device: str = "cpu") -> Any:
    """`models:/spatialboost-<encoder>@champion` -> the encoder module (images -> features),
    rebuilt from safetensors + config: nothing is unpickled."""
    from spatialboost.models.export import load_exported_encoder

    return load_exported_encoder(download_encoder(model_uri, tracking_uri), device=device)


class _EncoderPyfunc:
    """What `mlflow.pyfunc.load_model` returns: predict(uint8 images (B, H, W, 3)) -> features."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        return embed_images(self.encoder, np.asarray(model_input, dtype=np.uint8))


def embed_images(encoder: Any, images: np.ndarray) -> np.ndarray:
    """uint8 images (B, H, W, 3) -> one embedding per image (B, D) float32: the CLS token, or the
    mean patch token for encoders without one (SigLIP)."""
    import torch

    with torch.inference_mode():
        features = encoder(list(images))
    pooled = features.cls_token if features.cls_token is not None else features.patch_tokens.mean(dim=1)
    return pooled.float().cpu().numpy()


def _load_pyfunc(data_path: str) -> _EncoderPyfunc:
    """MLflow's loader_module hook: rebuild the encoder from the logged folder."""
    from spatialboost.models.export import load_exported_encoder

    return _EncoderPyfunc(load_exported_encoder(data_path))
