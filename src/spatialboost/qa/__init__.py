"""Multi-turn spatial chain-of-thought QA: scene records -> LLaVA conversations with typed turns.

The paper's stage 2 (section 2.3, Figure 2): for every scene record, cfg.n_turns turns that go
from pixel level (depth at a point, which point is closer) through object level (3D boxes,
heights, distances, left/right, above/below, in front/behind) to scene level (distances between
objects, which object is closest), later answers quoting earlier ones as their rationale.

    conversation = synthesize_conversation(record, cfg.synthesize, depth=depth_map)
    summary = synthesize("data/scenes", cfg.synthesize, image_root="data/world")   # depth: stored by extract

Modules: turns (typed Turn), facts (what may be said about a scene), probes (pixel probes),
tolerance (numeric answer bands), questions (pure generators per level), phrasing (templates,
units), answers (rationale chaining), conversation (assembly, turn orders), formats (LLaVA
JSON, parquet, sidecar), report (statistics, renderings), pipeline (shards, resume), checker
(independent ground-truth check).
"""

from spatialboost.qa.conversation import ORDERS, Conversation, ordered, synthesize_conversation
from spatialboost.qa.pipeline import (
    QAQuarantineReason,
    QAShard,
    finalize,
    plan,
    prepare_output,
    synthesize,
    synthesize_shard,
)
from spatialboost.qa.probes import PixelProbe, pixel_probes
from spatialboost.qa.tolerance import ToleranceModel
from spatialboost.qa.turns import SCHEMA_VERSION, Turn

__all__ = [
    "ORDERS",
    "SCHEMA_VERSION",
    "Conversation",
    "PixelProbe",
    "QAQuarantineReason",
    "QAShard",
    "ToleranceModel",
    "Turn",
    "finalize",
    "ordered",
    "pixel_probes",
    "plan",
    "prepare_output",
    "synthesize",
    "synthesize_conversation",
    "synthesize_shard",
]
