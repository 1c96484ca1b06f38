"""The real Shapes3D file (DeepMind's ``3dshapes.h5``), read lazily or into memory."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from vaebias.data.base import DataError
from vaebias.data.shapes3d.factors import (
    FACTOR_NAMES,
    H5_NAME,
    IMAGE_SIZE,
    Shapes3DData,
    classes_of_values,
    factor_values,
)

# The real file
# ---------------------------------------------------------------------------
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_READ_BLOCK = 4096  # images per block when reading the whole file
_RUN_GAP = 32  # indices closer than this are read as one contiguous slab


class Shapes3DFile(Shapes3DData):
    """The real ``3dshapes.h5`` (HDF5), validated; images read lazily or held in memory.

    Args:
        path: the HDF5 file with datasets ``images`` uint8 (480000, 64, 64, 3) and
            ``labels`` float (480000, 6) holding the factor *values* of each row
            (hues k/10, scale linspace(0.75, 1.25, 8), shape 0..3, orientation
            linspace(-30, 30, 15) degrees).
        in_memory: read all images into memory as uint8 (480000 x 12288 bytes, about
            5.9 GB) instead of reading them from the file on each request (default).
        check_labels: ``"all"`` (default; vectorised, well under a second) maps every
            row's values to classes and checks that row ``i`` holds the factors of
            flat index ``i``; ``"sample"`` checks 4096 evenly spread rows plus the
            first and last; ``"none"`` trusts the file.

    Lazy reads sort and de-duplicate the requested indices and read runs of nearby
    rows as one contiguous slab (chunk-friendly), then restore the request order.
    The file handle is opened on first use in each process (the object pickles
    without it, so it can be used by DataLoader workers).

    Raises:
        DataError: a missing or unreadable file, a file that is not HDF5, a
            truncated or corrupt file (also when a lazy read fails later), a missing
            key, a wrong dtype or shape, label values off the factor grid, or rows
            not in the grid order (shuffled, duplicated or truncated). The message
            names the file, the key and what was expected.
    """

    #: the value grid of each factor (a subclass may shrink it, e.g. for tiny test files)
    grid_values: tuple[np.ndarray, ...] = factor_values()

    def __init__(self, path, *, in_memory: bool = False, check_labels: str = "all"):
        if check_labels not in ("all", "sample", "none"):
            raise ValueError(f"check_labels must be 'all', 'sample' or 'none', got {check_labels!r}")
        self.path = pathlib.Path(path)
        self.in_memory = bool(in_memory)
        self._h5 = None
        self._images_np: np.ndarray | None = None
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found; expected the Shapes3D file {H5_NAME}")
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a regular file; expected the Shapes3D file {H5_NAME}")
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(8)
        except OSError as e:
            raise DataError(f"{self.path}: cannot read file ({e})") from e
        if head != _HDF5_MAGIC:
            raise DataError(
                f"{self.path}: not an HDF5 file (first bytes {head!r}); expected the Shapes3D file {H5_NAME}"
            )
        import h5py

        try:
            with h5py.File(self.path, "r") as h5:
                self._check_keys(h5)
                labels = self._read_labels(h5)
                self._check_grid(labels, check_labels)
                if self.in_memory:
                    self._images_np = self._read_all(h5["images"])
        except DataError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise self._err(f"corrupt or truncated HDF5 file ({type(e).__name__}: {e})") from e

    # ------------------------------------------------------------ validation
    def _err(self, msg: str) -> DataError:
        return DataError(f"{self.path}: {msg}")

    def _check_keys(self, h5) -> None:
        import h5py

        for key in ("images", "labels"):
            if key not in h5 or not isinstance(h5[key], h5py.Dataset):
                raise self._err(
                    f"missing key {key!r}; expected datasets 'images' uint8 (480000, 64, 64, 3) and "
                    f"'labels' float64 (480000, 6) (found keys {sorted(h5.keys())})"
                )
        img, lab = h5["images"], h5["labels"]
        if img.dtype != np.uint8:
            raise self._err(f"'images' has dtype {img.dtype}; expected uint8")
        n = len(self)
        if img.shape != (n, IMAGE_SIZE, IMAGE_SIZE, 3):
            raise self._err(f"'images' has shape {img.shape}; expected ({n}, 64, 64, 3)")
        if lab.dtype.kind != "f":
            raise self._err(f"'labels' has dtype {lab.dtype}; expected float64 factor values")
        if lab.shape != (n, 6):
            raise self._err(f"'labels' has shape {lab.shape}; expected ({n}, 6)")

    def _read_labels(self, h5) -> np.ndarray:
        return np.asarray(h5["labels"][()], dtype=np.float64)

    def _check_grid(self, labels: np.ndarray, mode: str) -> None:
        if mode == "none":
            return
        if mode == "sample":
            n = len(self)
            rows = np.unique(np.concatenate([np.linspace(0, n - 1, 4096).astype(np.int64), [0, n - 1]]))
        else:
            rows = np.arange(len(self), dtype=np.int64)
        try:
            classes = classes_of_values(labels[rows], grids=self.grid_values)
        except DataError as e:
            # re-number the row within the file
            msg = str(e)
            if msg.startswith("row ") and mode == "sample":
                r = int(msg.split(":")[0][4:])
                msg = f"row {int(rows[r])}" + msg[msg.index(":"):]
            raise self._err(f"'labels' {msg}") from None
        flat = classes @ self.factor_bases
        bad = flat != rows
        if bad.any():
            i = int(np.argmax(bad))
            r = int(rows[i])
            raise self._err(
                f"'labels' are not in the grid order: row {r} holds the factors "
                f"{classes[i].tolist()} (flat index {int(flat[i])}); expected "
                f"{self.factors_of([r])[0].tolist()} (row-major over {', '.join(FACTOR_NAMES)}, "
                "orientation fastest; shuffled or corrupt file?)"
            )

    def _read_all(self, ds) -> np.ndarray:
        from tqdm.auto import tqdm

        n = len(self)
        out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for a in tqdm(range(0, n, _READ_BLOCK), desc=f"reading {self.path.name}", unit="block",
                      disable=None):
            b = min(n, a + _READ_BLOCK)
            ds.read_direct(out, np.s_[a:b], np.s_[a:b])
        return out

    # ---------------------------------------------------------------- access
    def _file(self):
        if self._h5 is None:
            import h5py

            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                raise self._err(f"cannot open HDF5 file ({e})") from e
        return self._h5

    def _read(self, idx: np.ndarray) -> np.ndarray:
        """uint8 (n, 64, 64, 3) images of flat indices int64 (n,), any order."""
        if self._images_np is not None:
            return self._images_np[idx]
        if idx.size == 0:
            return np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        uniq, inverse = np.unique(idx, return_inverse=True)
        ds = self._file()["images"]
        out = np.empty((len(uniq), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        breaks = np.nonzero(np.diff(uniq) > _RUN_GAP)[0] + 1
        try:
            pos = 0
            for run in np.split(uniq, breaks):
                lo, hi = int(run[0]), int(run[-1]) + 1
                if len(run) == hi - lo:
                    ds.read_direct(out, np.s_[lo:hi], np.s_[pos:pos + len(run)])
                else:
                    out[pos:pos + len(run)] = ds[lo:hi][run - lo]
                pos += len(run)
        except (OSError, ValueError, RuntimeError) as e:
            raise self._err(f"cannot read 'images' (corrupt or truncated file? {type(e).__name__}: {e})") from e
        return out[inverse.reshape(-1)]

    def _images_at(self, factors: np.ndarray, device: torch.device) -> torch.Tensor:
        """Read validated class indices int64 (n, 6) -> float32 (n, 3, 64, 64) in [0, 1] on ``device``."""
        idx = factors @ self.factor_bases
        raw = torch.from_numpy(np.ascontiguousarray(self._read(idx))).to(device)
        return raw.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()

    def close(self) -> None:
        """Close the HDF5 handle (reopened on the next lazy read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except (OSError, RuntimeError, ValueError, AttributeError):  # pragma: no cover - interpreter shutdown
            self._h5 = None

    @property
    def nbytes(self) -> int:
        """Bytes of images held in memory (0 when reading lazily)."""
        return 0 if self._images_np is None else int(self._images_np.nbytes)

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = str(self.path)
        d["in_memory"] = self.in_memory
        return d


