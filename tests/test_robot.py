"""Robot learning on frozen features (evaluate/robot/): the protocol's features and policy, the
scripted MetaWorld demonstrations, CortexBench's released formats, and the stage end to end on
tiny VLMs (MuJoCo renders offscreen on the CPU through EGL)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialboost.config import ConfigError, load_config
from spatialboost.evaluate.robot.cortexbench import load_array_pickle, read_mujoco_vc, read_trifinger
from spatialboost.evaluate.robot.metaworld import CORTEXBENCH_TASKS, MetaWorldTask, generate_demonstrations
from spatialboost.evaluate.robot.policy import (
    BCOptions,
    BCPolicy,
    Demonstration,
    demonstration_features,
    flare_features,
    train_policy,
)
from spatialboost.evaluate.robot.protocol import load_demonstrations, plan_units, robot_learning, save_demonstrations
from spatialboost.train.stage import save_trained
from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


# --- features and policy ---------------------------------------------------------------------


def test_flare_features_are_cortexbench_fusion_with_the_first_frame_repeated():
    e = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0]], np.float32)
    f = flare_features(e, history=3)
    assert f.shape == (4, 6)
    # step 0: window [e0, e0, e0] -> deltas 0, 0, then e0
    np.testing.assert_array_equal(f[0], [0, 0, 0, 0, 1, 10])
    # step 1: [e0, e0, e1] -> (e0 - e0), (e1 - e0), e1
    np.testing.assert_array_equal(f[1], [0, 0, 1, 10, 2, 20])
    # step 3: [e1, e2, e3] -> (e2 - e1), (e3 - e2), e3
    np.testing.assert_array_equal(f[3], [2, 20, 4, 40, 8, 80])
    np.testing.assert_array_equal(flare_features(e, history=1), e)


def test_demonstration_rejects_mismatched_steps():
    images = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="proprio has 2 steps"):
        Demonstration(images, np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        Demonstration(images.astype(np.float32), np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32))


def test_eval_epochs_follow_cortexbench_and_always_include_the_last():
    assert BCOptions(epochs=100, eval_every=5).eval_epochs()[:3] == [5, 10, 15]
    assert BCOptions(epochs=100, eval_every=5).eval_epochs()[-1] == 100
    assert BCOptions(epochs=12, eval_every=5).eval_epochs() == [5, 10, 12]
    assert BCOptions(epochs=3, eval_every=5).eval_epochs() == [3]


def test_behaviour_cloning_fits_the_experts_actions():
    """An expert whose action is a fixed nonlinear function of the features: training must lower the
    loss by orders of magnitude and the policy must then reproduce held-out actions."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    x = rng.normal(size=(2048, 6)).astype(np.float32)
    y = np.tanh(x @ w).astype(np.float32)
    torch.manual_seed(0)
    policy = BCPolicy(6, 4, (64, 64))
    losses = train_policy(policy, x[:1536], y[:1536], BCOptions(epochs=40, batch_size=128, lr=1e-3), seed=0)
    assert losses[-1] < losses[0] / 20
    held_out = np.mean((policy.act_fn()(x[1536:]) - y[1536:]) ** 2)
    assert held_out < 0.02 < np.mean(y[1536:] ** 2)


def test_demonstration_features_concatenate_flare_and_proprio():
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    demo = Demonstration(images, np.full((4, 2), 7, np.float32), np.ones((4, 3), np.float32))
    x, y = demonstration_features(lambda frames: frames.reshape(len(frames), -1)[:, :1].astype(np.float32), [demo], 2)
    assert x.shape == (4, 2 + 2) and y.shape == (4, 3)
    np.testing.assert_array_equal(x[:, 1], images.reshape(4, -1)[:, 0])  # newest embedding after the delta
    np.testing.assert_array_equal(x[1:, 0], np.diff(images.reshape(4, -1)[:, 0].astype(np.float32)))
    np.testing.assert_array_equal(x[:, 2:], 7)


# --- MetaWorld -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drawer_demos():
    return generate_demonstrations(MetaWorldTask("drawer-open-v3", image_size=32), count=2, seed=0, horizon=120)


