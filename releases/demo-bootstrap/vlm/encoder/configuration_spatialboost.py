"""Config of a SpatialBoost-boosted vision encoder (transformers remote code, shipped with the weights).

`arch_config` is the base encoder's own architecture config: a transformers vision config dict
(Dinov2Config, CLIPVisionConfig, SiglipVisionConfig, DINOv3ViTConfig) or an open_clip model config dict.
"""

from transformers import PretrainedConfig

FAMILIES = ("dinov2", "clip", "siglip", "dinov3", "open_clip")


class SpatialBoostVisionConfig(PretrainedConfig):
    model_type = "spatialboost_vision"

    def __init__(
        self,
        family: str = "dinov2",
        arch_config: dict | None = None,
        feature_layer: int = -1,
        apply_final_norm: bool = False,
        dual_channel: bool = True,
        **kwargs,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown encoder family {family!r}; known: {', '.join(FAMILIES)}")
        self.family = family
        self.arch_config = dict(arch_config or {})
        self.feature_layer = int(feature_layer)  # hidden-state index: 0 = embeddings, -1 = last block
        self.apply_final_norm = bool(apply_final_norm)  # the encoder's own final LayerNorm on that layer
        self.dual_channel = bool(dual_channel)  # Attn_final = a * Attn + (1 - a) * Attn+ in every block
        super().__init__(**kwargs)
