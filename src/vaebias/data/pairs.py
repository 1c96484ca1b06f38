"""Pairs of images related by a sparse, Laplace-distributed transition of the factors.

The training input of Slow-VAE (Klindt et al. 2021) and of PCL (Hyvärinen & Morioka
2017), the two temporal models of the paper (Sec. 5.1): a pair ``(x_{t-1}, x_t)`` whose
factors differ by a sparse "natural" transition.

Sampling one pair (vectorised over the batch, all randomness from the caller's
``np.random.Generator``, so a resumed run draws the same pairs):

1. ``w_{t-1}``: factors uniform over the grid (``data.sample_factors``, exactly as
   :class:`~vaebias.data.samplers.UniformSampler`).
2. ``w_t``: each *non-categorical* factor ``k`` with ``S_k >= 2`` classes draws its new
   class index ``j`` from

       P(j | i) = exp(-|j - i| / s_k) / sum_{j'=0}^{S_k-1} exp(-|j' - i| / s_k),
       s_k = log(S_k) / rate,      j in {0, ..., S_k - 1},

   i.e. a discrete Laplace (two-sided geometric) step from ``i`` *truncated by
   renormalisation* over the grid: a step that would leave ``[0, S_k)`` is never
   proposed, and the remaining mass is rescaled. This is what slow_disentanglement
   does (``TupleLoader.truncated_laplace`` in ``scripts/dataset.py``: the Laplace pdf
   evaluated at ``np.arange(size)`` around the current index, divided by its sum);
   we follow it rather than clipping, because clipping would pile the out-of-range
   mass onto the first and last class (a dSprites sprite would stick to the border)
   and change the transition statistics the models are built on. Like the original,
   the cyclic dSprites orientation is treated as an interval (no wrap-around).
3. Categorical factors (``data.categorical_factors``, e.g. the dSprites and
   Shapes3D shape) and factors with a single class keep their value.
4. At least one factor changes. Rows where nothing changed are fixed in one of two
   ways (``no_change``):

   - ``"redraw_one"`` (default, slow_disentanglement's rule): pick one eligible
     factor uniformly and redraw it from ``P(j | i)`` with ``j = i`` excluded
     (renormalised);
   - ``"reject"``: redraw every eligible factor of those rows, up to ``max_tries``
     rounds (the exact conditional law of the transition given a change); rows still
     unchanged after that fall back to ``"redraw_one"``.

   The two differ only on the few rows without a change (at rate 1: 0.16 % of
   dSprites and of Shapes3D pairs, 4.8 % on the 16x16 toy grid).

``sample`` returns ``{"images", "factors"}`` for ``x_{t-1}`` (uniform) and
``{"images2", "factors2"}`` for ``x_t`` (its transition), the original's order.
"""

from __future__ import annotations

import numpy as np
import torch

from vaebias.data.arrays import require_full_grid
from vaebias.data.base import DataError, GroundTruthData

__all__ = ["LaplaceTransitionSampler", "laplace_transition_matrix"]


def laplace_transition_matrix(size: int, rate: float, exclude_stay: bool = False) -> np.ndarray:
    """Row-stochastic float64 (size, size) matrix ``P[i, j] = P(j | i)`` of the truncated
    discrete Laplace step with scale ``log(size) / rate`` (see the module docstring).

    Args:
        size: number of classes of the factor (>= 2).
        rate: > 0; larger means smaller steps.
        exclude_stay: zero the diagonal before renormalising (a forced change).
    """
    if size < 2:
        raise ValueError(f"size = {size}: a transition needs at least 2 classes")
    scale = np.log(size) / rate
    idx = np.arange(size)
    w = np.exp(-np.abs(idx[None, :] - idx[:, None]) / scale)
    if exclude_stay:
        np.fill_diagonal(w, 0.0)
    return w / w.sum(1, keepdims=True)


