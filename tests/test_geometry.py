"""Tests of spatialboost.geometry: camera model, canonical frame, cleaning, boxes, relations.

The synthetic scene is ray-cast here, independently of world/: a ground plane z = 0 and
yawed boxes resting on it, seen by a camera at (0, 0, height) whose canonical frame is the
world frame (psi = 0 in `rotation_cam_from_canonical`), so recovered canonical boxes can be
compared with the world boxes directly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialboost.geometry import (
    CanonicalFrame,
    GroundPlane,
    NoGroundPlane,
    OrientedBox,
    OutlierParams,
    axis_aligned_box,
    canonical_frame,
    canonical_frame_from_gravity,
    fit_ground_plane_ransac,
    fit_plane_least_squares,
    gravity_from_pitch_roll,
    intrinsics_matrix,
    largest_cluster_mask,
    mean_knn_distance,
    mean_knn_distance_naive,
    measure_object,
    min_area_rectangle,
    min_area_rectangle_naive,
    object_confidence,
    oriented_box,
    pitch_roll_from_gravity,
    project,
    radius_components,
    radius_components_naive,
    relate,
    remove_outliers,
    rotation_cam_from_canonical,
    statistical_inlier_mask,
    unproject,
    unproject_masked,
    wrap_half_turn,
)
from spatialboost.geometry.objects import ObjectEvidence

FAST = settings(max_examples=25, deadline=None)


# ---------------------------------------------------------------------------------------------
# A tiny ray caster: ground + boxes, exact z-depth and instance ids.


@dataclass(frozen=True)
class SceneBox:
    center_xy: tuple[float, float]
    size: tuple[float, float, float]  # along the box's own x, y and z, metres
    yaw_rad: float

    @property
    def center(self) -> np.ndarray:
        return np.array([*self.center_xy, self.size[2] / 2])


@dataclass(frozen=True)
class Rendering:
    depth: np.ndarray  # (H, W) metres, 0 = sky
    instances: np.ndarray  # (H, W) int, 0 = ground or sky, k = boxes[k - 1]
    intrinsics: tuple[float, float, float, float]


BOXES = (
    SceneBox((-1.6, 5.0), (1.2, 0.6, 0.9), 0.4),
    SceneBox((0.6, 6.5), (1.0, 0.5, 0.5), -0.9),
    SceneBox((2.2, 4.2), (0.9, 0.45, 1.1), 1.3),
)


def render(pitch_deg: float, roll_deg: float, height_m: float, boxes=BOXES, size_px: int = 128) -> Rendering:
    """Depth and instances of boxes on the ground z = 0, seen from (0, 0, height_m); 60 deg fov."""
    fx = (size_px / 2) / np.tan(np.radians(30.0))
    cx = cy = size_px / 2
    v, u = np.mgrid[0:size_px, 0:size_px] + 0.5
    rays_cam = np.stack([(u - cx) / fx, (v - cy) / fx, np.ones_like(u)], axis=-1).reshape(-1, 3)
    rays = rays_cam @ rotation_cam_from_canonical(pitch_deg, roll_deg)  # (P, 3) world; cam z = 1 so t = depth
    origin = np.array([0.0, 0.0, height_m])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(rays[:, 2] < 0, -height_m / rays[:, 2], np.inf)
    t_ground[t_ground > 40.0] = np.inf  # the far ground fades into sky
    depth, instances = t_ground, np.zeros(len(rays), dtype=np.int64)
    for k, box in enumerate(boxes, start=1):
        t_box = _ray_box(origin, rays, box)
        closer = t_box < depth
        depth, instances = np.where(closer, t_box, depth), np.where(closer, k, instances)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    return Rendering(depth.reshape(size_px, size_px), instances.reshape(size_px, size_px), (fx, fx, cx, cy))


def _ray_box(origin: np.ndarray, rays: np.ndarray, box: SceneBox) -> np.ndarray:
    """(P,) ray parameter of the first hit of the box (slab test in the box frame), inf if none."""
    c, s = np.cos(box.yaw_rad), np.sin(box.yaw_rad)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # box axes -> world
    o = rotation.T @ (origin - box.center)
    d = rays @ rotation  # (P, 3) in the box frame
    half = np.array(box.size) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o) / d, (half - o) / d
    t_near = np.minimum(t1, t2).max(axis=1)
    t_far = np.maximum(t1, t2).min(axis=1)
    return np.where((t_far >= t_near) & (t_near > 0), t_near, np.inf)


def scene_points(rendering: Rendering, rng: np.random.Generator, noise_m: float = 0.0) -> np.ndarray:
    depth = rendering.depth.copy()
    valid = depth > 0
    depth[valid] += rng.normal(0.0, noise_m, size=valid.sum()) if noise_m else 0.0
    return unproject(depth, *rendering.intrinsics).reshape(-1, 3)


def object_points(rendering: Rendering, k: int) -> np.ndarray:
    return unproject_masked(rendering.depth, rendering.instances == k, *rendering.intrinsics)


def gt_length_width_yaw(box: SceneBox) -> tuple[float, float, float]:
    """The scene box in the OrientedBox convention: length >= width, yaw of the length axis."""
    lx, wy, _ = box.size
    if lx >= wy:
        return lx, wy, wrap_half_turn(box.yaw_rad)
    return wy, lx, wrap_half_turn(box.yaw_rad + np.pi / 2)


def yaw_error_deg(a: float, b: float) -> float:
    return float(np.degrees(abs(wrap_half_turn(a - b))))


# ---------------------------------------------------------------------------------------------
# Camera model


@FAST
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.floats(20.0, 2000.0),
    st.floats(20.0, 2000.0),
    st.floats(-50.0, 50.0),
    st.floats(-50.0, 50.0),
    st.integers(0, 2**32 - 1),
)
def test_unproject_project_round_trip(height, width, fx, fy, cx, cy, seed):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.05, 100.0, size=(height, width))
    depth[rng.random((height, width)) < 0.2] = np.nan
    points = unproject(depth, fx, fy, cx, cy)  # (H, W, 3)
    valid = np.isfinite(depth)
    np.testing.assert_allclose(points[..., 2][valid], depth[valid])
    assert np.isnan(points[~valid]).all()
    uv = project(points[valid], intrinsics_matrix(fx, fy, cx, cy))
    rows, cols = np.nonzero(valid)
    np.testing.assert_allclose(uv, np.stack([cols, rows], axis=1), atol=1e-6)
    mask = rng.random((height, width)) < 0.5
    np.testing.assert_allclose(unproject_masked(depth, mask, fx, fy, cx, cy), points[mask & valid])


def test_pixel_centre_convention():
    # K @ [X/Z, Y/Z, 1] = [u + 0.5, v + 0.5, 1]: the principal point is the corner between pixels.
    K = intrinsics_matrix(100.0, 100.0, 2.0, 2.0)
    np.testing.assert_allclose(project(np.array([[0.0, 0.0, 3.0]]), K), [[1.5, 1.5]])
    points = unproject(np.full((4, 4), 2.0), 100.0, 100.0, 2.0, 2.0)
    np.testing.assert_allclose(points[1, 2], [0.01, -0.01, 2.0])


def test_project_behind_camera_is_nan():
    uv = project(np.array([[0.0, 0.0, -1.0], [1.0, 1.0, 2.0]]), intrinsics_matrix(10, 10, 0, 0))
    assert np.isnan(uv[0]).all() and np.isfinite(uv[1]).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: unproject(np.ones(5), 1, 1, 0, 0), "2-D"),
        (lambda: unproject(np.ones((2, 2)), 0, 1, 0, 0), "positive"),
        (lambda: unproject(np.ones((2, 2)), 1, np.nan, 0, 0), "finite"),
        (lambda: unproject_masked(np.ones((2, 2)), np.ones((3, 2), bool), 1, 1, 0, 0), "mask shape"),
        (lambda: project(np.ones((4, 2)), np.eye(3)), r"\(N, 3\)"),
        (lambda: project(np.ones((4, 3)), np.eye(2)), r"\(3, 3\)"),
    ],
)
def test_camera_rejects_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_all_nan_depth_gives_no_points():
    depth = np.full((4, 5), np.nan)
    assert unproject_masked(depth, np.ones((4, 5), bool), 50, 50, 2.5, 2).shape == (0, 3)
    assert np.isnan(unproject(depth, 50, 50, 2.5, 2)).all()


# ---------------------------------------------------------------------------------------------
# Pitch / roll convention and the canonical frame


@FAST
@given(st.floats(-80.0, 80.0), st.floats(-170.0, 170.0))
def test_pitch_roll_gravity_round_trip(pitch, roll):
    gravity = gravity_from_pitch_roll(pitch, roll)
    np.testing.assert_allclose(pitch_roll_from_gravity(gravity), (pitch, roll), atol=1e-9)
    rotation, translation = canonical_frame_from_gravity(gravity, camera_height_m=1.7)
    np.testing.assert_allclose(rotation, rotation_cam_from_canonical(pitch, roll).T, atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation @ gravity, [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(translation, [0, 0, 1.7])


def test_pitch_roll_signs():
    # Looking down: gravity has a forward component. Positive roll: the right side dips.
    assert gravity_from_pitch_roll(-20.0, 0.0)[2] > 0
    rotation = rotation_cam_from_canonical(0.0, 10.0)
    assert rotation[0, 2] < 0  # camera x (row 0) in canonical coordinates points down a little


def test_convention_matches_world_camera():
    from spatialboost.world.scene import Camera

    psi = np.radians(-90.0)  # the world camera looks along world +x, so its right is world -y
    rz = np.array([[np.cos(psi), -np.sin(psi), 0], [np.sin(psi), np.cos(psi), 0], [0, 0, 1]])
    for pitch, roll in [(-15.0, 5.0), (-25.0, -8.0), (-5.0, 0.0)]:
        camera = Camera(height_m=1.5, pitch_deg=pitch, roll_deg=roll, fov_deg=60.0)
        np.testing.assert_allclose(camera.R_cam_from_world, rotation_cam_from_canonical(pitch, roll) @ rz.T, atol=1e-12)
        np.testing.assert_allclose(pitch_roll_from_gravity(camera.gravity_cam), (pitch, roll), atol=1e-9)


def test_straight_down_camera_still_gets_a_frame():
    rotation, _ = canonical_frame_from_gravity(np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rotation[2], [0, 0, -1])


@pytest.mark.parametrize("pitch, roll, height", [(-15.0, 5.0, 1.6), (-25.0, -8.0, 2.1), (-6.0, 2.0, 0.9)])
def test_ransac_recovers_pitch_roll_and_height(pitch, roll, height):
    rng = np.random.default_rng(0)
    rendering = render(pitch, roll, height)
    points = scene_points(rendering, rng, noise_m=0.005)
    frame = canonical_frame(points, None, rng=np.random.default_rng(1))
    assert frame.source == "ransac_plane"
    assert abs(frame.pitch_deg - pitch) < 0.5 and abs(frame.roll_deg - roll) < 0.5
    assert frame.camera_height_m == pytest.approx(height, abs=0.02)
    assert frame.plane is not None and frame.plane.residual_m < 0.01
    ground = (rendering.instances.ravel() == 0) & (rendering.depth.ravel() > 0)
    assert frame.plane.inliers[~ground].mean() < 0.05  # box faces are not the ground


def test_dataset_gravity_is_exact_and_plane_gives_height():
    pitch, roll, height = -18.0, 6.0, 1.4
    points = scene_points(render(pitch, roll, height), np.random.default_rng(0), noise_m=0.005)
    frame = canonical_frame(points, gravity_from_pitch_roll(pitch, roll), rng=np.random.default_rng(1))
    assert frame.source == "dataset_gravity"
    assert frame.pitch_deg == pytest.approx(pitch, abs=1e-9)
    assert frame.roll_deg == pytest.approx(roll, abs=1e-9)
    assert frame.camera_height_m == pytest.approx(height, abs=0.01)
    np.testing.assert_allclose(frame.camera_position, [0, 0, frame.camera_height_m])


def test_dataset_gravity_without_plane_puts_origin_at_camera():
    frame = canonical_frame(np.zeros((0, 3)), gravity_from_pitch_roll(-10, 0), rng=np.random.default_rng(0))
    assert frame.source == "dataset_gravity" and frame.camera_height_m is None
    assert "height unknown" in frame.reason
    np.testing.assert_allclose(frame.translation, 0.0)


def test_nan_gravity_means_unknown():
    points = scene_points(render(-15.0, 3.0, 1.5), np.random.default_rng(0))
    frame = canonical_frame(points, np.full(3, np.nan), rng=np.random.default_rng(0))
    assert frame.source == "ransac_plane"


@pytest.mark.parametrize(
    "points",
    [
        np.zeros((0, 3)),
        np.full((100, 3), np.nan),
        # A wall facing the camera: plenty of planar points, but never the ground.
        np.stack(np.meshgrid(np.linspace(-2, 2, 20), np.linspace(-2, 2, 20), [5.0]), -1).reshape(-1, 3),
        # A floating blob with no plane at all.
        np.random.default_rng(0).normal([0, 0, 5], 1.0, size=(300, 3)),
    ],
    ids=["empty", "all_nan", "wall", "blob"],
)
def test_no_plane_falls_back_to_camera_with_reason(points):
    found = fit_ground_plane_ransac(points, np.random.default_rng(0))
    assert isinstance(found, NoGroundPlane) and found.reason
    frame = canonical_frame(points, None, rng=np.random.default_rng(0))
    assert frame.source == "fallback_camera" and frame.plane is None
    assert "no ground plane" in frame.reason and found.reason in frame.reason
    np.testing.assert_allclose(frame.rotation, rotation_cam_from_canonical(0.0, 0.0).T, atol=1e-12)
    assert (frame.pitch_deg, frame.roll_deg) == (0.0, 0.0)


def test_plane_above_camera_is_rejected():
    # A ceiling 2 m above the camera, normal along camera up: admissible tilt, wrong side.
    xs, zs = np.meshgrid(np.linspace(-3, 3, 30), np.linspace(1, 8, 30))
    ceiling = np.stack([xs, np.full_like(xs, -2.0), zs], -1).reshape(-1, 3)
    assert isinstance(fit_ground_plane_ransac(ceiling, np.random.default_rng(0)), NoGroundPlane)
    floor = ceiling * [1, -1, 1]
    found = fit_ground_plane_ransac(floor, np.random.default_rng(0))
    assert isinstance(found, GroundPlane) and found.offset == pytest.approx(2.0)
    np.testing.assert_allclose(found.normal, [0, -1, 0], atol=1e-9)


def test_ground_wins_over_a_larger_wall():
    xs, zs = np.meshgrid(np.linspace(-3, 3, 20), np.linspace(1, 8, 20))
    floor = np.stack([xs, np.full_like(xs, 1.5), zs], -1).reshape(-1, 3)
    wall = np.stack(np.meshgrid(np.linspace(-4, 4, 40), np.linspace(-3, 1.5, 30), [8.5]), -1).reshape(-1, 3)
    found = fit_ground_plane_ransac(np.concatenate([wall, floor]), np.random.default_rng(0))
    assert isinstance(found, GroundPlane) and found.offset == pytest.approx(1.5)
    assert found.inliers[len(wall) :].all() and found.inliers[: len(wall)].sum() <= 40  # the wall's foot


def test_ransac_plane_is_least_squares_refined():
    rendering = render(-12.0, 4.0, 1.5)
    points = scene_points(rendering, np.random.default_rng(0), noise_m=0.01)
    found = fit_ground_plane_ransac(points, np.random.default_rng(3), threshold_m=0.03)
    assert isinstance(found, GroundPlane)
    normal, offset = fit_plane_least_squares(points[found.inliers])
    np.testing.assert_allclose(found.normal, normal, atol=1e-6)
    assert found.offset == pytest.approx(offset, abs=1e-6)
    distances = points[found.inliers] @ found.normal + found.offset
    assert found.residual_m == pytest.approx(np.sqrt(np.mean(distances**2)))
    assert 0.0 < found.residual_m < 0.01  # at most the depth noise: the ground is seen obliquely


# ---------------------------------------------------------------------------------------------
# Outlier removal


def test_outlier_removal_drops_far_points_and_small_cluster_keeps_object():
    rng = np.random.default_rng(0)
    rendering = render(-15.0, 5.0, 1.6)
    obj = object_points(rendering, 1)  # (N, 3) camera frame
    centre = obj.mean(axis=0)
    far = centre + rng.uniform(2.5, 5.0, size=(12, 3)) * rng.choice([-1, 1], size=(12, 3))  # flying pixels
    clump = centre + [0.5, 0.0, 3.0] + rng.normal(0.0, 0.05, size=(40, 3))  # mask bleed onto the background
    points = np.concatenate([obj, far, clump])
    kept = remove_outliers(points)
    assert not kept[len(obj) :].any()
    assert kept[: len(obj)].all()
    assert remove_outliers(points, OutlierParams(enabled=False)).all()
    # The statistical step alone drops the flying pixels; only the cluster step drops the clump.
    statistical = statistical_inlier_mask(points)
    assert not statistical[len(obj) : len(obj) + len(far)].any() and statistical[-len(clump) :].all()


def test_outlier_removal_degenerate_inputs():
    assert remove_outliers(np.zeros((0, 3))).shape == (0,)
    assert remove_outliers(np.ones((1, 3))).tolist() == [True]
    assert remove_outliers(np.array([[np.nan] * 3, [0, 0, 1.0]])).tolist() == [False, True]
    assert remove_outliers(np.ones((10, 3))).all()  # coincident points are one object
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        remove_outliers(np.ones((5, 2)))


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 10))
def test_knn_matches_naive_reference(seed, n, k):
    points = np.random.default_rng(seed).normal(size=(n, 3))
    np.testing.assert_allclose(mean_knn_distance(points, k), mean_knn_distance_naive(points, k), atol=1e-12)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 80), st.floats(0.05, 1.5))
def test_radius_components_match_naive_reference(seed, n, radius):
    points = np.random.default_rng(seed).uniform(0, 3, size=(n, 3))
    fast, naive = radius_components(points, radius), radius_components_naive(points, radius)
    # Same partition: two points share a label in one exactly when they do in the other.
    np.testing.assert_array_equal(fast[:, None] == fast[None, :], naive[:, None] == naive[None, :])


def _hard_cloud(rng: np.random.Generator, n: int, layout: str) -> tuple[np.ndarray, float]:
    """(n, 3) points and a distance that occurs in them exactly (a radius there is a tie)."""
    if layout == "blobs":  # dense cells: the k-d tree path of the grid
        centres = rng.uniform(0, 4, size=(int(rng.integers(1, 5)), 3))
        points = centres[rng.integers(0, len(centres), n)] + rng.normal(0, rng.uniform(0.02, 0.6), size=(n, 3))
    elif layout == "lattice":  # many pairs at exactly equal distances, many duplicates
        points = rng.integers(0, 4, size=(n, 3)) * 0.3
    elif layout == "duplicates":
        points = rng.uniform(0, 2, size=(n, 3))
        points[: n // 2] = points[n - n // 2 :][rng.permutation(n // 2)]  # copies of the other half
    else:  # "two_blobs": the gap between two clusters is the tie
        half, spread = n // 2, rng.uniform(0.02, 0.3)  # tight blobs make dense cells at the gap
        points = np.concatenate(
            [rng.normal(0, spread, size=(half, 3)), rng.normal([2, 0, 0], spread, size=(n - half, 3))]
        )
        if half and n - half:
            gaps = np.linalg.norm(points[:half, None] - points[None, half:], axis=-1)
            return points, float(gaps.min())
    if n < 2:
        return points, 1.0
    i, j = rng.integers(0, n, size=2)
    return points, float(np.linalg.norm(points[i] - points[j]))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 400),
    st.sampled_from(["blobs", "lattice", "duplicates", "two_blobs"]),
    st.sampled_from(["scale", "tie", "just_below", "just_above"]),
    st.floats(0.005, 3.0),
)
def test_radius_components_exactly_naive_on_hard_clouds(seed, n, layout, radius_kind, scale):
    """Same labels, not just the same partition, at ties and near-ties of the radius too."""
    points, tie = _hard_cloud(np.random.default_rng(seed), n, layout)
    radius = {
        "scale": scale,
        "tie": tie,
        "just_below": np.nextafter(tie, 0.0),
        "just_above": np.nextafter(tie, np.inf),
    }[radius_kind]
    np.testing.assert_array_equal(radius_components(points, radius), radius_components_naive(points, radius))


def test_radius_components_edge_cases():
    assert radius_components(np.zeros((0, 3)), 1.0).shape == (0,)
    assert radius_components(np.ones((1, 3)), 1.0).tolist() == [0]
    duplicates = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0.0]])
    assert radius_components(duplicates, 0.0).tolist() == [0, 1, 0, 1]
    assert radius_components(duplicates, np.inf).tolist() == [0, 0, 0, 0]
    # Cells of side r / sqrt(3) far too many to index: the pair-list path.
    spread = np.array([[0, 0, 0], [1e-4, 0, 0], [1e9, 0, 0], [1e9, 1e9, 1e9]])
    assert radius_components(spread, 1e-3).tolist() == [0, 0, 1, 2]
    for bad in (-1.0, np.nan):
        with pytest.raises(ValueError, match="radius_m"):
            radius_components(duplicates, bad)


def test_radius_components_tie_between_dense_cells():
    """Two dense blobs whose closest pair is exactly at the radius, or one ulp beyond it."""
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.normal(0, 0.05, size=(200, 3)), rng.normal([1, 0, 0], 0.05, size=(200, 3))])
    gap = float(np.linalg.norm(points[:200, None] - points[None, 200:], axis=-1).min())
    assert len(np.unique(radius_components(points, gap))) == 1
    assert len(np.unique(radius_components(points, np.nextafter(gap, 0.0)))) == 2
    for radius in (gap, np.nextafter(gap, 0.0)):
        np.testing.assert_array_equal(radius_components(points, radius), radius_components_naive(points, radius))


def test_radius_components_dense_object_matches_naive():
    """Thousands of points, radius ~2.5x the object's radius: the case the grid is for."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(1500, 3))
    sphere = 0.5 * directions / np.linalg.norm(directions, axis=1, keepdims=True) + [0, 0, 4]
    clump = rng.normal([0.0, 0.0, 5.5], 0.05, size=(30, 3))
    points = np.concatenate([sphere, clump])
    for radius in (0.05, 0.2, 0.99, 1.25):
        np.testing.assert_array_equal(radius_components(points, radius), radius_components_naive(points, radius))


