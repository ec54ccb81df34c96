"""Real images through the whole chain: folder and S3 sources -> extraction -> synthesis -> training.

The images are world renders saved as JPEG with the camera's 35 mm-equivalent focal length in
EXIF, so every answer has a ground truth. They go through the model path (`ModelObserver`: the
image reader of the source, EXIF focal, the depth -> segmenter -> labeler funnel) with backends
that answer from the world (`WorldBackends`: its depth, instance masks and labels), because
random tiny checkpoints give nonsense scenes; `test_tiny_depth_pro_depth_is_what_is_stored` runs
the real Depth Pro class with its head set to a known constant instead, so the stored map of
the `models` backend is checked against an exact value.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spatialboost.config import DataConfig, S3Config, SpatialBoostConfig, SynthesizeConfig, WorldConfig
from spatialboost.data import RGBDDataset, build_manifest_for, decode_image, open_source, read_manifest
from spatialboost.data.exif import FULL_FRAME_DIAGONAL_MM
from spatialboost.data.reader import ImageReader
from spatialboost.data.records import ImageLimits, ImageRef
from spatialboost.extract.depth_maps import (
    DepthMapError,
    DepthMaps,
    decode_depth,
    depth_codes,
    depth_from_codes,
    depth_map_ref,
    encode_depth,
    max_relative_error,
    write_depth_archive,
)
from spatialboost.extract.model_observer import ModelObserver
from spatialboost.extract.pipeline import extract_images, manifest_ids, records_path
from spatialboost.extract.protocols import DepthResult, Label, Mask
from spatialboost.extract.records import QuarantineRecord, SceneRecord
from spatialboost.qa.formats import read_jsonl
from spatialboost.qa.pipeline import finalize as finalize_qa
from spatialboost.qa.pipeline import plan, shard_paths, synthesize, synthesize_shard
from spatialboost.qa.pipeline import prepare_output as prepare_qa_output
from spatialboost.runtime import torch_threads
from spatialboost.train import ConversationDataset, ImageFetcher, load_conversations, manifest_sha256, train
from spatialboost.world import render_dataset
from tests.tiny_vlm import tiny_vlm, train_tiny_tokenizer
from tests.train_fixtures import train_cfg

WORLD = WorldConfig(n_train=0, n_test=8, objects_per_scene=(3, 6))  # 128 x 128, the demo's size
LEVELS = ("pixel", "object", "scene")
QA_REASONS = {"no_depth", "depth_unreadable", "no_questions", "no_pixel_turns", "no_object_turns", "no_scene_turns"}


# ---------------------------------------------------------------------------------------------
# The stored depth map: codec and archive


@settings(max_examples=60, deadline=None)
@given(
    log_depth=st.lists(st.floats(-3.0, 4.0), min_size=1, max_size=64),
    holes=st.lists(st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf]), max_size=8),
)
def test_depth_round_trips_within_its_quantisation_error(log_depth: list[float], holes: list[float]) -> None:
    depth = np.array([10.0**v for v in log_depth] + holes, dtype=np.float32)[None, :]  # (1, W) metres
    ref = depth_map_ref("x.depth.zip", encode_depth(depth))
    back = decode_depth(encode_depth(depth), ref)
    assert back.shape == depth.shape and back.dtype == np.float32
    valid = np.isfinite(depth) & (depth > 0)
    assert np.all(back[~valid] == 0) and np.all(back[valid] > 0)  # "no depth" stays no depth, and only it
    relative = np.abs(back[valid].astype(np.float64) / depth[valid] - 1)
    assert relative.max(initial=0) <= max_relative_error() + 1e-6  # half a log step (+ float32 rounding)
    assert max_relative_error() < 1.3e-4  # 1.3 mm at 10 m


def test_depth_codes_are_log_spaced_and_clip_outside_the_range() -> None:
    codes = depth_codes(np.array([[1e-3, 1e4, 1e-6, 1e6, 0.0]]))
    assert codes.tolist() == [[1, 65535, 1, 65535, 0]]
    one_metre, two_metres = depth_codes(np.array([[1.0, 2.0]]))[0].astype(int)
    four_metres = int(depth_codes(np.array([[4.0]]))[0, 0])
    assert four_metres - two_metres == two_metres - one_metre  # equal steps per doubling
    np.testing.assert_allclose(depth_from_codes(np.array([[1, 65535]], dtype=np.uint16)), [[1e-3, 1e4]], rtol=1e-6)


def test_depth_archive_is_byte_stable_content_addressed_and_verified(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = [rng.uniform(0.5, 20.0, (12, 16)).astype(np.float32) for _ in range(3)]
    payloads = {depth_map_ref("a.zip", encode_depth(d)).sha256: encode_depth(d) for d in maps}
    write_depth_archive(tmp_path / "a.zip", payloads)
    write_depth_archive(tmp_path / "b.zip", dict(reversed(payloads.items())))  # insertion order does not matter
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    record = _bare_record(depth_map_ref("a.zip", encode_depth(maps[1])), width=16, height=12)
    reader = DepthMaps()
    np.testing.assert_allclose(reader.read(tmp_path, record), maps[1], rtol=2e-4)
    # a member whose bytes are another map's: caught by the sha256
    swapped = {record.depth_map.sha256: encode_depth(maps[0])}
    write_depth_archive(tmp_path / "c.zip", swapped)
    with pytest.raises(DepthMapError, match="does not match its sha256"):
        DepthMaps().read(tmp_path, record.model_copy(update={"depth_map": record.depth_map.model_copy(update={"file": "c.zip"})}))
    with pytest.raises(DepthMapError, match="depth archive missing"):
        DepthMaps().read(tmp_path / "elsewhere", record)
    with pytest.raises(DepthMapError, match="the image 17x12"):
        reader.read(tmp_path, record.model_copy(update={"width": 17}))


def _bare_record(ref, width: int, height: int) -> SceneRecord:  # noqa: ANN001
    from tests.test_qa import _record

    return _record([], image_id="bare", shape=(height, width)).model_copy(update={"depth_map": ref})


# ---------------------------------------------------------------------------------------------
# A folder of JPEGs with EXIF focal lengths, and the same files on S3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> RGBDDataset:
    root = tmp_path_factory.mktemp("world")
    render_dataset(WORLD, root, progress=False)
    return RGBDDataset(root)


def exif_jpeg(rgb: np.ndarray, focal_px: float, orientation: int | None = None) -> bytes:
    """JPEG bytes with FocalLengthIn35mmFilm (whole millimetres, as cameras write it)."""
    height, width = rgb.shape[:2]
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = round(focal_px * FULL_FRAME_DIAGONAL_MM / math.hypot(width, height))
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpegs(world: RGBDDataset) -> dict[str, bytes]:
    """file name -> JPEG bytes of every world image."""
    return {f"{i}.jpg": exif_jpeg(world.rgb(i), world.row(i).fx) for i in world.ids()}


@pytest.fixture(scope="module")
def folder(jpegs: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name, data in jpegs.items():
        (root / name).write_bytes(data)
    return root


class WorldBackends:
    """Depth estimator, segmenter and labeler that answer from the world (exact), for images that
    went through JPEG: each image is matched to the nearest world image. Depth is the world's
    metric depth whatever focal comes in (the known focal must be the EXIF one)."""

    def __init__(self, dataset: RGBDDataset) -> None:
        self.dataset = dataset
        self.rgbs = {i: dataset.rgb(i).astype(np.int16) for i in dataset.ids()}

    def _id(self, image: np.ndarray) -> str:
        return min(self.rgbs, key=lambda i: np.abs(self.rgbs[i] - image).mean())

    def estimate(self, images, focal_px, focal_sources=None) -> list[DepthResult]:  # noqa: ANN001
        assert all(f is not None for f in focal_px) and set(focal_sources) == {"exif"}
        return [DepthResult(self.dataset.depth(self._id(image)), float(f), "exif") for image, f in zip(images, focal_px, strict=True)]

    def segment(self, images: Sequence[np.ndarray]) -> list[list[Mask]]:
        out = []
        for image in images:
            instances = self.dataset.instances(self._id(image))
            out.append([Mask(instances == k, 0.95, 0.95, (0, 0, 1, 1)) for k in np.unique(instances) if k > 0])
        return out

    def label(self, image: np.ndarray, masks: Sequence[Mask], vocabulary: Sequence[str]) -> list[Label]:
        image_id = self._id(image)
        instances, labels = self.dataset.instances(image_id), {o["instance_id"]: o["label"] for o in self.dataset.annotation(image_id)["objects"]}
        return [Label(labels[int(np.bincount(instances[m.mask]).argmax())], 0.9) for m in masks]


def _pipeline_cfg(tmp: Path, data: DataConfig) -> SpatialBoostConfig:
    return SpatialBoostConfig.model_validate({
        "data": data.model_dump(mode="json"),
        "extract": {"backend": "models", "output": str(tmp / "scenes"), "shard_size": 3, "n_overlays": 0,
                    "geometry": {"max_points_per_object": 1000}},
        "synthesize": {"output": str(tmp / "qa"), "shard_size": 3, "n_renderings": 0},
    })  # fmt: skip


def _model_observer(cfg: SpatialBoostConfig, world: RGBDDataset) -> ModelObserver:
    """build_observer's model path (the source's reader, no dataset intrinsics) with world backends."""
    refs = [ImageRef(e.id, e.uri, e.size) for e in read_manifest(cfg.data.manifest)]
    reader = ImageReader(open_source(cfg.data), refs, ImageLimits.from_config(cfg.data))
    oracle = WorldBackends(world)
    vocabulary = sorted(WORLD.classes)
    return ModelObserver(oracle, oracle, oracle, vocabulary=vocabulary, reader=reader, model_ids={"depth": "world"})


def run_chain(cfg: SpatialBoostConfig, world: RGBDDataset) -> tuple[list[SceneRecord], dict, dict]:
    """manifest -> extraction -> synthesis; returns the scene records, the extract and synthesize summaries."""
    build_manifest_for(cfg.data, progress=False)
    extracted = extract_images(cfg, manifest_ids(cfg.data.manifest), _model_observer(cfg, world), progress=False)
    synthesized = synthesize(cfg.extract.output, cfg.synthesize, cfg.data.uri, progress=False)
    records = [SceneRecord.from_json(line) for path in sorted(Path(cfg.extract.output).glob("shard-?????.jsonl"))
               for line in path.read_text().splitlines()]  # fmt: skip
    return records, extracted, synthesized


def world_id(record: SceneRecord) -> str:
    return Path(record.image_id).stem


def check_chain(records: list[SceneRecord], synthesized: dict, cfg: SpatialBoostConfig, world: RGBDDataset) -> list[dict]:
    """What every real-image run must show; returns the sidecar records."""
    assert len(records) == len(world), "every image became a scene"
    depth_maps, stored = DepthMaps(), {}
    for record in records:
        truth = world.depth(world_id(record))
        assert record.intrinsics.focal_source == "exif" and record.depth_map is not None
        assert record.intrinsics.fx == pytest.approx(world.row(world_id(record)).fx, rel=0.03)  # EXIF: whole mm
        stored[record.image_id] = depth_maps.read(cfg.extract.output, record)
        valid = truth > 0
        assert np.array_equal(stored[record.image_id] > 0, valid)
        np.testing.assert_allclose(stored[record.image_id][valid], truth[valid], rtol=max_relative_error() + 1e-6)
    out = Path(cfg.synthesize.output)
    shards = plan(cfg.extract.output, cfg.synthesize)
    sidecar = [r for s in shards for r in read_jsonl(shard_paths(out, s.index)["sidecar"])]
    quarantined = [QuarantineRecord.model_validate(r) for s in shards for r in read_jsonl(shard_paths(out, s.index)["quarantine"])]
    assert len(sidecar) + len(quarantined) == len(records) == synthesized["n_conversations"] + synthesized["n_quarantined"]
    assert len(sidecar) >= len(records) - 2, "most scenes of 3-6 objects make a full conversation"
    assert {q.reason for q in quarantined} <= QA_REASONS and all(q.stage == "synthesize" and q.detail for q in quarantined)
    for conversation in sidecar:
        levels = {turn["level"] for turn in conversation["turns"]}
        assert set(LEVELS) <= levels, conversation["id"]  # pixel, object and scene turns, every one
        depth = stored[conversation["image_id"]]
        for turn in conversation["turns"]:
            points = [tuple(p) for p in turn["points"]]  # role points first, then those that name objects
            if turn["qtype"] == "point_depth":  # the stored depth at (x, y)
                x, y = points[0]
                assert turn["value"] == pytest.approx(float(depth[y, x]), rel=1e-6)
            if turn["qtype"] == "point_closer":
                (ax, ay), (bx, by) = points[:2]
                a_closer = depth[ay, ax] < depth[by, bx]
                truth = ("A" if a_closer else "B") if turn["answer_type"] == "choice" else a_closer == (turn["asked"] == "closer")
                assert turn["value"] == truth
    return sidecar


def _tree_bytes(folder: str | Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_folder_of_jpegs_gets_all_three_levels(folder: Path, world: RGBDDataset, tmp_path: Path) -> None:
    data = DataConfig(source="folder", uri=str(folder), manifest=str(tmp_path / "m.jsonl"), quarantine=str(tmp_path / "q.jsonl"))
    cfg = _pipeline_cfg(tmp_path, data)
    records, extracted, synthesized = run_chain(cfg, world)
    sidecar = check_chain(records, synthesized, cfg, world)
    assert extracted["depth_bytes"] > 0 and synthesized["levels"]["pixel"] >= len(sidecar)
    assert {c["image"] for c in sidecar} <= {f"{world_id(r)}.jpg" for r in records}  # relative to data.uri

    # A killed extraction (shard 1's depth archive written, its records not) and a killed synthesis
    # (shard 1's quarantine file written, its sidecar not) resume to the same bytes.
    scenes, qa = _tree_bytes(cfg.extract.output), _tree_bytes(cfg.synthesize.output)
    records_path(cfg.extract.output, 1).unlink()
    (Path(cfg.extract.output) / ".shard-00001.jsonl.999.tmp").write_text('{"partial')
    again = extract_images(cfg, manifest_ids(data.manifest), _model_observer(cfg, world), progress=False)
    assert again["n_shards_skipped"] == again["n_shards"] - 1 and _tree_bytes(cfg.extract.output) == scenes
    shard_paths(cfg.synthesize.output, 1)["sidecar"].unlink()
    shard_paths(cfg.synthesize.output, 1)["llava"].write_text("[partial")
    resumed = synthesize(cfg.extract.output, cfg.synthesize, data.uri, progress=False)
    assert resumed["n_shards_skipped"] == resumed["n_shards"] - 1 and _tree_bytes(cfg.synthesize.output) == qa

    # QA shards written in reverse order (as parallel workers may finish) give the same bytes.
    fan_out = cfg.synthesize.model_copy(update={"output": str(tmp_path / "qa_fan_out")})
    shards = plan(cfg.extract.output, fan_out)
    prepare_qa_output(fan_out, shards, data.uri)
    for shard in reversed(shards):
        synthesize_shard(shard, fan_out, data.uri)
    finalize_qa(fan_out, shards, data.uri)
    assert _tree_bytes(fan_out.output) == qa

    # The conversations' images reach the training dataset decoded as the extraction decoded them.
    fetch = ImageFetcher(data.uri)
    for conversation in load_conversations(cfg.synthesize.output)[:2]:
        expected = decode_image((folder / conversation["image"]).read_bytes(), ImageLimits.from_config(data))
        assert np.array_equal(fetch(conversation["image"]), expected)


def test_a_scene_without_questions_is_quarantined_with_its_reason(world: RGBDDataset, tmp_path: Path) -> None:
    from tests.test_qa import _object, _record

    full = [_object(1, "cube", "red", (4, 10, 20, 30), (-1.0, 5.0, 0.3)), _object(2, "cone", "blue", (36, 12, 56, 34), (1.0, 7.0, 0.4)),
            _object(3, "ball", "green", (22, 40, 34, 52), (0.0, 3.5, 0.2))]  # fmt: skip
    depth = np.full((64, 64), 6.0, dtype=np.float32)
    depth[10:30, 4:20], depth[12:34, 36:56], depth[40:52, 22:34] = 5.0, 7.0, 3.5
    payload = encode_depth(depth)
    ref = depth_map_ref("shard-00000.depth.zip", payload)
    broken = ref.model_copy(update={"sha256": "0" * 64})
    scenes = {
        "good": _record(full, "good").model_copy(update={"depth_map": ref}),
        "lonely": _record(full[:1], "lonely").model_copy(update={"depth_map": ref}),  # one object: no scene level
        "doubtful": _record([_object(1, "cube", "red", (4, 10, 20, 30), (-1.0, 5.0, 0.3), confidence=0.05)],
                            "doubtful").model_copy(update={"depth_map": ref}),  # fmt: skip
        "flat": _record(full, "flat"),  # built in memory: no stored depth
        "damaged": _record(full, "damaged").model_copy(update={"depth_map": broken}),
    }
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_depth_archive(folder / ref.file, {ref.sha256: payload})
    (folder / "shard-00000.jsonl").write_text("".join(r.to_json() + "\n" for r in scenes.values()))
    cfg = SynthesizeConfig(output=str(tmp_path / "qa"), n_renderings=0, min_margin_rel=0.05)
    summary = synthesize(folder, cfg, image_root=None, progress=False)

    reasons = {q["id"]: q["reason"] for q in read_jsonl(shard_paths(cfg.output, 0)["quarantine"])}
    assert reasons == {"lonely": "no_scene_turns", "doubtful": "no_questions", "flat": "no_depth", "damaged": "depth_unreadable"}
    assert summary["quarantine_by_reason"] == {"depth_unreadable": 1, "no_depth": 1, "no_questions": 1, "no_scene_turns": 1}
    assert summary["n_quarantined"] == 4 and summary["n_conversations"] == 1
    written = json.loads((Path(cfg.output) / "conversations.json").read_text())
    assert [c["id"] for c in written] == ["good"] and len(written[0]["conversations"]) >= 2 * len(LEVELS)
    manifest = json.loads((Path(cfg.output) / "manifest.json").read_text())
    assert manifest["totals"]["quarantine_by_reason"] == summary["quarantine_by_reason"]

    # Without the pixel level required, a record without stored depth gets object and scene turns.
    relaxed = cfg.model_copy(update={"output": str(tmp_path / "relaxed"), "required_levels": ("object", "scene")})
    summary = synthesize(folder, relaxed, image_root=None, progress=False)
    assert "no_depth" not in summary["quarantine_by_reason"] and summary["n_conversations"] == 2

    # The training dataset's second line of defence: an empty conversation names its record.
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    empty = ConversationDataset([{"id": "lonely", "conversations": []}], tokenizer, None)
    with pytest.raises(ValueError, match="record 'lonely': the conversation has no user message"):
        empty[0]


# ---------------------------------------------------------------------------------------------
# S3 (a moto server on 127.0.0.1)

FAKE_KEY_ID = "AKIAFAKEKEYFORP16B001"
FAKE_SECRET = "fake/Secret+For+Real+Images+Test+0123"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint: str, jpegs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A bucket with the JPEGs under sa1b/; fake credentials in the environment only."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"sb-real-{_free_port()}"
    client.create_bucket(Bucket=name)
    for key, data in jpegs.items():
        client.put_object(Bucket=name, Key=f"sa1b/{key}", Body=data)
    return name


class _WorkerProbe(torch.utils.data.Dataset):
    """Returns (worker pid, pid that made the fetcher's client, image checksum) per S3 uri."""

    def __init__(self, fetcher: ImageFetcher, uris: list[str]) -> None:
        self.fetcher, self.uris = fetcher, uris

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        pixels = self.fetcher(self.uris[i])
        return os.getpid(), self.fetcher.client_pid, int(pixels.astype(np.int64).sum())


@pytest.mark.integration
def test_s3_images_through_extraction_synthesis_and_training(
    bucket: str, moto_endpoint: str, world: RGBDDataset, jpegs: dict[str, bytes], tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    s3 = S3Config(endpoint_url=moto_endpoint, region="us-east-1")
    data = DataConfig(source="s3", uri=f"s3://{bucket}/sa1b", s3=s3, manifest=str(tmp_path / "m.jsonl"),
                      quarantine=str(tmp_path / "q.jsonl"))  # fmt: skip
    cfg = _pipeline_cfg(tmp_path, data)
    records, _, synthesized = run_chain(cfg, world)
    sidecar = check_chain(records, synthesized, cfg, world)
    assert all(c["image"].startswith(f"s3://{bucket}/sa1b/") for c in sidecar)

    # Training reads the S3 images through DataLoader workers, each with its own client.
    conversations = load_conversations(cfg.synthesize.output)
    fetcher = ImageFetcher(s3=s3, limits=ImageLimits.from_config(data), expected_sha256=manifest_sha256(data.manifest))
    uris = [c["image"] for c in conversations]
    uncached = ImageFetcher(s3=s3, limits=ImageLimits.from_config(data), cache_bytes=0)
    uncached(uris[0])  # a client in the parent before the fork: the workers must not reuse it
    assert uncached.client_pid == os.getpid()
    loader = torch.utils.data.DataLoader(_WorkerProbe(uncached, uris), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")  # fmt: skip
    seen = list(loader)
    assert all(pid == client_pid != os.getpid() for pid, client_pid, _ in seen) and len({p for p, _, _ in seen}) == 2
    for (_, _, checksum), uri in zip(seen, uris, strict=True):
        expected = decode_image(jpegs[uri.rsplit("/", 1)[1]], ImageLimits.from_config(data))
        assert checksum == int(expected.astype(np.int64).sum())

    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    with torch_threads(1):
        vlm = tiny_vlm(tokenizer, "dinov2")
        dataset = ConversationDataset(conversations, tokenizer, vlm.encoder.preprocess, max_length=256, image_loader=fetcher)
        np.testing.assert_array_equal(
            dataset[0].pixel_values.numpy(),
            vlm.encoder.preprocess([decode_image(jpegs[uris[0].rsplit("/", 1)[1]], ImageLimits.from_config(data))]).numpy(),
        )
        result = train(vlm, dataset, train_cfg(max_steps=2, num_workers=2), tmp_path / "boost", progress=False)
    assert result.steps == 2 and all(math.isfinite(loss) for loss in result.losses)

    # An object changed after the manifest, or gone, is a clear error naming the record.
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=uris[1].split("/", 3)[3], Body=jpegs[uris[0].rsplit("/", 1)[1]])
    client.delete_object(Bucket=bucket, Key=uris[2].split("/", 3)[3])
    fresh = ImageFetcher(s3=s3, expected_sha256=manifest_sha256(data.manifest), cache_bytes=0)
    checked = ConversationDataset(conversations, tokenizer, vlm.encoder.preprocess, max_length=256, image_loader=fresh)
    with pytest.raises(ValueError, match=rf"record {conversations[1]['id']!r}: .*changed since the data manifest"):
        checked[1]
    with pytest.raises(ValueError, match=rf"record {conversations[2]['id']!r}: .*S3 NoSuchKey \(HTTP 404\)"):
        checked[2]
    with pytest.raises(ValueError, match="not in the data manifest"):
        fresh(f"s3://{bucket}/sa1b/unlisted.jpg")
    out = "".join(capsys.readouterr()) + "".join(p.read_text() for p in Path(cfg.synthesize.output).glob("*.json*"))
    assert FAKE_SECRET not in out and FAKE_KEY_ID not in out


# ---------------------------------------------------------------------------------------------
# The models backend: the real Depth Pro class, its head set to a known constant


def test_tiny_depth_pro_depth_is_what_is_stored(folder: Path, world: RGBDDataset, tmp_path: Path) -> None:
    import open_clip

    from spatialboost.extract.factory import build_observer
    from tests.tiny_models import OPENCLIP_NAME, save_constant_depth_pro, save_openclip, save_sam2_hf

    inverse_depth = 0.125
    clip_dir, clip_ckpt = save_openclip(tmp_path / "clip")
    open_clip.add_model_config(clip_dir / f"{OPENCLIP_NAME}.json")
    data = DataConfig(source="folder", uri=str(folder), manifest=str(tmp_path / "m.jsonl"), quarantine=str(tmp_path / "q.jsonl"))
    cfg = SpatialBoostConfig.model_validate({
        "data": data.model_dump(mode="json"),
        "extract": {
            "backend": "models", "output": str(tmp_path / "scenes"), "shard_size": 4, "n_overlays": 0,
            "depth": {"model_path": str(save_constant_depth_pro(tmp_path / "depth", inverse_depth)), "batch_size": 4},
            "segmenter": {"model_path": str(save_sam2_hf(tmp_path / "sam2")), "points_per_side": 4, "points_per_batch": 8,
                          "pred_iou_thresh": 0.0, "stability_thresh": 0.0, "min_area_px": 1},
            "labeler": {"model_name": OPENCLIP_NAME, "pretrained": str(clip_ckpt), "vocabulary": ["cube", "sphere", "cone"]},
        },
        "synthesize": {"output": str(tmp_path / "qa"), "n_renderings": 0},
    })  # fmt: skip
    build_manifest_for(data, progress=False)
    ids = manifest_ids(data.manifest)[:4]
    with torch_threads(1):
        extract_images(cfg, ids, build_observer(cfg.extract, data, device="cpu"), progress=False)
    records = [SceneRecord.from_json(line) for line in records_path(cfg.extract.output, 0).read_text().splitlines()]
    assert records, "random masks on a wall still give scenes"
    maps = DepthMaps()
    for record in records:
        expected = record.intrinsics.fx / (inverse_depth * record.width)  # the EXIF focal set the scale
        assert record.intrinsics.focal_source == "exif" and record.provenance.backend == "models"
        depth = maps.read(cfg.extract.output, record)
        np.testing.assert_allclose(depth, expected, rtol=max_relative_error() + 1e-5)
        assert record.depth.median_m == pytest.approx(expected, rel=1e-5)  # the record summarises the same map
    # Random masks on a flat wall touch each other and the border: no object is measurable, so
    # every scene lacks object-level turns and is quarantined, not written empty.
    summary = synthesize(cfg.extract.output, cfg.synthesize, data.uri, progress=False)
    assert summary["n_conversations"] == 0 and summary["quarantine_by_reason"] == {"no_object_turns": len(records)}
    # Asking for the pixel level only, the pixel answers are Depth Pro's depth, read back.
    pixel_only = cfg.synthesize.model_copy(update={"output": str(tmp_path / "qa_pixel"), "required_levels": ("pixel",)})
    summary = synthesize(cfg.extract.output, pixel_only, data.uri, progress=False)
    assert summary["n_conversations"] == len(records) and summary["levels"]["pixel"] >= len(records)
    by_id = {r.image_id: r for r in records}
    for shard in plan(cfg.extract.output, pixel_only):
        for conversation in read_jsonl(shard_paths(pixel_only.output, shard.index)["sidecar"]):
            record = by_id[conversation["image_id"]]
            depths = [t["value"] for t in conversation["turns"] if t["qtype"] == "point_depth"]
            expected = record.intrinsics.fx / (inverse_depth * record.width)
            assert depths and depths == pytest.approx([expected] * len(depths), rel=max_relative_error() + 1e-5)
