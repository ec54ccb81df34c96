"""THE configuration schema: one pydantic model per params.yaml section.

Every value the pipeline uses lives in params.yaml (the demo profile) or configs/paper.yaml
(the GPU profile) and is validated here. Units are in each field's description. Unknown keys
are errors, so a typo never silently falls back to a default.

    cfg = load_config("params.yaml")                     # raises ConfigError, one line per problem
    cfg = load_config("params.yaml", ["world.n_train=8"])  # dotted overrides, YAML-typed values

Files are read with limits (`read_params_file`): a regular file of at most MAX_PARAMS_BYTES of
UTF-8 YAML, no anchors or aliases (an alias bomb expands a few hundred bytes into gigabytes), no
duplicate keys (YAML would keep the last one silently), at most MAX_YAML_DEPTH levels. Values are
strict: no boolean where a number is meant (YAML reads `yes` as true), no number given as a
string, no inf or nan, every [low, high] range ordered, URLs well formed and free of
credentials (`redact_secrets` hides any that reach a message).
"""

from __future__ import annotations

import math
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

SHAPE_CLASSES = ("cube", "sphere", "cylinder", "cone", "pyramid", "ellipsoid", "capsule")
"""Shape classes the procedural world can render (world/shapes.py implements each)."""

Range = Annotated[tuple[float, float], Field(description="[low, high], low <= high")]


MAX_PARAMS_BYTES = 1 << 20
"""A params file larger than this (1 MiB; the paper profile is ~12 KB) is refused unread."""

MAX_YAML_DEPTH = 32
"""Deepest nesting of mappings and lists a params file may have (ours have 4)."""


class ConfigError(ValueError):
    """A params file that does not validate; `str()` is one line per problem, naming the key."""


_SECRET_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#@\s]*)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>(?<![A-Za-z0-9_-])[A-Za-z0-9_-]*?(?:signature|credential|token|password|passwd|secret|api[-_]?key"
    r"|access[-_]?key(?:[-_]?id)?|sig))=(?P<value>[^&\s'\"]+)",
    re.IGNORECASE,
)


def redact_secrets(text: str) -> str:
    """`text` with URL credentials (scheme://user:pass@) and secret-looking query values replaced
    by ***: for anything that prints or logs a config or a message quoting one."""
    text = _SECRET_URL.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}=***", text)


