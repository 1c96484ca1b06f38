"""Shapes3D's factors: names, sizes, real values, and the map between values and classes."""

from __future__ import annotations

import numpy as np
import torch

from vaebias.data.base import DataError, GroundTruthData, as_factor_array

FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES: tuple[int, ...] = (10, 10, 10, 8, 4, 15)
SHAPE_NAMES: tuple[str, ...] = ("cube", "cylinder", "sphere", "capsule")
#: file name of the official release
H5_NAME = "3dshapes.h5"
NUM_IMAGES = 480_000
#: environment variable searched by :func:`find_shapes3d_file`

#: constant sky colour of the real images, RGB in [0, 1] (measured: (153, 226, 249) / 255)
SKY_RGB: tuple[float, float, float] = (153 / 255, 226 / 255, 249 / 255)

IMAGE_SIZE = 64
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_GEOMETRIES = 8 * 4 * 15  # (scale, shape, orientation) combinations; hues only recolour
#: tolerance when mapping label values to classes (the real values are exact float64)
LABEL_TOL = 1e-4


def factor_values() -> tuple[np.ndarray, ...]:
    """The real per-factor value arrays, in factor order (the real ``labels``).

    Returns:
        tuple of 6 float64 arrays of lengths ``FACTOR_SIZES``: the three hues
        ``arange(10) / 10``, scale ``linspace(0.75, 1.25, 8)``, shape ``[0, 1, 2, 3]``
        (categorical), orientation ``linspace(-30, 30, 15)`` degrees.
        ``factor_values()[k][c]`` is the value of class ``c`` of factor ``k``, i.e.
        what column ``k`` of the real ``labels`` holds.
    """
    hue = np.arange(10, dtype=np.float64) / 10.0
    return (
        hue,
        hue.copy(),
        hue.copy(),
        np.linspace(0.75, 1.25, 8),
        np.arange(4, dtype=np.float64),
        np.linspace(-30.0, 30.0, 15),
    )


def values_of(factors) -> np.ndarray:
    """Map class indices int (n, 6) to real factor values float64 (n, 6).

    Raises:
        DataError: bad shape or an index out of range (see ``as_factor_array``).
    """
    f = as_factor_array(factors, FACTOR_SIZES)
    vals = factor_values()
    return np.stack([vals[k][f[:, k]] for k in range(6)], axis=1)


def classes_of_values(values, tol: float = LABEL_TOL, grids=None) -> np.ndarray:
    """Map factor values float (n, 6) (the real ``labels``) to class indices int64 (n, 6).

    Each value must lie within ``tol`` of one of its factor's grid values.

    Args:
        values: float (n, 6) (or (6,)) factor values.
        tol: absolute tolerance.
        grids: the 6 increasing value arrays (default :func:`factor_values`).

    Raises:
        DataError: wrong shape, a non-finite value, or a value off the grid (the
            message names the row, the factor, the value and the allowed values).
    """
    grids = factor_values() if grids is None else tuple(np.asarray(g, np.float64) for g in grids)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != len(grids):
        raise DataError(f"factor values must have shape (n, {len(grids)}), got {tuple(v.shape)}")
    out = np.empty(v.shape, dtype=np.int64)
    for k, grid in enumerate(grids):
        col = v[:, k]
        # nearest grid value: grid is increasing
        hi = np.clip(np.searchsorted(grid, col), 1, len(grid) - 1) if len(grid) > 1 else np.zeros(len(col), int)
        lo = np.maximum(hi - 1, 0)
        idx = np.where(np.abs(col - grid[lo]) <= np.abs(col - grid[hi]), lo, hi).astype(np.int64)
        bad = ~(np.abs(col - grid[idx]) <= tol)  # also catches NaN
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"row {row}: {FACTOR_NAMES[k]} value {float(col[row])!r} is not on the grid; expected one of "
                f"{np.array2string(grid, precision=4, separator=', ', max_line_width=200)} (tolerance {tol})"
            )
        out[:, k] = idx
    return out


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """``hsv_to_rgb(hue, 1, 1)`` for a float tensor of hues (...,) in [0, 1] -> (..., 3) in [0, 1]."""
    off = torch.tensor([0.0, 4.0, 2.0], dtype=hue.dtype, device=hue.device)
    k = torch.remainder(hue.unsqueeze(-1) * 6.0 + off, 6.0)
    return ((k - 3.0).abs() - 1.0).clamp(0.0, 1.0)


class Shapes3DData(GroundTruthData):
    """What every Shapes3D source (the real file, the renderer) shares: its name, factors,
    image shape, categorical factors, the manipulation's ε (the paper, Sec. 5.2) and the
    name in tables."""

    name = "shapes3d"
    epsilon = 0.175
    display_name = "Shapes3D"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    categorical_factors = (4,)
