"""Ground-truth-factor datasets.

``load_dataset(name)`` is the one entry point:

- ``"dsprites"``, ``"shapes3d"``: the real file when found (``path=`` or ``data_dir=``
  or the ``VAEBIAS_DATA_DIR`` environment variable), else the procedural renderer
  (``describe()["source"]`` says which).
- a path to a file: a vaebias dataset file (HDF5: your own data, or exported
  modified/noise data), a plain ``.npz`` with ``images`` and ``factors``, a real dSprites
  npz/HDF5 file or a real Shapes3D ``3dshapes.h5``, recognised by its contents.
- your own arrays: :func:`from_arrays`; :func:`save_dataset` writes any dataset to a file.

The paper's altered dataset and its noise control, computed on the fly from a trained
m_ψ, are loaded by :func:`vaebias.manipulation.load_variant`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py

from vaebias._internal.errors import ConfigError
from vaebias.data import blobs, toy  # noqa: F401  (they register themselves)
from vaebias.data.arrays import ArrayDataset, from_arrays, read_npz, require_full_grid
from vaebias.data.base import DataError, GroundTruthData
from vaebias.data.dsprites import DSpritesFile
from vaebias.data.registry import available, get_loader, options_of, register, takes_files
from vaebias.data.shapes3d import Shapes3DFile
from vaebias.data.variants import (
    FORMAT,
    ExportedDataset,
    Modified,
    Noisy,
    export_dataset,
    save_dataset,
)

__all__ = [
    "ArrayDataset",
    "DataError",
    "ExportedDataset",
    "GroundTruthData",
    "Modified",
    "Noisy",
    "available",
    "export_dataset",
    "from_arrays",
    "load_dataset",
    "register",
    "require_full_grid",
    "save_dataset",
]



def _zip_members(path: Path) -> set[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return {n[:-4] if n.endswith(".npy") else n for n in zf.namelist()}
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: corrupt or unreadable zip/npz archive ({e})") from None


def _load_file(path: Path, **kwargs) -> GroundTruthData:
    """A dataset file, recognised by its content (not its suffix)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a dataset file (HDF5 or npz)")
    expected = ("expected a vaebias dataset (keys images, factors), dSprites (keys imgs, latents_classes, "
                "latents_values) or Shapes3D (keys images, labels)")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                keys = sorted(f.keys())
                fmt = f.attrs.get("format")
        except OSError as e:
            raise DataError(f"{path}: corrupt or truncated HDF5 file ({e})") from e
        if fmt == FORMAT or {"images", "factors"} <= set(keys):
            return ExportedDataset(path, **kwargs)
        if {"imgs", "latents"} <= set(keys):
            return DSpritesFile(path)
        if {"images", "labels"} <= set(keys):
            return Shapes3DFile(path, **kwargs)
        raise DataError(f"{path}: HDF5 file with keys {keys}; {expected}")
    if zipfile.is_zipfile(path):
        members = _zip_members(path)
        if {"images", "factors"} <= members:
            return read_npz(path)
        if "imgs" in members:
            return DSpritesFile(path)
        raise DataError(f"{path}: npz with keys {sorted(members)}; expected a vaebias dataset (keys images, factors) "
                        f"or the dSprites npz (keys imgs, latents_classes, latents_values)")
    raise DataError(f"{path}: neither HDF5 nor npz (zip); {expected}")


def load_dataset(name: str | os.PathLike, *, path: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, **kwargs) -> GroundTruthData:
    """Load a ground-truth-factor dataset by name or by file path.

    Args:
        name: a dataset name (``available()``) or the path of a dataset file.
        path: for a named dataset, the real file to load instead of searching.
        data_dir: folder searched for the real file (default ``$VAEBIAS_DATA_DIR``).
        kwargs: ``in_memory`` for vaebias files (:class:`ExportedDataset`) and the real
            Shapes3D file (:class:`~vaebias.data.shapes3d.Shapes3DFile`, also
            ``check_labels``); options of the toy and blobs datasets. (The modified and
            noise variants of a trained m_ψ: :func:`vaebias.manipulation.load_variant`.)

    Returns:
        a :class:`GroundTruthData`.

    Raises:
        DataError: a missing, unrecognised or corrupt file.
        ValueError (ConfigError): an unknown dataset name.
    """
    if "variant" in kwargs or "manipulation" in kwargs:
        raise ConfigError("variant/manipulation: the modified and noise datasets of a trained m_psi are "
                          "loaded with vaebias.manipulation.load_variant(name, variant=..., manipulation=...)")
    name_str = os.fspath(name)
    if name_str in available():
        loader = get_loader(name_str)
        allowed = options_of(loader)
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for dataset {name_str!r}; "
                              + (f"allowed: {', '.join(allowed)}" if allowed else "it takes none"))
        try:
            if takes_files(loader):
                return loader(path=path, data_dir=data_dir, **kwargs)
            return loader(**kwargs)
        except (TypeError, ValueError) as exc:  # an option of the wrong type or out of range
            if isinstance(exc, (ConfigError, DataError)):
                raise
            raise ConfigError(f"dataset {name_str!r} with options {kwargs}: {exc}; expected the option types "
                              f"of `vaebias datasets`") from None
    looks_like_path = os.sep in name_str or Path(name_str).suffix in (".h5", ".hdf5", ".npz")
    if looks_like_path or Path(name_str).exists():
        return _load_file(Path(name_str), **kwargs)
    raise ConfigError(
        f"unknown dataset {name_str!r}; available datasets: {', '.join(available())}, "
        f"or the path of a dataset file"
    )