def test_scripted_expert_demonstrations_succeed_and_are_reproducible(drawer_demos):
    again = generate_demonstrations(MetaWorldTask("drawer-open-v3", image_size=32), count=2, seed=0, horizon=120)
    for demo, same in zip(drawer_demos, again, strict=True):
        assert (
            demo.images.shape == (120, 32, 32, 3) and demo.proprio.shape == (120, 4) and demo.actions.shape == (120, 4)
        )
        assert demo.success[-1] and not demo.success[0]  # the drawer opens during the episode
        assert np.abs(demo.actions).max() <= 1.0
        np.testing.assert_array_equal(demo.images, same.images)
        np.testing.assert_array_equal(demo.actions, same.actions)
        # the hand moves, and the frames see it move
        assert np.linalg.norm(demo.proprio[-1, :3] - demo.proprio[0, :3]) > 0.05
        assert np.abs(demo.images[-1].astype(int) - demo.images[0]).mean() > 1.0
    # every reset draws a new placement: the two episodes differ from the first frame on
    assert np.abs(drawer_demos[0].images[0].astype(int) - drawer_demos[1].images[0]).sum() > 0


def test_rollout_of_a_still_policy_fails_and_is_seeded():
    task = MetaWorldTask("drawer-open-v3", image_size=16)
    calls = []

    def embed(frames):
        calls.append(frames.shape)
        return frames.reshape(len(frames), -1)[:, :5].astype(np.float32)

    still = lambda features: np.zeros((len(features), 4), np.float32)  # noqa: E731
    success = task.rollout(still, embed, episodes=2, horizon=20, history=3, seed=5)
    assert success.tolist() == [False, False]
    assert len(calls) == 40 and calls[0] == (1, 16, 16, 3)


def test_unknown_task_and_camera_are_clear_errors():
    with pytest.raises(ValueError, match="unknown MetaWorld task 'drawer-open-v2'"):
        MetaWorldTask("drawer-open-v2")
    with pytest.raises(ValueError, match="no camera 'top_cap2'"):
        generate_demonstrations(MetaWorldTask("drawer-open-v3", image_size=16, camera="top_cap2"), 1, seed=0, horizon=5)


def test_demonstrations_round_trip_through_the_cache(tmp_path, drawer_demos):
    save_demonstrations(tmp_path / "d.npz", drawer_demos)
    back = load_demonstrations(tmp_path / "d.npz")
    for a, b in zip(drawer_demos, back, strict=True):
        for field in ("images", "proprio", "actions", "success"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_five_cortexbench_tasks_exist_in_metaworld_v3():
    for name in CORTEXBENCH_TASKS:
        MetaWorldTask(name)


# --- CortexBench's released formats -----------------------------------------------------------------


def _mujoco_vc_paths(n: int, steps: int, proprio_key: str | None) -> list[dict]:
    rng = np.random.default_rng(1)
    paths = []
    for _ in range(n):
        infos = {"success": np.arange(steps) >= steps - 2}
        if proprio_key:
            infos[proprio_key] = rng.normal(size=(steps, 4))
        paths.append(
            {
                "images": rng.integers(0, 255, (steps, 8, 8, 3), dtype=np.uint8),
                "actions": rng.normal(size=(steps, 4)),
                "rewards": rng.normal(size=steps),
                "env_infos": infos,
            }
        )
    return paths


def test_read_mujoco_vc_pickles_of_each_suite(tmp_path):
    for suite, key in (("adroit", "proprio"), ("metaworld", "gripper_proprio"), ("dmc", None)):
        (tmp_path / f"{suite}-expert-v1.0").mkdir()
        paths = _mujoco_vc_paths(3, 5, key)
        (tmp_path / f"{suite}-expert-v1.0" / "task-v0.pickle").write_bytes(pickle.dumps(paths))
        demos = read_mujoco_vc(tmp_path, suite, "task-v0", num_demos=2)
        assert len(demos) == 2
        np.testing.assert_array_equal(demos[1].images, paths[1]["images"])
        np.testing.assert_allclose(demos[1].actions, paths[1]["actions"], rtol=1e-6)
        assert demos[0].proprio.shape == ((5, 4) if key else (5, 0))
        assert demos[0].success.tolist() == [False, False, False, True, True]


def test_released_pickles_that_run_code_are_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    file = tmp_path / "evil.pickle"
    file.write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(ValueError, match="refusing to load"):
        load_array_pickle(file)
    assert not (tmp_path / "pwned").exists()


def test_read_mujoco_vc_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="adroit-expert-v1.0.zip"):
        read_mujoco_vc(tmp_path, "adroit", "pen-v0")
    (tmp_path / "adroit-expert-v1.0").mkdir()
    paths = _mujoco_vc_paths(1, 3, None)  # Adroit's paths carry env_infos["proprio"]
    (tmp_path / "adroit-expert-v1.0" / "pen-v0.pickle").write_bytes(pickle.dumps(paths))
    with pytest.raises(ValueError, match="env_infos has no 'proprio'"):
        read_mujoco_vc(tmp_path, "adroit", "pen-v0")


