"""Amodal boxes (geometry/completion.py) against exact ground truth.

Scenes are the world's own shapes, placed by hand and ray-cast exactly (world/render.py), then
measured through the extraction's real path (`build_scene`). The prior is exact for round and
square footprints, so those boxes must come back within what the pixels allow (the object's
pixel footprint at its distance); the visible-surface box of the same objects is far off, so the
checks can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from spatialboost.config import ObjectGeometryConfig
from spatialboost.extract.crops import mask_bbox
from spatialboost.extract.protocols import Label, Mask, Observation
from spatialboost.extract.records import Provenance, SceneRecord
from spatialboost.extract.scene import build_scene
from spatialboost.geometry import CompletionParams, complete_box
from spatialboost.world import COLOURS, Camera, Object3D, Scene, render_scene

SIZE_PX = 256
CAMERA = Camera(height_m=1.4, pitch_deg=-14.0, roll_deg=3.0, fov_deg=60.0)


def obj(label: str, forward_m: float, left_m: float, size: tuple[float, float, float], yaw: float = 0.0) -> Object3D:
    return Object3D(label, "red", COLOURS["red"], (forward_m, left_m, size[2] / 2), size, yaw)


def scene_of(*objects: Object3D, camera: Camera = CAMERA) -> Scene:
    return Scene(camera, tuple(objects), (0.3, 0.2, 0.9), ((0.5, 0.5, 0.5), (0.4, 0.4, 0.4)), 0.0, 0)


def measure(scene: Scene, geometry: ObjectGeometryConfig | None = None) -> SceneRecord:
    """The scene through the extraction's own path, dataset gravity and exact depth."""
    rendering = render_scene(scene, SIZE_PX, SIZE_PX)
    fx, fy, cx, cy = rendering.intrinsics
    masks, labels = [], []
    for k, item in enumerate(scene.objects, start=1):
        mask = rendering.instances == k
        masks.append(Mask(mask=mask, score=1.0, stability=1.0, bbox=mask_bbox(mask)))
        labels.append(Label(name=item.label, score=1.0, top_k=((item.label, 1.0),)))
    n = len(scene.objects)
    observation = Observation(
        image_id="hand-made", uri="", image=rendering.rgb, depth=rendering.depth, fx=fx, fy=fy, cx=cx, cy=cy,
        focal_source="dataset", masks=tuple(masks), labels=tuple(labels), object_ids=tuple(range(1, n + 1)),
        colours=(None,) * n, gravity_cam=rendering.gravity_cam, provenance=Provenance(backend="ground_truth"),
    )  # fmt: skip
    record = build_scene(observation, geometry or ObjectGeometryConfig(), np.random.default_rng(0))
    assert isinstance(record, SceneRecord), record
    return record


def true_size(item: Object3D) -> np.ndarray:
    """(length, width, height): the footprint's sides (longer first) and the height."""
    return np.array([max(item.size[:2]), min(item.size[:2]), item.size[2]])


def pixel_m(distance_m: float) -> float:
    fx = CAMERA.intrinsics(SIZE_PX, SIZE_PX)[0]
    return distance_m / fx


ROUND_AND_SQUARE = (
    obj("sphere", 4.0, 0.9, (0.8, 0.8, 0.8)),
    obj("cube", 5.0, -1.0, (0.7, 0.7, 0.7), yaw=0.35),
    obj("cylinder", 6.5, 0.3, (0.9, 0.9, 1.2)),
    obj("cube", 3.2, -0.2, (0.5, 0.5, 0.5), yaw=0.0),
)


def test_round_and_square_footprints_come_back_whole() -> None:
    record = measure(scene_of(*ROUND_AND_SQUARE))
    assert [o.object_id for o in record.objects] == [1, 2, 3, 4]
    for item, measured in zip(ROUND_AND_SQUARE, record.objects, strict=True):
        distance = float(np.linalg.norm(np.asarray(item.center) - CAMERA.position))
        slack = 3 * pixel_m(distance)  # a pixel at each silhouette edge, and one of depth sampling
        np.testing.assert_allclose(measured.box.size, true_size(item), atol=slack, err_msg=item.label)
        assert measured.center_distance_m == pytest.approx(distance, abs=slack), item.label
        assert measured.box.center[2] == pytest.approx(item.center[2], abs=slack), item.label
        assert measured.evidence.ground_contact and measured.box.center[2] - measured.box.size[2] / 2 == pytest.approx(
            0, abs=1e-6
        )
    sphere = record.objects[0]
    visible_depth = min(sphere.evidence.visible_size[:2])
    assert visible_depth < 0.65 * 0.8  # the visible surface alone: barely more than half the sphere deep
    assert sphere.evidence.completion in ("round_prior", "free_space")


def test_pair_distances_are_between_whole_objects() -> None:
    record = measure(scene_of(*ROUND_AND_SQUARE))
    centers = {o.object_id: np.asarray(o.box.center) for o in record.objects}
    for i, j in ((1, 2), (1, 3), (2, 4), (3, 4)):
        a, b = ROUND_AND_SQUARE[i - 1], ROUND_AND_SQUARE[j - 1]
        true = float(np.linalg.norm(np.subtract(a.center, b.center)))
        slack = 3 * pixel_m(float(np.linalg.norm(np.asarray(a.center) - CAMERA.position))) + 3 * pixel_m(
            float(np.linalg.norm(np.asarray(b.center) - CAMERA.position)))  # fmt: skip
        assert float(np.linalg.norm(centers[i] - centers[j])) == pytest.approx(true, abs=slack)


