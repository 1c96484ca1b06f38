"""Two-sample statistics over seeds for Table 1's drops (the paper reports mean ± std only).

A drop is the difference of mean MIG between two cells of the table, e.g. modified −
original of one model, each cell a sample of independently seeded training runs. Two
statistics are given for it:

- :func:`bootstrap_ci`: the percentile bootstrap confidence interval of the difference of
  means, resampling each cell's runs with replacement independently (Efron & Tibshirani
  1993, ch. 13 and 16);
- :func:`permutation_p_value`: the two-sided permutation test of equal means, exact over
  every split of the pooled runs when there are few enough of them (252 splits for 5 + 5
  runs), Monte Carlo otherwise (Good 2005, ch. 3).

With n runs per cell the smallest two-sided exact p-value is 2 / C(2n, n): 0.1 for 3 + 3
runs, 0.0079 for 5 + 5. The cells are treated as independent samples: runs of the same
seed on two variants share their initialisation but see other images, so no pairing is
assumed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci", "permutation_p_value", "difference"]

#: splits enumerated exactly by :func:`permutation_p_value` up to this many
EXACT_LIMIT = 100_000


def _sample(x: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one value, got none")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values, got {a.tolist()}")
    return a


def bootstrap_ci(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b) − mean(a).

    Args:
        a, b: float values (n_a,), (n_b,): the two cells (e.g. MIG over seeds of the
            original and of the modified data).
        level: coverage in (0, 1); 0.95 gives the 2.5 % and 97.5 % percentiles.
        resamples: bootstrap resamples (each cell drawn with replacement, independently).
        seed: seed of the resampling (``numpy.random.default_rng``).

    Returns:
        (low, high) in the units of the values (MIG).

    Raises:
        ValueError: an empty cell, a non-finite value, a level outside (0, 1) or
            ``resamples`` < 1.
    """
    a, b = _sample(a, "a"), _sample(b, "b")
    if not 0 < level < 1:
        raise ValueError(f"level = {level!r}: expected a number in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples = {resamples!r}: expected an integer >= 1")
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, a.size, (resamples, a.size))].mean(1)
    mb = b[rng.integers(0, b.size, (resamples, b.size))].mean(1)
    d = mb - ma
    tail = (1 - level) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    return float(low), float(high)


def permutation_p_value(a: Sequence[float], b: Sequence[float], *, resamples: int = 100_000,
                        seed: int = 0) -> float:
    """Two-sided permutation p-value of H0: both cells come from one distribution,
    statistic |mean(b) − mean(a)|.

    Every split of the pooled values into groups of sizes n_a and n_b is enumerated
    when there are at most 100,000 of them (the exact test); otherwise ``resamples``
    random splits are drawn and p = (1 + #{|d*| ≥ |d|}) / (1 + resamples).
    Ties count as at least as extreme (with a relative tolerance of 1e-12).

    Args:
        a, b: float values (n_a,), (n_b,).
        resamples, seed: the Monte Carlo draw when the exact test is too large.

    Returns:
        p in (0, 1].

    Raises:
        ValueError: an empty cell or a non-finite value.
    """
    a, b = _sample(a, "a"), _sample(b, "b")
    pooled = np.concatenate([a, b])
    n, na = pooled.size, a.size
    total = pooled.sum()
    observed = abs(b.mean() - a.mean())
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))

    def diffs(sum_a: np.ndarray) -> np.ndarray:
        return np.abs((total - sum_a) / (n - na) - sum_a / na)

    if math.comb(n, na) <= EXACT_LIMIT:
        idx = np.array(list(itertools.combinations(range(n), na)), dtype=np.int64)
        d = diffs(pooled[idx].sum(1))
        return float(np.mean(d >= observed - tol))
    rng = np.random.default_rng(seed)
    sums = pooled[np.argsort(rng.random((resamples, n)), axis=1)[:, :na]].sum(1)
    return float((1 + np.sum(diffs(sums) >= observed - tol)) / (1 + resamples))


def difference(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, seed: int = 0) -> dict:
    """mean(b) − mean(a) with its bootstrap interval and permutation p-value.

    Returns:
        ``{"diff", "ci_low", "ci_high", "p_value", "n_a", "n_b"}`` (floats and ints).
    """
    a, b = _sample(a, "a"), _sample(b, "b")
    low, high = bootstrap_ci(a, b, level=level, seed=seed)
    return {"diff": float(b.mean() - a.mean()), "ci_low": low, "ci_high": high,
            "p_value": permutation_p_value(a, b, seed=seed), "n_a": int(a.size), "n_b": int(b.size)}
