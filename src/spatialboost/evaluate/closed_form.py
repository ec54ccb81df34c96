"""Closed-form linear probe heads: ridge regression (depth) and ridge classifiers (classes).

A linear probe trained by SGD over a learning-rate grid has two failure modes that make a small
benchmark unreadable: the grid can sit at its edge (under-fitting: the head, not the features,
limits the score) and every seed draws a different head (the probe's own noise hides the
encoders' difference). A ridge head has neither: for each penalty the optimum is exact, and the
whole penalty path costs one eigendecomposition of the (D, D) Gram matrix.

    head = fit_ridge(x_fit, y_fit, w_fit, x_val, y_val, w_val, penalties, score)
    y_hat = head.predict(x)                       # (n, k)

Inputs are standardised with the fitting rows' (weighted) statistics; the penalty is relative
to the trace of the standardised Gram matrix divided by D, so one grid fits every feature
width: penalty 1.0 shrinks as much as adding as much ridge as the data's average variance.
Classification targets are one-hot (a least-squares "ridge classifier", argmax at test time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Relative ridge penalties tried on the validation split (see the module docstring)."""


@dataclass(frozen=True)
class RidgeHead:
    """y = ((x - mean) / std) @ weight + bias, fitted in closed form."""

    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    weight: np.ndarray  # (D, k)
    bias: np.ndarray  # (k,)
    penalty: float
    val_scores: tuple[float, ...]  # one per penalty tried, in order

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, k) float64 outputs of (n, D) inputs."""
        return ((np.asarray(x, np.float64) - self.mean) / self.std) @ self.weight + self.bias


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, C) float64 one-hot rows of int labels in [0, C)."""
    out = np.zeros((len(labels), num_classes), np.float64)
    out[np.arange(len(labels)), np.asarray(labels, np.int64)] = 1.0
    return out


def fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    x_val: np.ndarray,
    val_score: Callable[[np.ndarray], float],
    penalties: Sequence[float] = DEFAULT_PENALTIES,
) -> RidgeHead:
    """Weighted ridge regression of y (n, k) on x (n, D) for every penalty; the one whose
    predictions on x_val score highest under `val_score` (higher is better) wins.

    w: (n,) non-negative row weights (None = all 1), e.g. the share of a patch's pixels that
    have ground truth. Exact: the path is solved through one eigendecomposition.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"fit_ridge needs as many (> 0) rows of x as of y, got {len(x)} and {len(y)}")
    if not penalties or min(penalties) <= 0:
        raise ValueError(f"ridge penalties must be positive, got {list(penalties)}")
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    total = w.sum()
    mean = (w[:, None] * x).sum(0) / total
    std = np.sqrt((w[:, None] * (x - mean) ** 2).sum(0) / total)
    std = np.where(std > 1e-8, std, 1.0)
    xs = (x - mean) / std
    y_mean = (w[:, None] * y).sum(0) / total
    gram = xs.T @ (w[:, None] * xs) / total  # (D, D)
    cross = xs.T @ (w[:, None] * (y - y_mean)) / total  # (D, k)
    eigval, eigvec = np.linalg.eigh(gram)
    eigval = np.clip(eigval, 0.0, None)
    rotated = eigvec.T @ cross  # (D, k)
    scale = max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    x_val_s = (np.asarray(x_val, np.float64) - mean) / std
    heads, scores = [], []
    for penalty in penalties:
        weight = eigvec @ (rotated / (eigval + penalty * scale)[:, None])  # (D, k)
        heads.append(weight)
        scores.append(float(val_score(x_val_s @ weight + y_mean)))
    best = int(np.nanargmax(np.nan_to_num(np.asarray(scores), nan=-np.inf)))
    return RidgeHead(mean, std, heads[best], y_mean, float(penalties[best]), tuple(scores))
