"""Statistics of accuracies: the Wilson interval of one test score (SciPy's), and mean ± std over seeds, so
train, evaluate and the experiments reach them without each other."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound near 100%, where a normal approximation passes 1)."""
    from scipy.stats import binomtest  # ~0.3 s to import: only where a test score is made

    interval = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one value
    low: float
    high: float


def spread(values: list[float]) -> Spread:
    """Mean ± std, min and max of accuracies over seeds."""
    return Spread(
        statistics.mean(values),
        statistics.stdev(values) if len(values) > 1 else 0.0,
        min(values),
        max(values),
    )