def test_remove_outliers_unchanged_with_naive_cluster_step(monkeypatch):
    """The fast cluster step keeps exactly what the naive one keeps, on rendered objects."""
    from spatialboost.geometry import pointcloud

    rng = np.random.default_rng(0)
    rendering = render(-15.0, 5.0, 1.6)
    clouds = []
    for k in range(1, len(BOXES) + 1):
        obj = object_points(rendering, k)
        centre = obj.mean(axis=0)
        far = centre + rng.uniform(2.5, 5.0, size=(12, 3)) * rng.choice([-1, 1], size=(12, 3))
        clump = centre + [0.5, 0.0, 3.0] + rng.normal(0.0, 0.05, size=(40, 3))
        clouds += [obj, np.concatenate([obj, far, clump])]
    fast = [remove_outliers(points) for points in clouds]
    monkeypatch.setattr(pointcloud, "radius_components", radius_components_naive)
    for points, kept in zip(clouds, fast, strict=True):
        np.testing.assert_array_equal(kept, remove_outliers(points))


def test_largest_cluster_mask():
    points = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5, 0, 0], [5.1, 0, 0]], dtype=float)
    assert largest_cluster_mask(points, 0.15).tolist() == [True, True, True, False, False]


# ---------------------------------------------------------------------------------------------
# Boxes


