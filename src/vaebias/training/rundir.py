"""A run directory: ``config.yaml`` (the run's record), ``checkpoint.pt`` (atomic),
``train_log.csv``, ``versions.json``; ``metrics.json`` after evaluation and
``task_log.jsonl`` when a sweep ran it. Nothing else is state."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from vaebias._internal.config import TrainConfig, with_defaults
from vaebias._internal.errors import RunError
from vaebias._internal.io import (
    as_plain,
    atomic_path,
    ensure_writable_dir,
    load_checkpoint,
    read_yaml,
    versions,
    write_json,
    write_yaml,
)
from vaebias.data.registry import PATH_KEYS
from vaebias.data.registry import available as available_datasets

__all__ = ["CHECKPOINT", "LOG", "is_finished", "log_row", "open_run_dir", "read_log", "read_record", "same_dataset", "write_log"]

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.csv"


def read_log(path: Path) -> tuple[list[str], list[dict]]:
    """(field names, rows as dicts of strings) of a ``train_log.csv``; empty when absent."""
    if not path.exists():
        return [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_log(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Write a ``train_log.csv`` atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def is_finished(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a checkpoint at its configured final step."""
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT
    if not ckpt.exists() or not (run_dir / "config.yaml").exists():
        return False
    state = load_checkpoint(ckpt, map_location="cpu")
    return state.get("step", 0) >= state.get("total_steps", float("inf"))


def open_run_dir(run_dir: str | os.PathLike, record: dict, record_classes: dict | None = None) -> Path:
    """Create ``run_dir`` with ``config.yaml`` (``record``) and ``versions.json``, or check
    that an existing one holds the same configuration. Temporary files a killed writer left
    (``.<name>.*.tmp``) are removed: call it holding the folder's lock. The config of a folder that never
    trained (no checkpoint, no log: a start that failed) is replaced, so that it never blocks
    the corrected rerun.

    ``record_classes`` maps sections of ``record`` besides ``"train"`` (always read as
    :class:`~vaebias._internal.config.TrainConfig`) to the config dataclass they hold, e.g.
    ``{"manipulation": ManipulationConfig}``: a saved section is read as that class before
    the comparison, so that fields added since the file was written take their defaults.

    Raises:
        RunError: the folder is unwritable or its config.yaml describes another run.
    """
    run_dir = ensure_writable_dir(run_dir)
    for tmp in run_dir.glob(".*.tmp"):  # temporaries of a writer killed mid-write (atomic_path's names); the
        tmp.unlink(missing_ok=True)     # caller holds the folder's lock, so none is being written now
    cfg_path = run_dir / "config.yaml"
    never_trained = not (run_dir / CHECKPOINT).exists() and not (run_dir / LOG).exists()
    if cfg_path.exists() and not never_trained:
        # compare as plain data: YAML turns tuples (e.g. in describe()) into lists
        old = read_record(cfg_path)
        if not _same_record(_located_record(old, run_dir), _located_record(record, run_dir), record_classes or {}):
            raise RunError(
                f"{cfg_path} holds a different configuration; use a new output folder "
                f"or delete {str(run_dir)!r} to start over"
            )
        if not _same_record(old, record, record_classes or {}):
            write_yaml(cfg_path, record)  # the same run recorded with other paths: record today's spelling
    else:
        write_yaml(cfg_path, record)
        write_json(run_dir / "versions.json", versions())
    return run_dir


def read_record(path: str | os.PathLike) -> dict:
    """A run's ``config.yaml`` as a mapping.

    Raises:
        RunError: the file is unreadable, not YAML or not a mapping (naming the file).
    """
    record = read_yaml(path)
    if not isinstance(record, dict):
        raise RunError(f"{path}: holds {type(record).__name__} {str(record)[:40]!r}; expected a run's "
                       f"configuration (a mapping with 'model' or 'stage', 'train', 'dataset_info'); delete its "
                       f"folder to start over")
    return record


def _absolute(path: str, run_dir: Path) -> str:
    """A recorded path made absolute: relative to the run directory where it exists there
    (how vaebias records paths inside a results folder), else to the working directory."""
    p = Path(path)
    if not p.is_absolute():
        p = run_dir / p if (run_dir / p).exists() else Path.cwd() / p
    return str(p.resolve())


def same_dataset(recorded: dict | None, info: dict, run_dir: str | os.PathLike) -> bool:
    """Whether ``info`` (a dataset's ``describe()``) describes the dataset a run recorded as
    ``dataset_info``, with file paths compared as the files they name (a path recorded
    relative to the run directory, or before the folder moved, names the same file)."""
    if not isinstance(recorded, dict):
        return False
    return as_plain(_located_info(recorded, Path(run_dir))) == as_plain(_located_info(info, Path(run_dir)))


def _located_info(info: dict, run_dir: Path) -> dict:
    """A dataset's ``describe()`` with its ``source``/``path`` made absolute where they name an
    existing file (relative to the run directory or the working directory); other sources
    (a renderer's description) stay as they are, so a renderer and a real file never compare equal."""
    out = dict(info)
    for key in ("source", "path"):
        value = out.get(key)
        if isinstance(value, str) and ((run_dir / value).exists() or Path(value).exists()):
            out[key] = _absolute(value, run_dir)
    return out


def _located_record(record, run_dir: Path):
    """``record`` with every path it holds made absolute (see :func:`_absolute` and
    :func:`_located_info`), so that a run recorded with a relative, an absolute or a moved
    folder's paths compares equal to itself."""
    if not isinstance(record, dict):
        return record
    out = dict(record)
    spec = out.get("dataset")
    if isinstance(spec, dict):
        out["dataset"] = {k: (_absolute(v, run_dir) if isinstance(v, str) and k in ("name", *PATH_KEYS)
                              and (k != "name" or v not in available_datasets()) else v)
                          for k, v in spec.items()}
    info = out.get("dataset_info")
    if isinstance(info, dict):
        out["dataset_info"] = _located_info(info, run_dir)
    for key in ("entangled", "disentangled"):
        if isinstance(out.get(key), str):
            out[key] = _absolute(out[key], run_dir)
    return out


def _same_record(old: dict, new: dict, classes: dict) -> bool:
    """Whether a saved ``config.yaml`` describes the run of ``new``: compared as plain
    data, after filling in the fields of TrainConfig and of ``classes``' sections added
    since the old file was written."""
    old = with_defaults(old, "train", TrainConfig)
    for key, cls in classes.items():
        if old is not None:
            old = with_defaults(old, key, cls)
    return old is not None and as_plain(old) == as_plain(new)


def log_row(step: int, sums: dict, n: int, images: int, seconds: float, elapsed: float) -> dict:
    """One row of ``train_log.csv``: the step, each loss term's mean over the ``n`` steps
    since the last row (``sums`` holds their sums), images/s over that stretch and the
    seconds since the loop started (strings, as written)."""
    row = {"step": step, **{k: f"{v / n:.6g}" for k, v in sums.items()}}
    row["images_per_s"] = f"{images / max(seconds, 1e-9):.1f}"
    row["elapsed_s"] = f"{elapsed:.2f}"
    return row
