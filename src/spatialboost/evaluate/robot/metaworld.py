"""MetaWorld tasks for behaviour cloning: seeded environments, scripted experts, fast CPU rendering.

    task = MetaWorldTask("drawer-open-v3", image_size=64, camera="corner")
    demos = generate_demonstrations(task, count=25, seed=0, horizon=500)
    success = task.rollout(policy.act_fn(), embed, episodes=25, horizon=500, history=3, seed=100)

Where this follows CortexBench and where it cannot (its MetaWorld is v2 under mujoco-py; the
`metaworld` package on PyPI is v3 under the `mujoco` bindings):
- tasks: CortexBench's five (assembly, bin-picking, button-press-topdown, drawer-open, hammer),
  as their v3 environments;
- every reset draws a new object/goal placement from the environment's seeded generator
  (CortexBench sets `_freeze_rand_vec = False` on the goal-observable v2 classes); the expert sees
  the full state, the policy only the frame and the proprioception (hand xyz + gripper opening,
  obs[:4], CortexBench's `get_proprioception`);
- demonstrations come from metaworld's scripted expert policies instead of the released
  `metaworld-expert-v1.0` pickles (those are read by cortexbench.py when a user has them);
- camera: v3 has no `top_cap2` (a camera of CortexBench's MetaWorld fork); "corner" is v3's
  front-corner view of the table;
- success: the success flag of the episode's last step, as CortexBench's compute_metrics_from_paths.

Rendering: MuJoCo renders offscreen through EGL (Mesa's llvmpipe on a CPU machine) or OSMesa, in a
context of its own (MUJOCO_GL, which mujoco reads once at import, does not matter). Shadows,
reflections and multisampling are switched off: on llvmpipe they cost ~118 ms per 64 x 64 frame,
without them ~13 ms (measured on 2 cores, benchmarks/results/robot_learning.md), and the frame's
content (object placement, arm pose) is the same.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import metaworld
import mujoco
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from spatialboost.config import METAWORLD_TASKS
from spatialboost.evaluate.robot.policy import ActFn, Demonstration, Embedder, flare_features

CORTEXBENCH_TASKS = METAWORLD_TASKS  # CortexBench's five, named in the config schema (robot.tasks' default)
PROPRIO_DIMS = 4  # obs[:4]: hand position (3) and gripper opening (1)


GL_BACKENDS = ("egl", "osmesa")
_GL_LOCK = threading.Lock()  # mujoco.egl shares one EGL display per process: contexts are made and freed one at a time


def _gl_context(backend: str, size: int) -> Any:
    """An offscreen OpenGL context of `backend`, current in this thread; independent of MUJOCO_GL
    (which mujoco reads once, at import, for its own Renderer)."""
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        raise ValueError(f"unknown GL backend {backend!r}; known: {GL_BACKENDS}")
    context = GLContext(size, size)
    context.make_current()
    return context


class FastRenderer:
    """Offscreen RGB frames of one environment's model from one camera, through MuJoCo's own
    renderer (mjv_updateScene + mjr_render) without shadows, reflections or multisampling."""

    def __init__(self, model: Any, size: int, camera: str, backend: str = "egl") -> None:
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if camera_id < 0:
            cameras = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"no camera {camera!r} in this MetaWorld model; it has {cameras}")
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        self._mujoco, self._model, self._size = mujoco, model, size
        with _GL_LOCK:
            self._context = _gl_context(backend, size)
            self._gpu = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._gpu)
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._camera = mujoco.MjvCamera()
        self._camera.type, self._camera.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, camera_id
        self._option, self._perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        self._rect = mujoco.MjrRect(0, 0, size, size)

    def __call__(self, data: Any) -> np.ndarray:
        """The camera's view of `data` now: (size, size, 3) uint8, top row first."""
        mj = self._mujoco
        self._context.make_current()
        mj.mjv_updateScene(
            self._model, data, self._option, self._perturb, self._camera, mj.mjtCatBit.mjCAT_ALL, self._scene
        )
        mj.mjr_render(self._rect, self._scene, self._gpu)
        rgb = np.empty((self._size, self._size, 3), dtype=np.uint8)
        mj.mjr_readPixels(rgb, None, self._rect, self._gpu)
        rgb = rgb[::-1]  # OpenGL's rows start at the bottom
        if data.cam_xmat[self._camera.fixedcamid][7] < 0:  # the camera's up axis points down (v3's corner
            rgb = rgb[::-1, ::-1]  # cameras are mounted so): turn the frame upright, as a real camera would
        return np.ascontiguousarray(rgb)

    def close(self) -> None:
        with _GL_LOCK:
            self._context.make_current()
            self._gpu.free()
            self._context.free()