def test_boxes_recovered_from_ransac_scene():
    """Boxes whose top and two sides are in view: the visible surface spans the whole box, so the
    visible-surface box is the box; the amodal one rests on the ground and is never smaller."""
    rendering = render(-15.0, 5.0, 1.6)
    points = scene_points(rendering, np.random.default_rng(0), noise_m=0.003)
    frame = canonical_frame(points, None, rng=np.random.default_rng(1))
    for k, box in enumerate(BOXES, start=1):
        measured = measure_object(object_points(rendering, k), frame)
        length, width, yaw = gt_length_width_yaw(box)
        visible = measured.completion.visible
        np.testing.assert_allclose(visible.center, box.center, atol=0.1)
        np.testing.assert_allclose(visible.size, [length, width, box.size[2]], atol=0.12)
        assert yaw_error_deg(visible.yaw_rad, yaw) < 4.0
        assert measured.box.bottom_z == pytest.approx(0.0, abs=1e-9) and measured.completion.ground_contact
        assert measured.box.length * measured.box.width >= visible.length * visible.width - 1e-9
        true_distance = np.linalg.norm(box.center - [0, 0, 1.6])
        assert np.linalg.norm(visible.center - frame.camera_position) == pytest.approx(true_distance, abs=0.1)
        # The round-footprint prior places a 2:1 footprint's axis too far by at most about
        # (length - width) / 2 (geometry/completion.py); it never pulls the box nearer.
        assert true_distance - 0.1 <= measured.center_distance_m <= true_distance + (length - width) / 2 + 0.1
        # The camera is the camera-frame origin, whatever the frame.
        nearest = np.linalg.norm(object_points(rendering, k)[measured.kept], axis=1).min()
        assert measured.nearest_distance_m == pytest.approx(nearest)
        assert measured.nearest_distance_m < measured.center_distance_m
        assert 0.5 < measured.confidence <= 1.0


