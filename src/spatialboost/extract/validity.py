"""Validity verdicts on model outputs: the reasons an image goes to quarantine.

Pure functions: records in, a list of human-readable reasons out (empty = valid). Each reason
starts with the field it is about ("depth: ...", "focal: ...") so quarantine logs group well.
"""

from __future__ import annotations

import math

import numpy as np

from spatialboost.extract.protocols import DepthResult


def validate_depth(
    result: DepthResult,
    min_m: float,
    max_m: float,
    min_focal_px: float,
    max_focal_px: float,
    *,
    max_outside_fraction: float = 0.5,
) -> list[str]:
    """Reasons not to trust a depth result.

    result.depth: (H, W) float, metres; result.focal_px: pixels.
    min_m, max_m: plausible depth range, metres; more than `max_outside_fraction` of the
        pixels outside it is absurd (a few far sky pixels are not).
    min_focal_px, max_focal_px: plausible focal length range, pixels.
    Returns [] when the result is usable. Flags: a depth that is not 2-D or empty, any NaN or
    inf pixel, any pixel <= 0 m, too many pixels outside [min_m, max_m], and a focal length
    that is not finite or lies outside [min_focal_px, max_focal_px].
    """
    if not 0 < min_m < max_m:
        raise ValueError(f"needs 0 < min_m < max_m, got {min_m}, {max_m}")
    if not 0 < min_focal_px < max_focal_px:
        raise ValueError(f"needs 0 < min_focal_px < max_focal_px, got {min_focal_px}, {max_focal_px}")
    reasons = _depth_reasons(np.asarray(result.depth), min_m, max_m, max_outside_fraction)
    reasons += _focal_reasons(result.focal_px, result.focal_source, min_focal_px, max_focal_px)
    return reasons


def _depth_reasons(depth: np.ndarray, min_m: float, max_m: float, max_outside_fraction: float) -> list[str]:
    if depth.ndim != 2 or depth.size == 0:
        return [f"depth: expected a non-empty (H, W) array, got shape {depth.shape}"]
    reasons = []
    finite = np.isfinite(depth)
    if not finite.all():
        reasons.append(f"depth: {int((~finite).sum())} of {depth.size} pixels are NaN or inf")
    values = depth[finite]
    if (values <= 0).any():
        reasons.append(f"depth: {int((values <= 0).sum())} pixels are <= 0 m")
    outside = float(((values < min_m) | (values > max_m)).sum() + (~finite).sum()) / depth.size
    if outside > max_outside_fraction:
        median = float(np.median(values)) if values.size else float("nan")
        reasons.append(
            f"depth: {outside:.0%} of pixels outside [{min_m:g}, {max_m:g}] m "
            f"(allowed {max_outside_fraction:.0%}; median {median:.4g} m)"
        )
    return reasons


def _focal_reasons(focal_px: float, source: str, min_focal_px: float, max_focal_px: float) -> list[str]:
    if not math.isfinite(focal_px):
        return [f"focal: {focal_px} px from {source} is not finite"]
    if not min_focal_px <= focal_px <= max_focal_px:
        return [f"focal: {focal_px:.4g} px from {source} outside [{min_focal_px:g}, {max_focal_px:g}] px"]
    return []