def url_problem(url: str, schemes: tuple[str, ...], what: str) -> str | None:
    """Why `url` is not a usable `what` URL with one of `schemes` (one line, the URL redacted), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as err:
        return f"not a valid {what} URL ({err})"
    if parts.username is not None or parts.password is not None:
        return (f"credentials never go in params: remove the user:password@ part of the {what} URL "
                "(use the environment or an AWS / MLflow profile)")  # fmt: skip
    if any(ch.isspace() for ch in url):
        return f"a {what} URL has no spaces"
    if parts.scheme not in schemes:
        return f"not a {what} URL: it starts with {', '.join(s + ':' for s in schemes)}"
    if parts.scheme in ("http", "https") and not parts.hostname:
        return f"no host in the {what} URL"
    if port == 0:
        return f"port 0 in the {what} URL"
    return None


def _type_name(value: Any) -> str:
    return {bool: "a boolean", str: "a string", type(None): "null", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def scalar_problem(value: Any, annotation: Any) -> str | None:
    """Why `value` (as parsed from YAML) is not strictly a value of `annotation`, or None.

    Only what pydantic's lax mode lets through is checked: a bool for a number, a number for a
    bool, a string for a number, a non-finite float; inside tuples and lists too. Everything else
    (strings, literals, sections) is left to pydantic.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return scalar_problem(value, get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if value is None and len(args) < len(get_args(annotation)):
            return None
        problems = [scalar_problem(value, a) for a in args]
        return None if any(p is None for p in problems) else problems[0]
    if annotation is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {_type_name(value)}"
    if annotation in (int, float):
        if isinstance(value, (bool, str)):
            hint = ""
            if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(?:\.\d*)?[eE][-+]?\d+", value.strip()):
                hint = f" (YAML 1.1 reads {value} as text: write {float(value):.1e}, with a point and a signed exponent)"
            return f"expected {'an integer' if annotation is int else 'a number'}, got {_type_name(value)}{hint}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number (inf and nan are not allowed)"
        return None
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        args = get_args(annotation)
        for i, item in enumerate(value):
            if not args:
                break
            arg = args[0] if (len(args) == 2 and args[1] is Ellipsis) or origin is list else args[min(i, len(args) - 1)]
            problem = scalar_problem(item, arg)
            if problem:
                return f"item {i}: {problem}"
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        problem = None if field is None else scalar_problem(value, field.annotation)
        if problem:
            raise ValueError(problem)
        return value


class WorldConfig(_Section):
    """The procedural 3D world: the demo's images and the test suite's ground truth."""

    root: str = Field("data/world", description="output folder of the RGB-D dataset")
    seed: int = Field(0, ge=0, description="master seed; scene i of a split uses a seed derived from it")
    n_train: int = Field(256, ge=0, description="training scenes")
    n_test: int = Field(64, ge=0, description="held-out scenes (evaluation only)")
    width: int = Field(128, ge=16, le=4096, description="image width, pixels")
    height: int = Field(128, ge=16, le=4096, description="image height, pixels")
    objects_per_scene: tuple[int, int] = Field((2, 8), description="[min, max] objects per scene")
    classes: tuple[str, ...] = Field(SHAPE_CLASSES, description="shape classes to sample from")
    object_size_m: Range = Field((0.15, 2.0), description="largest object extent, metres")
    object_distance_m: Range = Field((1.0, 12.0), description="object distance from the camera, metres")
    camera_height_m: Range = Field((0.6, 2.2), description="camera height above the ground, metres")
    camera_pitch_deg: Range = Field((-25.0, -5.0), description="camera pitch, degrees (negative looks down)")
    camera_roll_deg: Range = Field((-8.0, 8.0), description="camera roll about the optical axis, degrees")
    fov_deg: Range = Field((50.0, 75.0), description="horizontal field of view, degrees")
    rgb_noise_std: float = Field(0.02, ge=0.0, le=0.5, description="Gaussian RGB noise, fraction of full scale")
    shard_size: int = Field(32, ge=1, description="images per render task (the unit of fan-out and retry)")

    @field_validator(
        "object_size_m", "object_distance_m", "camera_height_m", "camera_pitch_deg",
        "camera_roll_deg", "fov_deg",
    )
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"low {value[0]} is greater than high {value[1]}")
        return value

    @field_validator("object_size_m", "object_distance_m", "camera_height_m")
    @classmethod
    def _positive_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] <= 0:
            raise ValueError(f"must be > 0, got low {value[0]}")
        return value

    @field_validator("camera_pitch_deg", "camera_roll_deg")
    @classmethod
    def _not_vertical(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not -89.0 <= value[0] <= value[1] <= 89.0:
            raise ValueError("must lie within [-89, 89] degrees")
        return value

    @field_validator("objects_per_scene")
    @classmethod
    def _objects_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1 <= low <= high:
            raise ValueError(f"needs 1 <= min <= max, got [{low}, {high}]")
        return value

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(SHAPE_CLASSES))
        if unknown:
            raise ValueError(f"unknown shape classes {unknown}; known: {list(SHAPE_CLASSES)}")
        if not value:
            raise ValueError("needs at least one shape class")
        return value

    @field_validator("fov_deg")
    @classmethod
    def _fov_open(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 10.0 <= value[0] <= value[1] <= 150.0:
            raise ValueError("field of view must lie within [10, 150] degrees")
        return value


class S3Config(_Section):
    """Where S3 lives. Credentials never go here: boto3 reads them from the environment or an
    AWS profile (`profile` names one)."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000; None = AWS")
    region: str | None = Field(None, description="AWS region name")
    profile: str | None = Field(None, description="AWS shared-config profile name (credentials stay in ~/.aws)")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        problem = None if value is None else url_problem(value, ("http", "https"), "S3 endpoint")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9-]{2,32}", value):
            raise ValueError(f"not an AWS region name like us-east-1, got {value!r}")
        return value

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ch.isspace() for ch in value)):
            raise ValueError(f"an AWS profile name has no spaces and is not empty, got {value!r}")
        return value


S3_WATCH = "flows/manifest.py"
"""What DVC watches for an s3 source (data.watch): a local file that changes only with the manifest code."""


class DataConfig(_Section):
    """The images the pipeline reads, and the limits that send bad files to quarantine."""

    source: Literal["world", "folder", "s3"] = Field("world", description="kind of image source")
    uri: str = Field("data/world", description="world dataset root, a local folder, or s3://bucket/prefix")
    split: str | None = Field(None, description="world source only: read only this split (None = all)")
    extensions: tuple[str, ...] = Field((".jpg", ".jpeg", ".png", ".webp"), description="image file suffixes, lower case")
    max_file_bytes: int = Field(50_000_000, gt=0, description="larger files are quarantined, bytes")
    max_pixels: int = Field(40_000_000, gt=0, description="larger images are quarantined (decompression bombs), pixels")
    min_side_px: int = Field(16, ge=1, description="images with a smaller side are quarantined, pixels")
    manifest: str = Field("data/manifest.jsonl", description="manifest output: one line per readable image")
    quarantine: str = Field("data/quarantine.jsonl", description="quarantine output: one line per rejected file")
    s3: S3Config = Field(default_factory=S3Config)
    watch: str | None = Field(
        None,
        description="the local path DVC hashes to decide whether manifest and extract rerun (dvc.yaml `${data.watch}`): "
        "world/folder sources: the images, i.e. uri (the default; nothing else is allowed); s3: DVC cannot hash a "
        f"bucket without credentials, so the default is {S3_WATCH} (the manifest flow, a dependency anyway) and a "
        "re-list is asked for with `dvc repro -f manifest` (later stages rerun only if the manifest changed)",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_watch(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("watch") is None:
            source, uri = raw.get("source", "world"), raw.get("uri", "data/world")
            raw = {**raw, "watch": S3_WATCH if source == "s3" else uri}
        return raw

    @model_validator(mode="after")
    def _uri_matches_source(self) -> DataConfig:
        if (self.source == "s3") != self.uri.startswith("s3://"):
            raise ValueError(f"source {self.source!r} does not match uri {redact_secrets(self.uri)!r} (s3 needs s3://bucket/prefix)")
        if self.source == "s3":
            bucket = self.uri[len("s3://") :].partition("/")[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"uri {redact_secrets(self.uri)!r}: {bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.', '-')")
        elif not self.uri.strip():
            raise ValueError("uri: give the folder (or world dataset root) to read")
        if self.watch is not None and "://" in self.watch:
            raise ValueError(f"watch {self.watch!r} must be a local path: DVC would need credentials to hash it")
        return self

    @model_validator(mode="after")
    def _limits_admit_an_image(self) -> DataConfig:
        if self.min_side_px * self.min_side_px > self.max_pixels:
            raise ValueError(
                f"min_side_px {self.min_side_px} needs at least {self.min_side_px ** 2} pixels but max_pixels is "
                f"{self.max_pixels}: every image would be quarantined"
            )
        return self

    def watch_problem(self) -> str | None:
        """Why DVC would hash the wrong images (one line), or None. A local source's images are
        what DVC must watch: checked where DVC runs a stage (manifest, extract), not on every load,
        so code that copies params and moves `uri` elsewhere keeps working."""
        if self.source != "s3" and self.watch != self.uri:
            return (f"data.watch {self.watch!r} is not data.uri {self.uri!r}: DVC would hash the wrong images for this "
                    f"{self.source} source; set both (e.g. dvc exp run -S data.uri=X -S data.watch=X)")  # fmt: skip
        return None

    @field_validator("extensions")
    @classmethod
    def _dotted_lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [ext for ext in value if not ext.startswith(".") or ext != ext.lower()]
        if bad:
            raise ValueError(f"extensions must be lower case and start with '.': {bad}")
        if not value:
            raise ValueError("needs at least one extension")
        from spatialboost.data.records import readable_extensions  # lazy: data imports this module

        readable = readable_extensions()
        unreadable = [ext for ext in value if ext not in readable]
        if unreadable:
            raise ValueError(f"no decoder reads {unreadable} (readable here: {', '.join(sorted(readable))})")
        return value


_REVISION = re.compile(r"^[0-9a-f]{40}$")


class ModelPin(_Section):
    """One checkpoint on the Hugging Face Hub (or an OpenCLIP tag), pinned for reproducibility."""

    repo_id: str = Field(description="Hugging Face repository id, e.g. apple/DepthPro-hf")
    revision: str | None = Field(
        None, description="40-hex commit sha; None = not pinned yet: `spatialboost hub lock` fills it (fetch refuses unpinned models)"
    )
    allow_patterns: tuple[str, ...] | None = Field(
        None, description="only the repository files matching these globs are fetched (huggingface_hub allow_patterns); None = every file"
    )

    @field_validator("revision")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not _REVISION.match(value):
            raise ValueError(f"revision must be a 40-hex commit sha, got {value!r}")
        return value


class HubConfig(_Section):
    """Checkpoints `hub.py` downloads in the paper profile's own stage; empty in the demo."""

    cache_dir: str = Field("models/hub", description="local folder the pinned checkpoints are stored in (the hub stage's output)")
    models: dict[str, ModelPin] = Field(default_factory=dict, description="role -> pinned checkpoint, always fetched")
    encoder_dir: str = Field(
        "models/encoders",
        description="folder of the `encoders` checkpoints (a second output of the hub stage, so that "
        "fetching one does not change cache_dir, which extraction depends on)",
    )
    encoders: dict[str, ModelPin] = Field(
        default_factory=dict,
        description="role -> pinned checkpoint of an encoder lvlm.encoder may choose: fetched into "
        "encoder_dir/<role> only when chosen",
    )
    mirror: str | None = Field(
        None,
        description="offline: a local folder laid out like the hub, <repo_id>/<files> (e.g. `hf download REPO --revision SHA "
        "--local-dir MIRROR/REPO`), read instead of the network; None = download from the Hugging Face Hub",
    )

    @model_validator(mode="after")
    def _roles_unique(self) -> HubConfig:
        both = sorted(set(self.models) & set(self.encoders))
        if both:
            raise ValueError(f"roles {both} are in both models and encoders")
        return self

    def pins(self) -> dict[str, ModelPin]:
        """Every role, models then encoders."""
        return {**self.models, **self.encoders}


class DepthModelConfig(_Section):
    """Depth Pro (transformers `DepthProForDepthEstimation`): metric depth + focal length."""

    model_path: str = Field("models/hub/depth", description="folder of a DepthPro checkpoint (hub.py puts it there)")
    batch_size: int = Field(4, ge=1, description="images per forward")
    min_depth_m: float = Field(0.05, gt=0, description="depth below this is invalid, metres")
    max_depth_m: float = Field(1000.0, gt=0, description="depth above this is invalid, metres")
    min_focal_px: float = Field(10.0, gt=0, description="smaller focal lengths are absurd, pixels")
    max_focal_px: float = Field(1e5, gt=0, description="larger focal lengths are absurd, pixels")

    @model_validator(mode="after")
    def _ranges(self) -> DepthModelConfig:
        if self.min_depth_m >= self.max_depth_m:
            raise ValueError(f"min_depth_m {self.min_depth_m} must be below max_depth_m {self.max_depth_m}")
        if self.min_focal_px >= self.max_focal_px:
            raise ValueError(f"min_focal_px {self.min_focal_px} must be below max_focal_px {self.max_focal_px}")
        return self


class SegmenterConfig(_Section):
    """SAM 2 automatic masks and the filters applied to them."""

    backend: Literal["hf", "official"] = Field("hf", description="hf: transformers Sam2Model; official: the sam2 package")
    model_path: str = Field("models/hub/segmenter", description="checkpoint folder (hf) or checkpoint file (official)")
    official_config: str = Field("configs/sam2.1/sam2.1_hiera_l.yaml", description="official backend: sam2 hydra config name")
    batch_size: int = Field(4, ge=1, description="images per forward")
    points_per_side: int = Field(32, ge=1, description="automatic-mask point grid, points per image side")
    points_per_batch: int = Field(64, ge=1, description="prompt points per mask-decoder call")
    pred_iou_thresh: float = Field(0.8, ge=0, le=1, description="drop masks whose predicted IoU is lower")
    stability_thresh: float = Field(0.9, ge=0, le=1, description="drop masks whose stability score is lower")
    min_area_px: int = Field(64, ge=1, description="drop smaller masks, pixels")
    duplicate_iou: float = Field(0.7, gt=0, le=1, description="masks overlapping more are duplicates (keep the best)")
    nested_containment: float = Field(0.9, gt=0, le=1, description="a mask this much inside another is nested (dropped)")


class LabelerConfig(_Section):
    """OpenCLIP zero-shot labels of mask crops over a vocabulary."""

    model_name: str = Field("ViT-L-14", description="open_clip architecture name")
    pretrained: str | None = Field("models/hub/labeler/open_clip_pytorch_model.safetensors", description="checkpoint file (or None: random weights, tests only)")
    vocabulary: tuple[str, ...] = Field(
        ("person", "car", "chair", "table", "bottle", "cup", "dog", "cat", "tree", "building", "sofa", "bed"),
        description="label names the labeler chooses from",
    )
    templates: tuple[str, ...] = Field(("a photo of a {}.",), description="prompt templates, {} is the label")
    batch_size: int = Field(32, ge=1, description="crops per forward")
    min_score: float = Field(0.0, ge=0, le=1, description="objects whose best label scores lower are dropped")


class ObjectGeometryConfig(_Section):
    """From depth + masks to canonical 3D objects (geometry/)."""

    ransac_threshold_m: float = Field(0.02, gt=0, description="ground-plane inlier distance, metres")
    ransac_iterations: int = Field(200, ge=1, description="RANSAC hypotheses")
    ransac_min_inliers: int = Field(50, ge=3, description="fewer plane inliers means no plane found")
    max_points_per_object: int = Field(4000, ge=10, description="object point clouds are subsampled to this many")
    min_points_per_object: int = Field(10, ge=1, description="objects with fewer valid points are dropped, points")
    outlier_removal: bool = Field(True, description="statistical + largest-cluster outlier removal")
    box_completion: Literal["amodal", "visible"] = Field(
        "amodal",
        description="amodal: each box completed beyond the visible surface (down to the ground it rests on, the far side "
        "by a round-footprint prior along the viewing ray: geometry/completion.py); visible: the box of the visible points only",
    )
    ground_contact_ratio: float = Field(
        0.5,
        ge=0,
        description="an object rests on the ground (its box reaches down to it) when its lowest visible point is "
        "at most this share of its visible height (plus 2 pixels) from the ground",
    )


class ExtractConfig(_Section):
    """Stage 1 of the paper: every image -> a canonical 3D scene record."""

    backend: Literal["ground_truth", "models"] = Field(
        "ground_truth", description="ground_truth: depth/masks/labels from an RGB-D dataset; models: Depth Pro + SAM 2 + OpenCLIP"
    )
    output: str = Field("data/scenes", description="folder of the scene-record shards")
    shard_size: int = Field(64, ge=1, description="images per shard (the unit of resume and fan-out)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model dtype (bfloat16 on GPU)")
    min_objects: int = Field(1, ge=1, description="images with fewer objects are quarantined")
    n_overlays: int = Field(8, ge=0, description="PNG overlays (masks, labels, 3D boxes, depth) for a sample of images")
    depth: DepthModelConfig = Field(default_factory=DepthModelConfig)
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    geometry: ObjectGeometryConfig = Field(default_factory=ObjectGeometryConfig)


class TurnMix(_Section):
    """How many turns of each level a conversation has (pixel -> object -> scene)."""

    pixel: int = Field(3, ge=0, description="pixel-level turns: depth at a point, which of two points is closer")
    object: int = Field(4, ge=0, description="object-level turns: 3D box, size, left/right, above/below, front/behind")
    scene: int = Field(3, ge=0, description="scene-level turns: metric distances, closest object to another, ...")


class SynthesizeConfig(_Section):
    """Stage 2 of the paper: each 3D scene record -> one multi-turn spatial CoT conversation."""

    output: str = Field("data/qa", description="folder of the conversation shards, sidecars and report")
    seed: int = Field(0, ge=0, description="seed of question sampling and phrasing (per scene derived from it)")
    shard_size: int = Field(256, ge=1, description="scenes per shard (the unit of resume and fan-out)")
    n_turns: int = Field(10, ge=1, description="spatial turns per conversation (the paper: 10)")
    mix: TurnMix = Field(default_factory=TurnMix)
    point_refs: Literal["coordinates", "marks"] = Field(
        "coordinates",
        description="how pixel-level turns name a point: pixel coordinates in the text, or a labelled mark drawn "
        "on the image (data/marks.py; BLINK's look): a small LLM finds a mark, not a coordinate",
    )
    order: Literal["forward", "reversed", "shuffled", "single_turn"] = Field(
        "forward", description="turn order: forward (pixel -> object -> scene), or an ablation"
    )
    caption_turns: int = Field(0, ge=0, le=4, description="caption turns appended after the spatial ones (later paper version: 2)")
    units: tuple[Literal["m", "cm", "ft", "in"], ...] = Field(("m", "cm"), description="units numeric answers are rendered in (sampled)")
    decimals: int = Field(1, ge=0, le=3, description="decimals of rendered metric answers (m); other units scale it")
    min_margin_m: float = Field(0.15, ge=0, description="relations whose margin is smaller are skipped, metres")
    min_margin_rel: float = Field(0.1, ge=0, description="... or smaller than this fraction of the distance")
    min_confidence: float = Field(0.3, ge=0, le=1, description="objects with lower extraction confidence are not asked about")
    required_levels: tuple[Literal["pixel", "object", "scene"], ...] = Field(
        ("pixel", "object", "scene"),
        description="a scene whose conversation has no turn of one of these levels is quarantined, not written (the paper's chain goes pixel -> object -> scene)",
    )
    n_renderings: int = Field(6, ge=0, description="PNG renderings of sample conversations with what they mention drawn")

    @model_validator(mode="after")
    def _mix_fills_turns(self) -> SynthesizeConfig:
        total = self.mix.pixel + self.mix.object + self.mix.scene
        if total != self.n_turns:
            raise ValueError(f"mix adds up to {total} turns but n_turns is {self.n_turns}")
        return self

    @model_validator(mode="after")
    def _required_levels_have_turns(self) -> SynthesizeConfig:
        empty = [level for level in self.required_levels if getattr(self.mix, level) == 0]
        if empty:
            raise ValueError(f"required_levels {empty} get no turns in mix; give them turns or stop requiring them")
        return self


TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")
"""URL schemes MLflow's tracking and registry stores accept."""


class TrackingConfig(_Section):
    """MLflow: where runs go and how encoders are registered. Credentials never go here."""

    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking + registry URI (sqlite path, or http://host:port of `mlflow server`)")
    artifact_location: str = Field("mlartifacts", description="artifact root of new experiments with a local store (folder or s3://...)")
    experiment: str = Field("spatialboost-{profile}", description="experiment name; {profile} is replaced")
    registry_prefix: str = Field("spatialboost-", description="registered model name = prefix + encoder name")
    champion_metric: str = Field("boosted.vqa_relative_depth_acc.mean", description="metric that decides the `champion` alias")
    champion_mode: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower is better")

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str) -> str:
        problem = url_problem(value, TRACKING_SCHEMES, "MLflow tracking")
        if problem is None and value.startswith("sqlite:") and not value.startswith("sqlite:///"):
            problem = "a sqlite tracking URI is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        if problem is None and value.startswith("sqlite:///") and not value[len("sqlite:///") :].strip():
            problem = "no database file after sqlite:///"
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("artifact_location")
    @classmethod
    def _artifact_location(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give a folder or a URL (s3://bucket/prefix)")
        if "://" in value:
            scheme = value.partition("://")[0]
            problem = url_problem(value, (scheme,), "artifact location") if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else (
                f"not a URL scheme: {scheme!r}")  # fmt: skip
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("experiment", "registry_prefix", "champion_metric")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class OrchestrationConfig(_Section):
    """How flows fan work out (the extract and synthesize shards).

    `dask` and `ray` run tasks in worker processes, so they need a real Prefect API
    (PREFECT_API_URL): under Prefect's ephemeral API every worker would start its own server.
    """

    task_runner: Literal["threads", "dask", "ray"] = Field(
        "threads",
        description="Prefect task runner for fan-out stages: threads, dask (prefect-dask) or ray (the `ray` extra)",
    )
    address: str | None = Field(
        None,
        description="dask: an existing scheduler (tcp://host:port); ray: an existing cluster (ray://host:port, host:port "
        "or auto); null = start a local cluster for the flow run",
    )
    max_workers: int = Field(
        2, ge=1, description="concurrent tasks: threads, or the worker processes of a local Dask / Ray cluster"
    )
    train_nproc_per_node: int = Field(
        1,
        ge=1,
        description="processes of the train stage: more than 1 launches `torchrun --standalone --nproc_per_node N -m "
        "spatialboost.train` (one per GPU; gloo on CPU). The loop computes the same steps on any count, so, like the "
        "task runner, changing it reruns nothing",
    )
    metrics_dir: str = Field("metrics", description="folder of the DVC metrics files, one JSON per stage")
    schedule_cron: str = Field(
        "0 3 * * *", description="cron schedule of the Prefect deployment `spatialboost-pipeline/scheduled`"
    )

    @field_validator("schedule_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"a cron schedule has 5 fields (minute hour day month weekday), got {value!r}")
        return value

    @field_validator("address")
    @classmethod
    def _address_fits_runner(cls, address: str | None, info: ValidationInfo) -> str | None:
        runner = info.data.get("task_runner")  # validated before address (field order)
        if address is None or runner is None:
            return address
        if runner == "threads":
            raise ValueError("an address needs task_runner dask or ray; threads run inside the flow's process")
        if runner == "dask" and not re.match(r"^(tcp|tls|ucx|inproc|ws|wss)://[^/]+$", address):
            raise ValueError("not a Dask scheduler address like tcp://10.0.0.5:8786")
        if runner == "ray" and not re.match(r"^(auto|ray://[^/]+|[^/:]+:\d+)$", address):
            raise ValueError("not a Ray address like ray://10.0.0.5:10001, 10.0.0.5:6379 or auto")
        return address


class LoraSettings(_Section):
    """LoRA on the vision encoder (the boost stage's `lora` ablation adapter, through peft)."""

    r: int = Field(8, ge=1, description="rank of the low-rank update")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch input, probability")
    target_modules: tuple[str, ...] | None = Field(
        None, description="module names to adapt; None = the encoder family's attention projections"
    )


class TrainConfig(_Section):
    """THE one SFT loop (train/loop.py): which stage and adapter trains, and how.

    Batch sizes are in conversations. `global_batch_size` conversations make one optimizer step
    whatever the number of processes: global = micro_batch_size x accumulation x processes, so
    a run gives the same steps on 1 or N processes (N must divide global / micro).
    """

    stage: Literal["align", "instruct", "boost"] = Field(
        "boost", description="align: projector only; instruct: projector + LLM; boost: encoder adapter (+ projector), LLM frozen"
    )
    adapter: Literal["dual_channel", "full", "lora"] = Field(
        "dual_channel", description="boost stage only: dual_channel (Attn+ and gates: the method), full (the whole encoder) or lora"
    )
    train_projector: bool = Field(True, description="boost stage only: the projector trains too")
    replicate_seeds: tuple[int, ...] = Field(
        (), description="more runs of the same stage with these seeds, into output/seeds/<seed>: the seed spread every comparison is read against"
    )
    control: bool = Field(
        False, description="also train the supervision control (objective depth) of every seed, into output/control[/seeds/<seed>]"
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads while training; None = torch's default. A fixed count gives the same numbers on every machine"
    )
    objective: Literal["sft", "depth"] = Field(
        "sft",
        description="boost stage only: sft (the method: the frozen LLM's answer loss) or depth (the supervision "
        "control: the same adapter on the same images, a linear head on the patch tokens regressing their log-depth)",
    )
    data: str = Field("data/qa", description="conversations: a LLaVA JSON/JSONL/parquet file, or a folder of them")
    image_root: str = Field("data/world", description="folder that conversation `image` paths are relative to")
    split: str | None = Field(
        "train", description="train only on conversations of this split of the RGB-D dataset at image_root (held-out scenes stay out); None = all"
    )
    max_conversations: int | None = Field(
        None, ge=1, description="train on this many conversations of the split, a seeded subset (nested: a smaller one is part of a larger one); None = all. The data-scale ablation"
    )
    init: str = Field("models/bootstrap/vlm", description="SpatialVLM folder (SpatialVLM.save) or LLaVA checkpoint folder to start from")
    output: str = Field("models/boosted", description="run folder: checkpoints/, the trained model, train metrics")
    epochs: int = Field(1, ge=1, description="passes over the conversations (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; None = epochs x (conversations // global_batch_size)")
    global_batch_size: int = Field(8, ge=1, description="conversations per optimizer step, summed over processes")
    micro_batch_size: int = Field(4, ge=1, description="conversations per forward pass per process")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine schedule floor, fraction of lr")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="linear warmup, fraction of all optimizer steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay (matrices only; not biases, norms, gates)")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global gradient L2 norm to this; None = no clipping")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (LLM and encoder blocks) to save memory")
    max_length: int = Field(2048, ge=8, description="text tokens per conversation before the image tokens are expanded; longer ones are truncated")
    seed: int = Field(0, ge=0, description="seed of the data order (per epoch) and of the RNGs at the start")
    shuffle: bool = Field(True, description="reshuffle the conversations every epoch (deterministically, from seed and epoch)")
    group_by_length: bool = Field(
        False, description="batch conversations of similar token length together (less padding when short and long ones mix)"
    )
    checkpoint_every: int = Field(50, ge=0, description="write a resumable checkpoint every this many optimizer steps; 0 = only at the end")
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept on disk")
    resume: bool = Field(True, description="continue from the latest checkpoint in the run folder when there is one")
    log_every: int = Field(1, ge=1, description="log loss, lr and tokens/s to the tracker every this many steps")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per training process")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="under torchrun: ddp (replicated model) or fsdp (sharded, for LLMs that do not fit)")
    find_unused_parameters: bool = Field(False, description="DDP only: allow trainable parameters that get no gradient in a step (e.g. text-only batches)")
    lora: LoraSettings = Field(default_factory=LoraSettings)

    @model_validator(mode="after")
    def _batches_divide(self) -> TrainConfig:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} (global = micro x accumulation steps x processes)"
            )
        return self

    @model_validator(mode="after")
    def _distinct_seeds(self) -> TrainConfig:
        seeds = (self.seed, *self.replicate_seeds)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seed and replicate_seeds must all differ, got {list(seeds)}")
        if self.control and (self.stage != "boost" or self.objective != "sft"):
            raise ValueError("control trains the depth control beside the boost: it needs stage boost and objective sft")
        return self

    @model_validator(mode="after")
    def _objective_only_boosts(self) -> TrainConfig:
        if self.stage != "boost" and self.objective != "sft":
            raise ValueError(f"objective {self.objective!r} applies to the boost stage only; stage is {self.stage!r}")
        return self

    @model_validator(mode="after")
    def _adapter_only_boosts(self) -> TrainConfig:
        if self.stage != "boost" and self.adapter != "dual_channel":
            raise ValueError(f"adapter {self.adapter!r} applies to the boost stage only; stage is {self.stage!r}")
        return self

    @field_validator("adam_betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"AdamW betas must lie in [0, 1), got {list(value)}")
        return value


class PretrainEncoderConfig(_Section):
    """Bootstrap (a): a small Dinov2Model pre-trained with a semantic objective only: multi-label
    "which shape classes and which colours are in the image" (BCE on max-pooled token logits);
    no depth or geometry."""

    image_size: int = Field(64, ge=8, description="input side, pixels (world images are resized to it)")
    patch_size: int = Field(8, ge=1, description="ViT patch side, pixels")
    hidden_size: int = Field(96, ge=8, description="width of the transformer")
    num_layers: int = Field(4, ge=1, description="transformer blocks")
    num_heads: int = Field(4, ge=1, description="attention heads (must divide hidden_size)")
    mlp_ratio: int = Field(4, ge=1, description="MLP width = mlp_ratio x hidden_size")
    epochs: int = Field(12, ge=1, description="passes over the pre-training images")
    batch_size: int = Field(64, ge=1, description="images per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW, cosine)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (matrices only)")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="linear warmup, fraction of steps")
    checkpoint_every: int = Field(20, ge=0, description="a resumable checkpoint every this many optimizer steps; 0 = only at the end")
    min_visible_px: int = Field(30, ge=1, description="an object counts as in the image when at least this many of its pixels are visible (at the world's resolution)")

    @model_validator(mode="after")
    def _geometry(self) -> PretrainEncoderConfig:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        return self


class PretrainLLMConfig(_Section):
    """Bootstrap (b): a small LlamaForCausalLM and its byte-level BPE tokenizer (trained here)."""

    hidden_size: int = Field(128, ge=8, description="width of the transformer")
    num_layers: int = Field(2, ge=1, description="decoder blocks")
    num_heads: int = Field(4, ge=1, description="attention heads (must divide hidden_size)")
    intermediate_size: int = Field(384, ge=8, description="SwiGLU MLP width")
    vocab_size: int = Field(1024, ge=260, description="BPE vocabulary size (256 bytes + 4 special tokens at least)")
    max_position_embeddings: int = Field(1024, ge=64, description="longest sequence, tokens (text + image patches)")

    @model_validator(mode="after")
    def _heads(self) -> PretrainLLMConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        return self


class PhaseSchedule(_Section):
    """How long and how fast one training phase runs through the one loop (a bootstrap phase, or
    one of LLaVA-1.5's stages for a new encoder)."""

    epochs: int = Field(1, ge=1, description="passes over the phase's conversations")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; None = from epochs")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW, cosine)")
    global_batch_size: int = Field(32, ge=1, description="conversations per optimizer step")
    micro_batch_size: int = Field(16, ge=1, description="conversations per forward pass per process")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="linear warmup, fraction of steps")

    @model_validator(mode="after")
    def _batches_divide(self) -> PhaseSchedule:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}"
            )
        return self


