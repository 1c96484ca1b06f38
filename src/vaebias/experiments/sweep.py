"""Sweeps: a grid of runs -> run specs with stable ids -> a launcher -> one directory per run.

A grid YAML names models, datasets (names, options or dataset files such as the exported
modified/noise variants), seeds, hyperparameters and the evaluation; every combination is
one *run*::

    out: results/my_sweep                   # or --out
    models: [ae, beta_vae]
    datasets: [{name: toy, num_positions: 8}]   # a name, a mapping of load_dataset options, or a path
    seeds: [0, 1]
    model_params: {beta_vae: {beta: [1, 4]}}    # lists expand as a grid
    train: {steps: 200, batch_size: 64}         # lists expand here too (lr: [1e-4, 1e-3])
    evaluate: {metrics: [mig], num_points: 1000}
    resources: {num_cpus: 1, num_gpus: 0}       # per run, on Ray
    max_retries: 3                              # Ray: reruns of a task whose worker died

:func:`sweep` writes, in ``out``::

    sweep.yaml           the validated grid of the last invocation
    manifest.json        every run: id, directory, configuration
    runs/<id>/           one run directory per run (training run + metrics.json + task_log.jsonl)
    results.csv, .json   one row per finished run with its scalar metrics
    failures.log         tracebacks of the runs that failed in the last invocation (if any)

Run ids are stable: ``<model>-<dataset>[-<param><value>...]-seed<s>-<hash8>`` where
``hash8`` is the first 8 hex digits of the SHA-256 of the run's canonical JSON
configuration (model, dataset, explicit model hyperparameters, full TrainConfig). The same
configuration always maps to the same directory, so growing a grid reuses every finished run.

**A task** (:func:`run_task`) trains the run (resuming from its checkpoint), evaluates it
(reusing recorded metrics) and appends one ``"finished"`` line to ``run_dir/task_log.jsonl``
as its very last act. A run is complete for an evaluation when that line exists; a task
that finds it does nothing and writes nothing. The line is one ``write`` in append mode
under an exclusive lock of the file (held for the whole task, released by the kernel when
a process dies), so a kill at any point -- driver or worker -- neither loses a finished
run nor ever records one twice; the rerun finishes only what is missing.

Launchers: ``local`` runs the tasks in this process one after the other, or in ``workers``
processes (each with ``cores // workers`` torch threads); ``ray`` submits one Ray task per
run (``num_cpus``/``num_gpus`` per task, ``max_retries`` reruns of tasks whose worker died)
to an existing cluster (``address``) or to a local one. ``out`` must be on a file system
that every Ray node sees.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import re
import socket
import sys
import time
import traceback
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vaebias._internal.config import TrainConfig, check, from_dict, to_dict
from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import atomic_path, canonical_json, ensure_writable_dir, read_yaml
from vaebias._internal.log import get_logger
from vaebias.data import DataError, load_dataset
from vaebias.data import available as available_datasets
from vaebias.experiments.scoring import evaluate_run
from vaebias.manipulation.field import load_dataset_spec
from vaebias.metrics import available as available_metrics
from vaebias.metrics.sampling import evaluate
from vaebias.models import get_model_class, model_config
from vaebias.training import RunConfig, can_ensemble, is_finished, train, train_ensemble

__all__ = [
    "LAUNCHERS",
    "TASK_LOG",
    "Grid",
    "Resources",
    "Runner",
    "completion",
    "evaluation_key",
    "expand",
    "load_grid",
    "pack_tasks",
    "run_group_task",
    "run_id",
    "run_task",
    "run_tasks",
    "sweep",
]

LAUNCHERS = ("local", "ray")
#: values of :attr:`Grid.pack`
PACKING = ("auto", "ensemble", "none")
#: per-run record of the sweep tasks: one JSON object per line ("start" / "finished")
TASK_LOG = "task_log.jsonl"
_EVAL_KEYS = ("metrics", "num_points", "seed", "batch_size")


log = get_logger()



# --------------------------------------------------------------------------------------
# the grid


@dataclasses.dataclass
class Resources:
    """Resources of one run on Ray (``@ray.remote(num_cpus=..., num_gpus=...)``).

    Attributes:
        num_cpus: CPUs reserved per run (> 0); the task uses ``max(1, int(num_cpus))``
            torch threads.
        num_gpus: GPUs per run (>= 0; fractions share a GPU). With 0, Ray hides the GPUs
            from the task and ``device: auto`` trains on the CPU.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self):
        check(self.num_cpus > 0, "resources.num_cpus", self.num_cpus, "a number > 0")
        check(self.num_gpus >= 0, "resources.num_gpus", self.num_gpus, "a number >= 0")


