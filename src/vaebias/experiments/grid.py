"""A sweep's grid (YAML or dict) and its expansion into run specs with stable ids
(``<model>-<dataset>[-<param><value>...]-seed<s>-<hash8>``)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import typing
from pathlib import Path
from typing import Any

from vaebias._internal.config import TrainConfig, check, from_dict, to_dict
from vaebias._internal.errors import ConfigError
from vaebias._internal.io import canonical_json, read_yaml
from vaebias.data import DataError, load_dataset
from vaebias.data import available as available_datasets
from vaebias.metrics import available as available_metrics
from vaebias.metrics.sampling import evaluate
from vaebias.models import get_model_class, model_config

__all__ = ["PACKING", "Grid", "Resources", "evaluation_key", "expand", "load_grid", "run_id"]

#: values of :attr:`Grid.pack`
PACKING = ("auto", "ensemble", "none")
_EVAL_KEYS = ("metrics", "num_points", "seed", "batch_size")







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


