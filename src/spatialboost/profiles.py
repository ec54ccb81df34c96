"""Profiles: the sources of params.yaml, and the one command that makes one active.

`configs/<name>.yaml` (demo, paper) are hand-written, commented profiles that may leave any value
to its schema default. `params.yaml` is the ACTIVE profile: what every stage, `dvc repro` and
`dvc exp run -S key=value` read. DVC interpolates dvc.yaml's `${...}` from the YAML file itself,
not from pydantic's defaults, and `-S` overrides only keys the file has, so `use_profile` writes
params.yaml fully resolved: the profile's own keys and comments first, then in every section the
defaults it leaves out, after a `# defaults` marker. The committed params.yaml is exactly
`use_profile("demo")` (a test checks it).

    text = render_profile(profile_source("paper"))   # params.yaml text; raises ConfigError if invalid
    use_profile("paper")                              # writes params.yaml atomically
    profile_status("params.yaml")                     # which profile, and what was changed since
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

from spatialboost.config import (
    ConfigError,
    SpatialBoostConfig,
    load_config,
    parse_params_yaml,
    read_params_file,
    validate_config,
)
from spatialboost.io import open_text_atomic

PROFILE_DIR = "configs"
DEFAULTS_MARKER = "defaults (src/spatialboost/config.py):"
HEADER = """\
# params.yaml is the ACTIVE profile, written by `spatialboost profile use {name}` from {source}:
# its values and comments, then in each section the schema defaults it leaves out. Every stage,
# `dvc repro` and `dvc exp run -S section.key=value` read this file. Change the profile in
# {source} and run `spatialboost profile use {name}` again; `spatialboost profile show` says
# whether this file still matches it.
"""


def available_profiles(root: str | Path = ".") -> dict[str, Path]:
    """name -> source of every shipped profile (configs/*.yaml with a top-level `profile` key)."""
    found = {}
    for path in sorted((Path(root) / PROFILE_DIR).glob("*.yaml")):
        try:
            raw = parse_params_yaml(read_params_file(path), str(path))
        except ConfigError:
            continue  # not readable as params: not a profile (`profile use` on it says why)
        if isinstance(raw, dict) and "profile" in raw:
            found[path.stem] = path
    return found


def profile_source(name_or_path: str | Path, root: str | Path = ".") -> Path:
    """The source file of a profile given by name (configs/<name>.yaml) or by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.is_file():
        return path
    shipped = available_profiles(root)
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise ConfigError(f"no profile {str(name_or_path)!r}: shipped profiles are {', '.join(shipped) or 'none'} (or give a YAML path)")


def render_profile(source: str | Path, name: str | None = None, root: str | Path = ".") -> str:
    """The params.yaml text of profile `source`: validated, every schema key present, comments kept.

    name: how the header names the profile (default: the file's stem, as `profile use` takes it);
    root: the repository root the header's path to the source is relative to.
    """
    source = Path(source)
    try:
        shown = source.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        shown = source.as_posix()
    cfg = load_config(source)  # ConfigError names any bad key
    resolved = cfg.model_dump(mode="json")
    document = _round_trip().load(read_params_file(source))
    _fill_defaults(document, resolved, indent=0)
    body = io.StringIO()
    _round_trip().dump(document, body)
    text = HEADER.format(name=name or source.stem, source=shown) + body.getvalue()
    if validate_config(yaml.safe_load(text), source=f"rendered {source}") != cfg:  # the fill must not change a value
        raise AssertionError(f"rendering {source} changed its values")
    return text


def use_profile(name_or_path: str | Path, params: str | Path = "params.yaml", root: str | Path = ".") -> Path:
    """Write `params` (atomically) as the fully resolved profile; returns the profile's source."""
    source = profile_source(name_or_path, root)
    name = source.stem if source.parent.resolve() == (Path(root) / PROFILE_DIR).resolve() else str(source)
    text = render_profile(source, name=name, root=root)
    with open_text_atomic(params) as f:
        f.write(text)
    return source


def set_profile_values(source: str | Path, values: dict[str, Any]) -> None:
    """Set dotted keys in a profile source file in place (atomically), its comments kept, and
    check the result still validates (e.g. `hub lock` writing `hub.models.depth.revision`)."""
    source = Path(source)
    document = _round_trip().load(read_params_file(source))
    for dotted, value in values.items():
        node = document
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {dotted}: no section {part!r} to set it in")
            node = node[part]
        node[leaf] = value
    out = io.StringIO()
    _round_trip().dump(document, out)
    validate_config(yaml.safe_load(out.getvalue()), source=str(source))
    with open_text_atomic(source) as f:
        f.write(out.getvalue())


@dataclass(frozen=True)
class ProfileStatus:
    """Where params.yaml stands against the source of the profile it names."""

    profile: str
    source: Path | None  # None: no shipped source of that name
    differences: list[str] = field(default_factory=list)  # "section.key: source value -> params value"

    @property
    def in_sync(self) -> bool:
        return self.source is not None and not self.differences


def profile_status(params: str | Path = "params.yaml", root: str | Path = ".") -> ProfileStatus:
    """Compare the active params with the profile source it names (after `dvc exp run -S`, say)."""
    active = load_config(params)
    shipped = available_profiles(root)
    source = shipped.get(active.profile)
    if source is None:
        return ProfileStatus(active.profile, None)
    return ProfileStatus(active.profile, source, config_differences(load_config(source), active))


def config_differences(base: SpatialBoostConfig, other: SpatialBoostConfig) -> list[str]:
    """Dotted keys whose values differ, as "key: base -> other", in schema order."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                walk(a.get(key), b.get(key), f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix[:-1]}: {a!r} -> {b!r}")

    walk(base.model_dump(mode="json"), other.model_dump(mode="json"), "")
    return out


# --- filling in defaults without losing comments ------------------------------------------------


def _round_trip() -> YAML:
    rt = YAML()  # round-trip: keeps comments, key order, quotes and flow style
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a long comment or value
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(type(None), _represent_null)
    rt.representer.add_representer(float, _represent_float)
    return rt


def _represent_null(representer: Any, _: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")  # not an empty value


def _represent_float(representer: Any, value: float) -> Any:
    """Floats PyYAML (YAML 1.1) reads back as floats too: `1.0e-08`, never `1e-08` (a string there)."""
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _fill_defaults(node: CommentedMap, resolved: dict[str, Any], indent: int) -> None:
    """Add the keys of `resolved` that `node` lacks, after its own, recursively, in schema order."""
    for key, value in node.items():
        if isinstance(value, CommentedMap) and isinstance(resolved.get(key), dict):
            _fill_defaults(value, resolved[key], indent + 2)
    missing = [key for key in resolved if key not in node]
    if not missing:
        return
    flow = node.fa.flow_style()
    trailing = _take_trailing(node) if len(node) and not flow else ""
    for key in missing:
        node[key] = _yaml_value(resolved[key])
    if flow:
        return
    for key in missing[1:] if indent == 0 else []:  # a blank line between top-level sections, as in the sources
        node.yaml_set_comment_before_after_key(key, before="\n", indent=indent)
    marker = "\n" + DEFAULTS_MARKER if indent == 0 else DEFAULTS_MARKER  # the last section ends the file: no blank line yet
    node.yaml_set_comment_before_after_key(missing[0], before=marker, indent=indent)
    if trailing:
        _give_trailing(node, trailing)


def _last_slot(node: CommentedMap) -> tuple[CommentedMap, Any]:
    """The (mapping, key) whose end-of-line comment token holds what follows `node` in the file."""
    key = list(node)[-1]
    value = node[key]
    if isinstance(value, CommentedMap) and len(value) and not value.fa.flow_style():
        return _last_slot(value)
    return node, key


def _take_trailing(node: CommentedMap) -> str:
    """Cut the blank lines and comments after `node`'s last line off its last key's comment."""
    owner, key = _last_slot(node)
    slot = owner.ca.items.get(key)
    if not slot or slot[2] is None:
        return ""
    token = slot[2]
    first, newline, rest = token.value.partition("\n")
    token.value = first + newline
    return rest


def _give_trailing(node: CommentedMap, trailing: str) -> None:
    """Put `trailing` after `node`'s (new) last line."""
    owner, key = _last_slot(node)
    slot = owner.ca.items.setdefault(key, [None, None, None, None])
    if slot[2] is not None:
        slot[2].value = slot[2].value + trailing
    else:
        slot[2] = CommentToken("\n" + trailing, CommentMark(0))


def _yaml_value(value: Any) -> Any:
    """A dumped default as round-trip YAML: scalar lists and small scalar mappings in flow style
    (`[2, 8]`, `{pixel: 3, object: 4, scene: 3}`), anything larger in block style."""
    if isinstance(value, dict):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _yaml_value(item)
        if len(value) <= 4 and all(not isinstance(item, dict | list) for item in value.values()):
            out.fa.set_flow_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_yaml_value(item) for item in value)
        if all(not isinstance(item, dict | list) for item in value):
            seq.fa.set_flow_style()
        return seq
    return value