@dataclasses.dataclass
class Grid:
    """A validated sweep grid (see the module docstring for the YAML form).

    Attributes:
        models: registered model names (``vaebias models``).
        datasets: each a dataset name, a path, or a mapping of
            :func:`vaebias.data.load_dataset` keyword arguments with a ``name``.
        seeds: training seeds (each run's ``train.seed``).
        model_params: ``{model: {hyperparameter: value or list of values}}``; a list
            expands as a grid (for a field that is itself a list, give a list of lists).
        train: TrainConfig fields (except ``seed``); lists expand as a grid.
        evaluate: ``metrics`` (names or "all"; [] to skip evaluation), ``num_points``,
            ``seed``, ``batch_size`` and options of :func:`vaebias.metrics.evaluate`
            (``num_test``, ``dci_backend``, ...).
        resources: per-run resources on Ray.
        max_retries: Ray reruns of a task whose worker process or node died (>= 0).
        out: results folder (``--out`` wins).
        pack: how runs that differ only in their seed share a device: ``"ensemble"``
            trains up to ``ensemble_size`` of them as one batched ensemble
            (:func:`vaebias.training.ensemble.train_ensemble`; models with ``ensemble_ok`` only),
            ``"none"`` trains each alone, ``"auto"`` (default) ensembles on CUDA and not on
            a CPU, where ``benchmarks/ensemble.py`` measured an ensemble of 8 at 0.5x the
            speed of the same runs one after another (parallel single-thread processes,
            ``--workers``, win there).
        ensemble_size: the most members of one ensemble (>= 2).
    """

    models: list[str]
    datasets: list[Any]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    model_params: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    evaluate: dict = dataclasses.field(default_factory=lambda: {"metrics": ["mig", "active_units"]})
    resources: Resources = dataclasses.field(default_factory=Resources)
    max_retries: int = 3
    out: str | None = None
    pack: str = "auto"
    ensemble_size: int = 8

    def __post_init__(self):

        check(len(self.models) >= 1, "models", self.models, "a non-empty list of model names")
        for m in self.models:
            get_model_class(m)  # ConfigError naming the available models
        check(len(self.datasets) >= 1, "datasets", self.datasets, "a non-empty list of datasets")
        self.datasets = [_dataset_spec(d, f"datasets[{i}]") for i, d in enumerate(self.datasets)]
        check(len(self.seeds) >= 1, "seeds", self.seeds, "a non-empty list of integer seeds")
        for m, params in self.model_params.items():
            check(m in self.models, f"model_params.{m}", params,
                  f"a model of this grid ({', '.join(self.models)})")
            check(isinstance(params, dict), f"model_params.{m}", params, "a mapping of hyperparameters")
        check("seed" not in self.train, "train.seed", self.train.get("seed"),
              "no seed here; list the seeds under the top-level key 'seeds'")
        self.evaluate = _evaluate_spec(self.evaluate)
        check(self.max_retries >= 0, "max_retries", self.max_retries, "an integer >= 0")
        check(self.pack in PACKING, "pack", self.pack, " or ".join(repr(p) for p in PACKING))
        check(self.ensemble_size >= 2, "ensemble_size", self.ensemble_size, "an integer >= 2")


