"""Drawing the FactorVAE / BetaVAE scores' fixed-factor batches from an encoded pool.

The reference (disentanglement_lib) renders and encodes fresh images for every vote:
64 per FactorVAE vote, 128 per BetaVAE point, i.e. about 2.9 million images for
the two scores at its default sizes - minutes to hours on a CPU, although the
numbers only depend on the codes. *Pool sampling* runs the reference's procedure on
the empirical distribution of an already encoded sample of uniformly drawn points
(in :func:`vaebias.metrics.evaluate`: the shared 10,000-point sample and the
5,000-point test sample, so the scores cost no encoding at all):

- a "uniformly drawn point" becomes a pool row drawn uniformly with replacement;
- "a point sharing factor ``k`` with the anchor, otherwise uniform" becomes a pool
  row drawn uniformly with replacement among the rows whose factor ``k`` equals the
  anchor's (for a uniform grid this is the same conditional distribution).

Each vote then has the reference's distribution up to the pool's sampling error;
votes drawn from one pool are not independent. The resulting difference from
fresh sampling is measured in ``tests/test_metrics_sampling.py`` and stated at
:data:`vaebias.metrics.sampling.FAST_MODE`.

A pool is only representative when every value of every voted factor occurs in it
at least ``batch_size`` times (dSprites: 15,000 / 40 orientations = 375 rows per
value on average); :class:`ValueGroups` refuses smaller groups.
"""

from __future__ import annotations

import numpy as np

from vaebias.metrics._checks import check_codes, to_numpy

__all__ = ["ValueGroups", "check_pool"]


def check_pool(codes, factors):
    """Validate a pool: float64 codes (N, d) and int64 factors (N, K), same N >= 2.

    Raises:
        ValueError: wrong dimensions or dtypes, non-finite codes, N differs or N < 2.
    """
    c = check_codes(codes, "pool codes").astype(np.float64, copy=False)
    f = to_numpy(factors)
    if f.ndim != 2 or f.dtype.kind not in "iu":
        raise ValueError(f"pool factors must be an int array (N, K); got shape {f.shape}, "
                         f"dtype {f.dtype}")
    if f.shape[0] != c.shape[0]:
        raise ValueError(f"pool codes and factors must have the same number of rows; got "
                         f"{c.shape[0]} and {f.shape[0]}")
    if c.shape[0] < 2:
        raise ValueError(f"a pool needs at least 2 points; got {c.shape[0]}")
    return c, f.astype(np.int64)


class ValueGroups:
    """Pool rows grouped by the value of each factor, for conditional draws.

    Args:
        factors: int array (N, K) of the pool's factor rows.
        min_group: every value of a varying factor must occur at least this often.

    Attributes:
        varying: int64 (V,): the factors with more than one distinct value in the pool
            (the voted factors; dSprites' constant colour is not one).

    Raises:
        ValueError: no varying factor, or a value of a varying factor occurring fewer
            than ``min_group`` times (the message names the factor, the value, its
            count and what to do).
    """

    def __init__(self, factors: np.ndarray, min_group: int):
        self.n = factors.shape[0]
        self.varying = np.flatnonzero([np.unique(col).size > 1 for col in factors.T]).astype(np.int64)
        if self.varying.size == 0:
            raise ValueError("the pool needs at least one factor with more than one value; every "
                             "factor is constant in it")
        self._order, self._sorted = {}, {}
        for k in self.varying:
            order = np.argsort(factors[:, k], kind="stable")
            vals = factors[order, k]
            uniq, counts = np.unique(vals, return_counts=True)
            if counts.min() < min_group:
                i = int(np.argmin(counts))
                raise ValueError(
                    f"the pool holds only {int(counts[i])} points with factor {int(k)} = "
                    f"{int(uniq[i])}; pool sampling needs at least {min_group} (the batch size) "
                    f"per value of every factor: use a larger pool (num_points / num_test) or "
                    f"score_sampling='fresh'"
                )
            self._order[int(k)], self._sorted[int(k)] = order, vals
        self.factors = factors

    def same_value(self, rng: np.random.Generator, factor_index, anchors) -> np.ndarray:
        """One pool row per anchor, drawn uniformly with replacement among the rows that
        share the anchor's value of the factor ``factor_index[v]`` of its vote ``v``.

        Args:
            rng: the generator; one ``rng.random(anchors.shape)`` call.
            factor_index: int (n,): the factor (a column of ``factors``, one of
                ``varying``) of each vote.
            anchors: int (n, m): pool rows.

        Returns:
            int64 (n, m) pool rows.
        """
        u = rng.random(anchors.shape)
        out = np.empty(anchors.shape, dtype=np.int64)
        for k in np.unique(factor_index):
            sel = factor_index == k
            a = anchors[sel]
            vals = self.factors[a, k]
            srt = self._sorted[int(k)]
            lo = np.searchsorted(srt, vals, side="left")
            hi = np.searchsorted(srt, vals, side="right")
            pick = lo + np.minimum((u[sel] * (hi - lo)).astype(np.int64), hi - lo - 1)
            out[sel] = self._order[int(k)][pick]
        return out