def test_the_nearest_object_is_the_nearest_whole_object() -> None:
    """A big sphere's front is nearer than a small cube's, but its centre is farther: "nearest"
    compares objects (their centres), not the visible surfaces."""
    big, small = obj("sphere", 4.5, 0.8, (1.8, 1.8, 1.8)), obj("cube", 4.1, -0.9, (0.3, 0.3, 0.3))
    record = measure(scene_of(big, small))
    sphere, cube = record.objects
    assert sphere.nearest_distance_m < cube.nearest_distance_m  # the surfaces say the sphere
    assert cube.center_distance_m < sphere.center_distance_m  # the objects say the cube, as the truth does
    assert np.linalg.norm(np.asarray(small.center) - CAMERA.position) < np.linalg.norm(
        np.asarray(big.center) - CAMERA.position
    )
    sphere, cube = measure(scene_of(big, small), ObjectGeometryConfig(box_completion="visible")).objects
    assert sphere.center_distance_m < cube.center_distance_m  # visible-surface boxes got this wrong


def test_visible_mode_keeps_the_visible_surface_box() -> None:
    record = measure(scene_of(ROUND_AND_SQUARE[0]), ObjectGeometryConfig(box_completion="visible"))
    (sphere,) = record.objects
    assert sphere.evidence.completion == "visible" and not sphere.evidence.ground_contact
    np.testing.assert_allclose(sphere.box.size, sphere.evidence.visible_size, atol=1e-6)
    assert min(sphere.box.size[:2]) < 0.65 * 0.8


def test_free_space_pulls_in_the_far_side_of_an_object_seen_broadside() -> None:
    """A lying capsule broadside, seen from above: the round prior would make it as deep as it is
    long; the image shows the ground just behind its top, so the far side comes nearer."""
    capsule = obj("capsule", 4.0, 0.0, (1.8, 0.4, 0.4), yaw=np.pi / 2)  # its axis across the view
    high = Camera(height_m=2.2, pitch_deg=-25.0, roll_deg=0.0, fov_deg=60.0)
    record = measure(scene_of(capsule, camera=high))
    (measured,) = record.objects
    assert measured.evidence.completion == "free_space"
    distance = float(np.linalg.norm(np.asarray(capsule.center) - high.position))
    assert measured.center_distance_m - distance < 0.25 * (1.8 - 0.4) / 2  # the prior alone: (1.8 - 0.4) / 2 too far


def cap_points(radius: float, center: np.ndarray, camera: np.ndarray, n: int = 800, seed: int = 0) -> np.ndarray:
    """(n, 3) points of the half of a sphere facing the camera."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[(v @ (camera - center)) < 0] *= -1
    return center + radius * v


def test_support_test_extends_only_objects_that_rest_on_the_ground() -> None:
    camera = np.array([0.0, 0.0, 1.5])
    resting = cap_points(0.4, np.array([0.0, 4.0, 0.4]), camera)
    resting = resting[resting[:, 2] > 0.1]  # its underside is hidden: the lowest visible point is 10 cm up
    floating = cap_points(0.4, np.array([0.0, 4.0, 1.6]), camera)  # a lamp hanging 1.2 m up
    on_ground = complete_box(resting, camera, ground_known=True)
    assert on_ground.ground_contact and on_ground.box.bottom_z == 0.0
    in_air = complete_box(floating, camera, ground_known=True)
    assert not in_air.ground_contact and in_air.box.bottom_z == pytest.approx(floating[:, 2].min())
    unknown_ground = complete_box(resting, camera, ground_known=False)
    assert not unknown_ground.ground_contact


def test_no_extent_is_below_a_pixel() -> None:
    camera = np.zeros(3)
    pixel_angle = 1 / 500.0
    for points in (np.array([[0.0, 5.0, 1.0]]), np.array([[0.0, 5.0, 1.0], [0.3, 5.0, 1.0]])):
        for params in (CompletionParams(), CompletionParams(enabled=False)):
            box = complete_box(points, camera, ground_known=False, pixel_angle_rad=pixel_angle, params=params).box
            assert min(box.size) >= 5.0 * pixel_angle - 1e-12


def test_completion_is_mirror_and_scale_equivariant() -> None:
    camera = np.array([0.2, 0.0, 1.3])
    points = cap_points(0.5, np.array([1.0, 5.0, 0.5]), camera, seed=3)
    base = complete_box(points, camera, ground_known=True, pixel_angle_rad=0.002)
    flip = np.array([-1.0, 1.0, 1.0])
    mirrored = complete_box(points * flip, camera * flip, ground_known=True, pixel_angle_rad=0.002)
    np.testing.assert_allclose(mirrored.box.center, base.box.center * flip, atol=1e-9)
    np.testing.assert_allclose(mirrored.box.size, base.box.size, atol=1e-9)
    scaled = complete_box(points * 2.5, camera * 2.5, ground_known=True, pixel_angle_rad=0.002)
    np.testing.assert_allclose(scaled.box.center, base.box.center * 2.5, atol=1e-9)
    np.testing.assert_allclose(scaled.box.size, base.box.size * 2.5, atol=1e-9)
    assert scaled.method == base.method and scaled.ground_contact == base.ground_contact
