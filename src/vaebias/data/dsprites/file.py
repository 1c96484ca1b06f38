"""The real dSprites file (DeepMind's ``.npz``, or an HDF5 copy), read lazily."""

from __future__ import annotations

import pathlib
import zipfile
import zlib

import numpy as np
import torch

from vaebias.data.base import DataError
from vaebias.data.dsprites.factors import FACTOR_NAMES, IMAGE_SIZE, NPZ_NAME, DSpritesData

# ---------------------------------------------------------------------------
# The real file
# ---------------------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ROWS_PER_READ = 4096


class DSpritesFile(DSpritesData):
    """The real dSprites file (npz or its HDF5 twin), validated and held compactly.

    Args:
        path: the npz (keys ``imgs`` (N, 64, 64) uint8 in {0, 1},
            ``latents_classes`` (N, 6) int, ``latents_values`` (N, 6) float;
            ``metadata`` optional and not read) or the HDF5 twin (``imgs``,
            ``latents/classes``, ``latents/values``).

    The file must be the full factor grid in order: column 0 (color) constant 0,
    columns 1..5 the five factors, each factor's size inferred as ``max class + 1``,
    ``N == prod(sizes)`` and the rows enumerating the grid row-major with the last
    factor fastest. The real file gives ``factor_sizes == (3, 6, 40, 32, 32)``; tiny
    files of the same format (used by the tests) give smaller grids. Values must be
    a function of the classes; they are kept as ``self.values`` (tuple of 5 float64
    arrays, like :func:`factor_values`).

    Images are streamed from the file in blocks and kept bit-packed in memory
    (512 bytes per image: about 377 MB for the real file instead of 3 GB) and
    unpacked on request on the requested device.

    Raises:
        DataError: missing or unreadable file, a file that is neither a zip/npz nor
            HDF5, a truncated/corrupt archive, a missing key, a wrong dtype or
            shape, pixel values outside {0, 1}, a non-constant color, or classes
            that are not the full grid in order. The message names the file and
            what was expected.
    """


    def __init__(self, path):
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise DataError(
                f"{self.path}: file not found; expected the dSprites npz ({NPZ_NAME}) or its HDF5 twin"
            )
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a regular file; expected the dSprites npz or HDF5 file")
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(8)
        except OSError as e:
            raise DataError(f"{self.path}: cannot read file ({e})") from e
        if head.startswith(_ZIP_MAGIC) or head[:4] in (b"PK\x05\x06",):
            self.format = "npz"
            classes, values, packed = self._read_npz()
        elif head == _HDF5_MAGIC:
            self.format = "hdf5"
            classes, values, packed = self._read_hdf5()
        else:
            raise DataError(
                f"{self.path}: neither an npz (zip) nor an HDF5 file (first bytes {head!r}); "
                f"expected the dSprites npz ({NPZ_NAME}) or its HDF5 twin"
            )
        self.factor_sizes, self.values = self._check_grid(classes, values)
        self._packed = torch.from_numpy(packed)  # (N, 512) uint8

    # --------------------------------------------------------------- readers
    def _err(self, msg: str) -> DataError:
        return DataError(f"{self.path}: {msg}")

    def _read_npz(self):
        required = ("imgs", "latents_classes", "latents_values")
        try:
            with zipfile.ZipFile(self.path) as zf:
                members = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
                missing = [k for k in required if k not in members]
                if missing:
                    raise self._err(
                        f"missing key {missing[0]!r}; expected keys {', '.join(required)}"
                    )
                classes = self._npz_small(zf, members["latents_classes"], "latents_classes")
                values = self._npz_small(zf, members["latents_values"], "latents_values")
                n = self._check_latents(classes, values, "latents_classes", "latents_values")
                with zf.open(members["imgs"]) as fh:
                    packed = self._stream_npy_images(fh, n)
        except DataError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                KeyError, RuntimeError, NotImplementedError, zlib.error) as e:
            raise self._err(f"corrupt or truncated npz archive ({type(e).__name__}: {e})") from e
        return classes, values, packed

    def _npz_small(self, zf: zipfile.ZipFile, member: str, key: str) -> np.ndarray:
        with zf.open(member) as fh:
            try:
                arr = np.lib.format.read_array(fh, allow_pickle=False)
            except ValueError as e:
                raise self._err(f"key {key!r} is not a plain numeric array ({e})") from e
        return arr

    def _stream_npy_images(self, fh, n: int) -> np.ndarray:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # pragma: no cover - numpy rejects unknown versions earlier
            raise self._err(f"'imgs' has unsupported npy version {version}")
        self._check_imgs_meta(tuple(shape), dtype, n, "imgs")
        if fortran:
            raise self._err("'imgs' is stored in Fortran order; expected C order")
        per = IMAGE_SIZE * IMAGE_SIZE
        packed = np.empty((n, per // 8), dtype=np.uint8)
        for a in range(0, n, _ROWS_PER_READ):
            b = min(n, a + _ROWS_PER_READ)
            want = (b - a) * per
            buf = fh.read(want)
            if len(buf) != want:
                raise self._err(f"'imgs' truncated: expected {n * per} bytes of pixels")
            block = np.frombuffer(buf, dtype=np.uint8).reshape(b - a, per)
            packed[a:b] = self._pack_block(block, a)
        return packed

    def _read_hdf5(self):
        try:
            import h5py
        except ImportError as e:  # pragma: no cover - h5py is a dependency
            raise self._err("reading HDF5 needs h5py") from e
        required = ("imgs", "latents/classes", "latents/values")
        try:
            with h5py.File(self.path, "r") as h5:
                for k in required:
                    if k not in h5 or not isinstance(h5[k], h5py.Dataset):
                        raise self._err(f"missing key {k!r}; expected keys {', '.join(required)}")
                classes = np.asarray(h5["latents/classes"][()])
                values = np.asarray(h5["latents/values"][()])
                n = self._check_latents(classes, values, "latents/classes", "latents/values")
                ds = h5["imgs"]
                self._check_imgs_meta(tuple(ds.shape), ds.dtype, n, "imgs")
                packed = np.empty((n, IMAGE_SIZE * IMAGE_SIZE // 8), dtype=np.uint8)
                for a in range(0, n, _ROWS_PER_READ):
                    b = min(n, a + _ROWS_PER_READ)
                    block = np.asarray(ds[a:b]).reshape(b - a, -1)
                    packed[a:b] = self._pack_block(block, a)
        except DataError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise self._err(f"corrupt or unreadable HDF5 file ({type(e).__name__}: {e})") from e
        return classes, values, packed

    # ------------------------------------------------------------ validation
    def _check_latents(self, classes, values, ckey: str, vkey: str) -> int:
        if classes.ndim != 2 or classes.shape[1] != 6:
            raise self._err(f"{ckey!r} has shape {classes.shape}; expected (N, 6)")
        if classes.dtype.kind not in "iu":
            raise self._err(f"{ckey!r} has dtype {classes.dtype}; expected an integer dtype (int64)")
        if values.ndim != 2 or values.shape != classes.shape:
            raise self._err(f"{vkey!r} has shape {values.shape}; expected {classes.shape} like {ckey!r}")
        if values.dtype.kind != "f":
            raise self._err(f"{vkey!r} has dtype {values.dtype}; expected a float dtype (float64)")
        if classes.shape[0] == 0:
            raise self._err(f"{ckey!r} is empty; expected the full factor grid")
        return int(classes.shape[0])

    def _check_imgs_meta(self, shape, dtype, n: int, key: str) -> None:
        if np.dtype(dtype) != np.uint8:
            raise self._err(f"{key!r} has dtype {np.dtype(dtype)}; expected uint8 with values in {{0, 1}}")
        if len(shape) != 3 or tuple(shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise self._err(f"{key!r} has shape {tuple(shape)}; expected (N, {IMAGE_SIZE}, {IMAGE_SIZE})")
        if shape[0] != n:
            raise self._err(f"{key!r} holds {shape[0]} images but the latents hold {n} rows; expected equal")

    def _pack_block(self, block: np.ndarray, first_row: int) -> np.ndarray:
        if block.size and block.max() > 1:
            bad = int(np.argwhere(block > 1)[0, 0]) + first_row
            raise self._err(f"'imgs' image {bad} has a pixel value > 1; expected values in {{0, 1}}")
        return np.packbits(block, axis=1)

    def _check_grid(self, classes: np.ndarray, values: np.ndarray):
        classes = classes.astype(np.int64, copy=False)
        if classes.min() < 0:
            raise self._err("latent classes contain negative indices; expected classes >= 0")
        if np.any(classes[:, 0] != 0):
            raise self._err("color class (column 0) is not constant 0; expected a single color")
        if np.any(values[:, 0] != values[0, 0]):
            raise self._err("color value (column 0) is not constant; expected a single color")
        sizes = tuple(int(s) for s in classes[:, 1:].max(axis=0) + 1)
        n = classes.shape[0]
        total = int(np.prod(sizes, dtype=np.int64))
        bases = np.concatenate([np.cumprod(np.asarray(sizes[::-1], np.int64))[::-1][1:], [1]])
        flat = classes[:, 1:] @ bases
        if n != total or not np.array_equal(flat, np.arange(n, dtype=np.int64)):
            if n != total:
                what = f"{n} rows for a {'x'.join(map(str, sizes))} grid of {total}"
            else:
                row = int(np.argmax(flat != np.arange(n)))
                what = f"row {row} has classes {classes[row, 1:].tolist()}"
            raise self._err(
                f"latent classes are not the full factor grid in order ({what}); expected every "
                "combination of (shape, scale, orientation, posX, posY) row-major, posY fastest "
                "(truncated, shuffled or corrupt file?)"
            )
        vals = []
        for k in range(5):
            col = classes[:, k + 1]
            table = np.zeros(sizes[k], dtype=np.float64)
            table[col] = values[:, k + 1]
            if not np.allclose(table[col], values[:, k + 1], rtol=1e-9, atol=1e-12):
                raise self._err(
                    f"latent values of factor {FACTOR_NAMES[k]!r} are not a function of its class; "
                    "expected one value per class"
                )
            vals.append(table)
        return sizes, tuple(vals)

    # ---------------------------------------------------------------- access
    def _images_at(self, factors: np.ndarray, device: torch.device) -> torch.Tensor:
        """Unpack stored images for validated class indices int64 (n, 5) -> float32 (n, 1, 64, 64)."""
        idx = torch.from_numpy(np.ascontiguousarray(factors @ self.factor_bases))
        packed = self._packed.index_select(0, idx).to(device)  # (n, 512) uint8
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=device)
        bits = (packed.unsqueeze(-1) >> shifts) & 1  # np.packbits bit order: MSB first
        return bits.view(-1, 1, IMAGE_SIZE, IMAGE_SIZE).to(torch.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held for the images (bit-packed)."""
        return int(self._packed.numel())

    def describe(self) -> dict:
        d = super().describe()
        d["source"] = str(self.path)
        return d


