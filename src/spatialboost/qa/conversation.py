"""One scene record -> one multi-turn spatial chain-of-thought conversation, and its turn orders.

    conversation = synthesize_conversation(record, cfg, depth=depth_map)   # forward order
    for conv_id, turns in ordered(conversation, "shuffled", cfg.seed): ...

Forward order is the paper's: cfg.mix.pixel pixel-level turns, then cfg.mix.object object-level
turns, then cfg.mix.scene scene-level turns, then cfg.caption_turns caption turns. Turns are
planned in chains (questions.py) so that later answers can quote earlier ones (answers.py):
the object level is planned first, the pixel level then probes the objects the object level
talks about, and the scene level prefers them too. A level that runs out of questions (no depth
map for pixel turns; too few objects or only undecidable relations) hands its remaining turns
to the other levels, and `Conversation.skipped` records why ("no_depth", "short", ...).

Randomness: from (cfg.seed, image id) only, so a scene's conversation does not depend on its
shard or on other scenes. Three independent streams: "words" (names, unit, templates),
"probes" (pixel probes) and "plan" (which questions; used by the object level first, so the
object level's choices do not depend on the pixel probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialboost.config import SynthesizeConfig
from spatialboost.extract.records import SceneRecord
from spatialboost.qa.answers import CAPTION_KINDS, TurnWriter
from spatialboost.qa.draws import Draws, scene_draws
from spatialboost.qa.facts import SceneFacts, scene_facts
from spatialboost.qa.phrasing import NumberFormat
from spatialboost.qa.probes import PixelProbe, pixel_probes
from spatialboost.qa.questions import (
    Chain,
    Margins,
    Question,
    Skips,
    candidate_pairs,
    object_chains,
    pixel_chains,
    scene_chains,
)
from spatialboost.qa.tolerance import ToleranceModel
from spatialboost.qa.turns import Level, Turn

SPATIAL_LEVELS: tuple[Level, ...] = ("pixel", "object", "scene")
ORDERS = ("forward", "reversed", "shuffled", "single_turn")
_STREAMS = ("words", "probes", "plan")


@dataclass(frozen=True, kw_only=True)
class Conversation:
    """The turns of one image in forward order: spatial turns, then caption turns.

    unit: the unit its numbers are rendered in. levels: spatial turns asked per level.
    skipped: why candidates or turns were not asked (counts per reason). objects: the askable
    objects as the text names them ({object_id, label, colour, name, bbox}).
    """

    image_id: str
    image_uri: str
    unit: str
    turns: tuple[Turn, ...]
    levels: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)
    objects: tuple[dict[str, Any], ...] = ()
    marks: tuple[dict[str, Any], ...] = ()  # ({label, x, y}, ...): points drawn on the image (point_refs = marks)

    def marks_of(self, turns: tuple[Turn, ...] | list[Turn]) -> list[dict[str, Any]]:
        """The marks the given turns refer to, in label order (what to draw for them)."""
        points = {tuple(p) for turn in turns for p in turn.points}
        return [m for m in self.marks if (m["x"], m["y"]) in points]

    @property
    def spatial_turns(self) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.level != "caption")

    @property
    def caption_turns(self) -> tuple[Turn, ...]:
        return tuple(t for t in self.turns if t.level == "caption")


def missing_levels(conversation: Conversation, required: tuple[str, ...] | list[str]) -> list[str]:
    """The required spatial levels (in `required`'s order) the conversation has no turn of."""
    return [level for level in required if not conversation.levels.get(level, 0)]


def scene_streams(seed: int, image_id: str) -> dict[str, Draws]:
    """Independent random streams of one scene ("words", "probes", "plan"); depend only on
    (seed, image_id)."""
    return scene_draws(seed, image_id, _STREAMS)


def synthesize_conversation(
    record: SceneRecord,
    cfg: SynthesizeConfig,
    depth: np.ndarray | None = None,
    probes: tuple[PixelProbe, ...] | None = None,
    tolerances: ToleranceModel | None = None,
    per_object_probes: int = 2,
) -> Conversation:
    """The forward-order conversation of one scene record.

    depth: (H, W) float32 metres, z-depth, for the pixel-level turns (probes are drawn from it);
    probes: already drawn probes (then depth is not needed). Without either, the pixel turns go
    to the other levels. tolerances: the bands of numeric answers (qa/tolerance.py).
    per_object_probes: pixel probes drawn per object (not in SynthesizeConfig).
    """
    streams = scene_streams(cfg.seed, record.image_id)
    tol = tolerances or ToleranceModel()
    masks = [obj.mask.decode() for obj in record.objects]
    facts = scene_facts(record, streams["words"], cfg.min_confidence, masks)
    if probes is None and depth is not None:
        probes = pixel_probes(depth, record, streams["probes"], per_object_probes, cfg.min_confidence, masks)
    questions, levels, skipped = plan_questions(facts, probes or (), cfg, tol, streams["plan"])
    unit = streams["words"].choice(cfg.units)
    writer = TurnWriter(facts, NumberFormat(unit, cfg.decimals), streams["words"], cfg.point_refs)
    turns = [writer.write(q) for q in questions]
    turns += [writer.caption(kind) for kind in CAPTION_KINDS[: cfg.caption_turns]]
    objects = tuple(
        {"object_id": o.object_id, "label": o.label, "colour": o.colour, "name": o.name, "bbox": list(o.bbox)}
        for o in facts.objects
    )
    marks = tuple({"label": label, "x": x, "y": y} for (x, y), label in writer.marks.items())
    return Conversation(
        image_id=record.image_id,
        image_uri=record.image_uri,
        unit=unit,
        turns=tuple(turns),
        levels=levels,
        skipped=skipped,
        objects=objects,
        marks=marks,
    )


def plan_questions(
    facts: SceneFacts,
    probes: tuple[PixelProbe, ...] | list[PixelProbe],
    cfg: SynthesizeConfig,
    tol: ToleranceModel,
    draws: Draws,
) -> tuple[list[Question], dict[str, int], dict[str, int]]:
    """Questions in forward order, turns asked per level, and skip counts (see module docstring).

    draws: the "plan" stream; the object level draws first, so its choices do not depend on the
    pixel probes.
    """
    margins = Margins(cfg.min_margin_m, cfg.min_margin_rel)
    skips = Skips()
    budget = {"pixel": cfg.mix.pixel, "object": cfg.mix.object, "scene": cfg.mix.scene}
    taken: dict[str, list[Question]] = {level: [] for level in SPATIAL_LEVELS}
    used: set[tuple] = set()
    chains: dict[str, list[Chain]] = {}

    pairs = candidate_pairs(facts, draws, skips)
    chains["object"] = object_chains(facts, pairs, margins, tol, draws, skips)
    taken["object"] = take(chains["object"], budget["object"], used)
    focus = _mentioned(taken["object"])
    chains["pixel"] = pixel_chains(probes, facts, margins=margins, tol=tol, draws=draws, skips=skips, focus=focus)
    taken["pixel"] = take(chains["pixel"], budget["pixel"], used)
    chains["scene"] = scene_chains(
        facts, pairs, margins=margins, tol=tol, draws=draws, skips=skips, focus=focus + _mentioned(taken["pixel"])
    )
    taken["scene"] = take(chains["scene"], budget["scene"], used)

    if not probes and cfg.mix.pixel:
        skips.counts["no_depth"] = cfg.mix.pixel
    missing = cfg.n_turns - sum(len(q) for q in taken.values())
    for level in ("object", "scene", "pixel"):  # leftover turns go to whichever level can ask more
        if missing <= 0:
            break
        extra = take(chains[level], missing, used)
        taken[level] += extra
        missing -= len(extra)
    if missing > 0:
        skips.counts["short"] = missing
    levels = {level: len(taken[level]) for level in SPATIAL_LEVELS}
    return [q for level in SPATIAL_LEVELS for q in taken[level]], levels, skips.as_dict()


def take(chains: list[Chain], budget: int, used: set[tuple]) -> list[Question]:
    """Questions from `chains`, in order, until `budget` is spent.

    A chain is taken whole (less questions already asked) when it fits the remaining budget;
    taken chains are removed from `chains`, and `used` (question keys) grows, so calling again
    continues where the last call stopped.
    """
    picked: list[Question] = []
    remaining = []
    for chain in chains:
        fresh = [q for q in chain if q.key not in used]
        if not fresh:
            continue
        if len(fresh) <= budget - len(picked):
            picked += fresh
            used.update(q.key for q in fresh)
        else:
            remaining.append(chain)
    chains[:] = remaining
    return picked


def _mentioned(questions: list[Question]) -> list[int]:
    seen: list[int] = []
    for q in questions:
        seen += [i for i in q.object_ids if i not in seen]
    return seen


def ordered(conversation: Conversation, order: str, seed: int) -> list[tuple[str, tuple[Turn, ...]]]:
    """(conversation id, turns) in the requested order.

    forward: as synthesised; reversed: spatial turns last to first; shuffled: spatial turns in
    a random order (from seed and image id); single_turn: every turn its own conversation, with
    ids "<image id>-tNN". Caption turns stay after the spatial ones (single_turn: their own).
    Answers keep their words in every order, so an ablation changes the order and nothing else
    (a quoted rationale may then come before the turn it quotes).
    """
    spatial, captions = conversation.spatial_turns, conversation.caption_turns
    image_id = conversation.image_id
    if order == "forward":
        return [(image_id, spatial + captions)]
    if order == "reversed":
        return [(image_id, spatial[::-1] + captions)]
    if order == "shuffled":
        draws = scene_draws(seed, f"{image_id}#order", ("order",))["order"]
        return [(image_id, tuple(draws.shuffled(spatial)) + captions)]
    if order == "single_turn":
        return [(f"{image_id}-t{i:02d}", (turn,)) for i, turn in enumerate(spatial + captions)]
    raise ValueError(f"unknown turn order {order!r}; known: {', '.join(ORDERS)}")
