"""The extraction stage: observations -> scene records, shards, resume, quarantine, overlays.

Ground truth comes from small world datasets rendered here; the model path runs stub backends
(exact, to check the funnel) and the tiny random models of tiny_models.py (nonsense outputs,
to check that they end in quarantine records, not crashes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spatialboost.config import DataConfig, ObjectGeometryConfig, SpatialBoostConfig, WorldConfig
from spatialboost.data import RGBDDataset, WorldSource, build_manifest_for
from spatialboost.data.exif import exif_focal_px
from spatialboost.data.reader import ImageReader
from spatialboost.data.records import ImageLimits
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.model_observer import ModelObserver
from spatialboost.extract.overlay import BOX_EDGES, box_corners_cam, render_overlay
from spatialboost.extract.pipeline import (
    extract_images,
    extract_shard,
    extraction_params,
    finalize,
    manifest_ids,
    overlay_sample,
    plan_shards,
    records_path,
    scene_shards,
)
from spatialboost.extract.protocols import DepthResult, Label, Mask, Observation, ObservationFailure
from spatialboost.extract.records import (
    MaskRLE,
    QuarantineRecord,
    SceneRecord,
    counts_to_string,
    counts_to_string_reference,
    mask_to_counts,
    string_to_counts,
)
from spatialboost.extract.scene import build_scene, image_rng
from spatialboost.geometry import canonical_frame_from_gravity, project
from spatialboost.world.dataset import INDEX_SCHEMA

WORLD = WorldConfig(n_train=0, n_test=10, width=64, height=64, objects_per_scene=(2, 6))
GEOMETRY = ObjectGeometryConfig()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spatialboost.world import render_dataset

    root = tmp_path_factory.mktemp("world")
    render_dataset(WORLD, root, progress=False)
    return root


@pytest.fixture(scope="module")
def dataset(world: Path) -> RGBDDataset:
    return RGBDDataset(world)


def _config(out: Path, shard_size: int = 3, n_overlays: int = 0, **extract: object) -> SpatialBoostConfig:
    return SpatialBoostConfig.model_validate(
        {"extract": {"output": str(out), "shard_size": shard_size, "n_overlays": n_overlays, **extract}}
    )


def _read_records(out: Path) -> list[SceneRecord]:
    return [SceneRecord.from_json(line) for path in sorted(out.glob("shard-*[0-9].jsonl")) for line in path.open()]


def _read_quarantine(out: Path) -> list[QuarantineRecord]:
    return [
        QuarantineRecord.from_json(line)
        for path in sorted(out.glob("shard-*.quarantine.jsonl"))
        for line in path.open()
    ]


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Records


def _naive_counts(mask: np.ndarray) -> list[int]:
    """Run lengths over column-major pixels, zeros first, one pixel at a time."""
    counts, current, run = [], False, 0
    for value in mask.T.ravel():
        if bool(value) != current:
            counts.append(run)
            current, run = bool(value), 0
        run += 1
    counts.append(run)
    return counts


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_mask_rle_round_trips_and_matches_a_naive_encoder(h: int, w: int, seed: int, density: float) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < density
    assert mask_to_counts(mask) == _naive_counts(mask)
    rle = MaskRLE.encode(mask)
    assert rle.counts == counts_to_string_reference(_naive_counts(mask))
    assert string_to_counts(rle.counts) == _naive_counts(mask)
    np.testing.assert_array_equal(rle.decode(), mask)
    assert rle.area == int(mask.sum())


def test_mask_rle_string_is_cocos_code() -> None:
    # Hand-computed with COCO's rule: from the 4th count on, the difference to the count two back.
    assert counts_to_string([3, 2, 1]) == "321"
    assert counts_to_string([1, 1, 1, 5]) == "1114"  # 5 - 1 = 4
    assert counts_to_string([5, 5, 5, 1]) == "555L"  # 1 - 5 = -4: 5 low bits 11100 -> chr(48 + 28)
    assert counts_to_string([40]) == "X1"  # 40 = 8 + 1 * 32: chr(48 + 8 + 32), then chr(48 + 1)
    for counts in ([3, 2, 1], [1, 1, 1, 5], [5, 5, 5, 1], [40], [0, 1000, 3, 70000], [0, 2**40, 1, 7], [15, 16, 31]):
        assert counts_to_string(counts) == counts_to_string_reference(counts)
        assert string_to_counts(counts_to_string(counts)) == counts


# ---------------------------------------------------------------------------------------------
# Ground-truth path


@pytest.fixture(scope="module")
def gt_records(dataset: RGBDDataset) -> list[SceneRecord]:
    observer = GroundTruthObserver(dataset)
    records = []
    for image_id in dataset.ids():
        result = build_scene(observer.observe_one(image_id), GEOMETRY, image_rng(0, image_id))
        assert isinstance(result, SceneRecord), result
        records.append(result)
    return records


def test_records_validate_and_serialise_stably(gt_records: list[SceneRecord]) -> None:
    for record in gt_records:
        line = record.to_json()
        again = SceneRecord.from_json(line)
        assert again == record and again.to_json() == line
        assert "\n" not in line and len(line) < 8000  # compact: masks are RLE strings
        assert record.provenance.backend == "ground_truth" and record.intrinsics.focal_source == "dataset"
    with pytest.raises(ValueError):
        SceneRecord.from_json(gt_records[0].to_json().replace('"schema_version":3', '"schema_version":2'))


def test_objects_are_the_annotated_visible_ones(gt_records: list[SceneRecord], dataset: RGBDDataset) -> None:
    n_objects = 0
    for record in gt_records:
        annotation = dataset.annotation(record.image_id)
        visible = {o["instance_id"]: o["pixel_count"] for o in annotation["objects"] if o["pixel_count"] > 0}
        ids = [obj.object_id for obj in record.objects]
        assert set(ids) <= set(visible)
        assert len(ids) + sum(record.dropped.values()) == len(visible)  # nothing vanishes unaccounted
        assert {k for k, n in visible.items() if n >= 2 * GEOMETRY.min_points_per_object} <= set(ids)
        instances = dataset.instances(record.image_id)
        for obj in record.objects:
            np.testing.assert_array_equal(obj.mask.decode(), instances == obj.object_id)
            assert obj.mask_area_px == visible[obj.object_id]
            assert obj.colour == next(o["colour"] for o in annotation["objects"] if o["instance_id"] == obj.object_id)
        n_objects += len(ids)
    assert n_objects >= 2 * len(gt_records)


def test_boxes_are_close_to_the_ground_truth_boxes(gt_records: list[SceneRecord], dataset: RGBDDataset) -> None:
    """Boxes of the visible points: inside the true height range, centre near the true centre.

    Objects cut by the image border are skipped: their visible part can be any slice of them.
    """
    checked = 0
    for record in gt_records:
        annotation = dataset.annotation(record.image_id)
        truth = {o["instance_id"]: o for o in annotation["objects"]}
        rotation, _ = canonical_frame_from_gravity(np.array(annotation["gravity_cam"]))
        # the frame came from the dataset's gravity, and its height from the ground plane
        np.testing.assert_allclose(np.array(record.frame.rotation), rotation, atol=1e-5)
        assert record.frame.camera_height_m == pytest.approx(annotation["camera"]["height_m"], abs=1e-3)
        for obj in record.objects:
            x0, y0, x1, y1 = obj.bbox
            if x0 == 0 or y0 == 0 or x1 == record.width or y1 == record.height:
                continue
            true = truth[obj.object_id]["box_camera"]
            size = np.array(true["size"])
            true_top = (rotation @ np.array(true["center"]))[2] + annotation["camera"]["height_m"] + size[2] / 2
            top = obj.box.center[2] + obj.box.size[2] / 2
            assert true_top - 0.35 <= top <= true_top + 1e-3
            assert obj.box.center[2] - obj.box.size[2] / 2 >= -1e-3  # nothing below the ground
            error = np.linalg.norm(np.array(obj.center_cam) - np.array(true["center"]))
            assert error <= 0.5 * size.max(), (record.image_id, obj.object_id, error, size)
            assert obj.nearest_distance_m <= obj.center_distance_m
            checked += 1
    assert checked >= 10


def _observation(dataset: RGBDDataset, index: int = 0) -> Observation:
    result = GroundTruthObserver(dataset).observe_one(dataset.ids()[index])
    assert isinstance(result, Observation)
    return result


def test_build_scene_quarantines_bad_inputs_with_reasons(dataset: RGBDDataset) -> None:
    obs = _observation(dataset)
    nan_depth = obs.depth.copy()
    nan_depth[3, 4] = np.nan
    negative = obs.depth.copy()
    negative[5, 5] = -2.0
    empty = tuple(dataclasses.replace(m, mask=np.zeros_like(m.mask)) for m in obs.masks)
    cases = {
        "invalid_depth": [
            dataclasses.replace(obs, depth=nan_depth),
            dataclasses.replace(obs, depth=negative),
            dataclasses.replace(obs, depth=np.zeros_like(obs.depth)),
            dataclasses.replace(obs, depth=obs.depth[:-1]),
        ],
        "absurd_focal": [
            dataclasses.replace(obs, fx=1e7, fy=1e7),
            dataclasses.replace(obs, fx=float("inf")),
            dataclasses.replace(obs, fy=0.5),
            dataclasses.replace(obs, cx=float("nan")),
        ],
        "empty_masks": [dataclasses.replace(obs, masks=empty)],
        "no_objects": [dataclasses.replace(obs, masks=(), labels=(), object_ids=(), colours=())],
    }
    for reason, observations in cases.items():
        for bad in observations:
            result = build_scene(bad, GEOMETRY, image_rng(0, obs.image_id))
            assert not isinstance(result, SceneRecord) and result.reason == reason, result
            assert result.detail
    too_many = build_scene(obs, GEOMETRY, image_rng(0, obs.image_id), min_objects=100)
    assert too_many.reason == "no_objects" and "min_objects 100" in too_many.detail


def test_objects_with_too_few_points_are_dropped_and_counted(dataset: RGBDDataset) -> None:
    obs = _observation(dataset)
    speck = np.zeros(obs.depth.shape, dtype=bool)
    speck[-1, :3] = True  # 3 pixels of ground
    extra = dataclasses.replace(
        obs,
        masks=(*obs.masks, Mask(mask=speck, score=0.9, stability=0.9, bbox=(0, obs.height - 1, 3, obs.height))),
        labels=(*obs.labels, Label("speck", 0.5)),
        object_ids=(*obs.object_ids, 99),
        colours=(*obs.colours, None),
    )
    before = build_scene(obs, GEOMETRY, image_rng(0, obs.image_id))
    after = build_scene(extra, GEOMETRY, image_rng(0, obs.image_id))
    assert after.dropped.get("too_few_points", 0) == before.dropped.get("too_few_points", 0) + 1
    assert [o.object_id for o in after.objects] == [o.object_id for o in before.objects]


def test_subsampling_is_seeded_and_bounded(dataset: RGBDDataset) -> None:
    obs = _observation(dataset)
    small = GEOMETRY.model_copy(update={"max_points_per_object": 10})
    a = build_scene(obs, small, image_rng(0, obs.image_id))
    b = build_scene(obs, small, image_rng(0, obs.image_id))
    assert a.to_json() == b.to_json()
    assert all(o.evidence.n_used <= 10 and o.evidence.n_points == o.mask_area_px for o in a.objects)


# ---------------------------------------------------------------------------------------------
# Shards: determinism, resume, quarantine


def test_plan_shards() -> None:
    assert plan_shards(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert plan_shards([], 4) == []
    with pytest.raises(ValueError, match="more than once"):
        plan_shards(["a", "b", "a"], 2)


class _Crashing(GroundTruthObserver):
    """Dies (like a killed worker) when asked for the shard holding id `at`."""

    def __init__(self, dataset: RGBDDataset, at: str) -> None:
        super().__init__(dataset)
        self.at = at

    def observe(self, ids: Sequence[str]) -> list[Observation | ObservationFailure]:
        if self.at in ids:
            raise RuntimeError("worker killed")
        return super().observe(ids)


def test_resume_after_a_kill_gives_identical_bytes(dataset: RGBDDataset, tmp_path: Path) -> None:
    ids = dataset.ids()
    observer = GroundTruthObserver(dataset)
    full = tmp_path / "full"
    summary = extract_images(_config(full), ids, observer, progress=False)
    assert summary["n_shards"] == 4 and summary["n_shards_skipped"] == 0
    assert summary["n_records"] + summary["n_quarantined"] == len(ids)

    # A killed run: shards 0-1 written, shard 2 died mid-write (a temporary left behind), no manifest.
    killed = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="worker killed"):
        extract_images(_config(killed), ids, _Crashing(dataset, at=ids[6]), progress=False)
    (killed / ".shard-00002.jsonl.4242.tmp").write_text('{"partial')
    (killed / "shard-00002.quarantine.jsonl").write_text("")
    (killed / "shard-00002.depth.zip").write_bytes(b"PK partial")  # written before the records: not complete
    resumed = extract_images(_config(killed), ids, observer, progress=False)
    assert resumed["n_shards_skipped"] == 2
    assert _tree_bytes(killed) == _tree_bytes(full)

    # Deleting the last shard and rerunning recomputes only that one, to the same bytes.
    records_path(killed, 3).unlink()
    again = extract_images(_config(killed), ids, observer, progress=False)
    assert again["n_shards_skipped"] == 3 and _tree_bytes(killed) == _tree_bytes(full)

    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["schema_version"] == 3 and manifest["totals"]["n_images"] == len(ids)
    assert [s["records"] for s in manifest["shards"]] == [f"shard-{i:05d}.jsonl" for i in range(4)]


def test_fan_out_in_any_order_gives_the_same_bytes(dataset: RGBDDataset, tmp_path: Path) -> None:
    ids, observer = dataset.ids(), GroundTruthObserver(dataset)
    cfg = _config(tmp_path / "fan_out")
    shards = plan_shards(ids, cfg.extract.shard_size)
    scene_shards(cfg.extract.output).prepare(range(len(shards)), extraction_params(cfg, shards))
    for index in reversed(range(len(shards))):  # as parallel workers might finish
        report = extract_shard(observer, shards[index], index, cfg.extract, cfg.extract.output, seed=cfg.seed)
        assert report.n_records + report.n_quarantined == len(shards[index])
    finalize(cfg.extract.output, len(shards))
    extract_images(_config(tmp_path / "serial"), ids, observer, progress=False)
    assert _tree_bytes(tmp_path / "fan_out") == _tree_bytes(tmp_path / "serial")


def test_a_crash_inside_a_shard_leaves_no_partial_shard(dataset: RGBDDataset, tmp_path: Path) -> None:
    out = tmp_path / "scenes"
    with pytest.raises(RuntimeError, match="worker killed"):
        extract_images(_config(out), dataset.ids(), _Crashing(dataset, at="test-000007"), progress=False)
    assert records_path(out, 0).exists() and records_path(out, 1).exists()
    assert not records_path(out, 2).exists() and not (out / "manifest.json").exists()
    assert not list(out.glob(".*.tmp"))


def test_a_changed_id_list_recomputes_stale_shards(dataset: RGBDDataset, tmp_path: Path) -> None:
    observer = GroundTruthObserver(dataset)
    out = tmp_path / "scenes"
    extract_images(_config(out), dataset.ids(), observer, progress=False)
    fewer = dataset.ids()[1:5]
    summary = extract_images(_config(out), fewer, observer, progress=False)
    assert summary["n_shards_skipped"] == 0 and summary["n_shards"] == 2
    assert sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000.depth.zip", "shard-00000.jsonl", "shard-00000.quarantine.jsonl",
        "shard-00001.depth.zip", "shard-00001.jsonl", "shard-00001.quarantine.jsonl",
    ]  # fmt: skip
    assert [r.image_id for r in _read_records(out)] == fewer


def _rewrite_index(root: Path, image_id: str, **values: float) -> None:
    rows = pq.read_table(root / "index.parquet").to_pylist()
    for row in rows:
        if row["id"] == image_id:
            row.update(values)
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), root / "index.parquet")


@pytest.fixture()
def broken_world(world: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the world with one image per quarantine reason."""
    root = tmp_path / "broken"
    shutil.copytree(world, root)
    ids = RGBDDataset(root).ids()
    expected = {ids[1]: "no_objects", ids[3]: "invalid_depth", ids[4]: "invalid_depth", ids[6]: "absurd_focal"}
    # all objects out of view: no instance pixels, and the annotation says so
    annotation_path = root / "annotations" / f"{ids[1]}.json"
    annotation = json.loads(annotation_path.read_text())
    for obj in annotation["objects"]:
        obj["pixel_count"] = 0
    annotation_path.write_text(json.dumps(annotation))
    Image.fromarray(np.zeros((WORLD.height, WORLD.width), dtype=np.uint16)).save(root / "instances" / f"{ids[1]}.png")
    for image_id, value in ((ids[3], np.nan), (ids[4], -1.0)):
        depth = np.load(root / "depth" / f"{image_id}.npy")
        depth[10, 10] = value
        np.save(root / "depth" / f"{image_id}.npy", depth)
    # an absurd focal length, consistently in the index and the annotation
    annotation_path = root / "annotations" / f"{ids[6]}.json"
    annotation = json.loads(annotation_path.read_text())
    annotation["intrinsics"].update(fx=1e7, fy=1e7)
    annotation_path.write_text(json.dumps(annotation))
    _rewrite_index(root, ids[6], fx=1e7, fy=1e7)
    return root, expected