class LaplaceTransitionSampler:
    """Pairs ``(x_{t-1}, x_t)`` with a sparse truncated-Laplace factor transition.

    Args:
        data: a :class:`~vaebias.data.base.GroundTruthData`.
        rate: the transition rate (> 0); the step scale of factor ``k`` is
            ``log(size_k) / rate``. 1 in slow_disentanglement (``--rate-data``).
        no_change: ``"redraw_one"`` or ``"reject"`` (module docstring, step 4).
        max_tries: rounds of ``"reject"`` before the fallback (>= 1).

    Raises:
        DataError: no factor can change (all categorical or single-class).
        ValueError: a bad ``rate``, ``no_change`` or ``max_tries``.
    """

    def __init__(self, data: GroundTruthData, rate: float = 1.0, no_change: str = "redraw_one",
                 max_tries: int = 100):
        if not rate > 0:
            raise ValueError(f"rate = {rate!r}: expected a number > 0")
        if no_change not in ("redraw_one", "reject"):
            raise ValueError(f"no_change = {no_change!r}: expected 'redraw_one' or 'reject'")
        if int(max_tries) < 1:
            raise ValueError(f"max_tries = {max_tries!r}: expected an integer >= 1")
        require_full_grid(data, "Laplace transition pairs")
        self.data = data
        self.rate = float(rate)
        self.no_change = no_change
        self.max_tries = int(max_tries)
        sizes = tuple(int(s) for s in data.factor_sizes)
        categorical = {int(k) for k in getattr(data, "categorical_factors", ())}
        #: factors that move: non-categorical with at least two classes
        self.moving = tuple(k for k, s in enumerate(sizes) if k not in categorical and s >= 2)
        if not self.moving:
            raise DataError(
                f"{data!r}: every factor is categorical or has one class; a transition pair "
                f"needs at least one factor that can change"
            )
        # cumulative transition tables: row i is the CDF of the new index given i
        self._cdf = {k: self._cumulative(laplace_transition_matrix(sizes[k], self.rate)) for k in self.moving}
        self._cdf_change = {
            k: self._cumulative(laplace_transition_matrix(sizes[k], self.rate, exclude_stay=True))
            for k in self.moving
        }

    @staticmethod
    def _cumulative(p: np.ndarray) -> np.ndarray:
        c = np.cumsum(p, axis=1)
        c[:, -1] = 1.0  # exact, so that u in [0, 1) always lands inside the grid
        return c

    @staticmethod
    def _draw(cdf: np.ndarray, start: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Inverse-CDF draw: smallest j with cdf[start, j] > u (int64 (n,))."""
        return (cdf[start] <= u[:, None]).sum(1).astype(np.int64)

    def _step(self, start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw every moving factor of ``start`` (int64 (n, K)) once."""
        out = start.copy()
        u = rng.random((start.shape[0], len(self.moving)))
        for col, k in enumerate(self.moving):
            out[:, k] = self._draw(self._cdf[k], start[:, k], u[:, col])
        return out

    def _redraw_one(self, start: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Change exactly one uniformly chosen moving factor of each row."""
        out = start.copy()
        n = start.shape[0]
        which = rng.integers(0, len(self.moving), size=n)
        u = rng.random(n)
        for col, k in enumerate(self.moving):
            rows = np.flatnonzero(which == col)
            if rows.size:
                out[rows, k] = self._draw(self._cdf_change[k], start[rows, k], u[rows])
        return out

    def transition(self, start, rng: np.random.Generator) -> np.ndarray:
        """Second factors ``w_t`` int64 (n, K) for first factors ``start`` (n, K)."""
        start = np.asarray(start, dtype=np.int64)
        end = self._step(start, rng)
        same = np.flatnonzero((end == start).all(1))
        if self.no_change == "reject":
            for _ in range(self.max_tries):
                if not same.size:
                    break
                end[same] = self._step(start[same], rng)
                same = same[(end[same] == start[same]).all(1)]
        if same.size:
            end[same] = self._redraw_one(start[same], rng)
        return end

    def sample(self, n: int, rng: np.random.Generator, device) -> dict:
        """``n`` pairs: ``"images"``/``"factors"`` of ``x_{t-1}``, ``"images2"``/``"factors2"``
        of ``x_t``; images float32 (n, C, H, W), factors int64 (n, K), all on ``device``."""
        first = self.data.sample_factors(n, rng)
        second = self.transition(first, rng)
        images = self.data.images(np.concatenate([first, second]), device=device)
        return {
            "images": images[:n],
            "factors": torch.as_tensor(first, device=device),
            "images2": images[n:],
            "factors2": torch.as_tensor(second, device=device),
        }

    def __repr__(self) -> str:
        return (f"LaplaceTransitionSampler({self.data!r}, rate={self.rate}, "
                f"no_change={self.no_change!r})")
