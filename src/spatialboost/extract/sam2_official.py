"""SAM 2 automatic masks through Meta's `sam2` package (`SAM2AutomaticMaskGenerator`).

The second segmentation backend behind `Segmenter`. The package's generator applies the quality
filters (predicted IoU, stability); its box NMS and small-region clean-up (which needs OpenCV and
the CUDA extension) are switched off, and our `finalize_masks` does min-area, duplicate and
nested removal instead, so both backends' masks mean the same thing. The package embeds one
image at a time (its `predict_batch` loops in Python too), so images run one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2

from spatialboost.extract.masks import MaskFilter, finalize_masks
from spatialboost.extract.protocols import Mask
from spatialboost.extract.runtime import check_rgb_images, resolve_dtype


class OfficialSam2Segmenter:
    """SAM 2 (official package) automatic mask generation; implements `Segmenter`.

    config_file: a hydra config of the package, e.g. "configs/sam2.1/sam2.1_hiera_l.yaml".
    ckpt_path: the matching local checkpoint ({"model": state_dict}); None = random weights.
    hydra_overrides: extra "++model.key=value" overrides (tests shrink the model with them).
    dtype: compute dtype through autocast (weights stay float32, as the package expects).
    """

    def __init__(
        self,
        config_file: str,
        ckpt_path: str | None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        hydra_overrides: Sequence[str] = (),
        points_per_side: int = 32,
        points_per_batch: int = 64,
        mask_filter: MaskFilter | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.filter = mask_filter or MaskFilter()
        model = build_sam2(
            config_file, ckpt_path=ckpt_path, device=str(self.device), hydra_overrides_extra=list(hydra_overrides)
        )
        self.generator = SAM2AutomaticMaskGenerator(
            model,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=self.filter.pred_iou_thresh,
            stability_score_thresh=self.filter.stability_thresh,
            stability_score_offset=self.filter.stability_offset,
            mask_threshold=self.filter.mask_threshold,
            box_nms_thresh=1.0,  # IoU never exceeds 1: box NMS off, mask-level dedup is ours
            min_mask_region_area=0,
            output_mode="binary_mask",
        )
        # The predictor hard-codes backbone feature sizes for 1024 px inputs (STACK.md trap).
        size = model.image_size
        self.generator.predictor._bb_feat_sizes = [
            (size // 4, size // 4),
            (size // 8, size // 8),
            (size // 16, size // 16),
        ]

    def segment(self, images: Sequence[np.ndarray]) -> list[list[Mask]]:
        """images: (H, W, 3) uint8 each. Returns per image its kept masks, best score first."""
        check_rgb_images(images)
        return [self._segment_one(image) for image in images]

    @torch.inference_mode()
    def _segment_one(self, image: np.ndarray) -> list[Mask]:
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32 else nullcontext()
        with autocast:
            records = self.generator.generate(image)
        if not records:
            return []
        masks = torch.from_numpy(np.stack([r["segmentation"] for r in records])).to(self.device)  # (N, H, W) bool
        scores = torch.tensor([r["predicted_iou"] for r in records], dtype=torch.float32)
        stability = torch.tensor([r["stability_score"] for r in records], dtype=torch.float32)
        return finalize_masks(masks, scores, stability, self.filter)
