"""Statistics of accuracies: the Wilson interval of one test score, and mean ± std over seeds. Stdlib only,
so train, evaluate and the experiments reach them without each other."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


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
