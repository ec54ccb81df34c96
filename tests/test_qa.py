"""Multi-turn spatial QA synthesis: typed turns, phrasing, orders, files, properties, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialboost.config import ExtractConfig, ObjectGeometryConfig, SynthesizeConfig, TurnMix, WorldConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.ground_truth import GroundTruthObserver
from spatialboost.extract.pipeline import extract_shard
from spatialboost.extract.records import (
    CanonicalBox,
    DepthStats,
    FrameRecord,
    Intrinsics,
    MaskRLE,
    ObjectEvidence,
    ObjectRecord,
    Provenance,
    SceneRecord,
)
from spatialboost.qa import Turn, ordered, pixel_probes, synthesize, synthesize_conversation
from spatialboost.qa.answers import count_word
from spatialboost.qa.draws import scene_draws
from spatialboost.qa.facts import occluded_objects, occluded_objects_naive, scene_facts
from spatialboost.qa.formats import IMAGE_TOKEN, image_reference
from spatialboost.qa.phrasing import QUESTIONS, NumberFormat
from spatialboost.qa.pipeline import plan, shard_paths
from spatialboost.world import render_dataset

# The demo world at its default size; objects subsampled to 1000 points so extraction is quick.
WORLD = WorldConfig(n_train=0, n_test=12)
GEOMETRY = ObjectGeometryConfig(max_points_per_object=1000)


class Quiet(tuple):
    """A fixture value that hypothesis prints as a short name, not as every record and array."""

    def __repr__(self) -> str:
        return "<world fixture>"


class QuietDict(dict):
    def __repr__(self) -> str:
        return "<depth maps>"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[SceneRecord]]:
    """(dataset root, folder of one scene shard, scene records) of 12 ground-truth scenes, written
    by the extraction stage (so with their stored depth maps)."""
    root = tmp_path_factory.mktemp("world")
    render_dataset(WORLD, root, progress=False)
    observer = GroundTruthObserver(RGBDDataset(root))
    scenes = tmp_path_factory.mktemp("scenes")
    extract_shard(observer, observer.dataset.ids("test"), 0, ExtractConfig(geometry=GEOMETRY), scenes, seed=0)
    records = [SceneRecord.from_json(line) for line in (scenes / "shard-00000.jsonl").read_text().splitlines()]
    return Quiet((root, scenes, records))


@pytest.fixture(scope="module")
def depths(world) -> dict[str, np.ndarray]:
    root, _, records = world
    dataset = RGBDDataset(root)
    return QuietDict({r.image_id: dataset.depth(r.image_id) for r in records})


def _cfg(**kw) -> SynthesizeConfig:
    return SynthesizeConfig(**kw)


# --- hand-made scenes --------------------------------------------------------------------------


def _object(object_id: int, label: str, colour: str | None, box_px: tuple[int, int, int, int], center: tuple,
            size: tuple = (0.5, 0.5, 0.5), confidence: float = 1.0, shape: tuple[int, int] = (64, 64)) -> ObjectRecord:  # fmt: skip
    """A rectangular-mask object; center (x, y, z) canonical, metres."""
    x0, y0, x1, y1 = box_px
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    distance = math.dist(center, (0.0, 0.0, 1.5))
    return ObjectRecord(
        object_id=object_id, label=label, label_score=1.0, colour=colour, mask=MaskRLE.encode(mask),
        mask_area_px=int(mask.sum()), bbox=box_px,
        box=CanonicalBox(center=center, size=size, yaw_rad=0.0),
        center_cam=(center[0], 1.5 - center[2], center[1]), center_distance_m=distance,
        nearest_distance_m=distance - 0.2,
        evidence=ObjectEvidence(n_points=100, n_used=100, n_kept=100, depth_spread=0.05, plane_residual_m=0.0,
                                frame_source="dataset_gravity", focal_source="dataset", mask_score=1.0,
                                mask_stability=1.0),
        confidence=confidence,
    )  # fmt: skip


def _record(objects: list[ObjectRecord], image_id: str = "hand-000", shape: tuple[int, int] = (64, 64)) -> SceneRecord:
    height, width = shape
    return SceneRecord(
        image_id=image_id, image_uri=f"file:///data/rgb/{image_id}.png", width=width, height=height,
        intrinsics=Intrinsics(fx=60.0, fy=60.0, cx=width / 2, cy=height / 2, focal_source="dataset"),
        frame=FrameRecord(rotation=((1, 0, 0), (0, 0, 1), (0, -1, 0)), translation=(0.0, 0.0, 1.5),
                          source="dataset_gravity", reason="test", camera_height_m=1.5, pitch_deg=0.0, roll_deg=0.0,
                          plane_inliers=0, plane_residual_m=None),
        depth=DepthStats(valid_fraction=1.0, min_m=1.0, median_m=5.0, mean_m=5.0, max_m=10.0),
        objects=tuple(objects), provenance=Provenance(backend="ground_truth"),
    )  # fmt: skip


def _all_turns(record: SceneRecord, seeds: range, **kw) -> list[Turn]:
    turns = []
    for seed in seeds:
        turns += synthesize_conversation(record, _cfg(seed=seed, **kw)).turns
    return turns


# --- records, numbers, templates ---------------------------------------------------------------


def test_turn_dict_matches_the_dataclass_reference_and_reads_back(world, depths) -> None:
    _, _, records = world
    conversation = synthesize_conversation(records[0], _cfg(caption_turns=2), depth=depths[records[0].image_id])
    for turn in conversation.turns:
        fast = turn.to_dict()
        reference = json.loads(json.dumps(dataclasses.asdict(turn)))
        assert json.loads(json.dumps(fast)) == reference
        assert list(fast) == [f.name for f in dataclasses.fields(Turn)]
        assert Turn.from_dict(json.loads(json.dumps(fast))) == turn


@pytest.mark.parametrize(
    ("unit", "metres", "text"),
    [("m", 2.137, "2.1 m"), ("cm", 2.137, "210 cm"), ("ft", 2.137, "7.0 ft"), ("in", 2.137, "84 in"),
     ("m", -0.01, "0.0 m"), ("cm", 0.04, "0 cm")],
)  # fmt: skip
def test_numbers_are_rendered_in_the_unit_with_scaled_rounding(unit: str, metres: float, text: str) -> None:
    assert NumberFormat(unit, 1).length(metres) == text


def test_every_question_type_has_at_least_three_phrasings() -> None:
    fields = {k: "X" for k in ("a", "b", "x", "y", "ax", "ay", "bx", "by", "asked", "asked_to", "first", "second",
                               "options", "options_and", "anchor")}  # fmt: skip
    for qtype, by_answer in QUESTIONS.items():
        for answer_type, templates in by_answer.items():
            assert len(set(templates)) >= 3, (qtype, answer_type)
            for template in templates:
                assert template.format(**fields).endswith(("?", ".")), template


# --- conversations -----------------------------------------------------------------------------


def test_forward_conversation_goes_pixel_object_scene_then_captions(world, depths) -> None:
    _, _, records = world
    cfg = _cfg(caption_turns=2)
    rank = {"pixel": 0, "object": 1, "scene": 2, "caption": 3}
    full = 0
    for record in records:
        conversation = synthesize_conversation(record, cfg, depth=depths[record.image_id])
        levels = [t.level for t in conversation.turns]
        assert levels == sorted(levels, key=rank.__getitem__)
        assert levels[-2:] == ["caption", "caption"]
        spatial = conversation.spatial_turns
        assert len(spatial) + conversation.skipped.get("short", 0) == cfg.n_turns
        full += conversation.levels == {"pixel": 3, "object": 4, "scene": 3}
        for index, turn in enumerate(spatial):
            assert all(i < index for i in turn.rationale), "a rationale quotes earlier turns only"
            assert turn.confidence >= cfg.min_confidence
            if turn.answer_type in ("number", "box"):
                assert turn.unit == conversation.unit and turn.tolerance is not None
    assert full >= len(records) // 2, "most world scenes fill the configured mix exactly"


def test_later_answers_quote_earlier_ones(world, depths) -> None:
    _, _, records = world
    quoted = []
    for record in records:
        turns = synthesize_conversation(record, _cfg(), depth=depths[record.image_id]).spatial_turns
        for turn in turns:
            if turn.rationale:
                quoted.append((turn.qtype, tuple(turns[i].qtype for i in turn.rationale)))
                assert ", so " in turn.answer or "is farther," in turn.answer
    kinds = {q for q, _ in quoted}
    assert {"point_closer", "front_behind"} <= kinds
    assert ("point_closer", ("point_depth", "point_depth")) in quoted
    assert len(quoted) >= len(records), "about one chained answer per conversation or more"


def test_without_depth_pixel_turns_go_to_the_other_levels(world) -> None:
    _, _, records = world
    for record in records:
        conversation = synthesize_conversation(record, _cfg())
        assert conversation.levels["pixel"] == 0
        assert conversation.skipped["no_depth"] == 3
        assert not any(t.points and t.level == "pixel" for t in conversation.turns)
        assert sum(conversation.levels.values()) + conversation.skipped.get("short", 0) == 10


def test_low_confidence_objects_are_never_asked_about() -> None:
    objects = [
        _object(1, "cube", "red", (5, 20, 15, 30), (-2.0, 5.0, 0.25)),
        _object(2, "sphere", "blue", (40, 20, 50, 30), (2.0, 7.0, 0.25)),
        _object(3, "cone", "green", (25, 10, 35, 20), (0.0, 9.0, 0.25), confidence=0.1),
    ]
    turns = _all_turns(_record(objects), range(20), caption_turns=1)
    assert turns and all(3 not in t.object_ids for t in turns)
    assert all("cone" not in t.question + t.answer for t in turns)


def test_relations_within_the_margin_are_skipped_not_guessed() -> None:
    close = [  # 0.05 m apart in x, 3 m apart in depth
        _object(1, "cube", "red", (20, 20, 30, 30), (0.00, 4.0, 0.25)),
        _object(2, "sphere", "blue", (31, 20, 41, 30), (0.05, 7.0, 0.25)),
    ]
    turns = _all_turns(_record(close), range(30))
    assert not [t for t in turns if t.qtype == "left_right"]
    assert [t for t in turns if t.qtype == "front_behind"]
    apart = [close[0], _object(2, "sphere", "blue", (45, 20, 55, 30), (2.0, 7.0, 0.25))]
    assert [t for t in _all_turns(_record(apart), range(30)) if t.qtype == "left_right"]


def test_repeated_names_are_told_apart_by_a_point_or_a_box() -> None:
    objects = [
        _object(1, "cube", "red", (5, 20, 15, 30), (-2.0, 5.0, 0.25)),
        _object(2, "cube", "red", (40, 20, 50, 30), (2.0, 7.0, 0.25)),
        _object(3, "cube", None, (25, 40, 35, 50), (0.0, 3.0, 0.25)),
    ]
    record = _record(objects)
    seen = set()
    for seed in range(10):
        facts = scene_facts(record, scene_draws(seed, record.image_id, ("words",))["words"])
        names = {o.object_id: o for o in facts.objects}
        assert names[3].name == "the cube" and names[3].point is None and names[3].box is None
        for i in (1, 2):
            obj = names[i]
            assert (obj.point is None) != (obj.box is None)
            if obj.point is not None:
                x, y = obj.point
                assert obj.name == f"the red cube at ({x}, {y})" and objects[i - 1].mask.decode()[y, x]
                seen.add("point")
            else:
                assert obj.name == f"the red cube in the box [{', '.join(map(str, obj.bbox))}]"
                seen.add("box")
    assert seen == {"point", "box"}
    for turn in _all_turns(record, range(10)):
        words = turn.question + turn.answer
        if "red cube at (" in words:
            assert turn.points, "a turn naming an object by a point records the point"
        if "red cube in the box [" in words:
            assert turn.boxes, "a turn naming an object by a box records the box"


def test_same_named_overlapping_objects_are_not_compared() -> None:
    objects = [
        _object(1, "cube", "red", (20, 20, 40, 40), (0.0, 4.0, 0.25)),
        _object(2, "cube", "red", (22, 21, 41, 40), (1.0, 8.0, 0.25)),
    ]
    conversation = synthesize_conversation(_record(objects), _cfg())
    assert conversation.skipped["ambiguous"] == 1
    assert not [t for t in conversation.turns if set(t.object_ids) == {1, 2}]


def test_yes_no_and_a_b_answers_are_balanced(world, depths) -> None:
    _, _, records = world
    yes = no = a = b = 0
    for seed in range(40):  # ~700 answers of each kind: a 0.4-0.6 band is about five sigma
        for record in records:
            for turn in synthesize_conversation(record, _cfg(seed=seed), depth=depths[record.image_id]).turns:
                if turn.answer_type == "bool":
                    yes, no = yes + bool(turn.value), no + (not turn.value)
                elif turn.answer_type == "choice" and turn.choices == ("A", "B"):
                    a, b = a + (turn.value == "A"), b + (turn.value == "B")
    assert yes + no > 400 and a + b > 400
    assert 0.4 < yes / (yes + no) < 0.6
    assert 0.4 < a / (a + b) < 0.6


def test_turn_orders_for_ablations(world, depths) -> None:
    _, _, records = world
    record = records[0]
    conversation = synthesize_conversation(record, _cfg(caption_turns=1), depth=depths[record.image_id])
    spatial, captions = conversation.spatial_turns, conversation.caption_turns
    [(fid, forward)] = ordered(conversation, "forward", 0)
    [(_, reverse)] = ordered(conversation, "reversed", 0)
    [(_, shuffled)] = ordered(conversation, "shuffled", 0)
    single = ordered(conversation, "single_turn", 0)
    assert fid == record.image_id and forward == spatial + captions
    assert reverse == spatial[::-1] + captions
    assert shuffled[-1:] == captions and sorted(map(repr, shuffled)) == sorted(map(repr, forward))
    assert shuffled != forward and ordered(conversation, "shuffled", 0) == ordered(conversation, "shuffled", 0)
    assert [turns for _, turns in single] == [(t,) for t in forward]
    assert [cid for cid, _ in single] == [f"{record.image_id}-t{i:02d}" for i in range(len(forward))]
    with pytest.raises(ValueError, match="unknown turn order"):
        ordered(conversation, "sideways", 0)


def test_caption_turns_describe_the_scene_graph(world, depths) -> None:
    _, _, records = world
    for record in records[:4]:
        conversation = synthesize_conversation(record, _cfg(caption_turns=4), depth=depths[record.image_id])
        captions = conversation.caption_turns
        assert [t.qtype for t in captions] == [
            "caption_inventory", "caption_left_to_right", "caption_near_to_far", "caption_sizes"
        ]  # fmt: skip
        n = len(conversation.objects)
        assert all(t.answer_type == "text" for t in captions)
        assert captions[0].answer.startswith(f"There {'is' if n == 1 else 'are'} {count_word(n)} object")
        assert sorted(captions[1].value) == sorted(o["object_id"] for o in conversation.objects)


def test_pixel_probes_sit_on_masks_with_their_exact_depth(world, depths) -> None:
    _, _, records = world
    for record in records:
        depth = depths[record.image_id]
        probes = pixel_probes(depth, record, scene_draws(0, record.image_id, ("p",))["p"], per_object=3)
        masks = {o.object_id: o.mask.decode() for o in record.objects}
        assert len(probes) == 3 * len(record.objects)
        k = record.intrinsics
        for p in probes:
            assert masks[p.object_id][p.y, p.x] and depth[p.y, p.x] > 0
            assert p.depth_m == float(depth[p.y, p.x])
            ray = np.linalg.norm([(p.x + 0.5 - k.cx) / k.fx, (p.y + 0.5 - k.cy) / k.fy, 1.0])
            assert p.range_m == pytest.approx(p.depth_m * ray)
    with pytest.raises(ValueError, match="does not match"):
        pixel_probes(np.ones((3, 3), np.float32), records[0], scene_draws(0, "x", ("p",))["p"])


def test_probe_sampling_by_rejection_agrees_with_the_listing_reference() -> None:
    """Both draw distinct interior pixels (mask eroded by one, valid depth), uniformly."""
    rng = np.random.default_rng(1)
    counts = np.zeros((16, 16))
    for trial in range(300):
        mask = np.zeros((16, 16), dtype=bool)
        mask[3:13, 2:14] = True
        mask[rng.integers(3, 13), rng.integers(2, 14)] = False  # a hole: its neighbours are not interior
        valid = rng.random((16, 16)) > 0.05
        interior = mask & valid
        interior[1:-1, 1:-1] &= interior[:-2, 1:-1] & interior[2:, 1:-1] & interior[1:-1, :-2] & interior[1:-1, 2:]
        draws = scene_draws(trial, "probe", ("p",))["p"]
        fast = pixel_probe_points(mask, valid, draws, "rejection")
        slow = pixel_probe_points(mask, valid, draws, "listing")
        for points in (fast, slow):
            assert len(points) == len(set(points)) == 3
            assert all(interior[y, x] for x, y in points)
        for x, y in fast:
            counts[y, x] += 1
    inside = counts[counts > 0]
    assert inside.size > 60 and inside.max() < 6 * inside.mean(), "roughly uniform over the interior"


def pixel_probe_points(mask: np.ndarray, valid: np.ndarray, draws, method: str) -> list[tuple[int, int]]:
    from spatialboost.qa.probes import interior_by_listing, interior_by_rejection

    bbox = (2, 3, 14, 13)
    if method == "rejection":
        return interior_by_rejection(mask, valid, bbox, draws, 3, tries=400) or []
    return interior_by_listing(mask, valid, bbox, draws, 3)


def test_occlusion_test_matches_the_naive_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        objects, masks = [], []
        for i in range(4):
            x0, y0 = rng.integers(0, 24, 2)
            box = (int(x0), int(y0), int(x0 + rng.integers(2, 9)), int(y0 + rng.integers(2, 9)))
            obj = _object(i + 1, "cube", None, box, (0.0, 3.0 + rng.random(), 0.2), shape=(32, 32))
            objects.append(obj)
            masks.append(obj.mask.decode())
        assert occluded_objects(tuple(objects), masks) == occluded_objects_naive(tuple(objects), masks)


def test_random_streams_are_reproducible_and_independent() -> None:
    one, two = scene_draws(3, "img", ("a", "b")), scene_draws(3, "img", ("a", "b"))
    first = [one["a"].random() for _ in range(600)]  # past one block: refills too
    assert first == [two["a"].random() for _ in range(600)]
    fresh = scene_draws(3, "img", ("a", "b"))
    assert [one["b"].random() for _ in range(5)] == [fresh["b"].random() for _ in range(5)]
    assert first[:5] != [scene_draws(4, "img", ("a",))["a"].random() for _ in range(5)]
    picks = one["a"].distinct(10, 4)
    assert len(set(picks)) == 4 and picks == sorted(picks) and all(0 <= p < 10 for p in picks)
    assert one["a"].distinct(5, 9) == [0, 1, 2, 3, 4]


# --- properties ------------------------------------------------------------------------------


def _flip(record: SceneRecord) -> SceneRecord:
    """The mirror image: columns reversed, canonical and camera x negated."""
    width = record.width
    sign = (-1.0, 1.0, 1.0)
    objects = []
    for obj in record.objects:
        x0, y0, x1, y1 = obj.bbox
        objects.append(obj.model_copy(update={
            "mask": MaskRLE.encode(obj.mask.decode()[:, ::-1]),
            "bbox": (width - x1, y0, width - x0, y1),
            "box": obj.box.model_copy(update={"center": (-obj.box.center[0], *obj.box.center[1:]),
                                              "yaw_rad": -obj.box.yaw_rad}),
            "center_cam": (-obj.center_cam[0], *obj.center_cam[1:]),
        }))  # fmt: skip
    rotation = tuple(
        tuple(r * sign[i] * sign[j] for j, r in enumerate(row)) for i, row in enumerate(record.frame.rotation)
    )
    frame = record.frame.model_copy(update={
        "rotation": rotation, "translation": (-record.frame.translation[0], *record.frame.translation[1:]),
        "roll_deg": -record.frame.roll_deg,
    })  # fmt: skip
    intrinsics = record.intrinsics.model_copy(update={"cx": width - record.intrinsics.cx})
    return SceneRecord.model_validate(
        {**record.model_dump(), "objects": objects, "frame": frame, "intrinsics": intrinsics}
    )


def _scale(record: SceneRecord, k: float) -> SceneRecord:
    """The same scene k times larger: every length times k, pixels unchanged."""
    objects = []
    for obj in record.objects:
        objects.append(obj.model_copy(update={
            "box": obj.box.model_copy(update={"center": tuple(k * c for c in obj.box.center),
                                              "size": tuple(k * s for s in obj.box.size)}),
            "center_cam": tuple(k * c for c in obj.center_cam),
            "center_distance_m": k * obj.center_distance_m, "nearest_distance_m": k * obj.nearest_distance_m,
        }))  # fmt: skip
    frame = record.frame.model_copy(update={"translation": tuple(k * t for t in record.frame.translation)})
    return SceneRecord.model_validate({**record.model_dump(), "objects": objects, "frame": frame})


OPPOSITE = {"left": "right", "right": "left"}


@settings(max_examples=12, deadline=None)
@given(index=st.integers(0, 11), seed=st.integers(0, 1000))
def test_a_horizontal_flip_swaps_every_left_right_answer(world, depths, index: int, seed: int) -> None:
    _, _, records = world
    record = records[index % len(records)]
    cfg = _cfg(seed=seed, caption_turns=2)
    original = synthesize_conversation(record, cfg, depth=depths[record.image_id])
    flipped = synthesize_conversation(_flip(record), cfg, depth=depths[record.image_id][:, ::-1])
    mirrored = {(t.qtype, t.object_ids, t.answer_type, t.asked, t.choices): t for t in flipped.turns}
    for turn in original.turns:
        if turn.qtype == "left_right":
            twin = mirrored[(turn.qtype, turn.object_ids, turn.answer_type, turn.asked, turn.choices)]
            assert twin.value == (OPPOSITE[turn.value] if turn.answer_type == "choice" else not turn.value)
        if turn.qtype == "caption_left_to_right":
            assert mirrored[(turn.qtype, turn.object_ids, "text", None, ())].value == turn.value[::-1]
    left_right = [t for t in original.turns if t.qtype == "left_right"]
    assert [(t.object_ids, t.answer_type) for t in left_right] == [
        (t.object_ids, t.answer_type) for t in flipped.turns if t.qtype == "left_right"
    ]


@settings(max_examples=12, deadline=None)
@given(index=st.integers(0, 11), seed=st.integers(0, 1000), k=st.floats(0.25, 4.0))
def test_scaling_the_world_scales_every_distance_and_no_relation(
    world, depths, index: int, seed: int, k: float
) -> None:
    _, _, records = world
    record = records[index % len(records)]
    cfg = _cfg(seed=seed, min_margin_m=0.0)  # an absolute margin would not scale
    original = synthesize_conversation(record, cfg, depth=depths[record.image_id])
    scaled = synthesize_conversation(_scale(record, k), cfg, depth=depths[record.image_id] * np.float32(k))

    def asked(turns):  # what is asked (a rationale may quote a point at one scale and not at another)
        return [(t.qtype, t.object_ids, t.points if t.level == "pixel" else (), t.answer_type) for t in turns]

    assert asked(original.turns) == asked(scaled.turns)
    for a, b in zip(original.turns, scaled.turns, strict=True):
        if a.answer_type in ("number", "box"):
            values_a = np.atleast_1d(np.asarray(a.value, dtype=float))
            np.testing.assert_allclose(np.asarray(b.value, dtype=float), k * values_a, rtol=1e-4, atol=2e-6 * (1 + k))
        else:
            assert (a.value, a.asked, a.choices) == (b.value, b.asked, b.choices)


# --- files -------------------------------------------------------------------------------------


def test_image_reference_is_relative_to_the_root_or_the_uri(tmp_path: Path) -> None:
    image = tmp_path / "rgb" / "a.png"
    assert image_reference(image.as_uri(), tmp_path) == "rgb/a.png"
    assert image_reference(image.as_uri(), tmp_path / "other") == image.as_uri()
    assert image_reference("s3://bucket/a.png", tmp_path) == "s3://bucket/a.png"
    assert image_reference(image.as_uri(), None) == image.as_uri()


def _output_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.suffix != ".png"}


def test_llava_json_parquet_and_sidecar_agree_and_load_in_datasets(world, tmp_path: Path) -> None:
    import datasets

    root, scenes, records = world
    cfg = _cfg(output=str(tmp_path / "qa"), shard_size=5, caption_turns=2, n_renderings=2)
    summary = synthesize(scenes, cfg, image_root=root, progress=False)
    assert summary["n_shards"] == 3 and summary["n_conversations"] + summary["n_quarantined"] == len(records)
    out = Path(cfg.output)
    llava = json.loads((out / "conversations.json").read_text())
    sidecar = [json.loads(line) for i in range(3) for line in shard_paths(out, i)["sidecar"].read_text().splitlines()]
    quarantined = {json.loads(line)["id"] for i in range(3) for line in shard_paths(out, i)["quarantine"].open()}
    assert len(llava) >= len(records) - 2 and len(quarantined) == summary["n_quarantined"]
    assert [r["id"] for r in llava] == [r["id"] for r in sidecar] == [r.image_id for r in records if r.image_id not in quarantined]
    for conv, typed in zip(llava, sidecar, strict=True):
        assert conv["image"] == f"rgb/{conv['id']}.png" and (root / conv["image"]).exists()
        messages = conv["conversations"]
        assert [m["from"] for m in messages] == ["human", "gpt"] * (len(messages) // 2)
        assert messages[0]["value"].startswith(IMAGE_TOKEN) and IMAGE_TOKEN not in messages[2]["value"]
        assert [m["value"] for m in messages[1::2]] == [t["answer"] for t in typed["turns"]]
        assert typed["schema_version"] == 1 and typed["image_id"] == conv["id"]
    loaded = datasets.Dataset.from_parquet([str(shard_paths(out, i)["parquet"]) for i in range(3)])
    assert loaded.num_rows == len(llava)
    assert loaded[0]["conversations"] == llava[0]["conversations"] and loaded[0]["image"] == llava[0]["image"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["conversations"] == len(llava) and sum(stats["question_types"].values()) == stats["turns"]
    assert 0.0 < stats["yes_no"]["yes_fraction"] < 1.0 and stats["numeric_answers_m"]["point_depth"]["n"] > 0
    assert (out / "stats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "samples").glob("*.png"))) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["n_conversations"] == len(llava) and len(manifest["shards"]) == 3


def test_same_seed_same_bytes_and_resume_recomputes_nothing(world, tmp_path: Path) -> None:
    root, scenes, _ = world
    cfgs = [_cfg(output=str(tmp_path / name), shard_size=4, n_renderings=0, order="shuffled") for name in "ab"]
    for cfg in cfgs:
        synthesize(scenes, cfg, image_root=root, progress=False)
    first = _output_bytes(Path(cfgs[0].output))
    assert first == _output_bytes(Path(cfgs[1].output))
    out = Path(cfgs[0].output)
    shard_paths(out, 1)["sidecar"].unlink()  # a crash before shard 1's sidecar was renamed in
    summary = synthesize(scenes, cfgs[0], image_root=root, progress=False)
    assert summary["n_shards_skipped"] == len(plan(scenes, cfgs[0])) - 1
    assert _output_bytes(out) == first
    other = cfgs[0].model_copy(update={"order": "reversed"})
    summary = synthesize(scenes, other, image_root=root, progress=False)
    assert summary["n_shards_skipped"] == 0, "other settings make every shard stale"


def test_single_turn_order_writes_one_conversation_per_turn(world, tmp_path: Path) -> None:
    root, scenes, records = world
    cfg = _cfg(output=str(tmp_path / "single"), order="single_turn", n_renderings=1,
               n_turns=4, mix=TurnMix(pixel=1, object=2, scene=1))  # fmt: skip
    summary = synthesize(scenes, cfg, image_root=root, progress=False)
    llava = json.loads((Path(cfg.output) / "conversations.json").read_text())
    assert summary["n_conversations"] == len(llava) == summary["n_turns"]
    assert all(len(r["conversations"]) == 2 for r in llava)
    quarantined = {json.loads(line)["id"] for line in shard_paths(cfg.output, 0)["quarantine"].open()}
    assert {r["id"].rsplit("-t", 1)[0] for r in llava} == {r.image_id for r in records} - quarantined
    shutil.rmtree(cfg.output)


# --- points named by drawn marks ------------------------------------------------------------------


def test_marks_name_points_by_label_and_mean_the_same_as_coordinates(world, depths) -> None:
    from spatialboost.data.marks import MARK_COLOURS, draw_marks, marks_of
    from spatialboost.qa.formats import llava_record

    _, _, records = world
    n_pixel = 0
    for record in records:
        depth = depths[record.image_id]
        plain = synthesize_conversation(record, _cfg(), depth=depth)
        marked = synthesize_conversation(record, _cfg(point_refs="marks"), depth=depth)
        assert [t.value for t in marked.turns] == [t.value for t in plain.turns]  # same claims, other words
        assert [t.points for t in marked.turns] == [t.points for t in plain.turns]
        labels = {(m["x"], m["y"]): m["label"] for m in marked.marks}
        assert [m["label"] for m in marked.marks] == list("ABCDEFGH"[: len(labels)])  # in order of first mention
        for plain_turn, turn in zip(plain.turns, marked.turns, strict=True):
            if turn.level != "pixel":
                continue
            n_pixel += 1
            for x, y in turn.points[: 1 if turn.qtype == "point_depth" else 2]:
                assert f"point {labels[(x, y)]}" in turn.question.lower() or f"{labels[(x, y)]}" in turn.question
                assert f"({x}, {y})" in plain_turn.question and f"({x}, {y})" not in turn.question
            if turn.qtype == "point_closer" and turn.answer_type == "choice":
                closer = turn.points[0] if turn.value == "A" else turn.points[1]  # typed value: probe order
                assert f"point {labels[closer]} is closer" in turn.answer.replace("Point", "point")
        for _, turns in ordered(marked, "single_turn", 0):  # a lone turn draws only its own marks
            assert {(m["x"], m["y"]) for m in marked.marks_of(turns)} <= {tuple(p) for t in turns for p in t.points}
        llava = llava_record(record.image_id, "rgb/x.png", marked.turns, marked.marks_of(marked.turns))
        assert marks_of(llava["marks"]) and "marks" not in llava_record(record.image_id, "x", plain.turns)
    assert n_pixel > 0
    image = np.zeros((128, 128, 3), np.uint8)
    drawn = draw_marks(image, marks_of([{"label": "A", "x": 40, "y": 60}, {"label": "B", "x": 90, "y": 30}]))
    colours = {tuple(c) for c in drawn.reshape(-1, 3)}
    assert MARK_COLOURS["A"] in colours and MARK_COLOURS["B"] in colours and (image == 0).all()
    assert (drawn[60, 40] == 0).all()  # the ring leaves the marked pixel itself visible


def test_marks_survive_parquet_and_are_drawn_before_the_encoder_reads_the_image(tmp_path: Path) -> None:
    from spatialboost.qa.formats import write_parquet
    from spatialboost.train.data import ConversationDataset, load_conversations
    from tests.tiny_vlm import tiny_encoder, train_tiny_tokenizer

    turns = [{"from": "human", "value": "<image>\nWhat is the depth at point A?"}, {"from": "gpt", "value": "2.0 m."}]
    records = [
        {"id": "m", "image": "img", "conversations": turns, "marks": [{"label": "A", "x": 20, "y": 12}]},
        {"id": "p", "image": "img", "conversations": turns},
    ]
    sidecar = [{"image_id": r["id"], "order": "forward", "turns": [{}]} for r in records]
    write_parquet(tmp_path / "c.parquet", records, sidecar)
    loaded = load_conversations(tmp_path / "c.parquet")
    assert loaded[0]["marks"] == [{"label": "A", "x": 20, "y": 12}] and "marks" not in loaded[1]
    image = np.full((32, 32, 3), 90, np.uint8)
    encoder = tiny_encoder("dinov2", seed=0)
    dataset = ConversationDataset(loaded, train_tiny_tokenizer(tmp_path / "tok"), encoder.preprocess, image_loader=lambda _: image)
    marked, plain = dataset[0].pixel_values, dataset[1].pixel_values
    assert not np.allclose(marked.numpy(), plain.numpy())


def test_no_positive_size_is_written_as_zero() -> None:
    """A 3 cm side at 10 cm steps used to read "130 x 0 x 140 cm": a size keeps one significant digit."""
    from spatialboost.qa.phrasing import NumberFormat

    for unit in ("m", "cm", "ft", "in"):
        fmt = NumberFormat(unit, decimals=1)
        for value in (0.001, 0.004, 0.03, 0.049, 0.2, 1.3):
            text = fmt.extent(value)
            assert float(text) > 0, (unit, value, text)
            assert float(text) == pytest.approx(fmt.rounded(value) or float(text))  # unchanged where it was not 0
    assert NumberFormat("cm", 1).extent(0.034) == "3" and NumberFormat("cm", 1).extent(1.34) == "130"


def test_tolerances_are_the_smallest_bands_that_hold_the_measured_labels() -> None:
    """fit_tolerances on known errors: the fitted bands hold 98% of every question type, and bands
    10% tighter no longer do (nothing is wider than the errors ask)."""
    from spatialboost.qa.tolerance import LabelError, fit_tolerances, within

    rng = np.random.default_rng(0)
    errors = []
    for _ in range(400):
        distance = float(rng.uniform(2, 10))
        errors.append(LabelError("object_distance", (distance * (1 + rng.normal(0, 0.03)),), (distance,), (distance,), 0.01))
        size = rng.uniform(0.2, 2, 3)
        value = np.concatenate([[0.0, distance, 0.5], size]) + np.concatenate([rng.normal(0, 0.02, 3) * distance, rng.normal(0, 0.1, 3) * size])
        errors.append(LabelError("object_box", tuple(value), (0.0, distance, 0.5, *size), (distance,) * 3 + tuple(size), 0.01))
    model = fit_tolerances(errors)
    for qtype in ("object_distance", "object_box"):
        held = [within(model, e) for e in errors if e.qtype == qtype]
        assert np.mean(held) >= 0.98, qtype
    tighter = dataclasses.replace(model, distance_rel=model.distance_rel * 0.9,
                                  center_rel=tuple(r * 0.9 for r in model.center_rel),
                                  extent_rel=tuple(r * 0.9 for r in model.extent_rel))  # fmt: skip
    for qtype in ("object_distance", "object_box"):
        assert np.mean([within(tighter, e) for e in errors if e.qtype == qtype]) < 0.98, qtype