@dataclass(frozen=True)
class MetaWorldTask:
    """One MetaWorld task rendered at `image_size` from `camera`."""

    name: str
    image_size: int = 256  # CortexBench renders 256 x 256; the encoder's preprocessing resizes
    camera: str = "corner"
    gl: str = "egl"  # offscreen OpenGL: egl (Mesa's llvmpipe on a CPU machine, or a GPU) or osmesa

    def __post_init__(self) -> None:
        if self.name not in metaworld.ALL_V3_ENVIRONMENTS:
            known = ", ".join(sorted(metaworld.ALL_V3_ENVIRONMENTS))
            raise ValueError(f"unknown MetaWorld task {self.name!r}; v3 tasks: {known}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")

    @contextmanager
    def environment(self, seed: int) -> Iterator[tuple[Any, FastRenderer]]:
        """A seeded environment (a fresh placement on every reset) and its renderer, closed on exit."""
        env_class = metaworld.ALL_V3_ENVIRONMENTS[self.name]
        env = env_class()
        env.seeded_rand_vec = True  # placements drawn from the env's own generator, so seeds reproduce
        env.seed(seed)
        env._freeze_rand_vec = False
        first = env._get_state_rand_vec()
        # A task as MT1 makes one (metaworld._make_tasks), without MT1's 50 pre-drawn placements:
        # goal-observable state for the scripted expert.
        task = dict(env_cls=env_class, rand_vec=first, partially_observable=False)
        env.set_task(metaworld.Task(env_name=self.name, data=pickle.dumps(task)))
        env._freeze_rand_vec = False  # CortexBench: a new placement on every reset (set_task froze it)
        renderer = FastRenderer(env.model, self.image_size, self.camera, self.gl)
        try:
            yield env, renderer
        finally:
            renderer.close()
            env.close()

    def expert(self) -> Any:
        """metaworld's scripted policy for this task: get_action(state obs) -> action."""
        return ENV_POLICY_MAP[self.name]()

    @staticmethod
    def proprio(obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs[:PROPRIO_DIMS], dtype=np.float32)

    def rollout(
        self, act: ActFn, embed: Embedder, *, episodes: int, horizon: int, history: int, seed: int
    ) -> np.ndarray:
        """Success of `episodes` episodes of the policy `act` (bool, last step's flag), placements from `seed`."""
        successes = np.zeros(episodes, dtype=bool)
        blind = getattr(embed, "blind", False)  # the floor sees no frame: nothing to render
        with self.environment(seed) as (env, render):
            for episode in range(episodes):
                obs, _ = env.reset()
                embeddings: list[np.ndarray] = []
                info: dict[str, Any] = {}
                for _ in range(min(horizon, env.max_path_length)):
                    embeddings.append(np.zeros(0, np.float32) if blind else embed(render(env.data)[None])[0])
                    recent = np.stack(embeddings[-history:])  # flare_features repeats the first frame
                    feature = np.concatenate([flare_features(recent, history)[-1], self.proprio(obs)])
                    action = np.clip(act(feature[None])[0], -1.0, 1.0)
                    obs, _, _, _, info = env.step(action)
                successes[episode] = bool(info.get("success", 0.0))
        return successes


def generate_demonstrations(
    task: MetaWorldTask, count: int, seed: int, horizon: int = 500, max_attempts: int | None = None
) -> list[Demonstration]:
    """`count` successful episodes of the scripted expert, each `horizon` steps, rendered frames.

    An episode counts when its last step succeeds (the evaluation's rule); failures are retried
    with the next placement, up to `max_attempts` (default 2 * count) before a clear error.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    max_attempts = max_attempts or 2 * count
    expert, demos, attempts = task.expert(), [], 0
    with task.environment(seed) as (env, render):
        steps = min(horizon, env.max_path_length)
        while len(demos) < count:
            if attempts == max_attempts:
                raise RuntimeError(
                    f"{task.name}: the scripted expert succeeded in {len(demos)} of {attempts} episodes of "
                    f"{steps} steps; {count} demonstrations were asked (a longer horizon may be needed)"
                )
            attempts += 1
            obs, _ = env.reset()
            frames, proprio, actions, success = [], [], [], []
            for _ in range(steps):
                frames.append(render(env.data))
                proprio.append(task.proprio(obs))
                action = np.clip(expert.get_action(obs), -1.0, 1.0).astype(np.float32)
                obs, _, _, _, info = env.step(action)
                actions.append(action)
                success.append(bool(info["success"]))
            if success[-1]:
                demos.append(Demonstration(np.stack(frames), np.stack(proprio), np.stack(actions), np.array(success)))
    return demos
