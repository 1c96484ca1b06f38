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
