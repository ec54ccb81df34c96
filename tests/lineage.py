"""What each DVC stage really reads, derived from the code: the project modules its entry point
imports and the params values its code reaches. tests/test_lineage.py holds dvc.yaml against it.

Static, from the source text (nothing is run):

- modules: the import closure of the stage's `python -m flows.<stage>` within flows/, tasks/ and
  src/spatialboost (every import statement, function-local ones included, and the packages above
  each module): code a change to which can change what the stage does.
- params: starting from the flow module, every function it can reach (called, or passed on as a
  value; a class reached reaches all its methods), and in them every attribute path read from the
  config (`cfg.extract.geometry.ransac_threshold_m` -> "extract.geometry.ransac_threshold_m").
  A config object handed to a project function is followed into it under its path
  (`build_scene(item, cfg.geometry)` reads what build_scene reads of its `cfg`); handed anywhere
  else (a pydantic method, a call the analysis cannot resolve, a return value), the whole
  object counts as read.

    stage = stage_lineage("extract")   # StageLineage(modules={...}, reads={"extract.geometry...": ...})
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from spatialboost.config import SpatialBoostConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"flows": ROOT / "flows", "tasks": ROOT / "tasks", "spatialboost": ROOT / "src" / "spatialboost"}
ROOT_CONFIG = "SpatialBoostConfig"
TASK_CALLS = {"submit", "fn"}
"""`task.submit(...)` and `task.fn(...)` call the task's function with those arguments."""

Path_ = tuple[str, ...]
"""A config path: () is the whole config, ("extract", "geometry") its extract.geometry section."""


# --- the config's shape ------------------------------------------------------------------------------


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field annotation (`X`, `X | None`), or None for a value field."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 and len(get_args(annotation)) <= 2 else None


@functools.cache
def model_at(path: Path_) -> type[BaseModel] | None:
    """The model class of a config path, or None when the path ends at a value (or is no field)."""
    model: type[BaseModel] | None = SpatialBoostConfig
    for name in path:
        info = model.model_fields.get(name) if model is not None else None
        if info is None:
            return None
        model = _section_model(info.annotation)
    return model


def is_field(path: Path_) -> bool:
    parent = model_at(path[:-1])
    return parent is not None and path[-1] in parent.model_fields


# --- modules -----------------------------------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None outside the project."""
    top, *rest = name.split(".")
    base = PACKAGE_DIRS.get(top)
    if base is None:
        return None
    target = base.joinpath(*rest)
    if (target / "__init__.py").is_file():
        return target / "__init__.py"
    if target.with_suffix(".py").is_file():
        return target.with_suffix(".py")
    return None


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)  # top-level functions and classes
    imported: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # local name -> (module, attribute)

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


@functools.cache
def load_module(name: str) -> Module | None:
    path = module_file(name)
    if path is None:
        return None
    module = Module(name, path, ast.parse(path.read_text(), str(path)))
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            module.defs[node.name] = node
    for node in ast.walk(module.tree):
        for local, target in _import_targets(module, node):
            if node in module.tree.body or local not in module.imported:
                module.imported[local] = target
    return module


def _import_targets(module: Module, node: ast.AST) -> Iterator[tuple[str, tuple[str, str | None]]]:
    """(local name, (module, attribute or None)) of one import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                yield alias.asname, (alias.name, None)
            else:
                top = alias.name.split(".")[0]
                yield top, (top, None)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.package.split(".")[: len(module.package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        for alias in node.names:
            if module_file(f"{base}.{alias.name}") is not None:
                yield alias.asname or alias.name, (f"{base}.{alias.name}", None)
            else:
                yield alias.asname or alias.name, (base, alias.name)


def imported_modules(name: str) -> set[str]:
    """Every project module a module imports, directly: at top level or inside a function,
    and the packages above each (importing a.b.c runs a/__init__ and a/b/__init__)."""
    module = load_module(name)
    if module is None:
        return set()
    found = set()
    for node in ast.walk(module.tree):
        for _, (target, attribute) in _import_targets(module, node):
            for candidate in (f"{target}.{attribute}" if attribute else None, target):
                if candidate and module_file(candidate) is not None:
                    parts = candidate.split(".")
                    found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]))}
                    break
    return found


def module_closure(entry: str) -> set[str]:
    """`entry` and every project module it imports, transitively."""
    seen, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        todo += sorted(imported_modules(name) - seen)
    return seen


# --- what the reachable code reads of the config --------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A resolved name: a top-level function or class of a module, or a method of a class."""

    module: str
    name: str
    method: str | None = None

    def __str__(self) -> str:
        return f"{self.module}.{self.name}" + (f".{self.method}" if self.method else "")