def test_read_trifinger_downsampled_demos(tmp_path):
    rng = np.random.default_rng(2)
    stats = {"train_demo_stats": [], "test_demo_stats": []}
    for i, split in enumerate(("train", "train", "test")):
        rel = f"reach/demo-{i:04d}/dts-0p4"
        (tmp_path / "trifinger-demos" / rel).mkdir(parents=True)
        traj = {
            "t": np.arange(6)[:, None],
            "image_60": rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8),
            "ft_pos_cur": rng.normal(size=(6, 9)),
            "delta_ftpos": rng.normal(size=(6, 9)),
        }
        torch.save(traj, tmp_path / "trifinger-demos" / rel / "downsample.pth")
        stats[f"{split}_demo_stats"].append({"path": rel, "diff": 110, "id": i})
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    train = read_trifinger(tmp_path, tmp_path / "stats.json", "train")
    test = read_trifinger(tmp_path, tmp_path / "stats.json", "test")
    assert len(train) == 2 and len(test) == 1
    assert (
        train[0].proprio.shape == (6, 9) and train[0].actions.shape == (6, 9) and train[0].images.shape == (6, 8, 8, 3)
    )


def test_robot_config_validates():
    with pytest.raises(ConfigError, match="drawer-open-v3"):
        load_config(ROOT / "params.yaml", ["robot.tasks=[drawer-open-v2]"])
    with pytest.raises(ConfigError, match="stats_json"):
        load_config(ROOT / "params.yaml", ["robot.released={trifinger: {root: x, tasks: [reach_cube]}}"])
    with pytest.raises(ConfigError, match="horizon"):
        load_config(ROOT / "params.yaml", ["robot.horizon=501"])


# --- the stage -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A baseline and a 'boosted' tiny DINOv2 VLM, saved as the train stage saves them."""
    root = tmp_path_factory.mktemp("robot")
    tok = train_tiny_tokenizer(root / "tok")
    save_trained(tiny_vlm(tok, family="dinov2", seed=0), tok, root / "init")
    save_trained(tiny_vlm(tok, family="dinov2", seed=1), tok, root / "boost")
    return root


def tiny_overrides(root: Path, tasks: str = "[drawer-open-v3]") -> list[str]:
    return [
        f"train.init={root / 'init' / 'vlm'}",
        f"train.output={root / 'boost'}",
        "train.replicate_seeds=[]",
        f"robot.tasks={tasks}",
        "robot.demos=2",
        "robot.horizon=100",
        "robot.image_size=32",
        "robot.epochs=4",
        "robot.eval_every=2",
        "robot.eval_episodes=2",
        "robot.seeds=[1,2]",
        f"robot.output={root / 'out'}",
        f"robot.demo_dir={root / 'demos'}",
        f"orchestration.metrics_dir={root / 'metrics'}",
    ]


def test_robot_learning_end_to_end(tiny_run):
    cfg = load_config(ROOT / "params.yaml", tiny_overrides(tiny_run))
    units = plan_units(cfg)
    assert [(u.run, u.seed) for u in units] == [(r, s) for r in ("floor", "baseline", "boosted") for s in (1, 2)]
    result = robot_learning(cfg)
    metrics = result["metrics"]
    for run in ("floor", "baseline", "boosted"):
        records = result["runs"]["drawer-open-v3"][run]
        assert [r["seed"] for r in records] == [1, 2]
        assert all(set(r["evaluations"]) == {"2", "4"} for r in records)  # epochs 2 and 4
        assert all(len(r["losses"]) == 4 and r["losses"][-1] < r["losses"][0] for r in records)
        assert 0.0 <= metrics["metaworld"][run]["mean"] <= 100.0 and metrics["metaworld"][run]["n"] == 2
    assert metrics["verdict"]["metaworld"]["verdict"] in ("better", "worse", "no effect")
    out = tiny_run / "out"
    report = (out / "report.md").read_text()
    assert "| boosted encoder |" in report and "drawer-open" in report and "Beside the paper" not in report
    assert (out / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())["protocol"]["seeds"] == [1, 2]
    # the same seeds give the same numbers: the demonstrations come from the cache, the runs are seeded
    again = robot_learning(cfg)
    assert again["runs"] == result["runs"]


