"""Shapes3D (Burgess & Kim 2018): a loader for the real file and a procedural renderer.

The dataset is the full factorial grid of six factors (class indices), row-major
with the last factor (``orientation``) varying fastest, exactly as in the real file
``3dshapes.h5``; our flat index therefore equals the real file's row index.
Source of every number below: the real file (``labels``, ``images``) and real images
from it and from the official GIF of DeepMind's ``3d-shapes`` repository (on which the
renderer's scene was calibrated; see ``docs/shapes3d.md``).

=========== ====== ============================================================
factor      size   value of class ``k`` (what the real ``labels`` hold)
=========== ====== ============================================================
floor_hue   10     ``k / 10`` (hue in [0, 1); colour ``hsv_to_rgb(hue, 1, 1)``)
wall_hue    10     ``k / 10``
object_hue  10     ``k / 10``
scale       8      ``linspace(0.75, 1.25, 8)[k]`` (relative object size)
shape       4      ``k``: 0 cube, 1 cylinder, 2 sphere, 3 capsule (categorical)
orientation 15     ``linspace(-30, 30, 15)[k]`` degrees: the camera's azimuth
=========== ====== ============================================================

Flat index = factors @ (48000, 4800, 480, 60, 15, 1). Images are float32
(n, 3, 64, 64) RGB in [0, 1] (the real file stores uint8 (N, 64, 64, 3); we return
``stored / 255`` channels-first).

Entry points: :class:`Shapes3DFile` (the real file), :class:`Shapes3DRenderer`
(no file needed), :func:`find_shapes3d_file`, :func:`load_shapes3d`.
"""

from __future__ import annotations

import pathlib

from vaebias.data.base import GroundTruthData, find_data_file
from vaebias.data.registry import register
from vaebias.data.shapes3d.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    H5_NAME,
    LABEL_TOL,
    NUM_IMAGES,
    SHAPE_NAMES,
    SKY_RGB,
    classes_of_values,
    factor_values,
    hue_to_rgb,
    values_of,
)
from vaebias.data.shapes3d.file import Shapes3DFile
from vaebias.data.shapes3d.raytracer import REGION_NAMES, SceneParams, trace_geometries
from vaebias.data.shapes3d.renderer import Shapes3DRenderer

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "H5_NAME",
    "LABEL_TOL",
    "NUM_IMAGES",
    "REGION_NAMES",
    "SHAPE_NAMES",
    "SKY_RGB",
    "SceneParams",
    "Shapes3DFile",
    "Shapes3DRenderer",
    "classes_of_values",
    "factor_values",
    "find_shapes3d_file",
    "hue_to_rgb",
    "trace_geometries",
    "load_shapes3d",
    "values_of",
]


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------
_CANDIDATES = (H5_NAME, "shapes3d.h5")


def find_shapes3d_file(data_dir=None) -> pathlib.Path | None:
    """Locate the real Shapes3D file.

    Looks in ``data_dir`` if given, else in ``$VAEBIAS_DATA_DIR`` if set, for
    ``3dshapes.h5`` then ``shapes3d.h5``.

    Returns:
        the path of the first existing file, or None (also when no directory is
        given/set or it does not exist). The file is not validated here.
    """
    return find_data_file(_CANDIDATES, data_dir)


@register("shapes3d")
def load_shapes3d(path=None, data_dir=None, *, in_memory: bool = False) -> GroundTruthData:
    """Shapes3D from ``path``, else from a found file, else the procedural renderer.

    Args:
        path: explicit ``3dshapes.h5`` (errors if invalid; never falls back).
        data_dir: directory searched by :func:`find_shapes3d_file` (default
            ``$VAEBIAS_DATA_DIR``).
        in_memory: for the real file, hold all images in memory (about 5.9 GB).

    Returns:
        :class:`Shapes3DFile` or :class:`Shapes3DRenderer` (``describe()["source"]``
        says which).

    Raises:
        DataError: ``path`` given (or a file found) but missing or invalid.
    """
    if path is not None:
        return Shapes3DFile(path, in_memory=in_memory)
    found = find_shapes3d_file(data_dir)
    if found is not None:
        return Shapes3DFile(found, in_memory=in_memory)
    return Shapes3DRenderer()