def resolve(module_name: str, name: str, depth: int = 0) -> Ref | str | None:
    """What `name` means at the top level of a module: a Ref, a module name (str), or None."""
    module = load_module(module_name)
    if module is None or depth > 10:
        return None
    if name in module.defs:
        return Ref(module_name, name)
    if name in module.imported:
        target, attribute = module.imported[name]
        if attribute is None:
            return target if module_file(target) is not None else None
        return resolve(target, attribute, depth + 1)
    return None


def _node_of(ref: Ref) -> ast.AST | None:
    module = load_module(ref.module)
    node = module.defs.get(ref.name) if module else None
    if ref.method is None or not isinstance(node, ast.ClassDef):
        return node
    return next((n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == ref.method), None)


def _methods(ref: Ref) -> list[Ref]:
    """The methods of a class and of its project base classes."""
    node = _node_of(ref)
    if not isinstance(node, ast.ClassDef):
        return []
    own = [Ref(ref.module, ref.name, n.name) for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for base in node.bases:
        if isinstance(base, ast.Name):
            target = resolve(ref.module, base.id)
            if isinstance(target, Ref):
                own += _methods(target)
    return own


def _method_of(ref: Ref, method: str) -> Ref | None:
    return next((m for m in _methods(ref) if m.method == method), None)


def _annotation_names(annotation: ast.AST | None) -> set[str]:
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return set(annotation.value.replace("|", " ").replace("[", " ").replace("]", " ").split())
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(annotation) if isinstance(n, ast.Attribute)
    }


@dataclass
class Reads:
    """What a stage's code reads: config paths, each with one place that reads it."""

    paths: dict[Path_, str] = field(default_factory=dict)
    reached: set[str] = field(default_factory=set)

    def add(self, path: Path_, where: str) -> None:
        self.paths.setdefault(path, where)


Env = dict[str, frozenset[Path_]]


class _Analysis:
    """The worklist over (function, bindings of its config-valued parameters)."""

    def __init__(self, skip: set[str]) -> None:
        self.reads = Reads()
        self.skip = skip
        self.done: set[tuple[Ref, tuple[tuple[str, frozenset[Path_]], ...]]] = set()
        self.todo: list[tuple[Ref, Env]] = []
        self.attributes: dict[Ref, Env] = {}  # class -> self.<attribute> bindings

    def top_level(self, module_name: str) -> None:
        module = load_module(module_name)
        if module is not None:
            _Function(self, Ref(module_name, "<module>"), module.tree, {}).walk()

    def reach(self, ref: Ref, env: Env | None = None) -> None:
        key = (ref, tuple(sorted((env or {}).items())))
        if key not in self.done:
            self.done.add(key)
            self.todo.append((ref, dict(env or {})))

    def run(self) -> Reads:
        modules: set[str] = set()
        while self.todo:
            ref, env = self.todo.pop()
            if ref.module not in modules:  # a module's top-level code runs when anything of it is used
                modules.add(ref.module)
                self.top_level(ref.module)
            node = _node_of(ref)
            if node is None:
                continue
            self.reads.reached.add(str(ref))
            if isinstance(node, ast.ClassDef):
                for method in _methods(ref):
                    self.reach(method)
                continue
            _Function(self, ref, node, env).walk()
        return self.reads


