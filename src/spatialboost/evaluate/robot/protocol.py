"""The `robot` stage: CortexBench behaviour cloning on the frozen encoders of this run.

    result = robot_learning(cfg)
    result["metrics"]["metaworld"]["boosted"]     # {"mean", "std", "n"}: success %, mean over tasks
    result["metrics"]["verdict"]["metaworld"]      # better / worse / no effect, against the seed spread

Runs, each trained with every seed of `robot.seeds`:
- floor: the blind policy (proprioception only, no frame): what the task gives without vision;
- baseline: the encoder the boost started from (train.init);
- boosted: the boost's encoders; with train.replicate_seeds, boost seed i is paired with
  behaviour-cloning seed i, so the spread holds both sources of variation.
A difference counts as an effect only beyond 2x the larger of the two runs' seed std
(evaluate/comparison.py's rule). Demonstrations are generated once per task and cached in
`robot.demo_dir`, shared by every run; each (task, run) embeds them once for all seeds.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from spatialboost.config import RobotConfig, SpatialBoostConfig
from spatialboost.evaluate.comparison import compare, over_seeds
from spatialboost.evaluate.robot.cortexbench import read_mujoco_vc, read_trifinger
from spatialboost.evaluate.robot.metaworld import MetaWorldTask, generate_demonstrations
from spatialboost.evaluate.robot.policy import (
    BCOptions,
    BCPolicy,
    Demonstration,
    Embedder,
    behaviour_cloning,
    demonstration_features,
    encoder_embedder,
    train_policy,
)
from spatialboost.evaluate.robot.report import write_robot_report
from spatialboost.io import write_atomic, write_json_atomic
from spatialboost.runtime import torch_threads
from spatialboost.train.distributed import resolve_device
from spatialboost.train.stage import load_initial_model, planned_runs  # at import: workers run in threads


@dataclass(frozen=True)
class RobotRun:
    """One encoder (None: the blind floor) and the behaviour-cloning seeds it is trained with."""

    name: str
    folders: tuple[Path | None, ...]  # one encoder per seed (the boost's seeds), or one for all
    seeds: tuple[int, ...]

    def pairs(self) -> list[tuple[Path | None, int]]:
        folders = self.folders if len(self.folders) == len(self.seeds) else self.folders[:1] * len(self.seeds)
        return list(zip(folders, self.seeds, strict=True))


def robot_runs(cfg: SpatialBoostConfig) -> list[RobotRun]:
    """floor (if robot.floor), baseline and boosted, in that order."""
    seeds = cfg.robot.seeds
    boosted = tuple(Path(run.output) / "vlm" for run in planned_runs(cfg.train) if run.objective == "sft")
    runs = [RobotRun("floor", (None,), seeds)] if cfg.robot.floor else []
    return [*runs, RobotRun("baseline", (Path(cfg.train.init),), seeds), RobotRun("boosted", boosted, seeds)]


class BlindEmbedder:
    """The floor's 'encoder': no frame at all (rollouts skip rendering for it)."""

    blind = True

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros((len(frames), 0), np.float32)


def load_embedder(folder: Path | None, device: torch.device) -> Embedder:
    """The frozen encoder of the VLM in `folder` as an Embedder; None -> the blind floor."""
    if folder is None:
        return BlindEmbedder()
    vlm, _ = load_initial_model(folder, torch.float32)
    encoder = vlm.encoder.to(device).eval()
    del vlm
    return encoder_embedder(encoder)


# --- demonstrations, cached ------------------------------------------------------------------


def _demo_key(task: MetaWorldTask, count: int, seed: int, horizon: int) -> str:
    from importlib.metadata import version

    spec = [task.name, task.image_size, task.camera, count, seed, horizon, version("metaworld"), version("mujoco")]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def save_demonstrations(path: Path, demos: Sequence[Demonstration]) -> None:
    """Demonstrations as one compressed .npz (atomic): frames, proprio, actions, success, per episode."""
    arrays: dict[str, np.ndarray] = {}
    for i, d in enumerate(demos):
        arrays |= {f"images_{i}": d.images, f"proprio_{i}": d.proprio, f"actions_{i}": d.actions}
        if d.success is not None:
            arrays[f"success_{i}"] = d.success
    buffer = io.BytesIO()
    np.savez_compressed(buffer, count=np.array(len(demos)), **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(buffer.getvalue()))


def load_demonstrations(path: Path) -> list[Demonstration]:
    with np.load(path, allow_pickle=False) as z:
        return [
            Demonstration(
                z[f"images_{i}"],
                z[f"proprio_{i}"],
                z[f"actions_{i}"],
                z[f"success_{i}"] if f"success_{i}" in z else None,
            )
            for i in range(int(z["count"]))
        ]


