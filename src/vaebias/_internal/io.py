"""Small file utilities: atomic writes, YAML/JSON helpers, library versions."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

import vaebias
from vaebias._internal.errors import RunError

__all__ = [
    "atomic_path",
    "write_json",
    "read_json",
    "write_yaml",
    "read_yaml",
    "read_checked",
    "as_plain",
    "versions",
    "ensure_writable_dir",
    "probe_writable",
    "canonical_json",
    "atomic_torch_save",
    "load_checkpoint",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched,
    so a crash never leaves a partial output file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    except OSError as exc:
        raise RunError(f"{path}: cannot be written ({exc.strerror or exc}); expected a writable folder") from None
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should be readable
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            raise RunError(f"{path}: write failed ({exc.strerror}); the previous {path.name}, if any, is kept: free "
                           f"space or fix the disk, then rerun the same command to resume") from None
        raise


#: write errors of a full, broken or read-only disk: reported in one line by :func:`atomic_path`
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def write_json(path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path) -> Any:
    """The JSON in ``path``.

    Raises:
        RunError: the file is missing, unreadable or not JSON (naming the file and the place).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                       f"expected the file vaebias wrote (delete it to have it rewritten)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def write_yaml(path, obj: Any) -> None:
    """Write ``obj`` as YAML (block style, key order kept), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))


def read_yaml(path) -> Any:
    """The YAML in ``path`` (safe loader).

    Raises:
        RunError: the file is missing, unreadable or not YAML (naming the file and the place).
    """
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RunError(f"{path}: not valid YAML ({problem}{where})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def read_checked(path, kind: type = dict, expected: str = "the file vaebias wrote") -> Any:
    """A JSON (``.json``, ``.jsonl`` not included) or YAML file vaebias wrote and reads back,
    checked to hold a ``kind`` (dict or list) at its top.

    Raises:
        RunError: unreadable, not JSON/YAML, or not a ``kind``; the message names the file,
            what it holds and ``expected``.
    """
    value = read_json(path) if Path(path).suffix == ".json" else read_yaml(path)
    if not isinstance(value, kind):
        what = "a mapping" if kind is dict else "a list" if kind is list else kind.__name__
        raise RunError(f"{path}: holds {type(value).__name__}; expected {what} ({expected}); the file is damaged: "
                       f"delete it to have it rewritten")
    return value


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def as_plain(obj: Any) -> Any:
    """``obj`` as it reads back from a JSON or YAML file (tuples become lists, numpy
    scalars become numbers): compare recorded settings or configurations this way."""
    return json.loads(json.dumps(obj, default=_json_default))


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    """Versions of Python and of the libraries that change numbers (e.g. sklearn's
    ``mutual_info_score`` changed between 0.20 and 0.24), plus the git commit."""
    import numpy
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "vaebias": vaebias.__version__,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
    }


def ensure_writable_dir(path) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Raises:
        RunError: naming the folder when it cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_writable(path)
    except OSError as exc:
        raise RunError(f"output folder {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path


def probe_writable(folder) -> None:
    """Create and remove a file in the existing ``folder`` (raises OSError where it cannot)."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    os.close(fd)
    os.unlink(probe)


def canonical_json(obj) -> str:
    """Compact JSON with sorted keys: equal plain data gives equal text (run ids, cache keys)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name, flushed to disk, then renamed: ``path`` is never
    partial. The bytes are serialised in memory first and written by Python, so that a full
    disk is an OSError naming its cause (torch's own writer reports only a position).

    Raises:
        RunError: the disk is full, read-only or failing (see :func:`atomic_path`).
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())
        fh.flush()
        os.fsync(fh.fileno())


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint of vaebias (tensors, numbers, strings and containers of them), loaded
    with ``torch.load(..., weights_only=True)``: no arbitrary Python objects are unpickled.

    Raises:
        RunError: the file holds other objects (not written by vaebias) or is corrupt.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise RunError(f"{path}: not a vaebias checkpoint (it holds Python objects beyond tensors and "
                       f"plain data; {str(e).splitlines()[0]}); delete its run directory to retrain") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise RunError(f"{path}: corrupt checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                       f"delete its run directory to retrain") from None
    except OSError as e:
        raise RunError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise RunError(f"{path}: holds {type(state).__name__}; expected a vaebias checkpoint (a mapping with the "
                       f"model's weights under 'model'); delete its run directory to retrain")
    return state
