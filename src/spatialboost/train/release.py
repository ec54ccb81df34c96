"""A released bootstrap: the demo's pre-trained LVLM as files in the repository, like LLaVA's.

The paper boosts LLaVA-1.5-7B from its released weights; nobody retrains LLaVA before every
boost. The demo does the same with its own small LVLM: `spatialboost bootstrap release` runs the
bootstrap recipe once (train/bootstrap.py) and writes a release folder that is committed to git;
the `bootstrap` stage of a fresh clone then installs it in seconds instead of training for ten
minutes. The release records the exact recipe it was made with, so a changed recipe is caught
instead of silently using stale weights:

    release = write_release(cfg, "models/bootstrap", "releases/demo-bootstrap")   # after run_bootstrap
    install_release(cfg, "releases/demo-bootstrap", "models/bootstrap")          # the stage, in a clone

Release folder: vlm/ (SpatialVLM + tokenizer: what the boost starts from), encoder/ (the
transformers encoder), tokenizer/, metrics.json (the bootstrap's held-out scores and wall
times), recipe.json (the settings it depends on), MANIFEST.json (sha256 of every file) and a
model card README.md. Only safetensors and JSON: nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spatialboost.config import SpatialBoostConfig
from spatialboost.io import sha256_file, write_bytes_atomic, write_json_atomic

RELEASE_PARTS = ("vlm", "encoder", "tokenizer", "metrics.json")
MANIFEST = "MANIFEST.json"
RECIPE = "recipe.json"
RELEASE_SCHEMA_VERSION = 1


class ReleaseMismatch(ValueError):
    """The released bootstrap was made by another recipe than the one configured."""


NOT_RECIPE = {"output": True, "release": True, "enabled": True, "num_threads": True,
              **{phase: {"checkpoint_every"} for phase in ("encoder", "language", "align", "instruct")}}  # fmt: skip
"""Bootstrap settings that change no weight: where it goes, how it is run, how often it checkpoints."""


def recipe(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Everything the bootstrap's weights depend on: its own section, the world it reads (the
    train split's images and the in-memory scenes' generator), what the extraction of its
    spatial-text scenes reads (geometry, min_objects, the focal-length bounds) and the synthesis
    settings of their conversations, and the seed. Not synthesize.order: the spatial text is always
    in forward order, so the boost's turn-order ablation keeps the release."""
    return {
        "bootstrap": cfg.bootstrap.model_dump(mode="json", exclude=NOT_RECIPE),
        "world": cfg.world.model_dump(mode="json", exclude={"root", "n_test", "shard_size"}),
        "extract": {
            "geometry": cfg.extract.geometry.model_dump(mode="json"),
            "min_objects": cfg.extract.min_objects,
            "depth": {"min_focal_px": cfg.extract.depth.min_focal_px, "max_focal_px": cfg.extract.depth.max_focal_px},
        },
        "synthesize": cfg.synthesize.model_dump(mode="json", exclude={"output", "shard_size", "n_renderings", "order"}),
        "seed": cfg.seed,
    }


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _replace_tree(dst: Path, fill: Callable[[Path], None]) -> None:
    """Build dst's new contents in a sibling staging folder with `fill`, then swap it in: an
    interrupted write leaves the old folder (or none), never a half-written one."""
    staging = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    fill(staging)
    shutil.rmtree(dst, ignore_errors=True)
    staging.rename(dst)


def write_release(cfg: SpatialBoostConfig, bootstrap_dir: str | Path, release_dir: str | Path) -> Path:
    """Copy a finished bootstrap's parts into release_dir (replacing it) with recipe, manifest and card."""
    src, dst = Path(bootstrap_dir), Path(release_dir)
    missing = [part for part in RELEASE_PARTS if not (src / part).exists()]
    if missing:
        raise FileNotFoundError(f"{src} is not a finished bootstrap: no {', '.join(missing)} (run the bootstrap first)")
    metrics = json.loads((src / "metrics.json").read_text())

    def fill(staging: Path) -> None:
        staging.mkdir(parents=True)
        for part in RELEASE_PARTS:
            (shutil.copytree if (src / part).is_dir() else shutil.copy2)(src / part, staging / part)
        write_json_atomic(staging / RECIPE, {"schema_version": RELEASE_SCHEMA_VERSION, **recipe(cfg)})
        write_bytes_atomic(staging / "README.md", model_card(cfg, metrics).encode())
        write_json_atomic(staging / MANIFEST, {p.relative_to(staging).as_posix(): sha256_file(p) for p in _files(staging)})

    _replace_tree(dst, fill)
    return dst