def cached_demonstrations(task: MetaWorldTask, rc: RobotConfig) -> list[Demonstration]:
    """The scripted expert's demonstrations of `task`, generated once per setting into rc.demo_dir."""
    path = Path(rc.demo_dir) / f"{task.name}-{_demo_key(task, rc.demos, rc.demo_seed, rc.horizon)}.npz"
    if path.is_file():
        try:
            return load_demonstrations(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # a damaged cache is made again
            warnings.warn(f"{path}: unreadable ({error}); generating the demonstrations again", stacklevel=2)
    demos = generate_demonstrations(task, rc.demos, seed=rc.demo_seed, horizon=rc.horizon)
    save_demonstrations(path, demos)
    return demos


# --- the protocol --------------------------------------------------------------------------------


def bc_options(rc: RobotConfig) -> BCOptions:
    return BCOptions(
        hidden_sizes=rc.hidden_sizes,
        history=rc.history,
        epochs=rc.epochs,
        batch_size=rc.batch_size,
        lr=rc.lr,
        eval_every=rc.eval_every,
        eval_episodes=rc.eval_episodes,
        horizon=rc.horizon,
    )


@dataclass(frozen=True)
class Unit:
    """One behaviour-cloning run: a task, a run's encoder (None: the floor) and a seed."""

    task: str
    run: str
    folder: str | None
    seed: int


def plan_units(cfg: SpatialBoostConfig) -> list[Unit]:
    """Every (task, run, seed) of cfg.robot, in report order."""
    return [
        Unit(task, run.name, None if folder is None else str(folder), seed)
        for task in cfg.robot.tasks
        for run in robot_runs(cfg)
        for folder, seed in run.pairs()
    ]


def metaworld_task(rc: RobotConfig, name: str) -> MetaWorldTask:
    return MetaWorldTask(name, image_size=rc.image_size, camera=rc.camera, gl=rc.gl)


def prepare_demonstrations(cfg: SpatialBoostConfig, task: str) -> int:
    """Generate (or find cached) the demonstrations of `task`; their number."""
    return len(cached_demonstrations(metaworld_task(cfg.robot, task), cfg.robot))


def run_unit(cfg: SpatialBoostConfig, unit: Unit) -> dict[str, Any]:
    """Train and evaluate one policy: {"task", "run", "seed", "encoder", "best", "final", "evaluations", "losses"}.

    Self-contained (its own environment, GL context and encoder), so units run in parallel on any
    Prefect task runner; demonstrations come from the cache `prepare_demonstrations` filled.
    """
    rc = cfg.robot
    task = metaworld_task(rc, unit.task)
    with torch_threads(rc.threads):
        embed = load_embedder(None if unit.folder is None else Path(unit.folder), resolve_device(cfg.device))
        result = behaviour_cloning(embed, cached_demonstrations(task, rc), task, bc_options(rc), unit.seed)
    return {
        "task": unit.task,
        "run": unit.run,
        "seed": unit.seed,
        "encoder": unit.folder,
        "best": result.best_success,
        "final": result.final_success,
        "evaluations": {str(k): v for k, v in result.evaluations.items()},
        "losses": [round(x, 6) for x in result.losses],
    }


def run_released(cfg: SpatialBoostConfig, progress: bool = True) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Offline behaviour cloning on CortexBench's released demonstrations: {domain: {task: {run:
    [held-out action MSE per seed]}}}. The first 80% of the demonstrations train, the rest score;
    not CortexBench's score (that needs each domain's simulator), a check that features carry the
    expert's actions."""
    rc, options, device = cfg.robot, bc_options(cfg.robot), resolve_device(cfg.device)
    runs = robot_runs(cfg)
    embedders: dict[Path | None, Embedder] = {}  # each encoder loaded once for every domain and task
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for domain, released in rc.released.items():
        for task_name in released.tasks:
            if domain == "trifinger":
                demos = read_trifinger(released.root, released.stats_json or "", "train")[: released.num_demos]
            else:
                demos = read_mujoco_vc(released.root, domain, task_name, released.num_demos)
            cut = max(1, int(0.8 * len(demos)))
            train, held_out = demos[:cut], demos[cut:] or demos[-1:]
            for run in tqdm(runs, desc=f"{domain}/{task_name}", disable=not progress):
                scores = []
                features: dict[Path | None, tuple[np.ndarray, ...]] = {}  # one embedding pass per encoder
                for folder, seed in run.pairs():
                    if folder not in embedders:
                        embedders[folder] = load_embedder(folder, device)
                    if folder not in features:
                        embed = embedders[folder]
                        features[folder] = (
                            *demonstration_features(embed, train, options.history),
                            *demonstration_features(embed, held_out, options.history),
                        )
                    x, y, hx, hy = features[folder]
                    torch.manual_seed(seed)
                    policy = BCPolicy(x.shape[1], y.shape[1], options.hidden_sizes)
                    train_policy(policy, x, y, options, seed)
                    scores.append(float(np.mean((policy.act_fn()(hx) - hy) ** 2)))
                out.setdefault(domain, {}).setdefault(task_name, {})[run.name] = scores
    return out


