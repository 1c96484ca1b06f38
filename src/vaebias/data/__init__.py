"""Ground-truth-factor datasets (DESIGN.md, "data").

``load_dataset(name)`` is the one entry point:

- ``"dsprites"``: the real file when found (``path=`` or ``data_dir=`` or the
  ``VAEBIAS_DATA_DIR`` environment variable), else the procedural renderer.
- a path to a file: a vaebias dataset file (exported modified/noise data), or a real
  dSprites npz/HDF5 file, recognised by its contents.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py

from vaebias.data.base import DataError, GroundTruthData
from vaebias.data.variants import FORMAT, ExportedDataset, Modified, Noisy, export_dataset

__all__ = [
    "load_dataset",
    "available",
    "GroundTruthData",
    "DataError",
    "Modified",
    "Noisy",
    "ExportedDataset",
    "export_dataset",
]

_NAMES = ("dsprites", "toy")


def available() -> list[str]:
    """Names accepted by :func:`load_dataset` (besides file paths)."""
    return list(_NAMES)


def _load_file(path: Path, **kwargs) -> GroundTruthData:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") == FORMAT:
                kind = "vaebias"
            elif "imgs" in f and "latents" in f:
                kind = "dsprites"
            else:
                raise DataError(
                    f"{path}: HDF5 file with keys {sorted(f.keys())} is neither a vaebias dataset "
                    f"file nor dSprites (expected keys imgs, latents/classes, latents/values)"
                )
        if kind == "vaebias":
            return ExportedDataset(path, **kwargs)
        from vaebias.data.dsprites import DSpritesFile

        return DSpritesFile(path)
    if zipfile.is_zipfile(path) or path.suffix == ".npz":
        from vaebias.data.dsprites import DSpritesFile

        return DSpritesFile(path)
    raise DataError(f"{path}: not a dataset file (expected an HDF5 file or a dSprites .npz)")


def load_dataset(name: str | os.PathLike, *, path: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, **kwargs) -> GroundTruthData:
    """Load a ground-truth-factor dataset by name or by file path.

    Args:
        name: a dataset name (``available()``) or the path of a dataset file.
        path: for a named dataset, the real file to load instead of searching.
        data_dir: folder searched for the real file (default ``$VAEBIAS_DATA_DIR``).
        kwargs: passed to :class:`ExportedDataset` for vaebias files (``in_memory``).

    Returns:
        a :class:`GroundTruthData`.

    Raises:
        DataError: a missing, unrecognised or corrupt file.
        ValueError (ConfigError): an unknown dataset name.
    """
    from vaebias.errors import ConfigError

    name_str = os.fspath(name)
    if name_str == "dsprites":
        from vaebias.data.dsprites import load_dsprites

        return load_dsprites(path=path, data_dir=data_dir)
    if name_str == "toy":
        from vaebias.data.toy import ToySquares

        return ToySquares(**kwargs)
    looks_like_path = os.sep in name_str or Path(name_str).suffix in (".h5", ".hdf5", ".npz")
    if looks_like_path or Path(name_str).exists():
        return _load_file(Path(name_str), **kwargs)
    raise ConfigError(
        f"unknown dataset {name_str!r}; available datasets: {', '.join(available())}, "
        f"or the path of a dataset file"
    )
