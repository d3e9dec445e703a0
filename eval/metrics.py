"""Statistics for the eval report: bootstrap intervals, paired comparisons, regressions. Pure functions."""

from __future__ import annotations

import random
from typing import Sequence


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def bootstrap_ci(values: Sequence[float], n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993, ch. 13), deterministic by seed."""
    if not values:
        return (float("nan"), float("nan"))
    if len(values) == 1:
        return (values[0], values[0])
    rng = random.Random(seed)
    k = len(values)
    means = sorted(sum(values[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    lo = means[int((1 - level) / 2 * n)]
    hi = means[min(n - 1, int((1 + level) / 2 * n))]
    m = mean(values)
    # The percentile interval of a skewed sample can miss the sample mean by a rounding hair: widen to it.
    return (min(lo, m), max(hi, m))


def paired(strategy: Sequence[float], baseline: Sequence[float], tie: float = 0.005, seed: int = 0) -> dict:
    """Win/tie/loss rates and the mean paired delta (with its bootstrap interval) of strategy vs baseline."""
    if len(strategy) != len(baseline):
        raise ValueError("paired comparison needs one value per prompt on both sides")
    deltas = [s - b for s, b in zip(strategy, baseline)]
    n = len(deltas) or 1
    return {
        "delta_mean": mean(deltas),
        "delta_ci95": list(bootstrap_ci(deltas, seed=seed)),
        "win": sum(d > tie for d in deltas) / n,
        "tie": sum(abs(d) <= tie for d in deltas) / n,
        "loss": sum(d < -tie for d in deltas) / n,
    }


def regressions(prompts: Sequence[str], strategy: Sequence[float], baseline: Sequence[float],
                threshold: float) -> list[dict]:
    """Prompts where the strategy's agreement is below the baseline's by more than `threshold`, worst first."""
    rows = [{"prompt": p, "delta": s - b, "agreement": s, "identity": b}
            for p, s, b in zip(prompts, strategy, baseline) if s - b < -threshold]
    return sorted(rows, key=lambda r: r["delta"])


def gap_recovered(strategy: Sequence[float], baseline: Sequence[float], oracle: Sequence[float], n: int = 2000,
                  level: float = 0.95, seed: int = 0) -> dict:
    """F = (mean strategy - mean baseline) / (mean oracle - mean baseline), the share of the oracle's gain over
    the baseline that the strategy gets, with a paired percentile bootstrap interval: prompts are resampled
    together on all three sides, so prompt difficulty cancels as in `paired`. None where the oracle gains
    nothing (the ratio is undefined); resamples whose oracle gap is not positive are dropped."""
    if not (len(strategy) == len(baseline) == len(oracle)):
        raise ValueError("gap_recovered needs one value per prompt on all three sides")
    k = len(strategy)

    def ratio(idx) -> float | None:
        gap = sum(oracle[i] - baseline[i] for i in idx)
        return sum(strategy[i] - baseline[i] for i in idx) / gap if gap > 0 else None

    f = ratio(range(k)) if k else None
    if f is None:
        return {"fraction": None, "ci95": [None, None]}
    rng = random.Random(seed)
    draws = sorted(r for r in (ratio([rng.randrange(k) for _ in range(k)]) for _ in range(n)) if r is not None)
    lo = draws[int((1 - level) / 2 * len(draws))]
    hi = draws[min(len(draws) - 1, int((1 + level) / 2 * len(draws)))]
    return {"fraction": f, "ci95": [min(lo, f), max(hi, f)]}
