"""CortexBench's released demonstrations, read in their published formats.

    demos = read_mujoco_vc(root, "adroit", "pen-v0", num_demos=100)    # Adroit, MetaWorld, DMControl
    demos = read_trifinger(root, stats_json, split="train")            # TriFinger

Layouts (facebookresearch/eai-vc, cortexbench/DATASETS.md):
- mujoco_vc suites: `<root>/<suite>-expert-v1.0/<env>.pickle`, suite in adroit | metaworld | dmc,
  each a pickled list of paths `{"images": (T, H, W, 3) uint8, "actions": (T, A), "rewards": (T,),
  "env_infos": {...}}`; the proprioception is `env_infos[proprio_key]` ("proprio" for Adroit,
  "gripper_proprio" for MetaWorld, none for DMControl) and MetaWorld's success flags are
  `env_infos["success"]`.
- TriFinger: `<root>/trifinger-demos/<path>/downsample.pth`, one torch-saved dict of arrays per
  demo (`image_60`: the camera60 frames, `ft_pos_cur`: fingertip positions, `delta_ftpos`: the
  actions), the demo list in a stats JSON (`train_demo_stats` / `test_demo_stats`, entries
  `{"path", "diff", "id"}`), as trifinger_vc/utils/train_utils.py:get_traj_list reads it.

Only the readers run here: Adroit needs mj_envs (mujoco-py), DMControl dm_control/dmc2gym and
TriFinger trifinger_simulation to roll a policy out; none installs beside our stack, so behaviour
cloning is evaluated on MetaWorld alone (README: robot learning).

Pickles execute code when loaded; these are read with an unpickler that resolves only numpy's
array-rebuilding functions and builtin containers, so a tampered file fails with a clear error.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.evaluate.robot.policy import Demonstration

PROPRIO_KEYS: dict[str, str | None] = {"adroit": "proprio", "metaworld": "gripper_proprio", "dmc": None}
"""env_infos key of each suite's proprioception (CortexBench's *_BC_config.yaml `proprio_key`)."""

SUITE_TASKS: dict[str, tuple[str, ...]] = {
    "adroit": ("pen-v0", "relocate-v0"),
    "metaworld": (
        "assembly-v2-goal-observable",
        "bin-picking-v2-goal-observable",
        "button-press-topdown-v2-goal-observable",
        "drawer-open-v2-goal-observable",
        "hammer-v2-goal-observable",
    ),
    "dmc": (
        "dmc_walker_stand-v1",
        "dmc_walker_walk-v1",
        "dmc_reacher_easy-v1",
        "dmc_cheetah_run-v1",
        "dmc_finger_spin-v1",
    ),
    "trifinger": ("reach_cube", "move_cube"),
}
"""CortexBench's tasks per domain (launch_all_jobs.sh; trifinger_vc/config/task)."""

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a demonstration file holds only arrays")


def load_array_pickle(path: str | Path) -> Any:
    """A pickle of numpy arrays in builtin containers; anything else is refused before it runs."""
    data = Path(path).read_bytes()
    try:
        return _ArrayUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: not a CortexBench demonstration pickle ({error})") from error


def _demonstration(path: Mapping[str, Any], proprio_key: str | None, where: str) -> Demonstration:
    missing = [key for key in ("images", "actions") if key not in path]
    if missing:
        raise ValueError(f"{where}: a path lacks {missing} (has {sorted(path)})")
    images, actions = np.asarray(path["images"]), np.asarray(path["actions"], dtype=np.float32)
    infos = path.get("env_infos", {})
    if proprio_key is None:
        proprio = np.zeros((len(actions), 0), np.float32)
    elif proprio_key in infos:
        proprio = np.asarray(infos[proprio_key], dtype=np.float32).reshape(len(actions), -1)
    else:
        raise ValueError(f"{where}: env_infos has no {proprio_key!r} (has {sorted(infos)})")
    success = np.asarray(infos["success"], dtype=bool) if "success" in infos else None
    try:
        return Demonstration(images.astype(np.uint8, copy=False), proprio, actions, success)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


def read_mujoco_vc(root: str | Path, suite: str, env_name: str, num_demos: int | None = None) -> list[Demonstration]:
    """The first `num_demos` expert paths of `env_name` from `<root>/<suite>-expert-v1.0/<env>.pickle`."""
    if suite not in PROPRIO_KEYS:
        raise ValueError(f"unknown mujoco_vc suite {suite!r}; known: {sorted(PROPRIO_KEYS)}")
    file = Path(root) / f"{suite}-expert-v1.0" / f"{env_name}.pickle"
    if not file.is_file():
        raise FileNotFoundError(f"no CortexBench demonstrations at {file} (unzip {suite}-expert-v1.0.zip into {root})")
    paths = load_array_pickle(file)
    if not isinstance(paths, list) or not paths:
        raise ValueError(f"{file}: expected a non-empty list of paths, got {type(paths).__name__}")
    paths = paths[:num_demos] if num_demos is not None else paths
    return [_demonstration(p, PROPRIO_KEYS[suite], f"{file} path {i}") for i, p in enumerate(paths)]


def _numpy_array_globals() -> list[Any]:
    """What a pickled numpy array refers to, for torch.load(weights_only=True)."""
    import numpy.dtypes

    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(numpy.dtypes, name) for name in dir(numpy.dtypes) if name.endswith("DType")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def read_trifinger(root: str | Path, stats_json: str | Path, split: str = "train") -> list[Demonstration]:
    """TriFinger demos of `split` (train | test) listed in `stats_json`: camera60 frames, fingertip
    positions as proprioception, fingertip deltas as actions."""
    import torch

    stats = json.loads(Path(stats_json).read_text())
    key = f"{split}_demo_stats"
    if key not in stats:
        raise ValueError(f"{stats_json}: no {key!r} list (has {sorted(stats)})")
    demos = []
    for entry in stats[key]:
        file = Path(root) / "trifinger-demos" / entry["path"] / "downsample.pth"
        if not file.is_file():
            raise FileNotFoundError(f"TriFinger demo {entry.get('id')} missing: {file}")
        with torch.serialization.safe_globals(_numpy_array_globals()):
            traj = torch.load(file, map_location="cpu", weights_only=True)  # arrays only, no code
        path = {
            "images": np.asarray(traj["image_60"]),
            "actions": np.asarray(traj["delta_ftpos"]),
            "env_infos": {"ft_pos_cur": np.asarray(traj["ft_pos_cur"])},
        }
        demos.append(_demonstration(path, "ft_pos_cur", str(file)))
    return demos
