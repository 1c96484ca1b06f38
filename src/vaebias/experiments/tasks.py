"""One task of a sweep: train a run (resuming), evaluate it and record its completion in
``task_log.jsonl``, exactly once even when several processes race for it; group tasks
train same-shape runs as one batched ensemble."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vaebias._internal.config import from_dict
from vaebias._internal.errors import RunError
from vaebias._internal.io import canonical_json, ensure_writable_dir
from vaebias._internal.log import get_logger
from vaebias.data.registry import located_spec
from vaebias.experiments.grid import evaluation_key
from vaebias.experiments.scoring import evaluate_run
from vaebias.manipulation.export import load_dataset_spec
from vaebias.training import RunConfig, can_ensemble, is_finished, resolve_device, train, train_ensemble

__all__ = ["TASK_LOG", "completion", "pack_tasks", "per_run_results", "run_any_task", "run_group_task", "run_task"]

#: per-run record of the sweep tasks: one JSON object per line ("start" / "finished")
TASK_LOG = "task_log.jsonl"


log = get_logger()





# --------------------------------------------------------------------------------------
# one task


def _task_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / TASK_LOG
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot be read as the run's task log ({getattr(exc, 'strerror', None) or exc}); "
                       f"expected the JSON lines a sweep wrote (delete it to rerun the run's task)") from None
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict):
                records.append(rec)
    return records


def completion(run_dir: str | os.PathLike, evaluate: dict | None = None) -> dict | None:
    """The ``"finished"`` record of ``run_dir`` for this evaluation, or None when the run
    is not complete (read only: touches nothing)."""
    key = evaluation_key(evaluate)
    for rec in _task_records(Path(run_dir)):
        if rec.get("event") == "finished" and rec.get("evaluation") == key:
            return rec
    return None


@contextlib.contextmanager
def _locked_log(run_dir: Path):
    """Open ``run_dir/task_log.jsonl`` for appending under an exclusive lock (waits for a
    task still holding it; the kernel releases it when that process dies)."""
    fd = os.open(run_dir / TASK_LOG, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        try:
            import fcntl
        except ImportError:  # no advisory locks (Windows): single-driver use only
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _append(fd: int, record: dict) -> None:
    line = (json.dumps(record, sort_keys=False, default=str) + "\n").encode()
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line  # a line torn by a crash of the machine: start a fresh one
    os.write(fd, line)  # one write in O_APPEND mode: the line is there whole or not at all
    os.fsync(fd)


_DATASETS: OrderedDict[str, Any] = OrderedDict()


def _within(cwd: str | None, path: str | os.PathLike) -> Path:
    """``path`` of a spec: relative paths are relative to the spec's ``cwd`` (where the
    sweep was started; a Ray worker runs elsewhere). The process's own working directory
    is never changed."""
    path = Path(path)
    return path if path.is_absolute() or not cwd else Path(cwd) / path


def _located(spec: dict, cwd: str | None) -> dict:
    """A dataset spec with its relative file and folder paths taken relative to ``cwd``."""
    return located_spec(spec, cwd) if cwd else dict(spec)


def _dataset_key(located: dict) -> str:
    """The cache key of a located dataset spec: runs that name one file from different folders share it."""
    return canonical_json({k: (os.path.normpath(v) if isinstance(v, str) and os.path.isabs(v) else v)
                           for k, v in located.items()})


def _dataset(spec: dict, preloaded: dict | None = None, cwd: str | None = None):
    """The dataset of ``spec``, from ``preloaded`` or a small per-process cache."""
    key = canonical_json(spec)
    if preloaded and key in preloaded:
        return preloaded[key]
    located = _located(spec, cwd)
    key = _dataset_key(located)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset_spec(located)
        while len(_DATASETS) > 2:
            _DATASETS.popitem(last=False)
    _DATASETS.move_to_end(key)
    return _DATASETS[key]


def _scalars(metrics: dict, names: Iterable[str]) -> dict:
    out = {}
    for name in names:
        val = metrics.get(name)
        if isinstance(val, dict):
            out[name] = {k: v for k, v in val.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


def check_inputs(specs: list[dict], keep: bool = True) -> None:
    """Load every distinct dataset of ``specs`` once and resolve every run's device, so that a
    broken dataset file, a bad dataset option or an absent CUDA is one error before a sweep
    writes or runs anything (not a failure of each of its runs). The datasets stay in this
    process's small cache for runs that train here (``keep``; False empties it: the runs
    train in other processes).

    Raises:
        ConfigError / DataError: naming the dataset or the device.
    """
    seen = set()
    for spec in specs:
        for s in spec.get("members", [spec]):
            config = s["config"]
            resolve_device((config.get("train") or {}).get("device", "auto"))
            key = _dataset_key(_located(config["dataset"], s.get("cwd")))
            if key not in seen:
                seen.add(key)
                _dataset(config["dataset"], None, s.get("cwd"))
    if not keep:
        _DATASETS.clear()


def run_task(spec: dict, *, data=None, preloaded: dict | None = None, progress: bool = False,
             threads: int | None = None) -> dict:
    """Run one task of a sweep: train (resuming), evaluate, record completion.

    Args:
        spec: one item of :func:`expand` (``id``, ``run_dir``, ``config``, ``evaluate``,
            optional ``cwd``: relative paths in the spec are relative to it).
        data: the training dataset already loaded (else loaded from ``config.dataset``).
        preloaded: ``{canonical JSON of a dataset spec: dataset}`` to reuse.
        progress: show the training progress bar.
        threads: ``torch.set_num_threads`` for this process (workers set it).

    Returns:
        ``{"id", "status": "finished" | "already", "metrics": {metric: {name: float}},
        "seconds", "host", "pid"}``. ``"already"``: the run was complete and nothing was
        touched.

    Raises:
        RunError / ConfigError / DataError: as :func:`vaebias.training.loop.train` and
            :func:`vaebias.experiments.scoring.evaluate_run` (a run directory of another
            configuration, a missing dataset file, ...).
    """
    t0 = time.perf_counter()
    info = {"id": spec["id"], "host": socket.gethostname(), "pid": os.getpid()}
    cwd = spec.get("cwd")
    run_dir = _within(cwd, spec["run_dir"])
    evaluate = spec.get("evaluate")
    done = completion(run_dir, evaluate)
    if done is not None:
        return {**info, "status": "already", "metrics": done.get("metrics", {}), "seconds": 0.0}
    if threads:
        import torch

        torch.set_num_threads(int(threads))

    config = from_dict(RunConfig, spec["config"])
    root = spec.get("import_root", cwd)  # an own model by import path, relative to the folder the sweep
    if ":" in config.model and root and root not in sys.path:  # (or reproduce, audit) was started from
        sys.path.append(root)
    ensure_writable_dir(run_dir)
    with _locked_log(run_dir) as fd:
        done = completion(run_dir, evaluate)  # another task may have finished it meanwhile
        if done is not None:
            return {**info, "status": "already", "metrics": done.get("metrics", {}), "seconds": 0.0}
        _append(fd, {"event": "start", "id": spec["id"], "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})
        if data is None:
            data = _dataset(config.dataset, preloaded, cwd)
        train(config, run_dir, data=data, progress=progress)
        metrics = {}
        key = evaluation_key(evaluate)
        if key != "none":
            ev = dict(evaluate)
            names = ev.pop("metrics")
            res = evaluate_run(run_dir, names, data=data, num_points=ev.pop("num_points"),
                               seed=ev.pop("seed"), batch_size=ev.pop("batch_size"),
                               device=config.train.device, **ev)
            metrics = _scalars(res, names)
        seconds = time.perf_counter() - t0
        _append(fd, {"event": "finished", "id": spec["id"], "evaluation": key,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(seconds, 3),
                     **info, "metrics": metrics})
    return {**info, "status": "finished", "metrics": metrics, "seconds": seconds}


def pack_tasks(specs: list[dict], pack: str = "auto", ensemble_size: int = 8) -> list[dict]:
    """Group the runs that can share a batched ensemble into group tasks.

    Runs group when their configurations differ only in ``train.seed`` and the model
    has ``ensemble_ok``; ``pack="auto"`` groups only runs whose device resolves to CUDA
    (see :attr:`Grid.pack`). A group task is ``{"id": "ensemble:<first id>+<n-1>",
    "members": [specs]}``; runs that do not group stay single specs. Order: each group
    or single run where its first member was.
    """

    def on_cuda(spec) -> bool:
        import torch

        dev = spec["config"]["train"].get("device", "auto")
        return dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())

    groups: dict[str, list[dict]] = {}
    order: list = []
    for spec in specs:
        cfg = spec["config"]
        if pack == "none" or not can_ensemble(cfg["model"]) or (pack == "auto" and not on_cuda(spec)):
            order.append(spec)
            continue
        key = canonical_json({**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "seed"}})
        if key not in groups or len(groups[key][-1]) >= ensemble_size:
            groups.setdefault(key, []).append([])
            order.append((key, len(groups[key]) - 1))
        groups[key][-1].append(spec)
    tasks = []
    for item in order:
        if isinstance(item, dict):
            tasks.append(item)
            continue
        members = groups[item[0]][item[1]]
        if len(members) == 1:
            tasks.append(members[0])
        else:
            tasks.append({"id": f"ensemble:{members[0]['id']}+{len(members) - 1}", "members": members})
    return tasks


def run_group_task(group: dict, *, preloaded: dict | None = None, progress: bool = False,
                   threads: int | None = None) -> list[dict]:
    """Run a group task of :func:`pack_tasks`: train its unfinished members as one batched
    ensemble (under every member's task lock), then finish each member with
    :func:`run_task` (evaluation and the completion line; training is found done).

    Returns:
        one :func:`run_task` result per member, in order.
    """

    cwd = group["members"][0].get("cwd")
    members = [{**s, "run_dir": str(_within(s.get("cwd"), s["run_dir"]))} for s in group["members"]]
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    todo = [s for s in members if completion(s["run_dir"], s["evaluate"]) is None and not is_finished(s["run_dir"])]
    if len(todo) > 1:
        with contextlib.ExitStack() as stack:
            for s in sorted(todo, key=lambda s: s["run_dir"]):  # one lock order: no deadlock
                stack.enter_context(_locked_log(ensure_writable_dir(s["run_dir"])))
            todo = [s for s in todo if not is_finished(s["run_dir"])]  # another task may have trained some
            if len(todo) > 1:
                configs = [from_dict(RunConfig, s["config"]) for s in todo]
                data = _dataset(configs[0].dataset, preloaded, cwd)
                train_ensemble(configs, [s["run_dir"] for s in todo], data=data, progress=progress)
    return [run_task(s, preloaded=preloaded, progress=progress) for s in members]


def run_any_task(spec: dict, **kw):
    """A single run's or a group's task (see :func:`pack_tasks`)."""
    return run_group_task(spec, **kw) if "members" in spec else run_task(spec, **kw)


def per_run_results(spec: dict, result) -> list[tuple[dict, dict]]:
    """(run spec, its result) pairs of a task's result; a failed group fails every member."""
    if "members" not in spec:
        return [(spec, result)]
    if isinstance(result, list):
        return list(zip(spec["members"], result))
    return [(m, {**result, "id": m["id"]}) for m in spec["members"]]


