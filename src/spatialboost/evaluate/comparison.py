"""Baseline vs boosted, read against the seed spread: what counts as an effect.

The boost stage is trained several times with different seeds (train.replicate_seeds); the
probes are closed-form and the VQA is greedy, so the remaining variation between two runs of the
same recipe is the training seed's. A difference counts as an effect only when it is larger than
that variation:

    summary = over_seeds([metrics_seed0, metrics_seed1, metrics_seed2])   # {metric: {mean, std, n}}
    verdicts = compare(baseline, summary, higher_better, paired_vqa)       # {metric: Effect}

Rule (`compare`): |Δ| > 2 x the boosted runs' seed std, and, for a VQA accuracy, the paired
item-bootstrap 95% interval of Δ (same items for both models, averaged over the seeds)
excludes 0. Otherwise "no effect". With a single seed there is no spread to read a difference
against, and the verdict says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

SPREAD_FACTOR = 2.0
"""An effect must exceed this many seed standard deviations."""


@dataclass(frozen=True)
class Effect:
    """Δ = boosted mean - baseline; spread: the boosted runs' seed std (ddof 1); interval: the
    paired item-bootstrap 95% interval of Δ (VQA accuracies only); verdict: better / worse / no
    effect / not judged (one seed)."""

    delta: float
    spread: float | None
    n_seeds: int
    verdict: str
    interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval else None
        return out


def over_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std", "n"}} over runs (std: sample std, ddof 1; 0 for one run). A
    metric missing (or NaN) in some run is summarised over the runs that have it."""
    if not per_seed:
        raise ValueError("over_seeds needs at least one run")
    out: dict[str, dict[str, float]] = {}
    for metric in dict.fromkeys(m for run in per_seed for m in run):
        values = np.asarray([run[metric] for run in per_seed if metric in run], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out[metric] = {"mean": float(values.mean()), "std": std, "n": int(values.size)}
    return out


def paired_interval(
    baseline: Sequence[float], boosted: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of mean(boosted averaged over seeds) - mean(baseline), resampling
    items: baseline (n,) per-item scores, boosted (seeds, n) on the same items in the same order."""
    base = np.asarray(baseline, dtype=np.float64)
    boost = np.asarray(boosted, dtype=np.float64).reshape(-1, base.size).mean(axis=0)
    if base.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, base.size, size=(n_boot, base.size))
    deltas = boost[idx].mean(axis=1) - base[idx].mean(axis=1)
    low, high = np.quantile(deltas, [0.025, 0.975])
    return float(low), float(high)


def accuracy_interval(scores: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of an accuracy averaged over seeds: scores (seeds, n) per item."""
    values = np.asarray(scores, dtype=np.float64)
    values = values.reshape(-1, values.shape[-1]).mean(axis=0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def compare(
    baseline: Mapping[str, Mapping[str, float]],
    boosted: Mapping[str, Mapping[str, float]],
    higher_better: Mapping[str, bool],
    paired: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Effect]:
    """The verdict of every metric both runs have (see the module docstring).

    baseline: {metric: {"mean"}}; boosted: `over_seeds(...)`; paired: {metric: the 95% interval
    of Δ} for metrics with per-item scores (VQA)."""
    out = {}
    for metric, boost in boosted.items():
        base = baseline.get(metric)
        if base is None or base.get("mean") is None or boost.get("mean") is None:
            continue
        delta = float(boost["mean"]) - float(base["mean"])
        n = int(boost.get("n", 1))
        spread = float(boost["std"]) if n > 1 else None
        interval = (paired or {}).get(metric)
        if spread is None:
            verdict = "not judged (one seed)"
        elif abs(delta) <= SPREAD_FACTOR * spread or (interval is not None and interval[0] <= 0.0 <= interval[1]):
            verdict = "no effect"
        else:
            verdict = "better" if (delta > 0) == higher_better.get(metric, True) else "worse"
        out[metric] = Effect(delta, spread, n, verdict, interval)
    return out
