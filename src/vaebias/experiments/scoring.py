"""Evaluate a trained run directory and write its ``metrics.json``.

The representation is the model's ``encode`` (the encoder mean for VAEs); models with
a posterior variance also report active units (the paper, Sec. 5.3). Sampling follows
disentanglement_lib (:func:`vaebias.metrics.evaluate`): 10,000 points drawn uniformly
with seed 0 by default.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import as_plain, ensure_writable_dir, read_checked, versions, write_json
from vaebias.data.registry import located_spec
from vaebias.manipulation.export import load_dataset_spec
from vaebias.metrics import EvalConfig, available, evaluate, udr_score
from vaebias.training import check_run_fits, is_finished, load_run, resolve_device
from vaebias.training.rundir import same_dataset

__all__ = ["evaluate_run", "representation", "udr_runs"]


def representation(model):
    """The ``represent`` callable of a model for :func:`vaebias.metrics.evaluate`:
    images -> encoder mean, or (mean, variance) for stochastic models."""
    if getattr(model, "stochastic", False):
        return model.posterior
    return model.encode


def evaluate_run(run_dir: str | os.PathLike, metrics=("mig", "active_units"), *, data=None,
                 num_points: int = 10_000, seed: int = 0, batch_size: int = 1000,
                 device: str = "auto", overwrite: bool = False, **options) -> dict:
    """Score the trained model in ``run_dir`` with any subset of metrics and record them in
    ``run_dir/metrics.json`` (``metrics_on_<dataset name>.json`` when ``data`` is another
    dataset than the training one, so the run's own scores are never overwritten).

    The file accumulates: metrics already in it that were computed with the same
    settings are reused, not recomputed; others are computed and merged in. Every
    metric's settings are kept under ``settings_of[name]`` (sample sizes, bins, seed,
    backend, dataset) and the library versions under ``versions``.

    Args:
        run_dir: a finished training run (config.yaml + final checkpoint.pt).
        metrics: metric names of :func:`vaebias.metrics.available`, or ``"all"``;
            ``"active_units"`` is skipped for deterministic models (no posterior variance).
        data: the dataset to evaluate on (default: the one it was trained on).
        num_points, seed, batch_size: the shared sample (disentanglement_lib: 10,000
            points, seed 0); train/test metrics use it as their training split.
        overwrite: recompute every requested metric even when recorded with the same settings.
        **options: further keyword settings of :func:`vaebias.metrics.evaluate`
            (e.g. ``num_test``, ``num_bins``, ``dci_backend``).

    Returns:
        the whole metrics dict (also written): ``{name: result, ..., "settings_of": {name:
        settings}, "settings": settings of the last computation, "model", "versions"}``.

    Raises:
        RunError: not a trained run, or the run is not finished.
        ConfigError (a ValueError): an unknown metric name or option (the message lists the
            valid ones).
    """

    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise RunError(f"{str(run_dir)!r} is not a finished training run; train it first")
    if isinstance(metrics, str):
        metrics = available() if metrics == "all" else (metrics,)
    unknown = [m for m in metrics if m not in available()]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; available: {available()}")
    dev = resolve_device(device)
    model, record = load_run(run_dir, dev)
    names = [m for m in dict.fromkeys(metrics) if m != "active_units" or getattr(model, "stochastic", False)]
    # config.yaml round-trips describe() through YAML (tuples become lists): compare as JSON.
    own = data is None or same_dataset(record.get("dataset_info"), data.describe(), run_dir)
    out = run_dir / ("metrics.json" if own else f"metrics_on_{data.name}.json")
    if data is None:
        data = load_dataset_spec(located_spec(record["dataset"], run_dir, if_exists=True))
    check_run_fits(run_dir, data)
    old = read_checked(out, dict, "a run's metrics") if out.exists() else {}
    if not isinstance(old.get("settings_of", {}), dict):
        raise RunError(f"{out}: settings_of is {type(old['settings_of']).__name__}; expected a mapping of metric to "
                       f"settings (the file is damaged: delete it to have it rewritten)")
    # What defines a metric's numbers: the sampling and the metric options, not the device.
    # evaluate() records each EvalConfig field in its settings under the same name; the
    # batch size changes no number
    kw = {f.name: f.default for f in dataclasses.fields(EvalConfig)
          if f.name not in ("num_points", "seed", "batch_size")}
    bad = sorted(set(options) - set(kw))
    if bad:
        raise ConfigError(f"unknown evaluation option(s) {bad}; valid: {sorted(kw)}")
    wanted = {"num_points": num_points, "seed": seed, **kw, **options, "dataset": data.describe()}
    done = old.get("settings_of", {})

    def same(name):
        prev = done.get(name)
        return prev is not None and {k: prev.get(k) for k in wanted} == as_plain(wanted)

    todo = names if overwrite else [m for m in names if m not in old or not same(m)]
    if not todo:
        return old
    ensure_writable_dir(run_dir)  # where metrics.json goes: refused before the scoring, not after
    if options.get("encode_precision") == "bf16":
        model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        result = evaluate(data, representation(model), todo, num_points=num_points, seed=seed,
                          batch_size=batch_size, device=dev, **options)
    merged = {k: v for k, v in old.items() if k not in ("settings", "model", "versions", "settings_of")}
    settings = result.pop("settings")
    merged.update(result)
    merged["settings_of"] = {**done, **{m: settings for m in todo}}
    merged["settings"] = settings
    merged["model"] = record["model"]
    merged["versions"] = versions()
    write_json(out, merged)
    return merged



def udr_runs(run_dirs, out: str | os.PathLike, *, data=None, num_points: int = 1000, seed: int = 0,
             correlation: str = "lasso", device: str = "auto") -> dict:
    """UDR (Duan et al. 2020) of several trained runs, written to ``out`` (a JSON file).

    All runs are fed the same ``num_points`` images of ``data`` (default: the first
    run's training dataset); see :func:`vaebias.metrics.udr_score` for the definition.
    UDR compares models with each other, so it is a property of the set, not of one
    run: the per-run scores are listed in the order of ``run_dirs``.

    Args:
        run_dirs: at least two finished runs trained on the same dataset.
        out: JSON file to write (atomically).
        num_points, seed: the shared sample (disentanglement_lib's UDR: 1000 points).
        correlation: ``"lasso"`` or ``"spearman"``.

    Returns:
        the dict written: ``udr`` (one float per run), ``pairwise``, ``runs``,
        ``settings`` and ``versions``.

    Raises:
        RunError: fewer than two runs, an unfinished run, or runs trained on
            different datasets.
    """

    run_dirs = [Path(r) for r in run_dirs]
    if len(run_dirs) < 2:
        raise RunError(f"UDR compares models: give at least two runs; got {len(run_dirs)}")
    named = [str(Path(r).resolve()) for r in run_dirs]
    if len(set(named)) != len(named):
        twice = next(str(r) for r, n in zip(run_dirs, named) if named.count(n) > 1)
        raise RunError(f"run {twice!r} is given twice; UDR compares distinct runs")
    dev = resolve_device(device)
    models, infos = [], []
    for rd in run_dirs:
        if not is_finished(rd):
            raise RunError(f"{str(rd)!r} is not a finished training run; train it first")
        model, record = load_run(rd, dev)
        models.append(model)
        infos.append(record)
    import json

    datasets = {json.dumps(r.get("dataset_info"), sort_keys=True) for r in infos}
    if len(datasets) > 1 and data is None:
        raise RunError("UDR needs runs trained on one dataset; these differ: "
                       + ", ".join(f"{str(rd)!r}: {r['dataset']}" for rd, r in zip(run_dirs, infos)))
    if data is None:
        data = load_dataset_spec(located_spec(infos[0]["dataset"], run_dirs[0], if_exists=True))
    for rd in run_dirs:
        check_run_fits(rd, data)
    with torch.no_grad():
        res = udr_score(data, [representation(m) for m in models], num_points=num_points,
                        random_state=seed, correlation=correlation, device=dev)
    res["runs"] = [str(r) for r in run_dirs]
    res["models"] = [r["model"] for r in infos]
    res["settings"] = {**res.get("settings", {}), "num_points": num_points, "seed": seed,
                       "correlation": correlation, "dataset": data.describe()}
    res["versions"] = versions()
    write_json(out, res)
    return res
