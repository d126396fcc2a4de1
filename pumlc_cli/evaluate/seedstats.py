"""Statistics over seeds for `make reproduce`: mean ± sd per cell, paired differences with a t-interval.

Why paired: every method of one seed shares the label mask, the val split and the training seed, so the
per-seed difference removes the variance those share; the interval is Student's t over those differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class PairedDifference:
    """a - b over paired seeds: mean, 95% t-interval (None with one pair), wins of a (a > b), pairs."""

    mean: float
    low: float | None
    high: float | None
    wins: int
    n: int

    def text(self) -> str:
        interval = f" [{self.low:+.1f}, {self.high:+.1f}]" if self.low is not None else ""
        return f"{self.mean:+.1f}{interval}, {self.wins}/{self.n} wins"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """mean(a - b) ± t_{(1+confidence)/2, n-1} · sd(a - b) / √n, and how often a beat b."""
    if len(a) != len(b) or not a:
        raise ValueError("paired samples need the same, non-zero length")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = mean_sd(diffs)
    wins = sum(d > 0 for d in diffs)
    if sd is None:
        return PairedDifference(mean, None, None, wins, len(diffs))
    from scipy.stats import t

    half = float(t.ppf((1 + confidence) / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return PairedDifference(mean, mean - half, mean + half, wins, len(diffs))