@FAST
@given(
    st.floats(-5, 5),
    st.floats(-5, 5),
    st.floats(0.1, 3.0),
    st.floats(0.1, 3.0),
    st.floats(-np.pi, np.pi),
    st.integers(0, 2**32 - 1),
)
def test_oriented_box_of_box_samples(cx, cy, lx, wy, yaw, seed):
    """Points filling a known box give back that box (yaw up to the half-turn symmetry)."""
    rng = np.random.default_rng(seed)
    box = SceneBox((cx, cy), (lx, wy, 0.7), yaw)
    corners = np.array(list(itertools.product([-0.5, 0.5], repeat=3))) * box.size
    local = np.concatenate([corners, rng.uniform(-0.5, 0.5, size=(200, 3)) * box.size])
    c, s = np.cos(yaw), np.sin(yaw)
    points = local @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + box.center
    measured = oriented_box(points)
    length, width, true_yaw = gt_length_width_yaw(box)
    np.testing.assert_allclose(measured.center, box.center, atol=1e-9)
    np.testing.assert_allclose(measured.size, [length, width, 0.7], atol=1e-9)
    if length - width > 1e-6:  # a square footprint has a quarter-turn symmetry too
        assert yaw_error_deg(measured.yaw_rad, true_yaw) < 1e-6
    np.testing.assert_allclose(np.sort(measured.corners(), axis=0), np.sort(points[:8], axis=0), atol=1e-9)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(3, 60))