def _dataset_spec(value, where: str) -> dict:
    """A dataset entry as ``load_dataset`` keyword arguments; file paths made absolute."""
    if isinstance(value, (str, os.PathLike)):
        value = {"name": os.fspath(value)}
    check(isinstance(value, dict) and isinstance(value.get("name"), str), where, value,
          "a dataset name, a file path, or a mapping with a 'name' key")
    spec = dict(value)
    name = spec["name"]
    if name not in available_datasets():
        path = Path(name).expanduser()
        check(path.exists(), f"{where}.name", name,
              f"a dataset name ({', '.join(available_datasets())}) or an existing dataset file")
        spec["name"] = str(path.resolve())
    for key in ("path", "data_dir"):
        if isinstance(spec.get(key), str):
            spec[key] = str(Path(spec[key]).expanduser().resolve())
    if name == "toy":  # cheap to build: check its options now rather than in every task
        try:
            load_dataset(**{k: v for k, v in spec.items() if k not in ("variant", "manipulation")})
        except (TypeError, DataError) as exc:
            raise ConfigError(f"{where} = {value!r}: {exc}") from None
    return spec


def _evaluate_spec(value) -> dict:
    import inspect

    if value is None:
        value = {"metrics": []}
    check(isinstance(value, dict), "evaluate", value, "a mapping (metrics, num_points, seed, options)")
    options = sorted(p.name for p in inspect.signature(evaluate).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(value) - set(_EVAL_KEYS) - set(options))
    if unknown:
        raise ConfigError(f"unknown key 'evaluate.{unknown[0]}'; allowed keys: "
                          f"{', '.join(list(_EVAL_KEYS) + options)}")
    spec = {"metrics": ["mig", "active_units"], "num_points": 10_000, "seed": 0, "batch_size": 1000}
    spec.update(value)
    metrics = spec["metrics"]
    if metrics == "all":
        metrics = available_metrics()
    if isinstance(metrics, str):
        metrics = [metrics]
    check(isinstance(metrics, list), "evaluate.metrics", metrics, "a list of metric names, or 'all'")
    bad = [m for m in metrics if m not in available_metrics()]
    check(not bad, "evaluate.metrics", bad, f"metric names among {', '.join(available_metrics())}")
    spec["metrics"] = list(metrics)
    for key in ("num_points", "batch_size"):
        check(isinstance(spec[key], int) and not isinstance(spec[key], bool) and spec[key] > 0,
              f"evaluate.{key}", spec[key], "an integer > 0")
    check(isinstance(spec["seed"], int) and not isinstance(spec["seed"], bool), "evaluate.seed",
          spec["seed"], "an integer")
    return spec


def load_grid(grid: str | os.PathLike | dict | Grid) -> Grid:
    """A :class:`Grid` from a YAML file, a mapping, or a Grid.

    Raises:
        ConfigError: a missing or unreadable file, an unknown key (the message names it and
            lists the allowed keys), or a bad value (named, with what was expected).
    """
    import yaml

    if isinstance(grid, Grid):
        return grid
    if not isinstance(grid, dict):
        path = Path(grid)
        if not path.is_file():
            raise ConfigError(f"grid file {str(path)!r} not found")
        try:
            grid = read_yaml(path)
        except yaml.YAMLError as exc:
            raise ConfigError(f"grid file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(grid, dict):
            raise ConfigError(f"grid file {str(path)!r}: expected a mapping of keys "
                              f"({', '.join(f.name for f in dataclasses.fields(Grid))}), got {grid!r}")
    for key in ("models", "datasets"):
        if key not in grid:
            raise ConfigError(f"the grid has no '{key}' key; it needs models and datasets "
                              f"(allowed keys: {', '.join(sorted(f.name for f in dataclasses.fields(Grid)))})")
    return from_dict(Grid, grid)


# --------------------------------------------------------------------------------------
# run specs and ids


def _short_hash(obj) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:8]


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "_".join(_fmt(v) for v in value)
    return str(value)


def run_id(config: dict) -> str:
    """The stable id of a run: ``<model>-<dataset>[-<param><value>...]-seed<s>-<hash8>``.

    Args:
        config: the plain-data :class:`~vaebias.training.loop.RunConfig` (``to_dict`` form:
            model, dataset, model_params, train with every TrainConfig field).

    Returns:
        str of ``[A-Za-z0-9._+=-]``; ``hash8`` is the SHA-256 of ``config`` as canonical
        JSON (sorted keys, no spaces) after dropping the train fields that equal
        TrainConfig's defaults (except the seed), so the same configuration always gives
        the same id, across vaebias versions that add training settings.
    """
    name = config["dataset"]["name"]
    parts = [config["model"], Path(name).stem if os.sep in name else name]
    parts += [f"{k}{_fmt(v)}" for k, v in sorted(config.get("model_params", {}).items())]
    parts.append(f"seed{config['train']['seed']}")
    prefix = re.sub(r"[^A-Za-z0-9._+=-]", "_", "-".join(parts))[:80]
    return f"{prefix}-{_short_hash(_id_view(config))}"