class BootstrapPhase(PhaseSchedule):
    """One bootstrap phase (language, align or instruct) through the one training loop: its schedule
    and the loop settings below; every other loop setting is the loop's schema default (TrainConfig),
    never the boost stage's `train` values, so that a boost setting never changes the bootstrap."""

    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (matrices only)")
    # 768: the 10-turn spatial text of the language and instruct phases fits (the small LLM has 1024 positions)
    max_length: int = Field(768, ge=8, description="text tokens per conversation before the image tokens are expanded; longer ones are truncated")
    checkpoint_every: int = Field(20, ge=0, description="a resumable checkpoint every this many optimizer steps; 0 = only at the end")


class BootstrapConfig(_Section):
    """The demo's `bootstrap` stage: pre-train a small encoder and a small LLM from scratch, then
    run LLaVA-1.5's align and instruct phases on non-spatial data, so that the boost stage has
    a pre-trained LVLM to start from. The paper profile loads released weights instead."""

    enabled: bool = Field(True, description="False: the LVLM comes from released weights (paper profile)")
    output: str = Field("models/bootstrap", description="folder of encoder/, tokenizer/, llm/, vlm/ and metrics.json")
    release: str | None = Field(
        None,
        description="a released bootstrap folder (train/release.py, made by `spatialboost bootstrap release`): the stage "
        "verifies it against this recipe and installs it instead of training; null = train here",
    )
    seed: int = Field(0, ge=0, description="seed of model initialisation, question sampling and the extra scenes")
    extra_scenes: int = Field(768, ge=0, description="scenes rendered in memory (own seed) and added to the world train split for pre-training")
    eval_scenes: int = Field(64, ge=0, description="world test images used for the held-out metrics (0 = none)")
    questions_per_image: int = Field(3, ge=1, le=6, description="non-spatial QA turns per instruct conversation")
    point_questions: int = Field(
        2, ge=0, le=8, description="referring-point turns per instruct conversation ('What is at the point (x, y)?'): the frozen LLM's pixel lookup"
    )
    language_conversations: int = Field(
        256, ge=0, description="text-only instruct conversations that state a spatial fact and ask it back (answer language, no visual facts)"
    )
    language_image_text: bool = Field(
        True, description="the language phase also reads the align/instruct conversations' text without their images (answers it cannot know: costly guessing)"
    )
    spatial_text_scenes: int = Field(
        256,
        ge=0,
        description="scenes (rendered in memory, own seed) whose spatial conversations the LLM reads as text, image left out, in the language and instruct phases: the answer language the boost stage's frozen LLM needs",
    )
    mark_conversations: int = Field(
        0, ge=0, le=8,
        description="marks only: single-turn conversations per image about one marked point (what / colour / where): "
        "the LLM learns to find a mark among the image tokens, which the boost's pixel-level turns need",
    )
    spatial_images: bool = Field(
        False,
        description="the instruct phase reads the spatial_text_scenes conversations with their images (the LLM and "
        "projector learn to answer spatial questions from the frozen encoder's tokens, as LLaVA does on its mix's "
        "spatial QA); false = as text only. The encoder never trains on them",
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads while bootstrapping; None = torch's default (1 is fastest for these small models on a busy machine)"
    )
    encoder: PretrainEncoderConfig = Field(default_factory=PretrainEncoderConfig)
    llm: PretrainLLMConfig = Field(default_factory=PretrainLLMConfig)
    language: BootstrapPhase = Field(
        default_factory=lambda: BootstrapPhase(epochs=2, lr=1e-3, global_batch_size=32, micro_batch_size=32),
        description="the LLM alone on the text of every conversation (no image): language and copying first",
    )
    align: BootstrapPhase = Field(default_factory=lambda: BootstrapPhase(epochs=1, lr=1e-3), description="LLaVA-1.5 phase 1: projector only, captions")
    instruct: BootstrapPhase = Field(default_factory=lambda: BootstrapPhase(epochs=3, lr=1e-3), description="LLaVA-1.5 phase 2: projector + LLM, non-spatial QA")