def test_min_area_rectangle_matches_brute_force(seed, n):
    xy = np.random.default_rng(seed).normal(size=(n, 2)) * [2.0, 0.7]
    center, length, width, yaw = min_area_rectangle(xy)
    _, naive_length, naive_width, _ = min_area_rectangle_naive(xy, n_angles=3600)
    area, naive_area = length * width, naive_length * naive_width
    assert area <= naive_area + 1e-12  # exact optimum is never beaten by a grid of angles
    # ... and a grid angle within half a step of the optimum is at most this much worse:
    # turning a rectangle by d changes each extent by at most its diagonal times d.
    slack = np.hypot(length, width) * (np.pi / 2) / 3600
    assert naive_area <= (length + slack) * (width + slack) + 1e-12
    assert length >= width and -np.pi / 2 <= yaw < np.pi / 2
    # Every point lies inside the returned rectangle.
    axis = np.array([np.cos(yaw), np.sin(yaw)])
    local = np.stack([(xy - center) @ axis, (xy - center) @ [-axis[1], axis[0]]], axis=1)
    assert (np.abs(local) <= np.array([length, width]) / 2 + 1e-9).all()


def test_boxes_degenerate_inputs():
    with pytest.raises(ValueError, match="at least one point"):
        oriented_box(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="finite"):
        axis_aligned_box(np.array([[np.nan, 0, 0]]))
    single = oriented_box(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(single.center, [1, 2, 3])
    assert single.size.tolist() == [0, 0, 0]
    pair = oriented_box(np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 1.0]]))
    assert pair.length == pytest.approx(5.0) and pair.width == pytest.approx(0.0, abs=1e-12)
    assert pair.yaw_rad == pytest.approx(np.arctan2(4, 3))
    np.testing.assert_allclose(axis_aligned_box(np.array([[0, 0, 0], [1, 2, 3.0]])).size, [1, 2, 3])