def _id_view(config: dict) -> dict:
    """What a run id hashes: ``config`` without the train fields that hold TrainConfig's
    default (so that a field added to TrainConfig later, with a default that keeps the old
    behaviour, leaves every existing id unchanged)."""
    defaults = to_dict(TrainConfig())
    train = {k: v for k, v in config.get("train", {}).items() if k == "seed" or defaults.get(k) != v}
    return {**config, "train": train}


def evaluation_key(evaluate: dict | None) -> str:
    """Short hash of what defines an evaluation's numbers (metrics, sample, options;
    not the batch size); ``"none"`` when nothing is evaluated."""
    if not evaluate or not evaluate.get("metrics"):
        return "none"
    spec = {k: v for k, v in evaluate.items() if k != "batch_size"}
    spec["metrics"] = sorted(spec["metrics"])
    return _short_hash(spec)


def _sequence_fields(cls) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {k for k, tp in hints.items() if typing.get_origin(tp) in (list, tuple)}


def _expand_params(params: dict, sequence_fields: set[str], where: str) -> list[dict]:
    """Cartesian product of the listed values (a sequence-typed field expands only a list of lists)."""
    keys, choices = list(params), []
    for k in keys:
        v = params[k]
        if k in sequence_fields:
            is_grid = isinstance(v, list) and len(v) > 0 and all(isinstance(x, (list, tuple)) for x in v)
            choices.append(list(v) if is_grid else [v])
        elif isinstance(v, (list, tuple)):
            check(len(v) > 0, f"{where}.{k}", v, "a value or a non-empty list of values")
            choices.append(list(v))
        else:
            choices.append([v])
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def expand(grid: str | os.PathLike | dict | Grid, out: str | os.PathLike | None = None) -> list[dict]:
    """The grid's runs as task specs, in the order datasets x models x model_params x
    train x seeds (duplicates removed).

    Args:
        grid: a :class:`Grid`, its mapping, or a grid YAML path.
        out: results folder (default: the grid's ``out``); run directories are
            ``<out>/runs/<id>`` (absolute).

    Returns:
        list of plain dicts (picklable, what :func:`run_task` takes): ``id``, ``run_dir``,
        ``config`` (RunConfig as plain data), ``evaluate`` (the evaluation spec),
        ``meta`` (model, dataset, seed, model_params, train for display) and ``cwd``.

    Raises:
        ConfigError: bad grid, model hyperparameter or TrainConfig value (named), or no
            ``out``.
    """

    g = load_grid(grid)
    out = out if out is not None else g.out
    if out is None:
        raise ConfigError("no results folder: give --out or an 'out' key in the grid")
    out = Path(out).expanduser().resolve()
    trains = []
    for combo in _expand_params(g.train, _sequence_fields(TrainConfig), "train"):
        base = from_dict(TrainConfig, combo, prefix="train.")  # validates names, types, ranges
        trains.append(base)
    per_model = {}
    for m in g.models:
        cls = get_model_class(m)
        combos = _expand_params(g.model_params.get(m, {}), _sequence_fields(cls.Config), f"model_params.{m}")
        coerced = []
        for combo in combos:
            try:
                cfg = model_config(m, combo)  # ConfigError for an unknown name or a bad value
            except ConfigError as exc:
                raise ConfigError(f"model_params.{m}: {exc}") from None
            coerced.append(to_dict({k: getattr(cfg, k) for k in combo}))
        per_model[m] = coerced
    specs, seen = [], {}
    for dataset, m in itertools.product(g.datasets, g.models):
        for params, tcfg, seed in itertools.product(per_model[m], trains, g.seeds):
            train = to_dict(dataclasses.replace(tcfg, seed=int(seed)))
            config = {"model": m, "dataset": dict(dataset), "model_params": dict(params), "train": train}
            rid = run_id(config)
            key = canonical_json(config)
            if rid in seen:
                if seen[rid] != key:
                    raise ConfigError(f"two runs of the grid share the id {rid!r}; change a value")
                continue
            seen[rid] = key
            specs.append({
                "id": rid,
                "run_dir": str(out / "runs" / rid),
                "config": config,
                "evaluate": dict(g.evaluate),
                "meta": {"model": m, "dataset": dataset["name"], "seed": int(seed), "model_params": params},
                "cwd": os.getcwd(),
            })
    return specs


