"""Dataset variants of the paper and the file format they are exported in.

- :class:`Modified` -- x' = clip(x + ε·m(w)) for a map m with ‖m‖∞ ≤ 1 (the paper,
  Sec. 4.5), computed on demand.
- :class:`Noisy` -- x' = clip(x + u), u ~ U[−ε, ε] per pixel, fixed once per image
  (Sec. 5.2): the noise of image i is drawn from a Philox stream keyed by the seed
  at counter i, so it is the same whenever, wherever and in whatever batch it is drawn.
- :func:`export_dataset` / :class:`ExportedDataset` -- any dataset written to, and
  read back from, one HDF5 file (the "vaebias dataset" format below).

vaebias dataset format (HDF5, version 1)::

    images   uint8 (N, C, H, W)   pixel value = stored / 255
    factors  int16 (N, K)         factor class indices, row-major, last factor fastest
    attrs    format = "vaebias-dataset", format_version = 1, name, kind
             ("modified", "noise", "copy"), epsilon, factor_names, factor_sizes,
             observation_shape, categorical_factors, provenance (JSON),
             max_abs_change (largest |x' − x| written), rows_done (= N when
             complete), digest_chunk (rows per digest)
    chunk_crc32  uint64 (ceil(N / digest_chunk),)  1 + the CRC-32 of each chunk's images
             and factors (0: not written yet): written by :func:`export_dataset`, checked
             on rerun

Quantisation (:func:`quantize_within`): x' is rounded to the nearest 1/255 step that
stays within ε of x, so |x' − x| ≤ ε holds in the file for every pixel whenever the
base image x lies on the 1/255 grid (binary dSprites, uint8 Shapes3D) and ε ≥ 1/255.
"""

from __future__ import annotations

import errno
import json
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from vaebias._internal.errors import RunError
from vaebias._internal.lock import folder_lock
from vaebias._internal.log import get_logger
from vaebias.data.arrays import StoredRows, attr_list
from vaebias.data.base import DataError, GroundTruthData

__all__ = ["Modified", "Noisy", "ExportedDataset", "export_dataset", "save_dataset", "quantize_within", "FORMAT"]

log = get_logger()

FORMAT = "vaebias-dataset"
FORMAT_VERSION = 1