class ProbeBenchmarkConfig(_Section):
    """One linear-probe benchmark in its released layout (evaluate/benchmarks.py documents each)."""

    path: str = Field(description="the benchmark's root folder in its released layout")
    max_train_images: int | None = Field(None, ge=2, description="smoke runs: probe heads train on a seeded subset of this many images (None = the protocol's whole train split); recorded in the metrics")
    max_test_images: int | None = Field(None, ge=1, description="smoke runs: score a seeded subset of this many test images (None = the whole test split); recorded in the metrics")


class VQABenchmarkConfig(_Section):
    """One spatial VQA benchmark in its released layout."""

    path: str = Field(description="BLINK: the BLINK-Benchmark/BLINK snapshot, its Relative_Depth folder or a parquet file; SpatialRGPT: SpatialRGPT-Bench_v1.json or its folder; VQAv2: the folder of v2_OpenEnded_mscoco_val2014_questions.json + v2_mscoco_val2014_annotations.json; GQA: the folder of testdev_balanced_questions.json; MMBench: its TSV (or the folder holding it); MME: MME_Benchmark_release_version")
    image_root: str | None = Field(None, description="SpatialRGPT: the folder image_info.file_path is relative to (omni3d/datasets; None = the JSON file's folder); VQAv2: COCO val2014 images (None = path/val2014); GQA: its images (None = path/images)")
    max_items: int | None = Field(None, ge=1, description="smoke runs: ask only a seeded subset of this many questions (MMBench: circular questions, every copy kept; MME: images, both questions kept; None = all); recorded in the metrics")