# --------------------------------------------------------------------------------------
# one task


def _task_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / TASK_LOG
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
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
    out = dict(spec)
    for key in ("path", "data_dir", "manipulation"):
        if isinstance(out.get(key), str):
            out[key] = str(_within(cwd, out[key]))
    name = out.get("name")
    if isinstance(name, str) and name not in available_datasets():
        out["name"] = str(_within(cwd, name))
    return out


def _dataset(spec: dict, preloaded: dict | None = None, cwd: str | None = None):
    """The dataset of ``spec``, from ``preloaded`` or a small per-process cache."""
    key = canonical_json(spec)
    if preloaded and key in preloaded:
        return preloaded[key]
    key = canonical_json([spec, cwd])
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset_spec(_located(spec, cwd))
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


def _task(spec: dict, **kw):
    """A single run's or a group's task (see :func:`pack_tasks`)."""
    return run_group_task(spec, **kw) if "members" in spec else run_task(spec, **kw)


def _per_run(spec: dict, result) -> list[tuple[dict, dict]]:
    """(run spec, its result) pairs of a task's result; a failed group fails every member."""
    if "members" not in spec:
        return [(spec, result)]
    if isinstance(result, list):
        return list(zip(spec["members"], result))
    return [(m, {**result, "id": m["id"]}) for m in spec["members"]]


# --------------------------------------------------------------------------------------
# launchers


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when the process that started it
    dies (``prctl(PR_SET_PDEATHSIG)``), so that killing ``vaebias reproduce`` or ``sweep``
    (Ctrl-C, kill, kill -9) never leaves workers training on; their runs resume from
    their last atomic checkpoint on the rerun. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    import torch

    if parent_pid is not None:
        _die_with_parent(parent_pid)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _pool_task(spec: dict):
    return _task(spec, progress=False)


def _failure(spec: dict, exc: BaseException, tb: str | None = None) -> dict:
    cause = getattr(exc, "cause", None) or exc  # ray.exceptions.RayTaskError wraps the task's error
    return {"id": spec["id"], "status": "failed", "metrics": {},
            "error": f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}",
            "traceback": tb or "".join(traceback.format_exception(exc))}