def test_bad_images_end_in_quarantine_and_shards_complete(
    broken_world: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, expected = broken_world
    dataset = RGBDDataset(root)
    out = tmp_path / "scenes"
    summary = extract_images(_config(out), dataset.ids(), GroundTruthObserver(dataset), progress=False)
    quarantined = {q.id: q for q in _read_quarantine(out)}
    assert {image_id: q.reason for image_id, q in quarantined.items()} == expected
    assert all(q.stage == "extract" and q.detail and q.uri.startswith("file://") for q in quarantined.values())
    assert "NaN" in quarantined[dataset.ids()[3]].detail
    records = _read_records(out)
    assert sorted([r.image_id for r in records] + list(quarantined)) == sorted(dataset.ids())
    assert summary["quarantine_by_reason"] == {"absurd_focal": 1, "invalid_depth": 2, "no_objects": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quarantine_by_reason"] == summary["quarantine_by_reason"]
    assert all((out / s["records"]).exists() for s in manifest["shards"])


def test_ids_come_from_the_data_manifest(world: Path, tmp_path: Path) -> None:
    data = DataConfig(source="world", uri=str(world), manifest=str(tmp_path / "m.jsonl"),
                      quarantine=str(tmp_path / "q.jsonl"))  # fmt: skip
    build_manifest_for(data, progress=False)
    assert manifest_ids(data.manifest) == RGBDDataset(world).ids()


def test_finalize_refuses_missing_shards(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shard 0"):
        finalize(tmp_path, 1)


# ---------------------------------------------------------------------------------------------
# Overlays


def test_overlay_draws_boxes_where_the_objects_are(
    dataset: RGBDDataset, gt_records: list[SceneRecord], tmp_path: Path
) -> None:
    assert len(BOX_EDGES) == 12
    record = max(gt_records, key=lambda r: len(r.objects))
    obs = GroundTruthObserver(dataset).observe_one(record.image_id)
    for obj in record.objects:
        corners = box_corners_cam(obj, record)
        np.testing.assert_allclose(corners.mean(axis=0), obj.center_cam, atol=1e-5)
        uv = project(corners, record.K)  # the projected box encloses most of the mask's pixels
        ys, xs = np.nonzero(obj.mask.decode())
        inside = (
            (xs >= uv[:, 0].min() - 1)
            & (xs <= uv[:, 0].max() + 1)
            & (ys >= uv[:, 1].min() - 1)
            & (ys <= uv[:, 1].max() + 1)
        )
        assert inside.mean() > 0.95
    image = render_overlay(obs, record)
    assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[1] > 2 * image.shape[0] - 100
    out = tmp_path / "scenes"
    summary = extract_images(_config(out, n_overlays=2), dataset.ids(), GroundTruthObserver(dataset), progress=False)
    assert summary["n_overlays"] == 2 and len(list((out / "overlays").glob("*.png"))) == 2
    assert overlay_sample(list("abcdefghij"), 3) == ["a", "f", "j"] and overlay_sample(["a"], 3) == ["a"]


# ---------------------------------------------------------------------------------------------
# Model path


class OracleBackends:
    """Stub depth, segmenter and labeler that answer from the dataset (exact), plus injected faults."""

    def __init__(self, dataset: RGBDDataset, focal_only: set[int] = frozenset(), no_masks: set[int] = frozenset()):
        self.dataset = dataset
        self.focal_only, self.no_masks = focal_only, no_masks
        self.seen_focals: list[tuple[float | None, str]] = []

    def _id(self, image: np.ndarray) -> str:
        return next(i for i in self.dataset.ids() if np.array_equal(self.dataset.rgb(i), image))

    def estimate(self, images, focal_px, focal_sources=None) -> list[DepthResult]:
        out = []
        for k, image in enumerate(images):
            index = self.dataset.ids().index(self._id(image))
            self.seen_focals.append((focal_px[k], focal_sources[k]))
            reasons = ("focal: 1e+07 px from model outside [10, 1e+05] px",) if index in self.focal_only else ()
            out.append(DepthResult(self.dataset.depth(self._id(image)), float(focal_px[k]), "dataset", reasons=reasons))
        return out

    def segment(self, images) -> list[list[Mask]]:
        out = []
        for image in images:
            image_id = self._id(image)
            if self.dataset.ids().index(image_id) in self.no_masks:
                out.append([])
                continue
            instances = self.dataset.instances(image_id)
            masks = [instances == k for k in np.unique(instances) if k > 0]
            out.append([Mask(m, 0.9, 0.95, (0, 0, 1, 1)) for m in masks])
        return out

    def label(self, image, masks, vocabulary) -> list[Label]:
        instances = self.dataset.instances(self._id(image))
        labels = []
        for mask in masks:
            k = int(np.bincount(instances[mask.mask]).argmax())
            labels.append(Label(vocabulary[k % len(vocabulary)], 0.2 if k == 1 else 0.9))
        return labels


def _reader(world: Path, with_dataset: bool = True) -> ImageReader:
    source = WorldSource(world)
    limits = ImageLimits(max_file_bytes=10**7, max_pixels=10**7, min_side_px=16, formats=("PNG",))
    return ImageReader(source, list(source.refs()), limits, RGBDDataset(world) if with_dataset else None)


def test_model_observer_funnel_with_exact_backends(world: Path, dataset: RGBDDataset, tmp_path: Path) -> None:
    oracle = OracleBackends(dataset, focal_only={2}, no_masks={5})
    observer = ModelObserver(
        oracle,
        oracle,
        oracle,
        vocabulary=("cube", "ball", "cone"),
        reader=_reader(world),
        min_label_score=0.5,
        model_ids={"depth": "oracle"},
    )
    ids = [*dataset.ids()[:6], "not-in-manifest"]
    results = observer.observe(ids)
    assert [r.image_id for r in results] == ids
    failures = {r.image_id: r.reason for r in results if isinstance(r, ObservationFailure)}
    assert failures == {ids[2]: "absurd_focal", ids[5]: "empty_masks", "not-in-manifest": "unreadable"}
    assert all(f == (dataset.row(i).fx, "dataset") for f, i in zip(oracle.seen_focals, ids, strict=False))
    gt = GroundTruthObserver(dataset)
    for result in results:
        if isinstance(result, ObservationFailure):
            continue
        truth = gt.observe_one(result.image_id)
        dropped = result.dropped.get("low_label_score", 0)
        assert len(result.masks) + dropped == len(truth.masks)  # instance 1 scored 0.2 < 0.5
        assert dropped == int(1 in truth.object_ids)
        record = build_scene(result, GEOMETRY, image_rng(0, result.image_id))
        assert isinstance(record, SceneRecord) and record.provenance.models == {"depth": "oracle"}
        assert record.dropped.get("low_label_score", 0) == dropped
        gt_record = build_scene(truth, GEOMETRY, image_rng(0, result.image_id))
        by_area = {o.mask_area_px: o for o in gt_record.objects}
        for obj in record.objects:  # same masks, same depth: same boxes
            np.testing.assert_allclose(obj.box.center, by_area[obj.mask_area_px].box.center, atol=1e-3)
    # and through the pipeline: every id in exactly one file
    extract_images(_config(tmp_path / "out"), ids, observer, progress=False)
    assert len(_read_records(tmp_path / "out")) + len(_read_quarantine(tmp_path / "out")) == len(ids)


def test_exif_focal_is_read_from_the_35mm_equivalent() -> None:
    import io

    image = Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28
    with_exif, plain = io.BytesIO(), io.BytesIO()
    image.save(with_exif, "JPEG", exif=exif)
    image.save(plain, "PNG")
    assert exif_focal_px(with_exif.getvalue(), 60, 40) == pytest.approx(28 * np.hypot(60, 40) / 43.267)
    assert exif_focal_px(plain.getvalue(), 60, 40) is None
    assert exif_focal_px(b"not an image", 60, 40) is None


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import open_clip
    from tiny_models import OPENCLIP_NAME, save_depth_pro, save_openclip, save_sam2_hf

    root = tmp_path_factory.mktemp("tiny")
    openclip_dir, openclip_ckpt = save_openclip(root / "openclip")
    open_clip.add_model_config(openclip_dir / f"{OPENCLIP_NAME}.json")
    return {"depth": save_depth_pro(root / "depth"), "sam2": save_sam2_hf(root / "sam2"), "clip": openclip_ckpt,
            "clip_name": Path(OPENCLIP_NAME)}  # fmt: skip


def _model_config(out: Path, tiny: dict[str, Path], permissive: bool) -> SpatialBoostConfig:
    extract = {
        "backend": "models",
        "depth": {"model_path": str(tiny["depth"]), "batch_size": 3},
        "segmenter": {"model_path": str(tiny["sam2"]), "points_per_side": 4, "points_per_batch": 8, "batch_size": 2},
        "labeler": {"model_name": str(tiny["clip_name"]), "pretrained": str(tiny["clip"]), "vocabulary": ["cube", "sphere", "cone"]},
    }  # fmt: skip
    if permissive:  # let the nonsense through every filter, so that geometry sees it too
        extract["depth"].update(max_depth_m=1e9)
        extract["segmenter"].update(pred_iou_thresh=0.0, stability_thresh=0.0, min_area_px=1)
    return _config(out, shard_size=4, n_overlays=1, **extract)


@pytest.mark.parametrize("permissive", [False, True])
def test_tiny_random_models_end_in_quarantine_not_crashes(
    world: Path, tiny_paths: dict[str, Path], tmp_path: Path, permissive: bool
) -> None:
    from spatialboost.extract.factory import build_observer

    cfg = _model_config(tmp_path / "scenes", tiny_paths, permissive)
    data = DataConfig(source="world", uri=str(world), manifest=str(tmp_path / "m.jsonl"),
                      quarantine=str(tmp_path / "q.jsonl"))  # fmt: skip
    build_manifest_for(data, progress=False)
    ids = manifest_ids(data.manifest)[:6]
    observer = build_observer(cfg.extract, data, device="cpu")
    assert isinstance(observer, ModelObserver)
    summary = extract_images(cfg, ids, observer, progress=False)
    records, quarantined = _read_records(tmp_path / "scenes"), _read_quarantine(tmp_path / "scenes")
    assert sorted([r.image_id for r in records] + [q.id for q in quarantined]) == sorted(ids)
    assert summary["n_records"] == len(records)
    if not permissive:  # random Depth Pro: 1e4 m everywhere
        assert {q.reason for q in quarantined} == {"invalid_depth"} and not records
        assert all("depth:" in q.detail for q in quarantined)
    else:
        for record in records:
            assert record.provenance.backend == "models" and record.intrinsics.focal_source == "dataset"
            assert {obj.label for obj in record.objects} <= {"cube", "sphere", "cone"}
        assert {q.reason for q in quarantined} <= {"no_objects", "empty_masks", "invalid_depth"}