class _Derived(GroundTruthData):
    """A dataset with the factor grid of ``base`` and transformed images."""

    def __init__(self, base: GroundTruthData, epsilon: float, clip: bool = True):
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise DataError(f"epsilon = {epsilon!r}: expected a number > 0")
        self.base = base
        self.epsilon = float(epsilon)
        self.clip = bool(clip)
        self.factor_names = base.factor_names
        self.factor_sizes = base.factor_sizes
        self.observation_shape = base.observation_shape
        self.categorical_factors = base.categorical_factors

    # the base's rows: a labelled sample stays one
    @property
    def is_full_grid(self) -> bool:
        return getattr(self.base, "is_full_grid", True)

    def __len__(self) -> int:
        return len(self.base)

    def index_of(self, factors) -> np.ndarray:
        return self.base.index_of(factors)

    def factors_of(self, index) -> np.ndarray:
        return self.base.factors_of(index)

    def sample_factors(self, n: int, rng) -> np.ndarray:
        return self.base.sample_factors(n, rng)

    def _finish(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        out = x + delta
        return out.clamp_(0.0, 1.0) if self.clip else out

    def with_base(self, factors: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x', x) for validated factors: the altered and the original images."""
        raise NotImplementedError

    def _images_at(self, factors, device):
        return self.with_base(factors, device)[0]


class Modified(_Derived):
    """x' = x + ε·m(w), optionally clipped to [0, 1] (paper Sec. 4.5, Eq. 12).

    Args:
        base: the original dataset.
        field: callable mapping factors int64 torch (n, K) on a device to a float
            tensor (n, C, H, W) with values in [−1, 1] (e.g. a trained m_ψ).
        epsilon: the perturbation size ε > 0 (max-norm).
        clip: clip x' to [0, 1] (default; keeps Bernoulli targets valid).
    """

    def __init__(self, base: GroundTruthData, field: Callable[[torch.Tensor], torch.Tensor],
                 epsilon: float, clip: bool = True, name: str | None = None):
        super().__init__(base, epsilon, clip)
        self.field = field
        self.name = name or f"{base.name}_modified"

    def perturbation(self, factors: np.ndarray, device) -> torch.Tensor:
        """ε·m(w): float32 (n, C, H, W), bounded by ε in absolute value."""
        if isinstance(self.field, torch.nn.Module):  # a network follows the images' device
            param = next(self.field.parameters(), None)
            if param is not None and param.device != torch.device(device or "cpu"):
                self.field.to(device or "cpu")
        with torch.no_grad():
            m = self.field(torch.as_tensor(factors, device=device))
        return self.epsilon * m.clamp(-1.0, 1.0).float()

    def with_base(self, factors, device):
        x = self.base.images(factors, device=device)
        return self._finish(x, self.perturbation(factors, device)), x


#: noise distributions of :class:`Noisy`
NOISE_DISTRIBUTIONS = ("uniform", "sign")


class Noisy(_Derived):
    """x' = x + u with u i.i.d. per pixel, fixed per image (paper Sec. 5.2).

    Args:
        base: the original dataset.
        epsilon: noise amplitude ε > 0.
        seed: the noise of image i is the Philox stream (key = seed, counter = i).
        clip: clip x' to [0, 1] (default).
        distribution: ``"uniform"`` (the paper's control: u ~ U[−ε, ε], mean square
            ε²/3) or ``"sign"`` (u = ±ε with probability 1/2 each, mean square ε²: the
            most power the bound ‖u‖∞ ≤ ε allows, as much as a saturated m_ψ has).
            Both come from the same uniform draw r: sign takes ε·sign(2r − 1).

    Raises:
        DataError: a bad ``epsilon`` or ``distribution`` (named).
    """

    def __init__(self, base: GroundTruthData, epsilon: float, seed: int = 0, clip: bool = True,
                 name: str | None = None, distribution: str = "uniform"):
        super().__init__(base, epsilon, clip)
        if distribution not in NOISE_DISTRIBUTIONS:
            raise DataError(f"distribution = {distribution!r}: expected one of {', '.join(NOISE_DISTRIBUTIONS)}")
        self.seed = int(seed)
        self.distribution = distribution
        self.name = name or f"{base.name}_noise"

    def noise(self, index: np.ndarray) -> np.ndarray:
        """The fixed noise of flat indices: float32 (n, C, H, W), in [−ε, ε) (uniform)
        or in {−ε, ε} (sign)."""
        size = int(np.prod(self.observation_shape))
        out = np.empty((len(index), size), dtype=np.float32)
        for row, i in enumerate(np.asarray(index, dtype=np.int64)):
            gen = np.random.Generator(np.random.Philox(key=self.seed, counter=int(i)))
            out[row] = gen.random(size, dtype=np.float32)
        out = 2.0 * out - 1.0
        if self.distribution == "sign":
            out = np.where(out >= 0, np.float32(1.0), np.float32(-1.0))
        out = out * np.float32(self.epsilon)
        return out.reshape((len(index),) + tuple(self.observation_shape))

    def with_base(self, factors, device):
        x = self.base.images(factors, device=device)
        u = torch.from_numpy(self.noise(self.base.index_of(factors))).to(device)
        return self._finish(x, u), x


def quantize_within(x_new: np.ndarray, x: np.ndarray, epsilon: float) -> np.ndarray:
    """uint8 q: ``x_new`` rounded to the nearest 1/255 step, then limited to the steps
    within ε of ``x`` and to [0, 1].

    With ``x`` on the 1/255 grid (binary dSprites, uint8 Shapes3D) |q/255 − x| ≤ ε holds
    exactly: the limit is ``floor(ε·255)`` whole steps around ``round(x·255)``. For an
    ``x`` off the grid the bound holds up to half a step (0.5/255).

    Args:
        x_new, x: float arrays of the same shape; ``x`` the original image in [0, 1].
        epsilon: bound, ≥ 1/255.

    Raises:
        DataError: ``epsilon`` < 1/255 (no step would be allowed).
    """
    if epsilon < 1.0 / 255:
        raise DataError(f"epsilon = {epsilon!r}: uint8 export needs epsilon >= 1/255")
    k = np.float32(np.floor(epsilon * 255.0 + 1e-9))
    centre = np.rint(np.asarray(x, dtype=np.float32) * np.float32(255.0))
    q = np.rint(np.asarray(x_new, dtype=np.float32) * np.float32(255.0))
    np.clip(q, centre - k, centre + k, out=q)
    np.clip(q, 0, 255, out=q)
    return q.astype(np.uint8)


def _provenance_json(provenance: dict | None) -> str:
    return json.dumps(provenance or {}, sort_keys=True, default=str)


def export_dataset(
    data: GroundTruthData,
    path: str | os.PathLike,
    *,
    kind: str,
    base: GroundTruthData | None = None,
    epsilon: float | None = None,
    provenance: dict | None = None,
    chunk: int = 4096,
    device=None,
    progress: bool = True,
) -> Path:
    """Write every image of ``data`` (flat index order) to a vaebias dataset file.

    Resumable and never lying: rows go to ``<path>.partial`` in chunks; each chunk's
    CRC-32 (images and factors) is stored with it, and ``rows_done`` is set to N last,
    after everything is flushed to disk. When every row is written the file is read back
    and checked (every chunk against its digest, the factors against the
    grid) before it is renamed to ``path``, so ``path`` is never partial or wrong. An
    interrupted export continues after the last chunk that reads back intact (when its
    provenance matches). An existing ``path`` is checked the same way and rebuilt when its
    content disagrees with its attributes or digests. Only one process exports into a
    folder at a time (:func:`vaebias._internal.lock.folder_lock`).

    Args:
        data: the dataset to write (e.g. :class:`Modified`, :class:`Noisy`).
        path: output file (``.h5``).
        kind: "modified", "noise" or "copy" (recorded).
        base: the original dataset; with ``epsilon`` the written x' is quantised to
            stay within ε of the base image (see :func:`quantize_within`).
        epsilon: the perturbation bound.
        provenance: JSON-able description recorded in the file (config, references).
        chunk: images per write (and per digest).

    Returns:
        the final path. An existing file that checks out is left as it is.

    Raises:
        RunError: a write error (a full disk, an I/O error) or a file that does not read
            back as written; the ``.partial`` is kept and a rerun resumes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(path.parent, "export folder"):
        if path.exists():
            problem = _check_export(path, data, len(data))
            if problem is None:
                return path
            log.warning(f"{path}: {problem}; rebuilding it")
            path.unlink()
        partial = path.with_name(path.name + ".partial")
        try:
            _write_partial(data, partial, kind=kind, base=base, epsilon=epsilon, provenance=provenance,
                           chunk=chunk, device=device, progress=progress, label=path.name)
        except (OSError, RuntimeError) as exc:  # h5py reports some write errors as RuntimeError
            raise RunError(f"{partial}: write failed ({_os_reason(exc)}); nothing was renamed to {path.name}; "
                           f"free space or fix the disk, then rerun (the export resumes)") from None
        problem = _check_export(partial, data, len(data))
        if problem is not None:
            raise RunError(f"{partial}: {problem} after writing (a write error the library did not report?); "
                           f"nothing was renamed to {path.name}; rerun to rewrite the bad rows")
        os.replace(partial, path)
    return path


def _os_reason(exc: BaseException) -> str:
    """A write error's reason in a few words (h5py's errors carry HDF5's long message)."""
    text = str(exc)
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text.splitlines()[0] if text else type(exc).__name__


def _digest(images: np.ndarray, factors: np.ndarray) -> int:
    """1 + the CRC-32 of one chunk, its uint8 images then its int16 factors (C order): never 0,
    which marks a chunk not yet written. CRC-32 detects lost, torn or zeroed writes (not
    tampering) at about twice SHA-256's speed (benchmarks/export.py)."""
    crc = zlib.crc32(np.ascontiguousarray(images, dtype=np.uint8).data)
    return 1 + zlib.crc32(np.ascontiguousarray(factors, dtype="<i2").data, crc)


def _intact_rows(f: h5py.File, data: GroundTruthData, n: int) -> tuple[int, str | None]:
    """How many leading rows of an export read back as written (whole chunks whose stored
    digest matches their images and factors, and whose factors are the grid's), and what is
    wrong beyond them (None: all ``n`` rows are intact)."""
    try:
        step = int(f.attrs["digest_chunk"])
        digests = f["chunk_crc32"][...]
        images, factors = f["images"], f["factors"]
    except (KeyError, ValueError, TypeError, OSError):
        return 0, "no digests (not written by this version of export_dataset)"
    if images.shape[0] != n or factors.shape[0] != n or step < 1 or len(digests) != -(-n // step):
        return 0, f"{images.shape[0]} images in chunks of {step}; expected {n} rows"
    for start in range(0, n, step):
        stop = min(n, start + step)
        if not digests[start // step]:
            return start, f"incomplete ({start} of {n} rows)"
        x, fac = images[start:stop], factors[start:stop]
        if digests[start // step] != _digest(x, fac):
            return start, f"rows {start}-{stop - 1} do not match their digest"
        if not np.array_equal(fac, data.factors_of(np.arange(start, stop))):
            return start, f"the factors of rows {start}-{stop - 1} are not the grid's"
    return n, None


def _check_export(path: Path, data: GroundTruthData, n: int) -> str | None:
    """What is wrong with a finished export at ``path`` (None: ``rows_done`` is ``n`` and every
    row reads back intact). Files of older versions (no digests) are checked by their row
    counter and factors only."""
    try:
        with h5py.File(path, "r") as f:
            done = int(f.attrs.get("rows_done", -1))
            if done != n or f["factors"].shape[0] != n:
                return f"incomplete (rows_done {done}; expected {n})"
            if "chunk_crc32" not in f:
                return None if np.array_equal(f["factors"][...], data.factors_of(np.arange(n))) else \
                    "its factors are not the grid's"
            return _intact_rows(f, data, n)[1]
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        return f"unreadable ({_os_reason(exc)})"


def _layout(data: GroundTruthData, n: int, chunk: int) -> dict:
    """The datasets of an export: {key: (shape, dtype)}."""
    return {"images": ((n, *data.observation_shape), np.uint8), "factors": ((n, data.num_factors), np.int16),
            "chunk_crc32": ((-(-n // chunk),), np.uint64),
            "chunk_max_abs_change": ((-(-n // chunk),), np.float64)}


def _write_partial(data: GroundTruthData, partial: Path, *, kind: str, base, epsilon, provenance, chunk: int,
                   device, progress: bool, label: str) -> None:
    """Create or resume ``partial`` and write its remaining rows (see :func:`export_dataset`).

    The datasets are allocated at creation (contiguous, their disk space reserved where
    the filesystem can) and the rows are written with ``os.pwrite`` at their offsets, so a
    full disk or an I/O error is a plain OSError here, never an error inside HDF5's caches.
    Each chunk's digest is written after its rows (a chunk whose rows were lost in a crash
    fails its digest on resume and is rewritten); everything is fsynced before ``rows_done``
    is set, last. Write errors propagate as OSError or
    RuntimeError (h5py)."""
    n = len(data)
    prov = _provenance_json(provenance)
    layout = _layout(data, n, chunk)
    done = 0
    if partial.exists():
        try:
            with h5py.File(partial, "r") as f:
                same = (f.attrs.get("provenance") == prov and int(f.attrs.get("digest_chunk", -1)) == chunk
                        and all(key in f and f[key].shape == shape and f[key].id.get_offset() is not None
                                for key, (shape, _) in layout.items()))
                done = _intact_rows(f, data, n)[0] if same else 0
        except (OSError, KeyError, ValueError, TypeError, RuntimeError):
            same = False
        if not same:
            partial.unlink()
    if not partial.exists():
        with h5py.File(partial, "w") as f:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # contiguous, allocated now: fixed offsets
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            for key, (shape, dtype) in layout.items():
                f.create_dataset(key, shape=shape, dtype=dtype, dcpl=dcpl)
            f.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION, "name": data.name,
                "kind": kind, "epsilon": float(epsilon) if epsilon is not None else np.nan,
                "factor_names": json.dumps(list(data.factor_names)),
                "factor_sizes": json.dumps(list(data.factor_sizes)),
                "observation_shape": json.dumps(list(data.observation_shape)),
                "categorical_factors": json.dumps(list(data.categorical_factors)),
                "provenance": prov, "rows_done": 0, "max_abs_change": 0.0, "digest_chunk": chunk,
            })
    with h5py.File(partial, "r") as f:
        offset = {key: int(f[key].id.get_offset()) for key in layout}
        max_change = [float(v) for v in f["chunk_max_abs_change"][: done // chunk]]
    row_bytes = {key: int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
                 for key, (shape, dtype) in layout.items()}
    fd = os.open(partial, os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):  # a disk too small fails here, before any image is computed
            try:
                os.posix_fallocate(fd, offset["images"] + done * row_bytes["images"],
                                   (n - done) * row_bytes["images"])
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        bar = tqdm(total=n, initial=done, disable=not progress, desc=f"export {label}",
                   unit="img", unit_scale=True, leave=False)
        for start in range(done, n, chunk):
            idx = np.arange(start, min(n, start + chunk))
            factors = data.factors_of(idx)
            if isinstance(data, _Derived) and base is data.base:
                x_new, x = (t.cpu().numpy() for t in data.with_base(factors, device))
            else:
                x_new = data.images(factors, device=device).cpu().numpy()
                x = base.images(factors, device=device).cpu().numpy() if base is not None else None
            if base is not None and epsilon is not None:
                q = quantize_within(x_new, x, epsilon)
                change = float(np.abs(q / np.float32(255.0) - x).max())
            else:  # the nearest 1/255 step (half to even, as np.rint), in torch's threads
                q = torch.from_numpy(x_new).mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
                change = 0.0
            fac = factors.astype(np.int16)
            c = start // chunk
            _pwrite_all(fd, q, offset["images"] + start * row_bytes["images"])
            _pwrite_all(fd, fac, offset["factors"] + start * row_bytes["factors"])
            _pwrite_all(fd, np.asarray([change]), offset["chunk_max_abs_change"] + c * 8)
            # no fsync per chunk: a chunk whose rows did not reach the disk fails its digest when the
            # export resumes, and is rewritten
            _pwrite_all(fd, np.asarray([_digest(q, fac)], dtype="<u8"), offset["chunk_crc32"] + c * 8)
            max_change.append(change)
            bar.update(len(idx))
        os.fsync(fd)
        bar.close()
    finally:
        os.close(fd)
    with h5py.File(partial, "r+") as f:
        f.attrs["max_abs_change"] = max(max_change, default=0.0)
        f.attrs["rows_done"] = n  # last, after every row is on disk


def _pwrite_all(fd: int, array: np.ndarray, offset: int) -> None:
    """Write ``array``'s bytes at ``offset`` (C order), all of them (raises OSError)."""
    view = memoryview(np.ascontiguousarray(array)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def save_dataset(data: GroundTruthData, path: str | os.PathLike, *, progress: bool = True) -> Path:
    """Write every image of ``data`` with its factors to ``path``.

    ``.npz``: the plain format (module docstring), images as uint8 (rounded to the nearest
    1/255), written at once (the data must fit in memory twice). Any other suffix: the
    vaebias dataset file (HDF5, :func:`vaebias.data.export_dataset` with ``kind="copy"``),
    written in chunks and resumable.

    Returns:
        the path written. An existing file is an error for ``.npz`` and kept as it is for
        HDF5 (as ``export_dataset``).

    Raises:
        DataError: ``path`` (``.npz``) exists.
    """
    path = Path(path)
    if path.suffix != ".npz":
        eps = getattr(data, "epsilon", None)
        return export_dataset(data, path, kind="copy", progress=progress, provenance={"dataset": data.describe()},
                              epsilon=eps if eps is not None and np.isfinite(eps) else None)
    if path.exists():
        raise DataError(f"{path}: exists; expected a new file name")
    n = len(data)
    factors = data.factors_of(np.arange(n))
    images = np.empty((n, *data.observation_shape), dtype=np.uint8)
    for a in range(0, n, 4096):
        x = data.images(factors[a:a + 4096]).numpy()
        images[a:a + 4096] = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    extra = {"factor_names": np.asarray(data.factor_names, dtype=str),
             "factor_sizes": np.asarray(data.factor_sizes, dtype=np.int64),
             "categorical_factors": np.asarray(data.categorical_factors, dtype=np.int64),
             "name": np.asarray(str(data.name))}
    eps = getattr(data, "epsilon", None)
    if eps is not None and np.isfinite(eps):
        extra["epsilon"] = np.asarray(float(eps))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(tmp, images=images, factors=factors, **extra)
    os.replace(tmp, path)
    return path


class ExportedDataset(StoredRows):
    """A dataset read from a vaebias dataset file (see module docstring).

    Only the keys ``images`` (uint8 (N, C, H, W)) and ``factors`` (integer (N, K)) are
    required. Every attribute is optional: ``format`` (when present it must be
    ``"vaebias-dataset"``), ``factor_names`` (default ``factor0`` ...), ``factor_sizes``
    (default: largest stored class index + 1), ``observation_shape`` (must match the
    images when present), ``categorical_factors``, ``name`` (default: the file's stem),
    ``kind``, ``epsilon``, ``rows_done`` (must equal N when present), ``provenance``,
    ``max_abs_change``. List attributes may be JSON strings or arrays. The rows may hold
    the full factor grid in any order, or a labelled sample (``is_full_grid`` False;
    see :mod:`vaebias.data.arrays`).

    Args:
        path: the file.
        in_memory: True reads all images into memory once (random batches then cost
            nothing; h5py's fancy indexing costs ~12 ms per batch of 64); False reads
            each request from the file (sorted, de-duplicated indices); "auto"
            (default) reads into memory when the images take at most
            ``MEMORY_LIMIT_BYTES`` (4 GiB; the full dSprites takes 3.0 GB).

    Raises:
        DataError: not an HDF5 file, missing keys, a bad attribute, wrong shapes or dtypes,
            an incomplete export, or duplicate factor rows (the message names the key or
            attribute and what was expected).
    """

    MEMORY_LIMIT_BYTES = 4 * 2**30

    def __init__(self, path: str | os.PathLike, in_memory: bool | str = "auto"):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        f, where = self._file, str(self.path)
        fmt = f.attrs.get("format")
        if fmt is not None and (fmt.decode() if isinstance(fmt, bytes) else str(fmt)) != FORMAT:
            raise DataError(f"{where}: attribute 'format' = {fmt!r}; expected {FORMAT!r} (or no 'format' attribute)")
        for key in ("images", "factors"):
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise DataError(f"{where}: missing key {key!r}; expected datasets images (uint8 (N, C, H, W)) "
                                f"and factors (integer (N, K))")
        images, factors = f["images"], f["factors"]
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"{where}: images has dtype {images.dtype} and shape {images.shape}; expected uint8 "
                            f"(N, C, H, W), pixel value = stored / 255")
        if factors.dtype.kind not in "iu" or factors.ndim != 2 or factors.shape[0] != images.shape[0]:
            raise DataError(f"{where}: factors has dtype {factors.dtype} and shape {factors.shape}; expected "
                            f"integers of shape ({images.shape[0]}, K), one row per image")
        n, k = factors.shape
        stored = factors[...].astype(np.int64)
        attrs = f.attrs
        if "factor_sizes" in attrs:
            self.factor_sizes = tuple(self._ints(attr_list(attrs["factor_sizes"], "factor_sizes", where),
                                                 "factor_sizes", k, where))
        else:
            self.factor_sizes = tuple(int(s) for s in stored.max(axis=0) + 1) if n else (1,) * k
        self.factor_names = (tuple(str(s) for s in attr_list(attrs["factor_names"], "factor_names", where))
                             if "factor_names" in attrs else tuple(f"factor{i}" for i in range(k)))
        if len(self.factor_names) != k:
            raise DataError(f"{where}: attribute 'factor_names' has {len(self.factor_names)} names; expected {k}, "
                            f"one per column of factors")
        self.observation_shape = tuple(int(s) for s in images.shape[1:])
        if "observation_shape" in attrs:
            shape = tuple(self._ints(attr_list(attrs["observation_shape"], "observation_shape", where),
                                     "observation_shape", 3, where))
            if shape != self.observation_shape:
                raise DataError(f"{where}: attribute 'observation_shape' = {list(shape)} but images are "
                                f"{list(self.observation_shape)}; expected them equal")
        cats = attr_list(attrs["categorical_factors"], "categorical_factors", where) \
            if "categorical_factors" in attrs else []
        self.categorical_factors = tuple(self._ints(cats, "categorical_factors", None, where))
        if any(not 0 <= c < k for c in self.categorical_factors):
            raise DataError(f"{where}: attribute 'categorical_factors' = {list(self.categorical_factors)}; "
                            f"expected factor indices in [0, {k})")
        self.name = str(attrs.get("name", self.path.stem))
        self.kind = str(attrs.get("kind", ""))
        try:
            eps = float(attrs.get("epsilon", np.nan))
        except (TypeError, ValueError):
            raise DataError(f"{where}: attribute 'epsilon' = {attrs['epsilon']!r}; expected a number") from None
        self.epsilon = eps if np.isfinite(eps) else None
        if "rows_done" in attrs and int(attrs["rows_done"]) != n:
            raise DataError(f"{where}: incomplete export ({int(attrs['rows_done'])} of {n} rows)")
        self._index_rows(stored, where)
        if in_memory == "auto":
            in_memory = images.size * images.dtype.itemsize <= self.MEMORY_LIMIT_BYTES
        self._images = images[...] if in_memory else None

    @staticmethod
    def _ints(values: list, key: str, length: int | None, where: str) -> list[int]:
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
        if not ok or (length is not None and len(values) != length) or any(v < 0 for v in values):
            want = f"{length} integers" if length is not None else "integers"
            raise DataError(f"{where}: attribute {key!r} = {values!r}; expected {want} >= 0")
        return [int(v) for v in values]

    def stored_factors(self) -> np.ndarray:
        """The factor classes stored in the file: int64 (N, K)."""
        return self._file["factors"][...].astype(np.int64)

    def _images_at(self, factors, device):
        idx = self.rows_of(factors)
        if self._images is not None:
            raw = self._images[idx]
        else:
            uniq, inverse = np.unique(idx, return_inverse=True)
            raw = self._file["images"][uniq][inverse]
        out = torch.from_numpy(raw).to(device)
        return out.float().div_(255.0)

    def describe(self) -> dict:
        d = super().describe()
        d.update({"path": str(self.path), "kind": self.kind, "epsilon": self.epsilon})
        return d

    def __getstate__(self):  # h5py handles do not pickle; reopen on unpickle
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._file = h5py.File(self.path, "r")
