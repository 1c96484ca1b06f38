"""Table 1's drop statistics against hand computations on tiny cases."""

import itertools

import numpy as np
import pytest

from vaebias.report.statistics import bootstrap_ci, difference, permutation_p_value


def test_exact_permutation_p_value_by_hand():
    # pooled {0, 1, 2, 3} split 2 + 2: the six mean differences are 2, 1, 0, 0, -1, -2;
    # |d| >= 2 for 2 of the 6 splits
    assert permutation_p_value([0, 1], [2, 3]) == pytest.approx(2 / 6)
    # 5 + 5 fully separated: only the observed split and its mirror reach |d| -> 2 / C(10, 5)
    assert permutation_p_value([0, 1, 2, 3, 4], [10, 11, 12, 13, 14]) == pytest.approx(2 / 252)
    # 3 + 3 cannot go below 0.1
    assert permutation_p_value([0, 0.1, 0.2], [5, 6, 7]) == pytest.approx(0.1)
    # identical cells: every split is at least as extreme
    assert permutation_p_value([1, 1], [1, 1]) == 1.0


def test_monte_carlo_permutation_p_value_agrees_with_enumeration():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 10), rng.normal(0.8, 1, 10)  # C(20, 10) = 184,756 splits: Monte Carlo
    pooled = np.concatenate([a, b])
    observed = abs(b.mean() - a.mean())
    sums = np.array([pooled[list(c)].sum() for c in itertools.combinations(range(20), 10)])
    exact = np.mean(np.abs((pooled.sum() - sums) / 10 - sums / 10) >= observed - 1e-12)
    assert permutation_p_value(a, b) == pytest.approx(exact, abs=0.01)


def test_bootstrap_interval_by_hand():
    # a = [0, 1]: a resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4; b = [5]:
    # mean(b) - mean(a) is 5, 4.5 or 4, so the 2.5 % and 97.5 % percentiles are 4 and 5
    assert bootstrap_ci([0, 1], [5]) == (4.0, 5.0)
    # the 25 % / 75 % interval of the same distribution is the middle value's
    assert bootstrap_ci([0, 1], [5], level=0.5) == (4.5, 4.5)
    # constant cells: a point interval at the difference
    assert bootstrap_ci([0.2, 0.2, 0.2], [0.5, 0.5]) == pytest.approx((0.3, 0.3))


def test_difference_and_bad_input():
    d = difference([0.4, 0.5, 0.6], [0.1, 0.2, 0.3])
    assert d["diff"] == pytest.approx(-0.3)
    assert d["ci_low"] <= -0.3 <= d["ci_high"] < 0
    assert d["p_value"] == pytest.approx(0.1)
    assert (d["n_a"], d["n_b"]) == (3, 3)
    with pytest.raises(ValueError, match="at least one value"):
        difference([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        permutation_p_value([np.nan, 1.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], [2.0], level=1.5)