class BenchmarksConfig(_Section):
    """The paper's benchmarks (Tables 1 and 3), each under a named published protocol
    (evaluate/protocols.py). null = not run. When any is set, evaluate runs these instead of the
    world probes and demo benches, and needs no world scenes."""

    nyu: ProbeBenchmarkConfig | None = Field(None, description="NYU Depth v2, BTS layout (sync/, official_splits/test/, nyudepthv2_*_files_with_gt.txt): Eigen split, Eigen crop, 10 m")
    kitti: ProbeBenchmarkConfig | None = Field(None, description="KITTI raw + data_depth_annotated/ + eigen_*_files_with_gt.txt (BTS layout): Eigen split, Garg crop, 80 m")
    ade20k: ProbeBenchmarkConfig | None = Field(None, description="ADEChallengeData2016 (or its parent): 150 classes, mIoU")
    voc: ProbeBenchmarkConfig | None = Field(None, description="VOCdevkit/VOC2012 (or VOC2012): 21 classes, mIoU on val")
    imagenet: ProbeBenchmarkConfig | None = Field(None, description="ImageNet-1K as class folders train/<wnid>/, val/<wnid>/: top-1")
    cifar100: ProbeBenchmarkConfig | None = Field(None, description="cifar-100-python (the Python pickles) or its parent: top-1")
    blink: VQABenchmarkConfig | None = Field(None, description="BLINK Relative_Depth, val split (HF parquet layout): accuracy")
    spatialrgpt: VQABenchmarkConfig | None = Field(None, description="SpatialRGPT-Bench_v1.json + its images: qualitative / quantitative accuracy")
    vqav2: VQABenchmarkConfig | None = Field(None, description="VQAv2 val2014 questions + annotations + COCO images: the official accuracy (the paper: test-dev on EvalAI)")
    gqa: VQABenchmarkConfig | None = Field(None, description="GQA testdev_balanced_questions.json + images: exact match")
    mmbench: VQABenchmarkConfig | None = Field(None, description="MMBench TSV with answers (dev): CircularEval accuracy, rules only")
    mme: VQABenchmarkConfig | None = Field(None, description="MME_Benchmark_release_version: perception / cognition scores (acc + acc+)")
    subset_seed: int = Field(0, ge=0, description="seed of the max_* subsets (the same subset for baseline and boosted)")
    feature_batch_size: int = Field(32, ge=1, description="images (or sliding windows) per encoder forward while extracting features")
    shard_images: int = Field(512, ge=1, description="images per feature-cache file: an interrupted extraction resumes at the first missing shard")

    def configured(self) -> dict[str, ProbeBenchmarkConfig | VQABenchmarkConfig]:
        """{name: config} of the benchmarks that are set, in the order above."""
        names = ("nyu", "kitti", "ade20k", "voc", "imagenet", "cifar100", "blink", "spatialrgpt", "vqav2", "gqa", "mmbench", "mme")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @model_validator(mode="after")
    def _image_root_only_where_images_are_apart(self) -> BenchmarksConfig:
        why = {"blink": "BLINK embeds its images", "mmbench": "MMBench embeds its images", "mme": "MME keeps its images in its own folders"}
        for name, reason in why.items():
            spec = getattr(self, name)
            if spec is not None and spec.image_root is not None:
                raise ValueError(f"{name}.image_root: {reason}; image_root applies to spatialrgpt, vqav2 and gqa only")
        return self


