"""Depth Pro (transformers `DepthProForDepthEstimation`): metric depth and focal length.

Depth Pro predicts a canonical inverse depth and a field of view; metric depth needs a focal
length f in pixels: depth = f / (W * canonical_inverse_depth) (`post_process_depth_estimation`).
A known focal (dataset intrinsics, EXIF) replaces the model's FOV in that conversion, so it sets
the metric scale, and the record says which focal won.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from transformers import DepthProForDepthEstimation, DepthProImageProcessor
from transformers.models.depth_pro.modeling_depth_pro import DepthProDepthEstimatorOutput

from spatialboost.extract.protocols import FOCAL_SOURCES, DepthResult, FocalSource
from spatialboost.extract.runtime import batches, check_rgb_images, resolve_dtype
from spatialboost.extract.validity import validate_depth


class DepthProEstimator:
    """Batched Depth Pro; implements `DepthEstimator`.

    model_path: a folder (or hub id already in the local cache) for `from_pretrained`; loading
        never downloads on its own: the caller resolves the path (hub.py in the paper profile).
    device, dtype: any torch device and dtype (bf16 on GPU); batch_size: images per forward.
    min_depth_m .. max_outside_fraction: the validity thresholds of `validate_depth`.
    """

    def __init__(
        self,
        model_path: str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        batch_size: int = 4,
        min_depth_m: float = 0.05,
        max_depth_m: float = 1000.0,
        min_focal_px: float = 10.0,
        max_focal_px: float = 1e5,
        max_outside_fraction: float = 0.5,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size
        self.thresholds = dict(
            min_m=min_depth_m,
            max_m=max_depth_m,
            min_focal_px=min_focal_px,
            max_focal_px=max_focal_px,
            max_outside_fraction=max_outside_fraction,
        )
        self.processor = DepthProImageProcessor.from_pretrained(model_path, local_files_only=True)
        model = DepthProForDepthEstimation.from_pretrained(model_path, local_files_only=True, dtype=self.dtype)
        self.model = model.to(self.device).eval()

    def estimate(
        self,
        images: Sequence[np.ndarray],
        focal_px: Sequence[float | None],
        focal_sources: Sequence[FocalSource] | None = None,
    ) -> list[DepthResult]:
        """images: (H, W, 3) uint8 each; focal_px: known focal per image, pixels, or None.

        Returns one DepthResult per image: depth (H, W) float32 metres at the input size, the
        focal that set the scale and its source, the model's own focal, and validity reasons.
        """
        check_rgb_images(images)
        sources = _known_sources(focal_px, focal_sources, len(images))
        results: list[DepthResult] = []
        for start, chunk in batches(images, self.batch_size):
            results += self._estimate_batch(
                chunk, focal_px[start : start + len(chunk)], sources[start : start + len(chunk)]
            )
        return results

    @torch.inference_mode()
    def _estimate_batch(
        self, images: Sequence[np.ndarray], focal_px: Sequence[float | None], sources: Sequence[FocalSource]
    ) -> list[DepthResult]:
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)  # (B, 3, S, S)
        outputs = self.model(pixel_values=pixel_values)
        sizes = [image.shape[:2] for image in images]
        widths = [w for _, w in sizes]
        model_fov = _model_fov_deg(outputs.field_of_view, len(images))  # (B,) degrees, nan without a head
        model_focal = [_focal_from_fov(fov, w) for fov, w in zip(model_fov.tolist(), widths, strict=True)]
        # A known focal enters the conversion through the FOV it implies for this image width.
        fov = torch.tensor(
            [
                fov if f is None else _fov_from_focal(f, w)
                for fov, f, w in zip(model_fov.tolist(), focal_px, widths, strict=True)
            ],
            dtype=torch.float32,
            device=self.device,
        )
        scaled = DepthProDepthEstimatorOutput(predicted_depth=outputs.predicted_depth.float(), field_of_view=fov)
        post = self.processor.post_process_depth_estimation(scaled, target_sizes=sizes)
        results = []
        for i, item in enumerate(post):
            depth = item["predicted_depth"].reshape(sizes[i]).float().cpu().numpy()
            given = focal_px[i]
            result = DepthResult(
                depth=depth,
                focal_px=model_focal[i] if given is None else float(given),
                focal_source=sources[i],
                model_focal_px=model_focal[i],
            )
            results.append(replace(result, reasons=tuple(validate_depth(result, **self.thresholds))))
        return results


def _known_sources(
    focal_px: Sequence[float | None], focal_sources: Sequence[FocalSource] | None, n: int
) -> list[FocalSource]:
    if len(focal_px) != n:
        raise ValueError(f"got {n} images but {len(focal_px)} focal lengths (use None where unknown)")
    if focal_sources is not None and len(focal_sources) != n:
        raise ValueError(f"got {n} images but {len(focal_sources)} focal sources")
    sources: list[FocalSource] = []
    for i, f in enumerate(focal_px):
        given = "dataset" if focal_sources is None else focal_sources[i]
        if given not in FOCAL_SOURCES or (f is not None and given == "model"):
            raise ValueError(f"image {i}: a known focal comes from 'dataset' or 'exif', got {given!r}")
        sources.append("model" if f is None else given)
    return sources


def _model_fov_deg(field_of_view: torch.Tensor | None, n: int) -> torch.Tensor:
    if field_of_view is None:  # a checkpoint without the FOV head
        return torch.full((n,), float("nan"))
    return field_of_view.float().reshape(n).cpu()


def _focal_from_fov(fov_deg: float, width: int) -> float:
    """Horizontal FOV (degrees) -> focal length (pixels) for an image `width` pixels wide."""
    tan = math.tan(math.radians(fov_deg) / 2) if math.isfinite(fov_deg) else float("nan")
    return 0.5 * width / tan if tan != 0 else float("inf")


def _fov_from_focal(focal_px: float, width: int) -> float:
    """Focal length (pixels) -> horizontal FOV (degrees); inverse of `_focal_from_fov`."""
    if not math.isfinite(focal_px) or focal_px == 0:
        return float("nan")
    return math.degrees(2 * math.atan(0.5 * width / focal_px))
