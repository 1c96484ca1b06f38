"""dSprites' factors: names, sizes and real values (DeepMind's ``latents_values``)."""

from __future__ import annotations

import numpy as np

from vaebias.data.base import GroundTruthData, as_factor_array

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")
#: file name of the official release (npz) and of its HDF5 twin
NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
HDF5_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"
#: mean pixel value of the real file over all 737,280 images
MEAN_PIXEL = 0.042494
#: environment variable searched by :func:`find_dsprites_file`


IMAGE_SIZE = 64


def factor_values() -> tuple[np.ndarray, ...]:
    """The real per-factor value arrays, in factor order (the real ``latents_values``).

    Returns:
        tuple of 5 float64 arrays ``(shape, scale, orientation, posX, posY)`` of
        lengths ``FACTOR_SIZES``: shape ``[1, 2, 3]`` (categorical: square,
        ellipse, heart), scale ``linspace(0.5, 1, 6)``, orientation
        ``linspace(0, 2*pi, 40)`` radians, posX/posY ``linspace(0, 1, 32)``.
        ``factor_values()[k][c]`` is the value of class ``c`` of factor ``k``;
        these equal columns 1..5 of the real ``latents_values``.
    """
    return (
        np.arange(1, 4, dtype=np.float64),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2.0 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    )


def values_of(factors) -> np.ndarray:
    """Map class indices int (n, 5) to real factor values float64 (n, 5).

    Raises:
        DataError: bad shape or an index out of range (see ``as_factor_array``).
    """
    f = as_factor_array(factors, FACTOR_SIZES)
    vals = factor_values()
    return np.stack([vals[k][f[:, k]] for k in range(5)], axis=1)


class DSpritesData(GroundTruthData):
    """What every dSprites source (the real file, the renderer) shares: its name, factors,
    image shape, categorical factors, the manipulation's ε (the paper, Sec. 5.2) and the
    name in tables."""

    name = "dsprites"
    epsilon = 0.1
    display_name = "dSprites"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (1, IMAGE_SIZE, IMAGE_SIZE)
    categorical_factors = (0,)