class Runner:
    """A launcher, held open across several batches of tasks (a worker pool or a Ray
    connection is started on first use and closed by :meth:`close` / ``with``).

    Args:
        launcher: ``"local"`` or ``"ray"``.
        workers: local launcher: 1 runs the tasks in this process (in order, with the
            training progress bars); N > 1 runs them in N spawned processes with
            ``max(1, cores // N)`` torch threads each.
        address: Ray cluster address (``host:port``, ``"auto"``, or ``"local"`` to start
            one); default ``$RAY_ADDRESS``, else a new local cluster, shut down on close.
        resources: per-task ``num_cpus`` / ``num_gpus`` on Ray (default 1 CPU, no GPU).
        max_retries: Ray reruns of a task whose worker process or node died.
        progress: a progress bar of runs (pool, Ray) or the training bars (in-process).
        fail_fast: in-process only: let a task's exception propagate at once (otherwise
            failures are collected as results with status ``"failed"``).
        preloaded: datasets already loaded in this process (in-process tasks reuse them),
            ``{canonical JSON of the dataset spec: dataset}``.

    Raises:
        ConfigError: unknown launcher, bad ``workers``/``resources``/``max_retries``,
            ``workers`` with Ray, or Ray not installed.
    """

    def __init__(self, launcher: str = "local", *, workers: int = 1, address: str | None = None,
                 resources: Resources | dict | None = None, max_retries: int = 3, progress: bool = True,
                 fail_fast: bool = False, preloaded: dict | None = None):
        check(launcher in LAUNCHERS, "launcher", launcher, f"one of {', '.join(LAUNCHERS)}")
        check(isinstance(workers, int) and workers >= 1, "workers", workers, "an integer >= 1")
        check(isinstance(max_retries, int) and max_retries >= 0, "max_retries", max_retries, "an integer >= 0")
        if launcher == "ray":
            if workers != 1:
                raise ConfigError(f"workers = {workers}: only for the local launcher; Ray runs as many runs at "
                                  f"once as the cluster's CPUs allow (set resources.num_cpus per run)")
            _require_ray()
            _probe_ray(address)
        self.launcher, self.workers, self.address = launcher, workers, address
        self.resources = (resources if isinstance(resources, Resources)
                          else from_dict(Resources, resources or {}, "resources."))
        self.max_retries, self.progress, self.fail_fast = max_retries, progress, fail_fast
        self.preloaded = preloaded
        self._pool = None
        self._ray_started = False

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close(cancel=exc[0] is not None)

    def close(self, cancel: bool = False) -> None:
        """Stop the worker pool / disconnect from Ray (shutting down a cluster started here)."""
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def run(self, specs: list[dict], on_result: Callable[[dict, dict], None] | None = None) -> list[dict]:
        """Run the tasks of ``specs``; results in the order of ``specs``.

        Args:
            specs: task specs (:func:`expand`, or built by hand with ``id``, ``run_dir``,
                ``config``, ``evaluate``; ids unique).
            on_result: called as ``on_result(spec, result)`` as each task ends (in
                this process, in completion order).

        Returns:
            one result per spec (see :func:`run_task`); failed ones have ``status
            "failed"``, ``error`` (one line) and ``traceback``.

        Raises:
            RunError: the Ray cluster cannot be reached.
            KeyboardInterrupt: passed on (runs resume on the next invocation).
        """
        results: dict[str, dict] = {}

        def record(task, res):
            for spec, r in _per_run(task, res):
                results[spec["id"]] = r
                if on_result is not None:
                    on_result(spec, r)

        if not specs:
            return []
        if self.launcher == "ray":
            self._run_ray(specs, record)
        elif self.workers == 1:
            for spec in specs:
                try:
                    res = _task(spec, preloaded=self.preloaded, progress=self.progress)
                except Exception as exc:
                    if self.fail_fast:
                        raise
                    res = _failure(spec, exc)
                record(spec, res)
        else:
            self._run_pool(specs, record)
        runs = [m for s in specs for m in s.get("members", [s])]
        return [results[s["id"]] for s in runs]

    def _run_pool(self, specs, record) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            threads = max(1, _cores() // self.workers)
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(threads, os.getpid()))
        bar = _bar(len(specs), self.progress, f"runs ({self.workers} workers)")
        try:
            futures = {self._pool.submit(_pool_task, spec): spec for spec in specs}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    res = fut.result()
                except BrokenProcessPool as exc:
                    res = _failure(spec, exc)
                    res["error"] = "a worker process died (killed, or out of memory); rerun to finish this run"
                except Exception as exc:
                    res = _failure(spec, exc)
                record(spec, res)
                bar.update(1)
        finally:
            bar.close()
        if any(isinstance(f.exception(), BrokenProcessPool) for f in futures if f.done()):
            self._pool.shutdown(wait=False)  # a broken pool takes no more tasks
            self._pool = None

    def _run_ray(self, specs, record) -> None:
        import logging

        import ray

        res, max_retries = self.resources, self.max_retries
        if not ray.is_initialized():
            address = _ray_address(self.address)
            kwargs = {"logging_level": logging.WARNING, "configure_logging": True}
            if address == "local":
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RunError(f"cannot reach the Ray cluster at address {address!r}: {exc}") from None
            self._ray_started = True
        cpus = ray.cluster_resources().get("CPU", 0)
        log.info(f"ray: {len(specs)} tasks on a cluster with {cpus:g} CPUs, {res.num_cpus:g} CPU"
             f"{'' if res.num_gpus == 0 else f' + {res.num_gpus:g} GPU'} per task, up to {max_retries} retries")
        remote = ray.remote(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=max_retries)(_ray_task)
        threads = max(1, int(res.num_cpus))
        bar = _bar(len(specs), self.progress, "runs (ray)")
        pending = {}
        try:
            pending = {remote.remote(spec, threads): spec for spec in specs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # RayTaskError (the task raised), WorkerCrashedError, ...
                        result = _failure(spec, exc)
                    record(spec, result)
                    bar.update(1)
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()


def run_tasks(specs: list[dict], launcher: str = "local", *, on_result: Callable[[dict, dict], None] | None = None,
              **options) -> list[dict]:
    """Run ``specs`` with a :class:`Runner` opened and closed for this one batch.

    ``options`` are those of :class:`Runner`; returns :meth:`Runner.run`'s results.
    """
    with Runner(launcher, **options) as runner:
        return runner.run(specs, on_result)


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc=desc, unit="run", dynamic_ncols=True)


