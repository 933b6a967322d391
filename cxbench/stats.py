"""Confidence intervals: percentile bootstrap over samples, on any metric's stats matrix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_ci(
    matrix: np.ndarray,
    reduce: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    max_draws: int = 500_000,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``reduce(matrix)``, resampling rows (samples) with replacement.

    Corpus-level metrics are resampled the same way: their rows are sufficient statistics,
    so each replicate recomputes the corpus score. Index draws are made in chunks of at most
    ``max_draws`` indices, so memory stays bounded for large sample counts. Deterministic given ``seed``.
    """
    n = len(matrix)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    chunk = max(1, min(n_boot, max_draws // n))  # at most ``max_draws`` indices in memory at once
    is_mean = getattr(reduce, "__name__", "") == "mean_reduce"
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(size, n))
        if is_mean:  # fast path: vectorised means of the first column
            values[done : done + size] = matrix[:, 0][idx].mean(axis=1)
        else:
            for j in range(size):
                values[done + j] = reduce(matrix[idx[j]])
        done += size
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return (float(low), float(high))
