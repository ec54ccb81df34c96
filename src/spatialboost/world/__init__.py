"""The procedural 3D world: random scenes of simple shapes, rendered by exact ray casting.

It is the demo's data and the test suite's ground truth: every depth, mask and 3D box is
known exactly.

    scene = sample_scene(cfg, scene_rng(cfg, "train", 0))
    rendering = render_scene(scene, cfg.width, cfg.height)
    render_dataset(cfg, Path(cfg.root))   # the docs/dataset-format.md layout
"""

from spatialboost.world.annotate import annotation
from spatialboost.world.dataset import render_dataset
from spatialboost.world.render import Rendering, render_scene
from spatialboost.world.scene import COLOURS, Camera, Object3D, Scene, sample_scene, scene_rng
from spatialboost.world.shapes import SHAPES

__all__ = [
    "COLOURS",
    "SHAPES",
    "Camera",
    "Object3D",
    "Rendering",
    "Scene",
    "annotation",
    "render_dataset",
    "render_scene",
    "sample_scene",
    "scene_rng",
]
