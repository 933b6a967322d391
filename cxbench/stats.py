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


# ---------------------------------------------------------------- paired significance tests
#
# Both tests below compare two systems scored on the same samples: ``base`` and ``cand`` are
# their ``(n, k)`` stats matrices with row ``i`` of each belonging to the same sample. They
# work on the difference ``reduce(cand) - reduce(base)`` of the raw metric values and know
# nothing of a metric's direction (callers flip signs for lower-is-better metrics).


def _is_mean(reduce: Callable[[np.ndarray], float]) -> bool:
    """True for the mean-of-first-column reducer, which has a vectorised fast path."""
    return getattr(reduce, "__name__", "") == "mean_reduce"


def _check_pair(base: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    base = np.asarray(base, dtype=float)
    cand = np.asarray(cand, dtype=float)
    if base.ndim == 1:
        base = base[:, None]
    if cand.ndim == 1:
        cand = cand[:, None]
    if base.shape != cand.shape:
        raise ValueError(f"paired matrices differ in shape: {base.shape} (base) vs {cand.shape} (candidate)")
    return base, cand


def _tolerance(observed: float) -> float:
    """Slack for comparing replicate differences with the observed one (float rounding only)."""
    return 1e-12 * max(1.0, abs(observed))


def paired_bootstrap(
    base: np.ndarray,
    cand: np.ndarray,
    reduce: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    max_draws: int = 500_000,
) -> dict[str, float]:
    """Paired percentile bootstrap of ``delta = reduce(cand) - reduce(base)``.

    Each replicate draws one set of sample indices with replacement and applies it to both
    matrices, so the per-sample pairing (and the correlation it carries) is kept. Returns:

    - ``delta``: the observed difference;
    - ``ci_low``, ``ci_high``: the percentile ``confidence`` interval of the replicate deltas;
    - ``p_value``: two-sided p of H0 "no difference", from the bootstrap distribution shifted
      to the null (Efron & Tibshirani 1993, ch. 16): with replicate deltas ``d*``,
      ``p = (1 + #{|d* - delta| >= |delta|}) / (n_boot + 1)``;
    - ``p_greater`` / ``p_less``: the one-sided versions for H1 "delta > 0" / "delta < 0",
      ``(1 + #{d* - delta >= delta}) / (n_boot + 1)`` and ``(1 + #{d* - delta <= delta}) / (n_boot + 1)``;
    - ``n``: the number of paired samples, ``n_boot``: the number of replicates.

    A zero observed delta gives ``p_value = 1``. The ``+1`` terms count the observed sample
    as one replicate, so no p-value is ever 0. Index draws are chunked as in ``bootstrap_ci``;
    the mean reducer (``mean_reduce``) is vectorised. Deterministic given ``seed``.
    """
    base, cand = _check_pair(base, cand)
    n = len(base)
    if n == 0:
        nan = float("nan")
        return {"delta": nan, "ci_low": nan, "ci_high": nan, "p_value": nan, "p_greater": nan,
                "p_less": nan, "n": 0, "n_boot": int(n_boot)}  # fmt: skip
    delta = float(reduce(cand) - reduce(base))
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    chunk = max(1, min(n_boot, max_draws // n))
    fast = _is_mean(reduce)
    diff = cand[:, 0] - base[:, 0] if fast else None
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(size, n))
        if fast:
            values[done : done + size] = diff[idx].mean(axis=1)
        else:
            for j in range(size):
                rows = idx[j]
                values[done + j] = reduce(cand[rows]) - reduce(base[rows])
        done += size
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    centred = values - delta  # the bootstrap distribution moved to the null "delta = 0"
    tol = _tolerance(delta)
    total = n_boot + 1
    return {
        "delta": delta,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float((1 + np.sum(np.abs(centred) >= abs(delta) - tol)) / total),
        "p_greater": float((1 + np.sum(centred >= delta - tol)) / total),
        "p_less": float((1 + np.sum(centred <= delta + tol)) / total),
        "n": n,
        "n_boot": int(n_boot),
    }


def approximate_randomization(
    base: np.ndarray,
    cand: np.ndarray,
    reduce: Callable[[np.ndarray], float],
    n_perm: int = 1000,
    seed: int = 0,
    max_draws: int = 500_000,
) -> float:
    """Two-sided approximate randomization (paired permutation) p-value of ``reduce(cand) - reduce(base)``.

    Each permutation swaps every sample's rows between the two systems with probability 1/2
    and recomputes the difference ``d``; with the observed difference ``d_obs``,
    ``p = (#{|d| >= |d_obs|} + 1) / (n_perm + 1)`` (Noreen 1989; Riezler & Maxwell 2005).
    Identical systems give exactly 1.0. Swap masks are drawn in chunks of at most
    ``max_draws`` entries; the mean reducer is vectorised. Deterministic given ``seed``.
    """
    base, cand = _check_pair(base, cand)
    n = len(base)
    if n == 0:
        return float("nan")
    observed = float(reduce(cand) - reduce(base))
    threshold = abs(observed) - _tolerance(observed)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_perm, max_draws // n))
    fast = _is_mean(reduce)
    diff = cand[:, 0] - base[:, 0] if fast else None
    hits = 0
    done = 0
    while done < n_perm:
        size = min(chunk, n_perm - done)
        swap = rng.random((size, n)) < 0.5
        if fast:
            d = np.where(swap, -diff, diff).mean(axis=1)
            hits += int(np.sum(np.abs(d) >= threshold))
        else:
            for j in range(size):
                mask = swap[j][:, None]
                d = reduce(np.where(mask, base, cand)) - reduce(np.where(mask, cand, base))
                hits += int(abs(d) >= threshold)
        done += size
    return float((hits + 1) / (n_perm + 1))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni step-down adjusted p-values, in the order of ``p_values``.

    With the ``m`` p-values sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` (1-based ``j``); rejecting where the adjusted
    value is below ``alpha`` controls the family-wise error rate at ``alpha``. NaN (undefined)
    p-values stay NaN and do not count towards ``m``.
    """
    valid = sorted((p, key) for key, p in p_values.items() if p == p)  # NaN != NaN
    m = len(valid)
    adjusted: dict[str, float] = {key: float("nan") for key in p_values}
    running = 0.0
    for rank, (p, key) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * float(p)))
        adjusted[key] = running
    return {key: adjusted[key] for key in p_values}