def verify_release(cfg: SpatialBoostConfig, release_dir: str | Path) -> dict[str, str]:
    """The release's manifest, after checking every file's sha256 and that its recipe is the
    configured one; ReleaseMismatch (naming the differing settings) or ValueError otherwise."""
    folder = Path(release_dir)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"bootstrap.release: {folder} has no {MANIFEST} (not a release folder)")
    manifest = json.loads((folder / MANIFEST).read_text())
    listed, present = set(manifest), {p.relative_to(folder).as_posix() for p in _files(folder)}
    if listed != present:
        raise ValueError(f"{folder}: files differ from its manifest (missing {sorted(listed - present)[:3]}, "
                         f"extra {sorted(present - listed)[:3]})")  # fmt: skip
    bad = [name for name, digest in manifest.items() if sha256_file(folder / name) != digest]
    if bad:
        raise ValueError(f"{folder}: {len(bad)} files do not match their sha256 in {MANIFEST}, e.g. {bad[0]}")
    made = json.loads((folder / RECIPE).read_text())
    made.pop("schema_version", None)
    differ = _differences(made, recipe(cfg))
    if differ:
        raise ReleaseMismatch(
            f"bootstrap.release {folder} was made with other settings ({', '.join(differ[:6])}"
            f"{', ...' if len(differ) > 6 else ''}): remake it with `spatialboost bootstrap release`, or set "
            "bootstrap.release: null to train the bootstrap here"
        )
    return manifest


def install_release(cfg: SpatialBoostConfig, release_dir: str | Path, output: str | Path) -> dict[str, Any]:
    """Verify the release and copy it to `output` (the bootstrap stage's output); returns the
    bootstrap metrics it was released with, marked as installed."""
    verify_release(cfg, release_dir)
    src, dst = Path(release_dir), Path(output)
    _replace_tree(dst, lambda staging: shutil.copytree(src, staging))
    metrics = json.loads((dst / "metrics.json").read_text())
    return {"installed_from": str(src), **metrics}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b)) for d in _differences(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def model_card(cfg: SpatialBoostConfig, metrics: dict[str, Any]) -> str:
    """README.md of a release: what it is, the recipe, the data, the held-out scores."""
    b = cfg.bootstrap
    test = metrics.get("instruct", {}).get("test", {})
    encoder_test = metrics.get("encoder", {}).get("test", {})
    walls = metrics.get("wall_s_by_phase", {})
    lines = [
        "# SpatialBoost demo bootstrap (released)",
        "",
        "The demo's pre-trained LVLM, the small twin of LLaVA-1.5-7B that the paper boosts: a DINOv2-class",
        f"encoder ({b.encoder.num_layers} layers, width {b.encoder.hidden_size}, {b.encoder.image_size} px input,",
        f"patch {b.encoder.patch_size}), LLaVA-1.5's 2-layer GELU projector and a Llama ({b.llm.num_layers} layers,",
        f"width {b.llm.hidden_size}) with its own byte-level BPE tokenizer (one token per digit).",
        "",
        "## Recipe (train/bootstrap.py; `spatialboost bootstrap release` remakes it)",
        "",
        "1. encoder: multi-label \"which shapes and colours are in the image\" on procedural world scenes (no depth);",
        "2. language: the LLM alone on text: captions, non-spatial QA, text-only spatial facts asked back, and",
        "   spatial conversations of its own scenes as text (answer language only; images left out);",
        "3. align: projector only, captions; 4. instruct: projector + LLM on non-spatial QA and referring",
        f"   points ({'drawn marks' if cfg.synthesize.point_refs == 'marks' else 'pixel coordinates'}: what is there,",
        "   its colour, where it is, two marks compared in the image plane). No depth, distance or size ever",
        "   reaches these models: that is what the boost stage has to put into the encoder.",
        "",
        "Data: the world's train split plus scenes rendered in memory with their own seeds (never the test",
        "split). Exact settings: recipe.json.",
        "",
        "## Held-out scores (world test split)",
        "",
        f"- encoder multi-label F1: {encoder_test.get('f1', float('nan')):.3f} "
        f"(shapes {encoder_test.get('shape_f1', float('nan')):.3f}, colours {encoder_test.get('colour_f1', float('nan')):.3f})",
        f"- instruct exact match: {test.get('exact_match', float('nan')):.3f} over {test.get('n', 0)} questions; by kind: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(test.get("by_kind", {}).items())),
        f"- wall time: {metrics.get('wall_s', float('nan')):.0f} s in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) + ")",
        "",
    ]
    return "\n".join(lines)