def _ray_task(spec: dict, threads: int) -> dict:
    """Body of the Ray task (module level: workers import it by reference)."""
    return _task(spec, progress=False, threads=threads)


def _ray_address(address: str | None) -> str:
    """The address the Ray launcher uses: ``address``, else ``$RAY_ADDRESS``, else "local"."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def _probe_ray(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes).

    Raises:
        RunError: naming the address, when a TCP connection to it fails.
    """
    address = _ray_address(address)
    if address in ("local", "auto") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address = {address!r}: expected HOST:PORT of a Ray head node, 'auto' or 'local'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RunError(f"cannot reach the Ray cluster at address {address!r}: {exc.strerror or exc}; "
                       f"is `ray start --head` running there?") from None


def _require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray launcher needs Ray: pip install 'vaebias[ray]' "
                          "(or pip install 'ray>=2.9'), or use --launcher local") from None
    return ray


# --------------------------------------------------------------------------------------
# the sweep


def _results_table(specs: list[dict]) -> list[dict]:
    rows = []
    for spec in specs:
        rec = completion(spec["run_dir"], spec.get("evaluate"))
        if rec is None:
            continue
        row = {"id": spec["id"], "model": spec["config"]["model"], "dataset": spec["meta"]["dataset"],
               "seed": spec["config"]["train"]["seed"],
               "model_params": canonical_json(spec["config"]["model_params"]),
               "steps": spec["config"]["train"]["steps"]}
        for name, vals in rec.get("metrics", {}).items():
            for k, v in vals.items():
                row[name if k == name else f"{name}.{k}"] = v
        rows.append(row)
    return rows


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically, unless the file already holds exactly it (a rerun of a
    finished sweep leaves every file as it was)."""
    if path.exists() and path.read_bytes() == text.encode():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def _write_results(out: Path, rows: list[dict]) -> None:
    _write_text(out / "results.json", _json_text(rows))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / "results.csv", buf.getvalue())


def _summary_line(res: dict) -> str:
    parts = []
    for name, vals in res.get("metrics", {}).items():
        v = vals.get(name)
        if isinstance(v, (int, float)):
            parts.append(f"{name} {v:.3f}")
    return ", ".join(parts)


def sweep(grid: str | os.PathLike | dict | Grid, out: str | os.PathLike | None = None, *,
          launcher: str = "local", workers: int = 1, address: str | None = None,
          progress: bool = True, dry_run: bool = False) -> dict:
    """Run every run of ``grid`` that is not finished yet (see the module docstring).

    Args:
        grid: a grid YAML path, its mapping, or a :class:`Grid`.
        out: results folder (default: the grid's ``out``).
        launcher, workers, address: see :class:`Runner`.
        progress: progress bars (a run count in the driver; training bars in-process).
        dry_run: validate and list the runs (``"ids"`` of the result) without writing or
            running anything.

    Returns:
        ``{"out", "total", "already", "finished", "failed": [results], "results":
        [results in grid order], "wall_time_s"}``.

    Raises:
        ConfigError: a bad grid (before anything is written).
        RunError: ``out`` unwritable, or the Ray cluster unreachable.
    """
    import yaml

    t0 = time.perf_counter()
    check(launcher in LAUNCHERS, "launcher", launcher, f"one of {', '.join(LAUNCHERS)}")
    check(isinstance(workers, int) and workers >= 1, "workers", workers, "an integer >= 1")
    if launcher == "ray" and workers != 1:
        raise ConfigError(f"workers = {workers}: only for the local launcher; Ray runs as many runs at once "
                          f"as the cluster's CPUs allow (set resources.num_cpus per run in the grid)")
    g = load_grid(grid)
    specs = expand(g, out)
    out = Path(specs[0]["run_dir"]).parent.parent if specs else Path(out or g.out)
    if dry_run:
        return {"out": str(out), "ids": [spec["id"] for spec in specs], "total": len(specs), "already": 0, "finished": 0, "failed": [],
                "results": [], "wall_time_s": time.perf_counter() - t0}
    todo = [s for s in specs if completion(s["run_dir"], s["evaluate"]) is None]
    if todo and launcher == "ray":
        _require_ray()
        _probe_ray(address)
    out = ensure_writable_dir(out)
    record = to_dict(g)
    record["out"] = str(out)
    grid_path = out / "sweep.yaml"
    if grid_path.exists() and read_yaml(grid_path) != json.loads(json.dumps(record)):
        log.info(f"the grid differs from the last one in {grid_path}; finished runs of the same "
             f"configuration are kept, new ones added")
    _write_text(grid_path, yaml.safe_dump(record, sort_keys=False, default_flow_style=False))
    _write_text(out / "manifest.json", _json_text({
        "grid": record, "evaluation": evaluation_key(g.evaluate),
        "runs": [{"id": s["id"], "run_dir": str(Path(s["run_dir"]).relative_to(out)), "config": s["config"]}
                 for s in specs]}))

    already = len(specs) - len(todo)
    if not todo:
        log.info(f"{len(specs)} of {len(specs)} runs already finished; nothing to do")
        _write_results(out, _results_table(specs))
        results = [{"id": s["id"], "status": "already"} for s in specs]
        return {"out": str(out), "total": len(specs), "already": already, "finished": 0, "failed": [],
                "results": results, "wall_time_s": time.perf_counter() - t0}
    how = ("ray" if launcher == "ray" else
           "local, in this process" if workers == 1 else f"local, {workers} worker processes")
    log.info(f"sweep {out}: {len(specs)} runs, {already} already finished, {len(todo)} to run ({how})")
    count = {"n": 0}

    def on_result(spec, res):
        count["n"] += 1
        if res["status"] == "failed":
            log.info(f"[{count['n']}/{len(todo)}] FAILED {spec['id']}: {res['error']}")
        else:
            word = "finished" if res["status"] == "finished" else "already finished"
            summary = _summary_line(res)
            log.info(f"[{count['n']}/{len(todo)}] {word} {spec['id']} ({res.get('seconds', 0):.1f} s)"
                 + (f": {summary}" if summary else ""))

    results = run_tasks(pack_tasks(todo, g.pack, g.ensemble_size), launcher, workers=workers, address=address, resources=g.resources,
                        max_retries=g.max_retries, progress=progress, on_result=on_result)
    failed = [r for r in results if r["status"] == "failed"]
    finished = sum(r["status"] == "finished" for r in results)
    already += sum(r["status"] == "already" for r in results)
    _write_results(out, _results_table(specs))
    fail_log = out / "failures.log"
    if failed:
        with atomic_path(fail_log) as tmp:
            tmp.write_text("".join(f"== {r['id']}\n{r['traceback']}\n" for r in failed))
    elif fail_log.exists():
        fail_log.unlink()
    wall = time.perf_counter() - t0
    log.info(f"sweep done: {finished} finished now, {already} already finished, {len(failed)} failed, "
         f"of {len(specs)}; results in {out / 'results.csv'}; wall time {wall:.0f} s")
    if failed:
        log.info(f"{len(failed)} run(s) failed, e.g. {failed[0]['id']}: {failed[0].get('error', '?')}; "
             f"tracebacks in {fail_log}")
    by_id = {r["id"]: r for r in results}
    return {"out": str(out), "total": len(specs), "already": already, "finished": finished, "failed": failed,
            "results": [by_id.get(s["id"], {"id": s["id"], "status": "already"}) for s in specs],
            "wall_time_s": wall}
