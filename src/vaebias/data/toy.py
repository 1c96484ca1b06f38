"""A tiny procedural dataset for tests and laptop-scale demos.

``ToySquares``: a white square of side ``side`` px on a black 64x64 canvas; two
factors ``posX`` (column) and ``posY`` (row), each with ``num_positions`` classes
spread evenly so that the square stays inside the canvas. Factors are independent
and easy, so every model should capture them within a short training.
"""

from __future__ import annotations

import numpy as np
import torch

from vaebias.data.base import DataError, GroundTruthData
from vaebias.data.registry import register

__all__ = ["ToySquares"]


@register("toy")
class ToySquares(GroundTruthData):
    """Images float32 (n, 1, 64, 64) in {0, 1}; factors (posX, posY)."""

    factor_names = ("posX", "posY")
    observation_shape = (1, 64, 64)
    name = "toy"
    epsilon = 0.1
    display_name = "toy squares"

    def __init__(self, num_positions: int = 16, side: int = 12):
        if not 2 <= num_positions <= 64 - side + 1:
            raise DataError(f"num_positions = {num_positions}: expected 2 .. {64 - side + 1}")
        if not 1 <= side <= 32:
            raise DataError(f"side = {side}: expected 1 .. 32")
        self.side = side
        self.factor_sizes = (num_positions, num_positions)
        self._offsets = np.rint(np.linspace(0, 64 - side, num_positions)).astype(np.int64)

    def _images_at(self, factors, device):
        off = torch.as_tensor(self._offsets, device=device)
        f = torch.as_tensor(factors, device=device)
        x0, y0 = off[f[:, 0]], off[f[:, 1]]
        grid = torch.arange(64, device=device)
        cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < x0[:, None] + self.side)
        rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < y0[:, None] + self.side)
        return (rows[:, :, None] & cols[:, None, :]).float().unsqueeze(1)