def summarise(per_task: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per task and over tasks (the paper's MetaWorld column: the mean over tasks per seed), mean
    ± std over seeds of CortexBench's score (best evaluation), and the verdicts."""
    metrics: dict[str, Any] = {"tasks": {}, "metaworld": {}, "verdict": {}}
    runs = next(iter(per_task.values())).keys()
    for task, by_run in per_task.items():
        metrics["tasks"][task] = {
            run: over_seeds([{"s": r["best"]} for r in records])["s"] for run, records in by_run.items()
        }
    for run in runs:
        n_seeds = len(per_task[next(iter(per_task))][run])
        per_seed = [float(np.mean([per_task[t][run][i]["best"] for t in per_task])) for i in range(n_seeds)]
        metrics["metaworld"][run] = over_seeds([{"s": v} for v in per_seed])["s"]
    for scope, table in [("metaworld", metrics["metaworld"]), *((t, metrics["tasks"][t]) for t in per_task)]:
        if "baseline" in table and "boosted" in table:
            base, boost = table["baseline"], dict(table["boosted"])
            boost["std"] = max(boost["std"], base["std"])  # the larger spread: both runs are seeded
            metrics["verdict"][scope] = compare({"s": base}, {"s": boost}, {"s": True})["s"].to_dict()
    return metrics


def paper_encoder(cfg: SpatialBoostConfig) -> str | None:
    """The paper's Table 2 row for this run's encoder (paper profile only): LLaVA-1.5's own CLIP
    (no lvlm.encoder) is Table 1's "OpenCLIP" row."""
    from spatialboost.evaluate.paper import PAPER_ENCODER

    if cfg.profile != "paper":
        return None
    choice = cfg.lvlm.chosen()
    return PAPER_ENCODER.get(choice.family if choice is not None else "clip")


def robot_learning(
    cfg: SpatialBoostConfig,
    *,
    run_demos: Callable[[list[str]], list[int]] | None = None,
    run_units: Callable[[list[Unit]], list[dict[str, Any]]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The `robot` stage, what flows/robot.py runs: the demonstrations of every task, then every
    unit of `plan_units`, then results.json, report.md and success.png in robot.output.

    run_demos / run_units: how the independent pieces run (the flow: one Prefect task each on the
    configured runner; default: one after another in this process). Returns {"metrics", "runs",
    "report"}; metrics is metrics/robot.json.
    """
    rc = cfg.robot
    if run_demos is None:
        for task in tqdm(rc.tasks, desc="demonstrations", disable=not progress):
            prepare_demonstrations(cfg, task)
    else:
        run_demos(list(rc.tasks))
    units = plan_units(cfg)
    if run_units is None:
        records = [run_unit(cfg, unit) for unit in tqdm(units, desc="behaviour cloning", disable=not progress)]
    else:
        records = run_units(units)
    per_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        per_task.setdefault(record["task"], {}).setdefault(record["run"], []).append(record)
    with torch_threads(rc.threads):
        released = run_released(cfg, progress) if rc.released else {}
    metrics = summarise(per_task)
    if released:
        metrics["released"] = {
            domain: {
                task: {run: over_seeds([{"s": v} for v in scores])["s"] for run, scores in by_run.items()}
                for task, by_run in tasks.items()
            }
            for domain, tasks in released.items()
        }
    output = Path(rc.output)
    output.mkdir(parents=True, exist_ok=True)
    protocol = {k: v for k, v in rc.model_dump(mode="json").items() if k not in ("output", "demo_dir", "released")}
    write_json_atomic(output / "results.json", {"protocol": protocol, "runs": per_task, "released": released})
    report = write_robot_report(metrics, per_task, protocol, output, paper_encoder=paper_encoder(cfg))
    return {"metrics": metrics, "runs": per_task, "report": str(report)}