class EvaluateConfig(_Section):
    """Baseline vs boosted: frozen-feature linear probes on the world, spatial VQA on the demo
    benchmarks (BLINK Relative_Depth and SpatialRGPT-bench formats), a report. With
    `benchmarks` set: the paper's benchmarks under published protocols instead."""

    output: str = Field("reports/evaluate", description="report folder: report.md, metrics.png, depth_examples.png, vqa records")
    cache_dir: str = Field("data/features", description="frozen-feature cache, keyed by encoder fingerprint and split")
    bench_dir: str = Field("data/bench", description="the demo benchmarks written from held-out world scenes")
    split: str = Field("test", description="world split probes are scored on and benchmarks are made from (probes train on `train`)")
    tasks: tuple[Literal["depth", "seg", "cls"], ...] = Field(("depth", "seg", "cls"), description="linear probes to run")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="probe seeds; metrics are mean ± std over them")
    learning_rates: tuple[float, ...] = Field(
        (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), min_length=1, description="the probe head grid's learning rates (best on validation wins)"
    )
    epochs: int = Field(20, ge=1, description="passes of every probe head over the training features")
    probe_solver: Literal["sgd", "ridge"] = Field(
        "sgd", description="sgd: the learning-rate grid, one run per seed; ridge: closed-form heads, exact and seed-free"
    )
    near_depth_m: float | None = Field(15.0, gt=0, description="depth is also scored on pixels closer than this, metres (null = not)")
    world_label: Literal["shape", "colour"] = Field(
        "shape", description="world images' classification label: the shape or the colour of the largest visible object"
    )
    probe_threads: int | None = Field(1, ge=1, description="torch CPU threads while probe heads train; None = torch's default")
    max_vqa_items: int | None = Field(None, ge=1, description="cap per benchmark on the VQA items asked (None = all)")
    max_new_tokens: int = Field(32, ge=1, description="greedy tokens generated per VQA answer")
    vqa_batch_size: int = Field(8, ge=1, description="questions per batched greedy generation (left-padded; answers equal one-at-a-time ones)")
    n_depth_examples: int = Field(4, ge=0, description="test images in the depth-probe figure (0 = no figure)")
    benchmarks: BenchmarksConfig = Field(default_factory=BenchmarksConfig)

    @field_validator("learning_rates")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(lr <= 0 for lr in value):
            raise ValueError(f"learning rates must be positive, got {list(value)}")
        return value




METAWORLD_TASKS = ("assembly-v3", "bin-picking-v3", "button-press-topdown-v3", "drawer-open-v3", "hammer-v3")
"""CortexBench's five MetaWorld tasks, as metaworld v3 names them."""


class ReleasedDemosConfig(_Section):
    """CortexBench's released demonstrations of a domain that cannot be rolled out here (no simulator)."""

    root: str = Field(..., description="folder holding <suite>-expert-v1.0/ (Adroit, DMControl) or trifinger-demos/ (TriFinger)")
    tasks: tuple[str, ...] = Field(..., min_length=1, description="environment names, e.g. pen-v0, dmc_walker_walk-v1, reach_cube")
    stats_json: str | None = Field(None, description="TriFinger only: the demo-stats JSON that lists train/test demos")
    num_demos: int = Field(100, ge=2, description="demonstrations read per task (CortexBench: 100 for Adroit and DMControl)")


class RobotConfig(_Section):
    """Robot learning on frozen features (CortexBench behaviour cloning, evaluate/robot/): MetaWorld
    rolled out here, CortexBench's released Adroit / DMControl / TriFinger demonstrations read when
    configured (offline action error only: their simulators are not installed). Defaults: the
    protocol of CortexBench's Metaworld_BC_config.yaml; the demo profile reduces it."""

    output: str = Field("reports/robot", description="report folder: report.md, success.png, results.json")
    demo_dir: str = Field("data/robot", description="cache of generated MetaWorld demonstrations (one .npz per task and setting)")
    tasks: tuple[str, ...] = Field(METAWORLD_TASKS, min_length=1, description="MetaWorld v3 tasks rolled out")
    demos: int = Field(25, ge=1, description="expert demonstrations per task (CortexBench: 25)")
    demo_seed: int = Field(0, ge=0, description="seed of the demonstrations' object placements")
    horizon: int = Field(500, ge=1, le=500, description="steps per demonstration and evaluation episode (MetaWorld's limit: 500)")
    image_size: int = Field(256, ge=8, description="rendered frame size, pixels (CortexBench: 256; the encoder's preprocessing resizes)")
    camera: str = Field("corner", description="MetaWorld camera (v3 has no CortexBench top_cap2; corner is the front-corner view)")
    gl: Literal["egl", "osmesa"] = Field("egl", description="offscreen OpenGL for MuJoCo: egl (Mesa llvmpipe on CPU, or a GPU) or osmesa")
    history: int = Field(3, ge=1, description="embeddings fused per step (FLARE)")
    hidden_sizes: tuple[int, ...] = Field((256, 256, 256), min_length=1, description="policy MLP widths")
    epochs: int = Field(100, ge=1, description="behaviour-cloning epochs")
    batch_size: int = Field(256, ge=2, description="behaviour-cloning minibatch")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    eval_every: int = Field(5, ge=1, description="epochs between evaluations (the score is the best evaluation)")
    eval_episodes: int = Field(25, ge=1, description="episodes per evaluation")
    seeds: tuple[int, ...] = Field((100, 200, 300), min_length=1, description="behaviour-cloning seeds (policy init, minibatches, evaluation placements)")
    floor: bool = Field(True, description="also train the blind policy (proprioception only): what the task gives without vision")
    threads: int | None = Field(1, ge=1, description="torch CPU threads (1: the same numbers on every machine)")
    released: dict[Literal["adroit", "dmc", "trifinger"], ReleasedDemosConfig] = Field(
        default_factory=dict, description="CortexBench's released demonstrations per domain (absent = not read)"
    )

    @model_validator(mode="after")
    def _known_tasks(self) -> RobotConfig:
        unknown = [t for t in self.tasks if not re.fullmatch(r"[a-z0-9-]+-v3", t)]
        if unknown:
            raise ValueError(f"tasks {unknown}: MetaWorld v3 task names look like drawer-open-v3")
        if "trifinger" in self.released and self.released["trifinger"].stats_json is None:
            raise ValueError("released.trifinger needs stats_json (the demo-stats JSON listing train/test demos)")
        return self


