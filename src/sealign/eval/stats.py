"""Confidence intervals for metric means and paired differences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """The larger side of the interval: the t half-width, unless the metric's range cut
        both sides."""
        return max(self.mean - self.low, self.high - self.mean)

    @property
    def symmetric(self) -> bool:
        """Whether the interval is ``mean ± half_width`` (not cut at the metric's range)."""
        return bool(np.isclose(self.mean - self.low, self.high - self.mean, rtol=1e-6, atol=1e-12))


def mean_ci(
    values: np.ndarray | list[float],
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> MeanCI:
    """Mean with a Student-t confidence interval (NaN bounds for n < 2), kept within the
    values' possible ``bounds`` (a metric's range) when given: with few, skewed values the
    symmetric interval can reach past them (a similarity above 1)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    m = float(x.mean())
    if n < 2:
        return MeanCI(m, float("nan"), float("nan"), n)
    se = float(x.std(ddof=1) / np.sqrt(n))
    h = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se)
    low, high = m - h, m + h
    if bounds is not None and bounds[0] <= m <= bounds[1]:  # else the range is no bound
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return MeanCI(m, low, high, n)


_BOOT_ELEMENTS = 4_000_000  # resampled indices held at a time by paired_bootstrap_diff


def paired_bootstrap_diff(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> MeanCI:
    """Mean of ``b - a`` over paired items with a percentile bootstrap CI (items resampled
    jointly); NaN bounds for fewer than two pairs, whose resamples all equal the one difference."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    d = b - a
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < 2:
        m = float(d.mean()) if n else float("nan")
        return MeanCI(m, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    # resamples in blocks of rows: all at once they take 16·n_boot·n bytes (3.7 GB for 100k
    # pairs); the blocks draw the same indices in the same order
    rows = max(1, _BOOT_ELEMENTS // n)
    boots = np.concatenate([
        d[rng.integers(0, n, size=(min(rows, n_boot - i), n))].mean(axis=1)
        for i in range(0, n_boot, rows)
    ])  # fmt: skip
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    return MeanCI(float(d.mean()), float(lo), float(hi), n)
