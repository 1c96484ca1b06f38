"""Batch samplers: what one training step sees.

A sampler has ``sample(n, rng, device) -> dict`` of tensors on ``device``. Every model
names its sampler through ``Model.batch_sampler(data)``; the training loop calls it
with the run's own ``np.random.Generator`` (so a resumed run draws the same batches).

- :class:`UniformSampler`: ``{"images": (n, C, H, W), "factors": (n, K)}``, factors
  uniform with replacement over the grid (disentanglement_lib's training input).

Pair samplers (Slow-VAE/PCL transitions, weak-supervision pairs) add ``"images2"`` and
``"factors2"`` for the second element of each pair.
"""

from __future__ import annotations

import numpy as np
import torch

from vaebias.data.base import GroundTruthData

__all__ = ["UniformSampler"]


class UniformSampler:
    """Single images with factors drawn uniformly from the grid."""

    def __init__(self, data: GroundTruthData):
        self.data = data

    def sample(self, n: int, rng: np.random.Generator, device) -> dict:
        factors = self.data.sample_factors(n, rng)
        return {
            "images": self.data.images(factors, device=device),
            "factors": torch.as_tensor(factors, device=device),
        }

    def sample_many(self, n: int, rngs, device) -> dict:
        """One batch per generator, stacked, rendered in a single call (for ensembles).

        The same tensors as ``torch.stack`` over ``[self.sample(n, r, device) for r in
        rngs]`` (each generator advances exactly as in its own ``sample`` call), but the
        images of all M batches are drawn by one renderer call: on a GPU that is one set of
        kernel launches per step instead of M.

        Returns:
            ``{"images": float32 (M, n, C, H, W), "factors": int64 (M, n, K)}`` on ``device``.
        """
        factors = np.concatenate([self.data.sample_factors(n, r) for r in rngs])
        images = self.data.images(factors, device=device)
        m = len(rngs)
        return {
            "images": images.reshape(m, n, *images.shape[1:]),
            "factors": torch.as_tensor(factors, device=device).reshape(m, n, -1),
        }
