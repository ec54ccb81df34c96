"""SAM 2 automatic masks through transformers (`Sam2Model` + `Sam2Processor`), batched.

Per image batch: one vision-encoder forward for all images; then the point grid goes through the
prompt encoder and mask decoder `points_per_batch` points at a time, reusing the image
embeddings, for every image of the batch at once (B, P, 1, 2). Each point yields 3 masks
(multimask output). The predicted-IoU filter runs on low-resolution logits, the rest of
`MaskFilter` on logits upsampled to the image size (as SAM does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import Sam2Model, Sam2Processor

from spatialboost.extract.masks import MaskFilter, finalize_masks, passes_pred_iou, point_grid, select_candidates
from spatialboost.extract.protocols import Mask
from spatialboost.extract.runtime import batches, check_rgb_images, resolve_dtype


class HFSam2Segmenter:
    """Batched SAM 2 automatic mask generation; implements `Segmenter`.

    model_path: folder (or locally cached hub id) holding the Sam2Model and its processor.
    batch_size: images per vision-encoder forward; points_per_side: the prompt grid is
    points_per_side**2 points; points_per_batch: points per mask-decoder forward.
    """

    def __init__(
        self,
        model_path: str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 4,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        mask_filter: MaskFilter | None = None,
    ) -> None:
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size
        self.points_per_batch = points_per_batch
        self.filter = mask_filter or MaskFilter()
        self.grid = point_grid(points_per_side)  # (P, 2) relative (x, y)
        self.processor = Sam2Processor.from_pretrained(model_path, local_files_only=True)
        model = Sam2Model.from_pretrained(model_path, local_files_only=True, dtype=self.dtype)
        self.model = model.to(self.device).eval()

    def segment(self, images: Sequence[np.ndarray]) -> list[list[Mask]]:
        """images: (H, W, 3) uint8 each. Returns per image its kept masks, best score first."""
        check_rgb_images(images)
        results: list[list[Mask]] = []
        for _, chunk in batches(images, self.batch_size):
            results += self._segment_batch(chunk)
        return results

    @torch.inference_mode()
    def _segment_batch(self, images: Sequence[np.ndarray]) -> list[list[Mask]]:
        sizes = [list(image.shape[:2]) for image in images]
        inputs = self.processor(
            images=list(images),
            input_points=[[[[float(x * w), float(y * h)]] for x, y in self.grid] for h, w in sizes],
            input_labels=[[[1] for _ in self.grid] for _ in sizes],
            return_tensors="pt",
        )
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))
        points = inputs["input_points"].to(self.device, self.dtype)  # (B, P, 1, 2) model pixels
        labels = inputs["input_labels"].to(self.device)  # (B, P, 1)
        candidates: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in images]
        for start in range(0, points.shape[1], self.points_per_batch):
            stop = start + self.points_per_batch
            out = self.model(
                image_embeddings=embeddings,
                input_points=points[:, start:stop],
                input_labels=labels[:, start:stop],
                multimask_output=True,
            )
            for i, size in enumerate(sizes):
                low_res = out.pred_masks[i].flatten(0, 1)  # (p * 3, h, w) logits
                pred_iou = out.iou_scores[i].flatten().float()  # (p * 3,)
                keep = passes_pred_iou(pred_iou, self.filter)
                if not keep.any():
                    continue
                logits = self.processor.post_process_masks([low_res[keep][:, None].float()], [size], binarize=False)[0]
                candidates[i].append(select_candidates(logits[:, 0], pred_iou[keep], self.filter))
        return [self._finalize(found, size) for found, size in zip(candidates, sizes, strict=True)]

    def _finalize(self, found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], size: list[int]) -> list[Mask]:
        if not found:
            return []
        masks, scores, stability = (torch.cat(parts) for parts in zip(*found, strict=True))
        if masks.shape[0] == 0:
            return []
        return finalize_masks(masks.reshape(-1, *size), scores, stability, self.filter)
