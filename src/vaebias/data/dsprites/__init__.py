"""dSprites (Matthey et al. 2017): a procedural renderer and a loader for the real file.

The dataset is the full factorial grid of five factors (class indices), row-major
with the last factor (``posY``) varying fastest, exactly as in the real file
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` once its constant ``color``
column (size 1) is dropped; our flat index therefore equals the real file's index.
Source of every number below: the real file (``latents_values``, ``latents_classes``,
``imgs``) and the 320 real frames of the official animated GIF of DeepMind's
``dsprites-dataset`` repository (on which the shape constants were calibrated).

=========== ====== ==========================================================
factor      size   value of class ``k`` (what the real ``latents_values`` hold)
=========== ====== ==========================================================
shape       3      ``k + 1``: 1 square, 2 ellipse, 3 heart (categorical)
scale       6      ``linspace(0.5, 1, 6)[k]`` (relative size)
orientation 40     ``linspace(0, 2*pi, 40)[k]`` radians (class 39 == class 0)
posX        32     ``linspace(0, 1, 32)[k]``; 0 = left, 1 = right
posY        32     ``linspace(0, 1, 32)[k]``; 0 = top, 1 = bottom
=========== ====== ==========================================================

Images are (1, 64, 64) float32 with values exactly 0.0 or 1.0.

Entry points: :class:`DSpritesRenderer` (no file needed), :class:`DSpritesFile`
(the real npz or its HDF5 twin), :func:`find_dsprites_file`, :func:`load_dsprites`.
"""

from __future__ import annotations

import pathlib

from vaebias.data.base import GroundTruthData, find_data_file
from vaebias.data.dsprites.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    HDF5_NAME,
    MEAN_PIXEL,
    NPZ_NAME,
    SHAPE_NAMES,
    factor_values,
    values_of,
)
from vaebias.data.dsprites.file import DSpritesFile
from vaebias.data.dsprites.renderer import DSpritesRenderer
from vaebias.data.registry import register

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "SHAPE_NAMES",
    "NPZ_NAME",
    "HDF5_NAME",
    "MEAN_PIXEL",
    "factor_values",
    "values_of",
    "DSpritesRenderer",
    "DSpritesFile",
    "find_dsprites_file",
    "load_dsprites",
]


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------
_CANDIDATES = (NPZ_NAME, "dsprites.h5", "dsprites.hdf5", HDF5_NAME)


def find_dsprites_file(data_dir=None) -> pathlib.Path | None:
    """Locate the real dSprites file.

    Looks in ``data_dir`` if given, else in ``$VAEBIAS_DATA_DIR`` if set, for (in
    this order) ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, ``dsprites.h5``,
    ``dsprites.hdf5``, ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5``.

    Returns:
        the path of the first existing file, or None (also when no directory is
        given/set or it does not exist). The file is not validated here.
    """
    return find_data_file(_CANDIDATES, data_dir)


@register("dsprites")
def load_dsprites(path=None, data_dir=None) -> GroundTruthData:
    """dSprites from ``path``, else from a found file, else the procedural renderer.

    Args:
        path: explicit npz/HDF5 file (errors if invalid; never falls back).
        data_dir: directory searched by :func:`find_dsprites_file` (default
            ``$VAEBIAS_DATA_DIR``).

    Returns:
        :class:`DSpritesFile` or :class:`DSpritesRenderer`.

    Raises:
        DataError: ``path`` given (or a file found) but missing or invalid.
    """
    if path is not None:
        return DSpritesFile(path)
    found = find_dsprites_file(data_dir)
    if found is not None:
        return DSpritesFile(found)
    return DSpritesRenderer()