def test_measure_object_rejects_no_valid_depth():
    frame = canonical_frame(np.zeros((0, 3)), None, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no point with valid depth"):
        measure_object(np.full((7, 3), np.nan), frame)
    with pytest.raises(ValueError, match="no point with valid depth"):
        measure_object(np.zeros((0, 3)), frame)


def test_confidence_formula():
    good = ObjectEvidence(0.05, 0.005, "ransac_plane", "dataset", n_points=400, n_kept=400)
    assert 0.8 < object_confidence(good) <= 1.0
    worse = [
        ObjectEvidence(0.05, 0.005, "ransac_plane", "dataset", n_points=20, n_kept=20),  # few points
        ObjectEvidence(0.05, 0.005, "ransac_plane", "dataset", n_points=400, n_kept=200),  # half dropped
        ObjectEvidence(0.9, 0.005, "ransac_plane", "dataset", n_points=400, n_kept=400),  # spread
        ObjectEvidence(0.05, 0.08, "ransac_plane", "dataset", n_points=400, n_kept=400),  # bad plane
        ObjectEvidence(0.05, None, "fallback_camera", "dataset", n_points=400, n_kept=400),  # no up
        ObjectEvidence(0.05, 0.005, "ransac_plane", "default", n_points=400, n_kept=400),  # guessed focal
    ]
    for evidence in worse:
        assert 0.0 <= object_confidence(evidence) < object_confidence(good)
    assert object_confidence(ObjectEvidence(float("nan"), None, "fallback_camera", "default", 0, 0)) == 0.0


# ---------------------------------------------------------------------------------------------
# Relations, flips and scaling


def _measure_all(points_by_object: list[np.ndarray], frame: CanonicalFrame):
    return [measure_object(points, frame) for points in points_by_object]


def _flip(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0, 1.0])


