"""Your own data: images with their factor labels, from arrays or from a file.

- :func:`from_arrays` makes a dataset of arrays you hold (numpy or torch).
- :func:`vaebias.data.save_dataset` writes any dataset as a vaebias dataset file (``.h5``) or as a plain
  ``.npz``; :func:`vaebias.data.load_dataset` reads both back by path.

Two kinds of labelled data:

- **a full factor grid** (every combination of the factors' class indices once, in any row
  order, like dSprites and Shapes3D): everything works;
- **a labelled sample** (any other set of distinct factor rows): everything that draws
  points works (training single-image models, MIG, DCI, SAP, modularity, active units, the
  manipulation); what needs neighbouring factor values (Laplace pairs, the β-VAE and FactorVAE
  scores' interventions, the dataset audit's finite differences) refuses it with a
  :class:`DataError` (:func:`require_full_grid`).

The plain ``.npz`` format (read with ``allow_pickle=False``)::

    images               uint8 (N, C, H, W) or (N, H, W) (value/255), or float in [0, 1]
    factors              integer (N, K), class indices >= 0
    factor_names         optional, str (K,)
    factor_sizes         optional, integer (K,) (default: largest class index + 1)
    categorical_factors  optional, integer (k,): indices of the categorical factors
    name                 optional, str scalar
    epsilon              optional, float scalar: the manipulation's default ε on this data
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vaebias.data.base import DataError, GroundTruthData, as_factor_array, as_rng

__all__ = ["ArrayDataset", "StoredRows", "attr_list", "from_arrays", "read_npz", "require_full_grid"]

#: keys of the plain ``.npz`` format; the first two are required
NPZ_KEYS = ("images", "factors", "factor_names", "factor_sizes", "categorical_factors", "name", "epsilon")


def require_full_grid(data: GroundTruthData, what: str) -> None:
    """Raise unless ``data`` is a full factor grid.

    Args:
        data: the dataset.
        what: what needs the grid, for the message (e.g. "Laplace pairs").

    Raises:
        DataError: ``data`` is a labelled sample, not a full grid.
    """
    if not getattr(data, "is_full_grid", True):
        where = getattr(data, "source", None) or getattr(data, "path", None) or data.name
        raise DataError(
            f"{where}: a labelled sample of {len(data)} points, not the full grid of "
            f"{int(np.prod(data.factor_sizes, dtype=np.int64))} (sizes {tuple(data.factor_sizes)}); {what} "
            f"requires neighbouring factor values, so expected a full factor grid"
        )


class StoredRows(GroundTruthData):
    """A dataset whose images are stored rows labelled with factors: a full grid in any row
    order, or a labelled sample (``is_full_grid`` False). Subclasses call
    :meth:`_index_rows` once and read stored row numbers from :meth:`rows_of`."""

    is_full_grid: bool = True

    def _index_rows(self, factors: np.ndarray, where: str) -> None:
        """Index the stored factor rows int (N, K) against ``self.factor_sizes``.

        Raises:
            DataError: negative or out-of-size class indices, or two rows with the same factors.
        """
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        f = np.asarray(factors).astype(np.int64, copy=False)
        n = f.shape[0]
        if n == 0:
            raise DataError(f"{where}: no rows; expected at least one image")
        bad = (f < 0) | (f >= sizes[None, :])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise DataError(f"{where}: factor {col} ({self.factor_names[col]!r}) has class index {f[row, col]} "
                            f"at row {row}; expected 0 <= index < {sizes[col]}")
        flat = f @ self.factor_bases
        total = int(np.prod(sizes, dtype=np.int64))
        if n == total and np.array_equal(flat, np.arange(n, dtype=np.int64)):
            self.is_full_grid, self._row_of_flat, self._sample_keys = True, None, None  # grid, in order
            return
        order = np.argsort(flat, kind="stable")
        keys = flat[order]
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if dup.size:
            a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
            raise DataError(f"{where}: rows {a} and {b} have the same factors {f[a].tolist()}; expected "
                            f"one image per factor combination")
        if n == total:  # the full grid in another order
            self.is_full_grid, self._row_of_flat, self._sample_keys = True, order, None
        else:
            self.is_full_grid, self._row_of_flat = False, None
            self._sample_keys, self._sample_rows, self._sample_factors = keys, order, f

    def __len__(self) -> int:
        if self.is_full_grid:
            return super().__len__()
        return int(self._sample_keys.size)

    def rows_of(self, factors: np.ndarray) -> np.ndarray:
        """Stored row numbers of validated factor rows int64 (n, K) -> int64 (n,).

        Raises:
            DataError: a factor row that a labelled sample does not hold.
        """
        flat = factors @ self.factor_bases
        if self.is_full_grid:
            return flat if self._row_of_flat is None else self._row_of_flat[flat]
        pos = np.minimum(np.searchsorted(self._sample_keys, flat), self._sample_keys.size - 1)
        missing = self._sample_keys[pos] != flat
        if missing.any():
            row = int(np.argmax(missing))
            raise DataError(f"factors {factors[row].tolist()} are not in dataset {self.name!r} (a labelled sample "
                            f"of {len(self)} points, not the full grid); expected factor rows the sample holds")
        return self._sample_rows[pos]

    # for a labelled sample, flat index i is stored row i
    def index_of(self, factors) -> np.ndarray:
        if self.is_full_grid:
            return super().index_of(factors)
        return self.rows_of(as_factor_array(factors, self.factor_sizes))

    def factors_of(self, index) -> np.ndarray:
        if self.is_full_grid:
            return super().factors_of(index)
        idx = np.atleast_1d(np.asarray(index.cpu().numpy() if isinstance(index, torch.Tensor) else index))
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise DataError(f"index {bad} out of range; expected 0 <= index < {len(self)}")
        return self._sample_factors[idx].copy()

    def sample_factors(self, n: int, rng) -> np.ndarray:
        """``n`` factor rows uniform over the grid, or over the stored rows of a labelled sample."""
        if self.is_full_grid:
            return super().sample_factors(n, rng)
        return self._sample_factors[as_rng(rng).integers(0, len(self), size=n)].copy()

    def describe(self) -> dict:
        d = super().describe()
        d["full_grid"] = bool(self.is_full_grid)
        return d


def _as_numpy(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what}: not an array ({e})") from None


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 or float32 (N, C, H, W), checked; (N, H, W) gains C = 1."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{where}: images have shape {images.shape}; expected (N, C, H, W) or (N, H, W)")
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        raise DataError(f"{where}: images have shape {images.shape}, channels last; expected (N, C, H, W): "
                        f"transpose them with images.transpose(0, 3, 1, 2)")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise DataError(f"{where}: images have dtype {images.dtype}; expected uint8 (value/255) or float in [0, 1]")
    images = images.astype(np.float32, copy=False)
    if images.size and not (np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0):
        raise DataError(f"{where}: float images have values in [{np.nanmin(images):g}, {np.nanmax(images):g}] "
                        f"(or non-finite ones); expected values in [0, 1]")
    return images


class ArrayDataset(StoredRows):
    """A dataset held in memory: stored images and their factor labels (see :func:`from_arrays`)."""

    def __init__(self, images, factors, *, factor_names: Sequence[str] | None = None,
                 factor_sizes: Sequence[int] | None = None, categorical_factors: Sequence[int] = (),
                 name: str = "arrays", epsilon: float | None = None, display_name: str | None = None,
                 source: str | None = None):
        where = source or f"dataset {name!r}"
        imgs = _check_images(_as_numpy(images, f"{where}: images"), where)
        f = _as_numpy(factors, f"{where}: factors")
        if f.ndim == 1:
            f = f[:, None]
        if f.ndim != 2 or f.shape[1] == 0:
            raise DataError(f"{where}: factors have shape {f.shape}; expected (N, K) with K >= 1")
        if f.dtype.kind not in "iu":
            if f.dtype.kind == "f" and np.isfinite(f).all() and np.array_equal(f, np.round(f)):
                f = f.astype(np.int64)
            else:
                raise DataError(f"{where}: factors have dtype {f.dtype}; expected integer class indices "
                                f"(map continuous values to classes first, e.g. with np.unique(..., return_inverse=True))")
        if f.shape[0] != imgs.shape[0]:
            raise DataError(f"{where}: {imgs.shape[0]} images but {f.shape[0]} factor rows; expected one row per image")
        k = f.shape[1]
        if f.size and f.min() < 0:
            row, col = np.argwhere(f < 0)[0]
            raise DataError(f"{where}: factor {col} has class index {f[row, col]} at row {row}; expected indices >= 0")
        sizes = (tuple(int(s) for s in f.max(axis=0) + 1) if factor_sizes is None
                 else tuple(int(s) for s in factor_sizes))
        names = tuple(str(s) for s in factor_names) if factor_names is not None else tuple(f"factor{i}" for i in range(k))
        if len(sizes) != k or len(names) != k:
            raise DataError(f"{where}: {len(names)} factor_names and {len(sizes)} factor_sizes for {k} factor "
                            f"columns; expected {k} of each")
        if any(s < 1 for s in sizes):
            raise DataError(f"{where}: factor_sizes {sizes}; expected sizes >= 1")
        cats = tuple(int(c) for c in categorical_factors)
        if any(not 0 <= c < k for c in cats):
            raise DataError(f"{where}: categorical_factors {cats}; expected factor indices in [0, {k})")
        if epsilon is not None and not (np.isfinite(epsilon) and 0 < float(epsilon) <= 1):
            raise DataError(f"{where}: epsilon = {epsilon!r}; expected a number in (0, 1]")
        self.name, self.factor_names, self.factor_sizes = str(name), names, sizes
        self.observation_shape = tuple(int(s) for s in imgs.shape[1:])
        self.categorical_factors = cats
        self.epsilon = None if epsilon is None else float(epsilon)
        self.display_name = display_name or self.name
        self.source = source
        self._index_rows(f, where)
        self._images = torch.from_numpy(np.ascontiguousarray(imgs))

    def _images_at(self, factors: np.ndarray, device: torch.device) -> torch.Tensor:
        raw = self._images.index_select(0, torch.from_numpy(np.ascontiguousarray(self.rows_of(factors))))
        raw = raw.to(device)
        return raw.float().div_(255.0) if raw.dtype == torch.uint8 else raw.float()

    def describe(self) -> dict:
        d = super().describe()
        if self.source:
            d["source"] = self.source
        return d


def from_arrays(images, factors, *, factor_names: Sequence[str] | None = None,
                factor_sizes: Sequence[int] | None = None, categorical: Sequence[int] = (),
                name: str = "arrays", epsilon: float | None = None) -> ArrayDataset:
    """A dataset of your own images and factor labels, held in memory.

    Args:
        images: uint8 (N, C, H, W) or (N, H, W) (pixel value = stored/255), or float
            (N, C, H, W) in [0, 1]; numpy or torch. The standard networks take square
            images whose side is a multiple of 16.
        factors: integer (N, K) class indices (0 .. size-1 per factor).
        factor_names: K names (default ``factor0`` ...).
        factor_sizes: K sizes (default: each factor's largest class index + 1).
        categorical: indices of the categorical factors (one-hot in m_ψ, kept fixed by the
            pair samplers, skipped by the dataset audit's finite differences).
        name: the dataset's name in run directories and tables.
        epsilon: the manipulation's default ε on this data, in (0, 1] (None: give it to
            ``reproduce`` with ``--epsilon``).

    Returns:
        an :class:`ArrayDataset`: a full grid when the rows hold every factor combination
        once (in any order), else a labelled sample (``is_full_grid`` False).

    Raises:
        DataError: mismatched lengths, wrong shapes or dtypes, values outside [0, 1],
            class indices outside the sizes, two rows with the same factors (the message
            names the array and what was expected).
    """
    return ArrayDataset(images, factors, factor_names=factor_names, factor_sizes=factor_sizes,
                        categorical_factors=categorical, name=name, epsilon=epsilon)


def read_npz(path: str | os.PathLike) -> ArrayDataset:
    """Read a plain ``.npz`` dataset (module docstring) into memory.

    Raises:
        DataError: not a zip archive, a missing ``images``/``factors`` key, or a key of the
            wrong kind (named).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            for key in ("images", "factors"):
                if key not in keys:
                    raise DataError(f"{path}: missing key {key!r} (found {sorted(keys)}); expected keys images, "
                                    f"factors and optionally {', '.join(NPZ_KEYS[2:])}")
            arrays = {k: z[k] for k in NPZ_KEYS if k in keys}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: corrupt or unreadable npz ({type(e).__name__}: {e})") from None

    def scalar(key, kind):
        a = arrays.get(key)
        if a is None:
            return None
        if a.ndim != 0 or a.dtype.kind not in kind:
            raise DataError(f"{path}: key {key!r} has dtype {a.dtype} and shape {a.shape}; expected a scalar")
        return a.item()

    def vector(key, kind):
        a = arrays.get(key)
        if a is None:
            return None
        if a.ndim != 1 or (a.size and a.dtype.kind not in kind):
            raise DataError(f"{path}: key {key!r} has dtype {a.dtype} and shape {a.shape}; expected a 1-d "
                            f"{'str' if kind == 'U' else 'integer'} array")
        return a.tolist()

    return ArrayDataset(arrays["images"], arrays["factors"], factor_names=vector("factor_names", "U"),
                        factor_sizes=vector("factor_sizes", "iu"),
                        categorical_factors=vector("categorical_factors", "iu") or (),
                        name=scalar("name", "U") or path.stem, epsilon=scalar("epsilon", "fi"),
                        source=str(path))


def attr_list(value, key: str, where: str) -> list:
    """An HDF5 attribute holding a list: a JSON string or a native array.

    Raises:
        DataError: anything else (names the attribute).
    """
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(f"{where}: attribute {key!r} = {value!r} is not a JSON list; expected a list "
                            f"(a JSON string or an array)") from None
    if isinstance(value, np.ndarray):
        value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if not isinstance(value, list):
        raise DataError(f"{where}: attribute {key!r} = {value!r}; expected a list (a JSON string or an array)")
    return value