def test_robot_flow_runs_units_on_the_thread_runner(tiny_run):
    """The DVC stage's command: two tasks' units on Prefect's thread runner in one process (MuJoCo
    GL contexts and model imports from worker threads), metrics/robot.json written."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    args = [f"--set={o}" for o in tiny_overrides(tiny_run, "[drawer-open-v3,button-press-topdown-v3]")]
    done = subprocess.run(
        [sys.executable, "-m", "flows.robot", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tiny_run / "metrics" / "robot.json").read_text())
    assert set(metrics["tasks"]) == {"drawer-open-v3", "button-press-topdown-v3"}
    assert set(metrics["metaworld"]) == {"floor", "baseline", "boosted"}


def test_summary_and_paper_report_beside_table_2(tmp_path):
    """Per-task and over-task means over seeds, the verdict against the larger spread, and the
    paper's Table 2 rows of the encoder's family in the paper profile."""
    from spatialboost.evaluate.robot.protocol import summarise
    from spatialboost.evaluate.robot.report import write_robot_report

    def records(scores):
        return [{"seed": s, "best": b, "final": b, "evaluations": {"5": b}, "losses": [1.0]} for s, b in scores]

    per_task = {
        "drawer-open-v3": {"baseline": records([(1, 40.0), (2, 50.0)]), "boosted": records([(1, 90.0), (2, 100.0)])},
        "hammer-v3": {"baseline": records([(1, 20.0), (2, 30.0)]), "boosted": records([(1, 20.0), (2, 40.0)])},
    }
    metrics = summarise(per_task)
    assert metrics["tasks"]["drawer-open-v3"]["boosted"]["mean"] == 95.0
    assert metrics["metaworld"]["baseline"]["mean"] == 35.0  # seed 1: (40 + 20) / 2, seed 2: (50 + 30) / 2
    assert metrics["metaworld"]["boosted"]["mean"] == 62.5
    assert metrics["verdict"]["drawer-open-v3"]["verdict"] == "better"  # +50, spread 7.1
    assert metrics["verdict"]["hammer-v3"]["verdict"] == "no effect"  # +5, spread 14.1 (boosted's, the larger)
    protocol = {
        "seeds": [1, 2],
        "demos": 25,
        "eval_episodes": 25,
        "horizon": 500,
        "eval_every": 5,
        "epochs": 100,
        "image_size": 256,
        "camera": "corner",
        "history": 3,
        "hidden_sizes": [256, 256, 256],
    }
    report = write_robot_report(metrics, per_task, protocol, tmp_path, paper_encoder="DINOv2").read_text()
    assert "paper: DINOv2 | 36.8 ± 3.5 | 62.6 ± 1.8 | 48.4 ± 1.4 | 62.3 ± 0.4" in report
    assert "paper: DINOv2 + SpatialBoost | 50.1 ± 3.0 | 66.5 ± 2.1" in report
    assert "| ours: boosted encoder | not run | 62.5 ± 10.6 | not run | not run |" in report
    assert "better (Δ +50.0)" in report


def test_a_damaged_demonstration_cache_is_made_again(tmp_path):
    from spatialboost.evaluate.robot.protocol import cached_demonstrations

    cfg = load_config(ROOT / "params.yaml", ["robot.demos=1", "robot.horizon=100", f"robot.demo_dir={tmp_path}"])
    task = MetaWorldTask("drawer-open-v3", image_size=16)
    first = cached_demonstrations(task, cfg.robot)
    (cache,) = tmp_path.glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated by hand
    with pytest.warns(UserWarning, match="unreadable"):
        again = cached_demonstrations(task, cfg.robot)
    np.testing.assert_array_equal(first[0].actions, again[0].actions)
    assert len(load_demonstrations(cache)) == 1