def _assert_flip_swaps_left_right_only(objects, flipped, camera, flipped_camera):
    for (a, b), (fa, fb) in zip(itertools.permutations(objects, 2), itertools.permutations(flipped, 2), strict=True):
        r, f = relate(a.box, b.box, camera), relate(fa.box, fb.box, flipped_camera)
        assert f.left_of_m == pytest.approx(-r.left_of_m, abs=1e-9)
        if abs(r.left_of_m) > 1e-6:
            assert f.left_right() == {"left": "right", "right": "left"}[r.left_right()]
        for name in ("above_m", "vertical_gap_m", "closer_m", "center_distance_m", "horizontal_distance_m"):
            assert getattr(f, name) == pytest.approx(getattr(r, name), abs=1e-9), name
        assert (f.above_below(), f.front_behind()) == (r.above_below(), r.front_behind())
    for o, fo in zip(objects, flipped, strict=True):
        np.testing.assert_allclose(fo.box.size, o.box.size, atol=1e-9)
        assert fo.box.center[0] == pytest.approx(-o.box.center[0], abs=1e-9)
        assert yaw_error_deg(fo.box.yaw_rad, -o.box.yaw_rad) < 1e-6


def test_horizontal_flip_of_rendered_scene_swaps_left_right_only():
    rendering = render(-15.0, 5.0, 1.6)
    points = scene_points(rendering, np.random.default_rng(0), noise_m=0.003)
    objects_cam = [object_points(rendering, k) for k in range(1, len(BOXES) + 1)]
    frame = canonical_frame(points, None, rng=np.random.default_rng(1))
    flipped_frame = canonical_frame(_flip(points), None, rng=np.random.default_rng(1))
    assert flipped_frame.roll_deg == pytest.approx(-frame.roll_deg, abs=1e-9)
    objects = _measure_all(objects_cam, frame)
    flipped = _measure_all([_flip(p) for p in objects_cam], flipped_frame)
    _assert_flip_swaps_left_right_only(objects, flipped, frame.camera_position, flipped_frame.camera_position)
    # In the scene, box 1 (x = -1.6) is left of box 2 (x = 0.6) and box 3 is the nearest.
    assert relate(objects[0].box, objects[1].box, frame.camera_position).left_right(0.1) == "left"
    assert relate(objects[2].box, objects[1].box, frame.camera_position).front_behind(0.1) == "in front of"