# --- the LVLM the boost starts from (paper profile): LLaVA-1.5, or a new encoder + its two stages ---

ENCODER_FAMILY_NAMES = ("open_clip", "dinov2", "clip", "siglip", "dinov3")
"""The encoder adapters of models/encoders.py (ENCODER_FAMILIES), by family name."""


class EncoderChoice(_Section):
    """One encoder the paper profile can boost: where its checkpoint is, which adapter reads it, the
    layer LLaVA-1.5's projector reads (models/lvlm.py says why per family) and its registry name."""

    family: Literal["open_clip", "dinov2", "clip", "siglip", "dinov3"] = Field(
        description="the adapter (models/encoders.py); SigLIP 2's fixed-resolution checkpoints are siglip"
    )
    path: str = Field(
        description="its checkpoint folder: transformers (config.json, model.safetensors, preprocessor_config.json) "
        "or open_clip (open_clip_config.json + weights); for a released LLaVA, the LLaVA folder"
    )
    hub_role: str | None = Field(
        None, description="the hub role (hub.models, or hub.encoders: fetched only when this encoder is chosen) that fetches `path`"
    )
    name: str = Field(min_length=1, description="its real name: registered as tracking.registry_prefix + name")
    feature_layer: int = Field(-2, description="hidden state the projector reads (0 = embeddings, -1 = last block); LLaVA-1.5: -2")
    apply_final_norm: bool = Field(False, description="apply the encoder's own final LayerNorm to that layer")
    released: bool = Field(
        False, description="True: a released LLaVA-1.5 whose weights already passed align and instruct (both stages are skipped)"
    )


def _default_encoders() -> dict[str, EncoderChoice]:
    def choice(family: str, role: str, name: str, folder: str = "models/encoders", **extra: Any) -> EncoderChoice:
        return EncoderChoice(family=family, path=f"{folder}/{role}", hub_role=role, name=name, **extra)

    return {
        "llava": choice("clip", "lvlm", "clip-vit-l-14-336-llava-1.5", "models/hub", released=True),
        "openclip": choice("open_clip", "labeler", "openclip-vit-l-14", "models/hub"),  # the labeler's own ViT-L/14
        "dinov2": choice("dinov2", "dinov2", "dinov2-vit-l-14"),
        "siglip": choice("siglip", "siglip", "siglip-so400m-14-384"),
        "dinov3": choice("dinov3", "dinov3", "dinov3-vit-l-16"),
        "siglip2": choice("siglip", "siglip2", "siglip2-so400m-14-384"),
    }


class LVLMPhase(PhaseSchedule):
    """One of LLaVA-1.5's two stages for a new encoder (train/lvlm_stage.py), through the one training
    loop. Defaults: LLaVA-1.5's scripts/v1_5/pretrain.sh and finetune.sh (haotian-liu/LLaVA);
    epochs, max_steps and warmup_ratio as in any phase schedule; the loop settings not listed here are
    train-section defaults (clipping 1.0, AdamW betas/eps). lr and the batch sizes have no default:
    a profile says them (LLaVA's differ by a factor of 50 between the stages)."""

    data: str = Field(description="annotation file: blip_laion_cc_sbu_558k.json (align) or llava_v1_5_mix665k.json (instruct)")
    image_root: str = Field(description="folder the records' `image` paths are relative to")
    output: str = Field(description="the stage's folder (a DVC output, persisted: its checkpoints resume a killed run)")
    template: Literal["plain", "vicuna_v1"] = Field(
        description="plain: <image> + caption (LLaVA's --version plain, pretraining); vicuna_v1: the chat format (--version v1)"
    )
    image_aspect_ratio: Literal["square", "pad"] = Field(
        description="square: the encoder's own preprocessing; pad: first pad to a square with the encoder's mean colour "
        "(LLaVA's --image_aspect_ratio pad, which the 665K mix's normalized region boxes refer to)"
    )
    max_records: int | None = Field(None, ge=1, description="smoke runs: a seeded subset of this many records (None = all)")
    lr: float = Field(gt=0, description="peak learning rate (AdamW, warmup + cosine)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    global_batch_size: int = Field(ge=1, description="records per optimizer step, summed over processes")
    micro_batch_size: int = Field(ge=1, description="records per forward pass per process")
    max_length: int = Field(2048, ge=8, description="text tokens per record before the image tokens are expanded (model_max_length)")
    group_by_length: bool = Field(False, description="batch records of similar length (LLaVA: group_by_modality_length in finetuning)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward (LLaVA-1.5: on)")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="under torchrun: ddp, or fsdp when the trained LLM does not fit one GPU")
    checkpoint_every: int = Field(200, ge=0, description="a resumable checkpoint every this many steps; 0 = only at the end")
    num_workers: int = Field(4, ge=0, description="DataLoader worker processes per training process")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads while training; None = torch's default")


def _default_align() -> LVLMPhase:
    # pretrain.sh: 8 GPUs x 32 per device x 1 accumulation = 256, lr 1e-3, 1 epoch, wd 0, warmup 0.03, 2048
    return LVLMPhase(
        data="data/llava/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json",
        image_root="data/llava/LLaVA-Pretrain/images",
        output="models/lvlm/align",
        template="plain",
        image_aspect_ratio="square",
        lr=1e-3,
        global_batch_size=256,
        micro_batch_size=32,
    )


def _default_instruct() -> LVLMPhase:
    # finetune.sh: 8 GPUs x 16 x 1 = 128, lr 2e-5, 1 epoch, pad, group_by_modality_length, ZeRO-3 (here: FSDP)
    return LVLMPhase(
        data="data/llava/llava_v1_5_mix665k.json",
        image_root="data/llava/images",
        output="models/lvlm/instruct",
        template="vicuna_v1",
        image_aspect_ratio="pad",
        lr=2e-5,
        global_batch_size=128,
        micro_batch_size=16,
        group_by_length=True,
        strategy="fsdp",
    )


class LVLMConfig(_Section):
    """The LVLM the boost stage starts from. `encoder` picks it: a released LLaVA-1.5 (llava: its
    own CLIP, nothing to train), or a new encoder + a fresh 2-layer GELU projector + LLaVA-1.5's
    language model, through LLaVA-1.5's align and instruct stages (the DVC stages `align` and
    `instruct`, whose output train.init then is). None: no LVLM is built here (the demo's comes
    from its bootstrap stage)."""

    encoder: str | None = Field(None, description="a key of `encoders` (llava, openclip, dinov2, siglip, dinov3, siglip2), or null")
    encoders: dict[str, EncoderChoice] = Field(default_factory=_default_encoders, description="name -> encoder")
    language_model: str = Field(
        "models/hub/lvlm", description="the LLM + tokenizer: a LLaVA checkpoint folder (its Vicuna) or a causal-LM folder (e.g. Vicuna-7B-v1.5)"
    )
    seed: int = Field(0, ge=0, description="seed of the fresh projector and of both stages' data order")
    align: LVLMPhase = Field(default_factory=_default_align, description="LLaVA-1.5 stage 1: projector only, LCS-558K captions")
    instruct: LVLMPhase = Field(default_factory=_default_instruct, description="LLaVA-1.5 stage 2: projector + LLM, the 665K mix")

    @model_validator(mode="after")
    def _known_encoder(self) -> LVLMConfig:
        if self.encoder is not None and self.encoder not in self.encoders:
            raise ValueError(f"encoder {self.encoder!r} is not one of encoders: {', '.join(sorted(self.encoders))}")
        return self

    def chosen(self) -> EncoderChoice | None:
        """The chosen encoder, or None."""
        return None if self.encoder is None else self.encoders[self.encoder]

    def trains(self) -> bool:
        """Whether align and instruct run (a new encoder); False for a released LLaVA or none."""
        choice = self.chosen()
        return choice is not None and not choice.released


class RegisterConfig(_Section):
    """Section `registry`, used by the `register` stage: one MLflow run of the pipeline, the boosted encoder as a new version."""

    encoder_name: str | None = Field(
        "dinov2-demo",
        min_length=1,
        description="registered model = tracking.registry_prefix + this; null = the chosen encoder's name (lvlm.encoders)",
    )
    enabled: bool = Field(True, description="False: log the run but register no encoder version")


