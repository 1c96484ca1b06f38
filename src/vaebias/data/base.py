"""The ground-truth-factor dataset protocol shared by every dataset of vaebias.

A dataset is a full factorial grid of discrete generative factors ``w`` (class
indices ``0 .. size-1`` per factor) and a deterministic map ``g(w)`` to an image,
stored row-major over the factors with the *last* factor varying fastest, as in
the real dSprites ``.npz`` (``posY`` fastest) and Shapes3D ``3dshapes.h5``
(``orientation`` fastest).

The shape of the API follows disentanglement_lib's ``GroundTruthData``.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from vaebias._internal.errors import DataError

__all__ = ["GroundTruthData", "DataError", "as_factor_array"]


def as_factor_array(factors, factor_sizes: Sequence[int]) -> np.ndarray:
    """Validate ``factors`` and return them as an int64 array of shape (n, K).

    Args:
        factors: int array-like (n, K) (or (K,) for one point) of class indices.
        factor_sizes: the K factor sizes.

    Raises:
        DataError: wrong number of columns, non-integer values, or an index out of
            ``[0, size)`` for its factor (the message names the factor and value).
    """
    if isinstance(factors, torch.Tensor):
        factors = factors.detach().cpu().numpy()
    arr = np.asarray(factors)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != len(factor_sizes):
        raise DataError(
            f"factors must have shape (n, {len(factor_sizes)}), got {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.size:
            raise DataError(f"factors must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    sizes = np.asarray(factor_sizes, dtype=np.int64)
    bad = (arr < 0) | (arr >= sizes[None, :])
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"factor {col} has class index {arr[row, col]} at row {row}; "
            f"expected 0 <= index < {sizes[col]}"
        )
    return arr


class GroundTruthData(ABC):
    """Abstract dataset of images generated from discrete ground-truth factors.

    Subclasses set ``factor_names`` (tuple of str, length K), ``factor_sizes``
    (tuple of int, length K) and ``observation_shape`` ((C, H, W)) and implement
    :meth:`_images_at`. Everything else is derived here.
    """

    #: ε of the paper's manipulation and noise control on this dataset (Sec. 5.2; max-norm,
    #: image values in [0, 1]); None: the dataset has no default and ε must be given
    epsilon: ClassVar[float | None] = None
    #: the dataset's name in tables and figures
    display_name: ClassVar[str] = ""

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    observation_shape: tuple[int, int, int]
    #: human-readable name used in run directories and reports
    name: str = "dataset"
    #: indices of categorical factors (kept fixed by the Laplace pair sampler)
    categorical_factors: tuple[int, ...] = ()
    #: False for a labelled sample of the grid (:mod:`vaebias.data.arrays`): what needs
    #: neighbouring factor values refuses it
    is_full_grid: bool = True

    # ------------------------------------------------------------------ grid
    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def factor_bases(self) -> np.ndarray:
        """Row-major strides: ``index = factors @ factor_bases`` (int64, (K,))."""
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def index_of(self, factors) -> np.ndarray:
        """Flat dataset index of each factor row: int (n, K) -> int64 (n,)."""
        f = as_factor_array(factors, self.factor_sizes)
        return f @ self.factor_bases

    def factors_of(self, index) -> np.ndarray:
        """Factor class indices of flat indices: int (n,) -> int64 (n, K).

        Raises:
            DataError: an index outside ``[0, len(self))``.
        """
        idx = np.asarray(index.cpu().numpy() if isinstance(index, torch.Tensor) else index)
        idx = np.atleast_1d(idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise DataError(f"index {bad} out of range; expected 0 <= index < {len(self)}")
        if not self.num_factors:
            return np.zeros((idx.size, 0), dtype=np.int64)
        return np.stack(np.unravel_index(idx, self.factor_sizes), axis=1).astype(np.int64, copy=False)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor rows drawn uniformly with replacement: int64 (n, K)."""
        rng = as_rng(rng)
        cols = [rng.integers(0, s, size=n) for s in self.factor_sizes]
        return np.stack(cols, axis=1).astype(np.int64) if cols else np.zeros((n, 0), np.int64)

    # ---------------------------------------------------------------- images
    def images(self, factors=None, *, index=None, device=None) -> torch.Tensor:
        """Images for factor rows (or flat indices).

        Args:
            factors: int (n, K) class indices (``factors`` or ``index``, not both).
            index: int (n,) flat indices.
            device: torch device of the result (default CPU).

        Returns:
            float32 tensor (n, C, H, W) with values in [0, 1] (variants such as
            unclipped manipulations may leave [0, 1]; see their docs).
        """
        if (factors is None) == (index is None):
            raise DataError("pass exactly one of factors= or index=")
        if index is not None:
            factors = self.factors_of(index)
        f = as_factor_array(factors, self.factor_sizes)
        out = self._images_at(f, torch.device(device) if device is not None else torch.device("cpu"))
        return out

    @abstractmethod
    def _images_at(self, factors: np.ndarray, device: torch.device) -> torch.Tensor:
        """Render/load validated factors int64 (n, K) -> float32 (n, C, H, W) on ``device``."""

    def sample(self, n: int, rng: np.random.Generator, device=None):
        """Draw ``n`` uniform points: (factors int64 (n, K), images float32 (n, C, H, W))."""
        f = self.sample_factors(n, rng)
        return f, self.images(f, device=device)

    # -------------------------------------------------- torch's Dataset protocol
    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """One point, so that ``torch.utils.data.DataLoader(data, batch_size=64,
        shuffle=True)`` works on every dataset: flat index ``i`` (``-len <= i < len``;
        negative counts from the end) -> (image float32 (C, H, W), factors int64 (K,)).

        Raises:
            IndexError: an index out of range; TypeError: not an integer.
        """
        return self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Many points in one :meth:`images` call (``DataLoader`` asks for a whole batch this
        way): flat indices -> list of (image float32 (C, H, W), factors int64 (K,)).

        Raises:
            IndexError: an index out of range; TypeError: an index that is not an integer.
        """
        n = len(self)
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu" or idx.ndim != 1:  # TypeError for anything but integers
            idx = np.array([operator.index(i) for i in indices], dtype=np.int64)
        idx = idx.astype(np.int64, copy=False)
        idx = np.where(idx < 0, idx + n, idx)
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(f"index {list(indices)[int(np.argmax(bad))]} out of range; "
                             f"expected -{n} <= index < {n}")
        factors = self.factors_of(idx)  # valid by construction: no second validation in images()
        images = self._images_at(factors, torch.device("cpu"))
        return list(zip(images.unbind(0), torch.from_numpy(factors).unbind(0)))

    def describe(self) -> dict:
        """JSON-friendly description recorded next to results."""
        return {
            "name": self.name,
            "factor_names": list(self.factor_names),
            "factor_sizes": list(self.factor_sizes),
            "observation_shape": list(self.observation_shape),
            "categorical_factors": list(self.categorical_factors),
            "len": len(self),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, factor_sizes={self.factor_sizes})"


def as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


#: Environment variable naming the folder searched for real dataset files.
DATA_DIR_ENV = "VAEBIAS_DATA_DIR"


def find_data_file(candidates: Sequence[str], data_dir=None):
    """The first of the file names ``candidates`` that exists in ``data_dir``, else in
    ``$VAEBIAS_DATA_DIR`` if set; None when none exists or no folder is given/set.
    The file is not validated here. Returns a ``pathlib.Path`` or None."""
    import os
    import pathlib

    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    root = pathlib.Path(data_dir).expanduser()
    for name in candidates:
        p = root / name
        if p.is_file():
            return p
    return None