def _random_objects(rng: np.random.Generator, n_objects: int = 3) -> list[np.ndarray]:
    """Blobs of camera-frame points in front of the camera."""
    centres = rng.uniform([-3, -1, 2], [3, 1.5, 9], size=(n_objects, 3))
    return [c + rng.normal(0, rng.uniform(0.05, 0.4, size=3), size=(int(rng.integers(20, 120)), 3)) for c in centres]


@FAST
@given(st.integers(0, 2**32 - 1), st.floats(-30, 10), st.floats(-15, 15))
def test_horizontal_flip_property(seed, pitch, roll):
    rng = np.random.default_rng(seed)
    objects_cam = _random_objects(rng)
    gravity = gravity_from_pitch_roll(pitch, roll)
    empty = np.zeros((0, 3))
    frame = canonical_frame(empty, gravity, rng=rng)
    flipped_frame = canonical_frame(empty, _flip(gravity), rng=rng)
    objects = _measure_all(objects_cam, frame)
    flipped = _measure_all([_flip(p) for p in objects_cam], flipped_frame)
    _assert_flip_swaps_left_right_only(objects, flipped, frame.camera_position, flipped_frame.camera_position)


@FAST
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 10.0), st.floats(-30, 10), st.floats(-15, 15))
def test_scaling_scales_distances_and_sizes(seed, k, pitch, roll):
    rng = np.random.default_rng(seed)
    objects_cam = _random_objects(rng)
    frame = canonical_frame(np.zeros((0, 3)), gravity_from_pitch_roll(pitch, roll), rng=rng)
    objects = _measure_all(objects_cam, frame)
    scaled = _measure_all([p * k for p in objects_cam], frame)
    for o, s in zip(objects, scaled, strict=True):
        np.testing.assert_array_equal(s.kept, o.kept)
        np.testing.assert_allclose(s.box.size, k * o.box.size, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(s.box.center, k * o.box.center, rtol=1e-6, atol=1e-9)
        assert s.center_distance_m == pytest.approx(k * o.center_distance_m, rel=1e-6)
        assert s.nearest_distance_m == pytest.approx(k * o.nearest_distance_m, rel=1e-6)
    camera = frame.camera_position
    for (a, b), (sa, sb) in zip(itertools.permutations(objects, 2), itertools.permutations(scaled, 2), strict=True):
        r, s = relate(a.box, b.box, camera), relate(sa.box, sb.box, camera)
        for name in ("left_of_m", "above_m", "vertical_gap_m", "closer_m", "center_distance_m"):
            assert getattr(s, name) == pytest.approx(k * getattr(r, name), rel=1e-6, abs=1e-9), name


def test_closer_agrees_with_depth():
    near = OrientedBox(np.array([0.0, 2.0, 0.5]), 1.0, 0.5, 1.0, 0.0)
    far = OrientedBox(np.array([0.2, 6.0, 0.5]), 1.0, 0.5, 1.0, 0.0)
    stacked = OrientedBox(np.array([0.0, 2.0, 1.5]), 0.4, 0.3, 0.8, 0.0)
    camera = np.array([0.0, 0.0, 1.5])
    relation = relate(near, far, camera)
    assert relation.front_behind() == "in front of" and relation.closer_m > 3.5
    assert relation.left_right() == "left" and relation.left_right(min_margin_m=0.5) is None
    assert relate(stacked, near, camera).above_below() == "above"
    assert relate(stacked, near, camera).vertical_gap_m == pytest.approx(0.1)
    assert relate(near, stacked, camera).above_below() == "below"
    assert relate(near, stacked, camera).vertical_gap_m == pytest.approx(0.1)
    assert relate(near, far, camera).vertical_gap_m == pytest.approx(-1.0)  # side by side: overlap
    assert relate(near, far, camera).center_distance_m == pytest.approx(np.hypot(0.2, 4.0))
    with pytest.raises(ValueError, match="camera_position"):
        relate(near, far, np.array([np.nan, 0, 0]))
