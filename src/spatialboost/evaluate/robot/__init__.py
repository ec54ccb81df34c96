"""Robot learning on frozen representations: CortexBench's few-shot behaviour cloning.

    demos = generate_demonstrations(MetaWorldTask("drawer-open-v3", image_size=64), count=25, seed=0)
    embed = encoder_embedder(vlm.encoder)                    # frames -> (T, D) CLS embeddings
    result = behaviour_cloning(embed, demos, task, BCOptions(), seed=100)
    result.best_success                                       # CortexBench's score, percent

Modules: `policy` (the protocol's features, MLP policy and its training loop), `metaworld`
(simulated MetaWorld tasks, scripted experts, rendering), `cortexbench` (the released
demonstrations of Adroit, MetaWorld and DMControl), `protocol` (the stage's entry point: every
task x model x seed, the report and its plot).
"""

from spatialboost.evaluate.robot.policy import (
    BCOptions,
    BCPolicy,
    BCResult,
    Demonstration,
    behaviour_cloning,
    demonstration_features,
    encoder_embedder,
    flare_features,
    train_policy,
)

__all__ = [
    "BCOptions",
    "BCPolicy",
    "BCResult",
    "Demonstration",
    "behaviour_cloning",
    "demonstration_features",
    "encoder_embedder",
    "flare_features",
    "train_policy",
]
