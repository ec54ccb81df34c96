"""The procedural world is ground truth: its geometry, images and files are checked exactly."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spatialboost.config import SHAPE_CLASSES, WorldConfig
from spatialboost.world import SHAPES, Camera, Scene, annotation, render_scene, sample_scene, scene_rng
from spatialboost.world.dataset import prepare_root, render_dataset, render_shard, shards, write_index
from spatialboost.world.reference import render_scene_naive
from spatialboost.world.render import pixel_rays

# Objects near the camera so that small images hold many object pixels.
CLOSE = WorldConfig(
    width=64, height=48, objects_per_scene=(3, 6), object_size_m=(0.4, 1.5), object_distance_m=(2.0, 6.0)
)
TINY = WorldConfig(width=32, height=24, n_train=3, n_test=2, objects_per_scene=(2, 4), object_distance_m=(2.0, 6.0))


def _scenes(cfg: WorldConfig, n: int, split: str = "train") -> list[Scene]:
    return [sample_scene(cfg, scene_rng(cfg, split, i)) for i in range(n)]


def _pixel_rays_cam(ann: dict) -> np.ndarray:
    """(H, W, 3) camera-frame rays K^-1 (u + 0.5, v + 0.5, 1), written independently of render.py."""
    k = ann["intrinsics"]
    v, u = np.mgrid[0 : ann["height"], 0 : ann["width"]]
    return np.stack([(u + 0.5 - k["cx"]) / k["fx"], (v + 0.5 - k["cy"]) / k["fy"], np.ones(u.shape)], axis=-1)


@pytest.fixture(scope="module")
def rendered() -> list[tuple[Scene, object, dict]]:
    out = []
    for i, scene in enumerate(_scenes(CLOSE, 10)):
        r = render_scene(scene, CLOSE.width, CLOSE.height)
        out.append((scene, r, annotation(scene, r, f"train-{i:06d}")))
    assert sum(int((r.instances > 0).sum()) for _, r, _ in out) > 2000, "test scenes should show many object pixels"
    return out


# --- shapes ---------------------------------------------------------------------------------


def test_every_config_class_has_a_shape() -> None:
    assert set(SHAPES) == set(SHAPE_CLASSES)


@pytest.mark.parametrize("label", SHAPE_CLASSES)
def test_intersection_agrees_with_the_inside_test(label: str) -> None:
    """First hits lie on the surface (inside just behind, outside just in front along the
    normal), no sample before a hit is inside, and no sample along a missing ray is inside."""
    rng = np.random.default_rng(SHAPE_CLASSES.index(label))
    shape = SHAPES[label]
    for _ in range(3):
        half = np.asarray(shape.sample_size(float(rng.uniform(0.2, 2.0)), rng)) / 2.0
        n_rays, reach = 600, 4.0 * half.max()
        origins = rng.normal(size=(n_rays, 3))
        origins *= reach / np.linalg.norm(origins, axis=1, keepdims=True)
        targets = rng.uniform(-1.3, 1.3, size=(n_rays, 3)) * half
        dirs = (targets - origins) * rng.uniform(0.5, 2.0, size=(n_rays, 1))  # any length
        t, normals = shape.intersect(origins, dirs, half)
        hit = np.isfinite(t)
        assert 0.2 < hit.mean() < 0.95, "the rays should both hit and miss"
        p = origins[hit] + t[hit, None] * dirs[hit]
        delta = 1e-7 * half.max()
        assert shape.inside(p - delta * normals[hit], half).all()
        assert not shape.inside(p + delta * normals[hit], half).any()
        np.testing.assert_allclose(np.linalg.norm(normals[hit], axis=1), 1.0, atol=1e-9)
        assert ((normals[hit] * dirs[hit]).sum(axis=1) <= 1e-12).all(), "rays from outside hit front faces"
        # Sample each ray up to its hit (or well past the shape on a miss): all outside.
        end = np.where(hit, t * (1.0 - 1e-7), 3.0)
        s = np.linspace(0.0, 1.0, 400)[None, :, None] * end[:, None, None]
        samples = origins[:, None, :] + s * dirs[:, None, :]
        assert not shape.inside(samples, half).any()


# --- camera ---------------------------------------------------------------------------------


def test_camera_gravity_pitch_and_roll_agree_with_the_extrinsics() -> None:
    for scene in _scenes(WorldConfig(), 30):
        cam = scene.camera
        T = cam.T_cam_from_world
        R = T[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(-R.T @ T[:3, 3], [0.0, 0.0, cam.height_m], atol=1e-12)
        g = cam.gravity_cam
        np.testing.assert_allclose(g, R @ [0.0, 0.0, -1.0], atol=1e-12)
        assert math.degrees(math.asin(-g[2])) == pytest.approx(cam.pitch_deg)  # looking down: g_z > 0
        assert math.degrees(math.atan2(g[0], g[1])) == pytest.approx(cam.roll_deg)
        assert g[1] > 0.8, "gravity points down the image"


def test_level_camera_sees_sky_above_and_ground_below() -> None:
    scene = Scene(Camera(1.5, -10.0, 0.0, 60.0), (), (0.0, 0.0, 1.0), ((0.5,) * 3, (0.4,) * 3), 0.0, 0)
    r = render_scene(scene, 40, 30)
    assert (r.depth[0] == 0).all() and (r.depth[-1] > 0).all()
    # The horizon of a camera without roll is level: each row is all sky or all ground.
    assert ((r.depth > 0).all(axis=1) | (r.depth == 0).all(axis=1)).all()
    # The bottom row's centre ray: depth 1.5 / sin(angle below the horizon) * cos(angle to the axis).
    fx, fy, cx, cy = r.intrinsics
    below = math.radians(10.0) + math.atan((30 - 0.5 - cy) / fy)
    expected = 1.5 / math.sin(below) * math.cos(below - math.radians(10.0))
    assert r.depth[-1, 19:21].mean() == pytest.approx(expected, rel=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    height=st.floats(0.3, 3.0),
    pitch=st.floats(-40.0, -1.0),
    roll=st.floats(-20.0, 20.0),
    fov=st.floats(30.0, 100.0),
    u=st.integers(0, 23),
    v=st.integers(0, 17),
)
def test_ground_hits_project_back_to_their_pixel(
    height: float, pitch: float, roll: float, fov: float, u: int, v: int
) -> None:
    """Unproject (ray cast to the ground) then project with K and T: the same pixel and depth."""
    scene = Scene(Camera(height, pitch, roll, fov), (), (0.0, 0.0, 1.0), ((0.5,) * 3, (0.4,) * 3), 0.0, 0)
    origin, dirs = pixel_rays(scene, 24, 18)
    d = dirs[v * 24 + u]
    if d[2] >= 0.0:
        return
    point = origin - origin[2] / d[2] * d
    assert point[2] == pytest.approx(0.0, abs=1e-9)
    T = scene.camera.T_cam_from_world
    x_cam = T[:3, :3] @ point + T[:3, 3]
    fx, fy, cx, cy = scene.camera.intrinsics(24, 18)
    assert fx * x_cam[0] / x_cam[2] + cx == pytest.approx(u + 0.5, abs=1e-7)
    assert fy * x_cam[1] / x_cam[2] + cy == pytest.approx(v + 0.5, abs=1e-7)
    assert x_cam[2] == pytest.approx(-origin[2] / d[2], rel=1e-9)  # the ray parameter is the z-depth


# --- rendering ------------------------------------------------------------------------------


def test_vectorised_renderer_matches_the_naive_reference() -> None:
    object_pixels = 0
    for scene in _scenes(CLOSE, 4):
        fast, slow = render_scene(scene, 32, 24), render_scene_naive(scene, 32, 24)
        object_pixels += int((fast.instances > 0).sum())
        np.testing.assert_array_equal(fast.instances, slow.instances)
        np.testing.assert_allclose(fast.depth, slow.depth, rtol=1e-6)
        assert np.abs(fast.rgb.astype(int) - slow.rgb).max() <= 1
        np.testing.assert_array_equal(fast.in_view_pixels, slow.in_view_pixels)
        np.testing.assert_array_equal(fast.visible_pixels, slow.visible_pixels)
    assert object_pixels > 100


def test_depth_at_object_pixels_is_the_analytic_distance_to_that_object(rendered) -> None:
    for _, r, ann in rendered:
        rays = _pixel_rays_cam(ann)
        for obj in ann["objects"]:
            mask = r.instances == obj["instance_id"]
            box = obj["box_camera"]
            rot, center = np.asarray(box["rotation"]), np.asarray(box["center"])
            o_local = rot.T @ -center  # the camera centre in the object frame
            t, _ = SHAPES[obj["label"]].intersect(o_local, rays[mask] @ rot, np.asarray(box["size"]) / 2.0)
            np.testing.assert_allclose(r.depth[mask], t, rtol=2e-7)


def test_every_mask_pixel_lies_in_its_projected_box_and_unprojects_into_the_box(rendered) -> None:
    for _, r, ann in rendered:
        k = ann["intrinsics"]
        rays = _pixel_rays_cam(ann)
        for obj in ann["objects"]:
            mask = r.instances == obj["instance_id"]
            assert mask.sum() == obj["pixel_count"]
            box = obj["box_camera"]
            corners = np.asarray(box["corners"])
            assert (corners[:, 2] > 0).all()
            u = k["fx"] * corners[:, 0] / corners[:, 2] + k["cx"]
            v = k["fy"] * corners[:, 1] / corners[:, 2] + k["cy"]
            vv, uu = np.nonzero(mask)
            assert (uu + 0.5 >= u.min() - 1e-9).all() and (uu + 0.5 <= u.max() + 1e-9).all()
            assert (vv + 0.5 >= v.min() - 1e-9).all() and (vv + 0.5 <= v.max() + 1e-9).all()
            points = rays[mask] * r.depth[mask][:, None]  # unprojected, camera frame
            local = (points - box["center"]) @ np.asarray(box["rotation"])
            assert (np.abs(local) <= np.asarray(box["size"]) / 2.0 + 1e-5).all()


def test_ground_pixels_unproject_onto_the_ground_plane(rendered) -> None:
    n_ground = 0
    for _, r, ann in rendered:
        ground = (r.instances == 0) & (r.depth > 0)
        points = _pixel_rays_cam(ann)[ground] * r.depth[ground][:, None]
        T = np.asarray(ann["T_cam_from_world"])
        world = (points - T[:3, 3]) @ T[:3, :3]  # R^T (X_cam - t)
        np.testing.assert_allclose(world[:, 2], 0.0, atol=1e-5)
        n_ground += int(ground.sum())
    assert n_ground > 1000


def test_annotation_lists_every_visible_object(rendered) -> None:
    for scene, r, ann in rendered:
        listed = {obj["instance_id"] for obj in ann["objects"]}
        assert set(np.unique(r.instances)) - {0} <= listed
        for obj in ann["objects"]:
            source = scene.objects[obj["instance_id"] - 1]
            assert (obj["label"], obj["colour"]) == (source.label, source.colour)
            assert obj["box_world"]["center"][2] == pytest.approx(obj["box_world"]["size"][2] / 2)


@settings(max_examples=8, deadline=None)
@given(index=st.integers(0, 1000), power=st.integers(-1, 2))
def test_scaling_the_scene_scales_depth_and_keeps_masks(index: int, power: int) -> None:
    """Scale lengths by 2^power (exact in floating point): depth scales, masks do not change."""
    scene = sample_scene(CLOSE, scene_rng(CLOSE, "train", index))
    s = 2.0**power
    objects = tuple(
        dataclasses.replace(o, center=tuple(s * c for c in o.center), size=tuple(s * c for c in o.size))
        for o in scene.objects
    )
    camera = dataclasses.replace(scene.camera, height_m=s * scene.camera.height_m)
    scaled = dataclasses.replace(scene, camera=camera, objects=objects)
    a, b = render_scene(scene, 32, 24), render_scene(scaled, 32, 24)
    np.testing.assert_array_equal(a.instances, b.instances)
    objects_px = a.instances > 0
    np.testing.assert_allclose(b.depth[objects_px], s * a.depth[objects_px], rtol=1e-6)


def test_mirroring_the_world_flips_the_image() -> None:
    """Mirror y -> -y (objects, yaw, roll): every shape is symmetric in its local y."""
    for scene in _scenes(CLOSE, 4):
        objects = tuple(
            dataclasses.replace(o, center=(o.center[0], -o.center[1], o.center[2]), yaw_rad=-o.yaw_rad)
            for o in scene.objects
        )
        camera = dataclasses.replace(scene.camera, roll_deg=-scene.camera.roll_deg)
        mirrored = dataclasses.replace(scene, camera=camera, objects=objects)
        a, b = render_scene(scene, 32, 24), render_scene(mirrored, 32, 24)
        assert (np.asarray(a.instances[:, ::-1]) != b.instances).mean() < 0.005  # silhouette ties only
        same = a.instances[:, ::-1] == b.instances
        np.testing.assert_allclose(a.depth[:, ::-1][same], b.depth[same], rtol=1e-5)


def test_objects_never_interpenetrate() -> None:
    rng = np.random.default_rng(0)
    for scene in _scenes(WorldConfig(objects_per_scene=(8, 8)), 30):
        for i, a in enumerate(scene.objects):
            local = rng.uniform(-1, 1, size=(4000, 3)) * a.half
            local = local[SHAPES[a.label].inside(local, a.half)]
            world = local @ a.R_world_from_object.T + a.center
            for b in scene.objects[i + 1 :]:
                in_b = (world - b.center) @ b.R_world_from_object
                assert not SHAPES[b.label].inside(in_b, b.half).any()
                gap = math.dist(a.center[:2], b.center[:2])
                assert gap >= a.footprint_radius + b.footprint_radius


def test_scenes_follow_the_config() -> None:
    cfg = WorldConfig(classes=("cube", "cone"), objects_per_scene=(2, 3))
    scenes = _scenes(cfg, 20)
    labels = {o.label for s in scenes for o in s.objects}
    assert labels == {"cube", "cone"}
    for s in scenes:
        assert 1 <= len(s.objects) <= 3
        assert cfg.camera_height_m[0] <= s.camera.height_m <= cfg.camera_height_m[1]
        for o in s.objects:
            assert cfg.object_size_m[0] - 1e-9 <= max(o.size) <= cfg.object_size_m[1] + 1e-9
            assert cfg.object_distance_m[0] <= math.hypot(*o.center[:2]) <= cfg.object_distance_m[1]
    assert _scenes(cfg, 2, "test") != _scenes(cfg, 2, "train")
    assert _scenes(cfg, 3) == _scenes(cfg, 3)


# --- dataset files --------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    counts = render_dataset(TINY, root, progress=False)
    assert counts["images"] == 5 and counts["rendered"] == 5
    return root


def test_dataset_follows_the_documented_format(tiny_dataset: Path) -> None:
    root = tiny_dataset
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["format"] == "spatialboost-rgbd" and meta["schema_version"] == 1
    assert meta["params"]["seed"] == TINY.seed and "root" not in meta["params"]
    index = pq.read_table(root / "index.parquet")
    types = {f.name: str(f.type) for f in index.schema}
    assert types == {
        "id": "string", "split": "string", "rgb": "string", "depth": "string", "instances": "string",
        "annotation": "string", "width": "int32", "height": "int32", "fx": "double", "fy": "double",
        "cx": "double", "cy": "double", "gravity_x": "double", "gravity_y": "double", "gravity_z": "double",
        "n_objects": "int32",
    }  # fmt: skip
    rows = index.to_pylist()
    assert [r["id"] for r in rows] == ["train-000000", "train-000001", "train-000002", "test-000000", "test-000001"]
    for row in rows:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", row["id"])
        ann = json.loads((root / row["annotation"]).read_text())
        rgb = np.asarray(Image.open(root / row["rgb"]))
        instances = np.asarray(Image.open(root / row["instances"]))
        depth = np.load(root / row["depth"])
        assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
        assert instances.shape == (24, 32) and instances.dtype == np.uint16
        assert depth.shape == (24, 32) and depth.dtype == np.float32
        assert row["cx"] == 16.0 and row["cy"] == 12.0 and row["n_objects"] == len(ann["objects"])
        assert [row["gravity_x"], row["gravity_y"], row["gravity_z"]] == ann["gravity_cam"]
        # The files are the rendering of scene i of the split, exactly.
        split, i = row["split"], int(row["id"].split("-")[1])
        r = render_scene(sample_scene(TINY, scene_rng(TINY, split, i)), 32, 24)
        np.testing.assert_array_equal(rgb, r.rgb)
        np.testing.assert_array_equal(instances, r.instances)
        np.testing.assert_array_equal(depth, r.depth)
        for obj in ann["objects"]:
            assert len(obj["box_camera"]["corners"]) == 8
            assert obj["pixel_count"] == int((instances == obj["instance_id"]).sum())
    assert not list(root.rglob(".*.tmp"))


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_dataset: Path, tmp_path: Path) -> None:
    render_dataset(TINY, tmp_path / "again", progress=False)
    assert _tree(tmp_path / "again") == _tree(tiny_dataset)
    other = TINY.model_copy(update={"seed": 1})
    render_dataset(other, tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "rgb" / "train-000000.png").read_bytes() != (
        tiny_dataset / "rgb" / "train-000000.png"
    ).read_bytes()


def test_resume_after_a_crash_gives_identical_bytes(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "crashed"
    render_dataset(TINY, root, progress=False)
    (root / "annotations" / "train-000001.json").unlink()  # crashed before the marker
    (root / "rgb" / "test-000000.png").unlink()
    (root / "annotations" / "test-000000.json").unlink()
    (root / "depth" / "test-000001.npy").write_bytes(b"partial")  # a stale file under a real name
    (root / "annotations" / "test-000001.json").unlink()
    (root / "rgb" / ".train-000002.png.999.tmp").write_bytes(b"half a png")
    (root / "index.parquet").unlink()
    (root / "dataset.json").unlink()
    counts = render_dataset(TINY, root, progress=False)
    assert counts["rendered"] == 3 and counts["images"] - counts["rendered"] == 2
    assert _tree(root) == _tree(tiny_dataset)


def test_other_params_rerender_everything_but_more_images_keep_the_rest(tiny_dataset: Path, tmp_path: Path) -> None:
    """shards.py's one rule: images of other params are stale (removed, rendered again); the split
    sizes only say how many images there are, so a dataset grows or shrinks image by image."""
    root = tmp_path / "grow"
    render_dataset(TINY, root, progress=False)
    wider = TINY.model_copy(update={"width": 40})
    assert render_dataset(wider, root, progress=False)["rendered"] == 5
    render_dataset(wider, tmp_path / "fresh", progress=False)
    assert _tree(root) == _tree(tmp_path / "fresh")
    counts = render_dataset(wider.model_copy(update={"n_train": 4}), root, progress=False)
    assert counts["rendered"] == 1 and counts["images"] == 6
    counts = render_dataset(wider, root, progress=False)  # fewer again: the extra image goes
    assert counts["rendered"] == 0 and _tree(root) == _tree(tmp_path / "fresh")


def test_shards_rendered_in_any_order_give_the_same_dataset(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = TINY.model_copy(update={"shard_size": 2})
    root = tmp_path / "sharded"
    prepare_root(cfg, root)
    parts = shards(cfg)
    assert [len(p) for p in parts] == [2, 2, 1]
    with pytest.raises(FileNotFoundError, match="not rendered yet"):
        write_index(cfg, root)
    for part in reversed(parts):
        render_shard(cfg, root, part)
    write_index(cfg, root)
    assert _tree(root) == _tree(tiny_dataset)


def test_the_rgbd_reader_accepts_the_world(tiny_dataset: Path) -> None:
    """The writer and the format's reader (spatialboost.data) agree on every file."""
    from spatialboost.data.rgbd import RGBDDataset

    ds = RGBDDataset(tiny_dataset)
    assert ds.ids("train") == ["train-000000", "train-000001", "train-000002"]
    for image_id in ds.ids():
        sample = ds.sample(image_id)
        assert sample.depth.shape == (TINY.height, TINY.width)