def _default_ablation_sets() -> dict[str, dict[str, list[Any]]]:
    return {
        "turn_order": {"synthesize.order": ["forward", "reversed", "shuffled", "single_turn"]},
        "adapter": {"train.adapter": ["dual_channel", "full", "lora"]},
        "data_scale": {"train.max_conversations": [64, 128, 256]},
    }


class AblationsConfig(_Section):
    """Ablations as variants of the whole pipeline: each value of a set is one `dvc exp run -S
    key=value` (flows/ablations.py), compared in one table per set. No DVC stage reads this
    section, so editing it reruns nothing."""

    output: str = Field("reports/ablations", description="folder of <set>.md / .json / .png")
    sets: dict[str, dict[str, list[Any]]] = Field(
        default_factory=_default_ablation_sets,
        description="set name -> {one dotted params key: [values]}; every value must validate",
    )
    common: list[str] = Field(
        default_factory=lambda: ["registry.enabled=false"],
        description="overrides added to every variant (variants are logged to MLflow but register no encoder)",
    )

    @field_validator("sets")
    @classmethod
    def _one_key_per_set(cls, sets: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for name, axes in sets.items():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"set {name!r}: names are lower-case letters, digits and _")
            if len(axes) != 1 or not next(iter(axes.values())):
                raise ValueError(f"set {name!r}: give exactly one dotted key with at least one value")
        return sets


class SpatialBoostConfig(_Section):
    """The whole params file."""

    profile: Literal["demo", "paper"] = Field("demo", description="demo: offline CPU world; paper: real models on GPUs")
    seed: int = Field(0, ge=0, description="global seed for everything not seeded by its own section")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device; auto = cuda if available")
    world: WorldConfig = Field(default_factory=WorldConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    hub: HubConfig = Field(default_factory=HubConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    synthesize: SynthesizeConfig = Field(default_factory=SynthesizeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegisterConfig = Field(default_factory=RegisterConfig)
    lvlm: LVLMConfig = Field(default_factory=LVLMConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    ablations: AblationsConfig = Field(default_factory=AblationsConfig)
    robot: RobotConfig = Field(default_factory=RobotConfig)

    @model_validator(mode="after")
    def _profile_consistent(self) -> SpatialBoostConfig:
        if self.profile == "demo" and self.hub.pins():
            raise ValueError("the demo profile is offline: hub.models and hub.encoders must be empty")
        return self

    @model_validator(mode="after")
    def _train_processes_divide(self) -> SpatialBoostConfig:
        n, train = self.orchestration.train_nproc_per_node, self.train
        if train.global_batch_size % (train.micro_batch_size * n):
            raise ValueError(
                f"orchestration.train_nproc_per_node={n}: train.global_batch_size {train.global_batch_size} is not a "
                f"multiple of train.micro_batch_size {train.micro_batch_size} x {n} processes"
            )
        return self

    @model_validator(mode="after")
    def _lvlm_consistent(self) -> SpatialBoostConfig:
        lvlm, choice = self.lvlm, self.lvlm.chosen()
        if self.registry.encoder_name is None and choice is None:
            raise ValueError("registry.encoder_name is null and no lvlm.encoder is chosen: name the registered encoder")
        if choice is None:
            return self
        if lvlm.trains() and self.train.init != lvlm.instruct.output:  # a released LLaVA may also be given directly
            raise ValueError(
                f"lvlm.encoder={lvlm.encoder}: train.init must be the instruct stage's output {lvlm.instruct.output!r} "
                f"(the LVLM built for it, or a pointer to the released one), got {self.train.init!r}"
            )
        if choice.hub_role is not None and choice.hub_role not in self.hub.pins():
            raise ValueError(f"lvlm.encoders.{lvlm.encoder}.hub_role {choice.hub_role!r} is not a role of hub.models or hub.encoders")
        n = self.orchestration.train_nproc_per_node
        for name in ("align", "instruct") if lvlm.trains() else ():
            phase = getattr(lvlm, name)
            if phase.global_batch_size % (phase.micro_batch_size * n):
                raise ValueError(
                    f"orchestration.train_nproc_per_node={n}: lvlm.{name}.global_batch_size {phase.global_batch_size} is not "
                    f"a multiple of lvlm.{name}.micro_batch_size {phase.micro_batch_size} x {n} processes"
                )
        return self

    def registered_encoder_name(self) -> str:
        """The boosted encoder's registry name (after tracking.registry_prefix)."""
        choice = self.lvlm.chosen()
        if self.registry.encoder_name is not None or choice is None:
            return str(self.registry.encoder_name)
        return choice.name

    @model_validator(mode="after")
    def _ablations_validate(self) -> SpatialBoostConfig:
        """Every ablation variant is a valid config: a typo fails now, not an hour into a set."""
        raw = self.model_dump(mode="json", exclude={"ablations"}) | {"ablations": {"sets": {}}}  # a variant has none
        for name, axes in self.ablations.sets.items():
            ((key, values),) = axes.items()
            for value in values:
                overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}",
                             *self.ablations.common]  # fmt: skip
                try:
                    validate_config(apply_overrides(raw, overrides), source=f"ablations.sets.{name}")
                except ConfigError as err:
                    raise ValueError(str(err).replace("\n", "; ")) from None
        return self


def _format_errors(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            msg = f"unknown key (allowed here: {', '.join(allowed)})"
            if e["loc"][-1] in {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}:
                msg = "credentials never go in params: use the environment or an AWS profile"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] not in {"missing"} and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SpatialBoostConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        models = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:  # an optional section (`X | None`)
            annotation = models[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return sorted(model.model_fields)


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases, duplicate keys and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _YamlRefused(event.start_mark, f"alias *{event.anchor}: anchors and aliases are not allowed in params files")
        if getattr(event, "anchor", None):
            raise _YamlRefused(event.start_mark, f"anchor &{event.anchor}: anchors and aliases are not allowed in params files")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlRefused(event.start_mark, f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class says so
                break
            if seen:
                raise _YamlRefused(key_node.start_mark, f"duplicate key {key!r} (first at line {first_line[key]}): "
                                   "YAML would silently keep the last one")  # fmt: skip
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class _YamlRefused(yaml.YAMLError):
    def __init__(self, mark: Any, problem: str) -> None:
        super().__init__(f"line {mark.line + 1}: {problem}")


def parse_params_yaml(text: str, source: str) -> Any:
    """YAML text -> Python data with the limits of `_ParamsLoader`; ConfigError naming `source`."""
    try:
        return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_message(err)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None


def read_params_file(path: str | Path) -> str:
    """The text of a params file: a regular file of at most MAX_PARAMS_BYTES UTF-8 bytes."""
    from spatialboost.io import FileTooLarge, NotARegularFile, read_regular_file  # lazy: io is light, keep it so

    try:
        data = read_regular_file(path, MAX_PARAMS_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except NotARegularFile as err:
        raise ConfigError(f"{path}: a {err.kind}, not a params file") from None
    except FileTooLarge:
        raise ConfigError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes: not a params file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the params file ({err.strerror or err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_message(err: yaml.YAMLError) -> str:
    """PyYAML's error as "line L, column C: problem" (its own text spans several lines)."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem and mark is not None:
        context = getattr(err, "context", None)
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
    return _one_line(str(err))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with `section.key=value` overrides applied (value parsed as YAML,
    with the params file's limits)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or not key or not all(part.strip() for part in parts):
            raise ConfigError(f"override {redact_secrets(item)!r}: expected section.key=value")
        node = out
        *parents, leaf = parts
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {redact_secrets(item)!r}: {part} is not a section")
        node[leaf] = parse_params_yaml(value, f"override {redact_secrets(item)!r}")
    return out


def validate_config(raw: dict[str, Any], source: str = "params") -> SpatialBoostConfig:
    """Validate an already-parsed params mapping; raises ConfigError naming every bad key."""
    try:
        return SpatialBoostConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(redact_secrets(_format_errors(err, source, raw))) from None


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> SpatialBoostConfig:
    """Read (with limits), override and validate a params file."""
    path = Path(path)
    raw = parse_params_yaml(read_params_file(path), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {_type_name(raw)}")
    bad_keys = [key for key in raw if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(f"{path}: section names are strings, got {bad_keys[0]!r}")
    return validate_config(apply_overrides(raw, overrides or []), source=str(path))