class _Function:
    """One function body under one binding of its parameters."""

    def __init__(self, analysis: _Analysis, ref: Ref, node: ast.AST, env: Env) -> None:
        self.a, self.ref, self.node = analysis, ref, node
        self.env: Env = dict(env)
        self.cls = Ref(ref.module, ref.name) if ref.method else None
        self.where = f"{load_module(ref.module).path.relative_to(ROOT)}:{ref.method or ref.name}"  # type: ignore[union-attr]
        self.record = str(ref) not in analysis.skip
        self.instances: dict[str, Ref] = {}  # local name -> the project class of its value
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs):
                names = _annotation_names(arg.annotation)
                if arg.arg not in self.env and ROOT_CONFIG in names:
                    self.env[arg.arg] = frozenset({()})
                classes = [t for t in map(functools.partial(resolve, ref.module), sorted(names)) if isinstance(t, Ref)]
                if len(classes) == 1 and isinstance(_node_of(classes[0]), ast.ClassDef):
                    self.instances[arg.arg] = classes[0]

    # -- paths --
    def paths_of(self, expr: ast.AST) -> frozenset[Path_]:
        """The config paths `expr` may stand for (empty: not a config value)."""
        if isinstance(expr, ast.Name):
            return self.env.get(expr.id, frozenset())
        if isinstance(expr, ast.Attribute):
            base = self.paths_of(expr.value)
            if base:
                return frozenset(p + (expr.attr,) for p in base if is_field(p + (expr.attr,)))
            if isinstance(expr.value, ast.Name) and expr.value.id == "self" and self.cls:
                return self._self_attribute(expr.attr)
            if isinstance(expr.value, ast.Name) and expr.value.id in self.instances:
                return self.a.attributes.get(self.instances[expr.value.id], {}).get(expr.attr, frozenset())
            return frozenset()
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
            target = resolve(self.ref.module, expr.func.id)
            node = _node_of(target) if isinstance(target, Ref) else None
            if isinstance(node, ast.FunctionDef) and ROOT_CONFIG in _annotation_names(node.returns):
                return frozenset({()})
        return frozenset()

    def _self_attribute(self, name: str) -> frozenset[Path_]:
        assert self.cls is not None
        bound = self.a.attributes.get(self.cls, {}).get(name)
        if bound:
            return bound
        node = _node_of(self.cls)
        for item in node.body if isinstance(node, ast.ClassDef) else ():
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id == name:
                if ROOT_CONFIG in _annotation_names(item.annotation):
                    return frozenset({()})
        return frozenset()

    def read(self, paths: frozenset[Path_]) -> None:
        if self.record:
            for path in paths:
                self.a.reads.add(path, self.where)

    # -- the walk --
    def walk(self) -> None:
        if isinstance(self.node, ast.Module):  # its top-level code; its functions are reached one by one
            body = [s for s in self.node.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        else:
            body = self.node.body if isinstance(self.node, ast.FunctionDef | ast.AsyncFunctionDef) else []
        for statement in body:
            self.visit(statement)

    def visit(self, node: ast.AST) -> None:  # noqa: C901 - one case per kind of node
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if self._bind(targets, node.value):
                return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for default in (*node.args.defaults, *node.args.kw_defaults):
                if default is not None:
                    self.visit(default)
            for statement in node.body if isinstance(node.body, list) else [node.body]:
                self.visit(statement)
            return
        if isinstance(node, ast.ClassDef | ast.Import | ast.ImportFrom):
            return
        if isinstance(node, ast.arg | ast.arguments):
            return
        if isinstance(node, ast.Call):
            self._call(node)
            return
        paths = self.paths_of(node)
        if paths:
            self.read(paths)  # a config value used as a value: read whole
            return
        if isinstance(node, ast.Name):
            self._reach_name(node.id)
            return
        if isinstance(node, ast.Attribute):
            target = self._attribute_target(node)
            if target is not None:
                self.a.reach(target)
                return
        for child in ast.iter_child_nodes(node):
            self.visit(child)

    def _bind(self, targets: list[ast.AST], value: ast.AST) -> bool:
        """`name = <config value>` binds name (no read yet); `self.x = <config value>` binds the class's x.
        `name = ProjectClass(...)` remembers name's class (its method calls resolve)."""
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and isinstance(value, ast.Call):
            made = self._made_class(value)
            if made is not None:
                self.instances[targets[0].id] = made
        paths = self.paths_of(value)
        if not paths or len(targets) != 1:
            return False
        target = targets[0]
        if isinstance(target, ast.Name):
            self.env[target.id] = paths
            return True
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self" and self.cls:
            bound = self.a.attributes.setdefault(self.cls, {})
            bound[target.attr] = bound.get(target.attr, frozenset()) | paths
            for method in _methods(self.cls):
                self.a.reach(method)
            return True
        return False

    def _made_class(self, call: ast.Call) -> Ref | None:
        """The project class a call returns: a constructor, or a function annotated to return one."""
        callee = self._callee(call.func)
        node = _node_of(callee) if callee is not None else None
        if isinstance(node, ast.ClassDef) and callee is not None and callee.method is None:
            return callee
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and callee is not None:
            module = callee.module
            classes = [t for t in (resolve(module, n) for n in sorted(_annotation_names(node.returns))) if isinstance(t, Ref)]
            if len(classes) == 1 and isinstance(_node_of(classes[0]), ast.ClassDef):
                return classes[0]
        return None

    def _reach_name(self, name: str) -> None:
        if name in self.env:
            return
        target = resolve(self.ref.module, name)
        if isinstance(target, Ref):
            self.a.reach(target)

    def _attribute_target(self, node: ast.Attribute) -> Ref | None:
        """`module.function`, `self.method` or `Class.method` as a Ref."""
        if not isinstance(node.value, ast.Name):
            return None
        if node.value.id == "self" and self.cls is not None:
            return _method_of(self.cls, node.attr)
        if node.value.id in self.instances:
            return _method_of(self.instances[node.value.id], node.attr)
        target = resolve(self.ref.module, node.value.id)
        if isinstance(target, str):
            inner = resolve(target, node.attr)
            return inner if isinstance(inner, Ref) else None
        if isinstance(target, Ref) and target.method is None:
            if node.attr in TASK_CALLS and isinstance(_node_of(target), ast.FunctionDef):
                return target  # a Prefect task run through its runner: the function itself
            return _method_of(target, node.attr)
        return None

    def _callee(self, func: ast.AST) -> Ref | None:
        if isinstance(func, ast.Name) and func.id not in self.env:
            target = resolve(self.ref.module, func.id)
            return target if isinstance(target, Ref) else None
        if isinstance(func, ast.Attribute):
            return self._attribute_target(func)
        return None

    def _call(self, node: ast.Call) -> None:
        func = node.func
        # a config object's own method: follow it with self bound (a project method), else read whole
        if isinstance(func, ast.Attribute):
            receiver = self.paths_of(func.value)
            if receiver:
                for path in receiver:
                    model = model_at(path)
                    method = self._config_method(model, func.attr)
                    if method is not None:
                        self.a.reach(method, {"self": frozenset({path})})
                    else:
                        self.read(frozenset({path}))
                self._visit_args(node, None)
                return
        callee = self._callee(func)
        if callee is None:
            self.visit(func)
        self._visit_args(node, callee)

    def _config_method(self, model: type[BaseModel] | None, name: str) -> Ref | None:
        if model is None or model.__module__ != "spatialboost.config" or name.startswith("model_"):
            return None
        ref = Ref("spatialboost.config", model.__name__)
        return _method_of(ref, name)

    def _visit_args(self, node: ast.Call, callee: Ref | None) -> None:
        """Config values handed to a project function bind its parameters; anything else is read."""
        params = self._parameters(callee)
        bindings: Env = {}
        for i, arg in enumerate(node.args):
            paths = self.paths_of(arg)
            if paths and params is not None and i < len(params) and not isinstance(arg, ast.Starred):
                bindings[params[i]] = paths
            else:
                self.visit(arg)
        for keyword in node.keywords:
            paths = self.paths_of(keyword.value)
            if paths and params is not None and keyword.arg in params:
                bindings[keyword.arg] = paths
            else:
                self.visit(keyword.value)
        if callee is None:
            return
        node_of = _node_of(callee)
        if isinstance(node_of, ast.ClassDef):
            for name, paths in list(bindings.items()):
                if any(model_at(p) is None for p in paths):  # a value stored in an object: read here
                    self.read(paths)
                    del bindings[name]
            self._construct(callee, node_of, bindings)
        else:
            self.a.reach(callee, bindings)

    def _parameters(self, callee: Ref | None) -> list[str] | None:
        node = _node_of(callee) if callee is not None else None
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
            if callee is not None and callee.method and names and names[0] in {"self", "cls"}:
                names = names[1:]
            return names + [a.arg for a in node.args.kwonlyargs]
        if isinstance(node, ast.ClassDef):  # a dataclass: its annotated fields, in order
            init = _method_of(callee, "__init__") if callee is not None else None
            if init is not None:
                return self._parameters(init)
            return [n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
        return None

    def _construct(self, cls: Ref, node: ast.ClassDef, bindings: Env) -> None:
        init = _method_of(cls, "__init__")
        if init is not None:
            self.a.reach(init, bindings)
        elif bindings:
            bound = self.a.attributes.setdefault(cls, {})
            for name, paths in bindings.items():
                bound[name] = bound.get(name, frozenset()) | paths
        self.a.reach(cls)
        for method in _methods(cls):
            self.a.reach(method)


def config_reads(entry_module: str, skip: set[str] = frozenset()) -> Reads:  # type: ignore[assignment]
    """The config paths read by everything reachable from a module's functions and top-level code.

    skip: functions (module.name or module.Class.method) that are followed but whose own reads
    do not count (the runner plumbing every stage shares).
    """
    analysis = _Analysis(set(skip))
    module = load_module(entry_module)
    assert module is not None, entry_module
    for name in module.defs:
        analysis.reach(Ref(entry_module, name))
    return analysis.run()


# --- dvc.yaml against the code -------------------------------------------------------------------------

RUNNER_PLUMBING = {
    "flows._stage.run_stage",
    "flows._stage.visible_gpus",
    "flows._stage.task_resources",
    "flows._stage.submit_shards",
}
"""Where a stage's runner is chosen (threads, Dask, Ray; GPUs per worker): reads there decide how
the work is spread, never what it writes (a test checks Dask against threads byte for byte)."""

NOT_INPUTS = {("orchestration",): "how flows fan work out and where metrics go: README, `Scaling out`"}
"""Sections no stage lists: the outputs do not depend on them."""


@dataclass(frozen=True)
class StageLineage:
    """What a stage's code imports (project module files, relative to the repository) and reads."""

    entry: str
    files: frozenset[str]
    reads: dict[Path_, str]


def stage_entry(stage: dict[str, Any]) -> str:
    """The module a dvc.yaml stage runs (`python -m flows.extract` -> "flows.extract")."""
    words = str(stage["cmd"]).split()
    return words[words.index("-m") + 1]


def stage_lineage(stage: dict[str, Any]) -> StageLineage:
    entry = stage_entry(stage)
    files = frozenset(module_file(m).relative_to(ROOT).as_posix() for m in module_closure(entry))  # type: ignore[union-attr]
    return StageLineage(entry, files, config_reads(entry, skip=RUNNER_PLUMBING).paths)


def _interpolated(stage: dict[str, Any]) -> set[Path_]:
    """Params a stage names in its paths (`${extract.output}`): a new value is a new path to DVC."""
    import re

    text = repr({k: v for k, v in stage.items() if k != "params"})
    return {tuple(m.split(".")) for m in re.findall(r"\$\{([A-Za-z0-9_.]+)\}", text)}


def _covers(listed: Path_, read: Path_) -> bool:
    return read[: len(listed)] == listed


def missing_code(stage: dict[str, Any], lineage: StageLineage) -> list[str]:
    """Module files the stage imports that none of its deps (a file, or a folder above it) names."""
    deps = [str(d).rstrip("/") for d in stage.get("deps", []) if "${" not in str(d)]
    return sorted(f for f in lineage.files if not any(f == d or f.startswith(d + "/") for d in deps))


def listed_params(stage: dict[str, Any]) -> set[Path_]:
    return {tuple(str(p).split(".")) for p in stage.get("params", []) if isinstance(p, str)}


def missing_params(stage: dict[str, Any], lineage: StageLineage, whole_config_ok: bool = False) -> list[str]:
    """Config paths the stage's code reads that neither its params nor its ${...} paths cover,
    each with one place that reads it. `<all>`: the whole config is read (a record of it)."""
    covered = listed_params(stage) | _interpolated(stage) | set(NOT_INPUTS)
    missing = []
    for path, where in sorted(lineage.reads.items()):
        if path == () and whole_config_ok:
            continue
        if not any(_covers(c, path) for c in covered):
            missing.append(f"{'.'.join(path) or '<all>'} (read in {where})")
    return missing


def unread_params(stage: dict[str, Any], lineage: StageLineage) -> list[str]:
    """Params the stage lists that its code never reads (a change to them reruns it for nothing)."""
    reads = set(lineage.reads)
    return sorted(".".join(p) for p in listed_params(stage) if not any(_covers(p, r) or _covers(r, p) for r in reads))
