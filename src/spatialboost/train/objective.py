"""What the loop differentiates: a module whose forward returns (loss summed over targets, tokens).

The loop normalises by the number of targets in the whole global batch (over micro-batches and
processes), so a step is the same mean over the same tokens however the batch is split. An
objective therefore returns the *sum* of its per-target losses, never a per-micro-batch mean.

    objective = SFTObjective(vlm)
    loss_sum, n_tokens = objective(**batch.inputs(device))
"""

from __future__ import annotations

import torch
from torch import nn

from spatialboost.models.vlm import SpatialVLM


class SFTObjective(nn.Module):
    """The SFT loss of a SpatialVLM: next-token cross-entropy on assistant tokens, summed.

    Returns (loss_sum () float32, lm_tokens () int64: tokens the LM saw, image patches included,
    padding excluded, for throughput).
    """

    def __init__(self, vlm: SpatialVLM) -> None:
        super().__init__()
        self.vlm = vlm

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, mask, labels = self.vlm.embed(input_ids, attention_mask, pixel_values, labels)
        # num_items_in_batch=1 makes transformers' causal-LM loss a sum over the shifted targets
        out = self.vlm.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            labels=labels,
            use_cache=False,
            num_items_in_batch=torch.ones((), device=embeds.device),
        )
        return out.loss.float(), mask.sum()
