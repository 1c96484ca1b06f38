"""Evaluate a trained run directory and write its ``metrics.json``.

The representation is the model's ``encode`` (the encoder mean for VAEs); models with
a posterior variance also report active units (the paper, Sec. 5.3). Sampling follows
disentanglement_lib (:func:`vaebias.metrics.evaluate`): 10,000 points drawn uniformly
with seed 0 by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vaebias.io import read_json, versions, write_json
from vaebias.metrics import evaluate
from vaebias.training import is_finished, load_run, resolve_device

__all__ = ["evaluate_run", "representation"]


def representation(model):
    """The ``represent`` callable of a model for :func:`vaebias.metrics.evaluate`:
    images -> encoder mean, or (mean, variance) for stochastic models."""
    if getattr(model, "stochastic", False):
        return model.posterior
    return model.encode


def evaluate_run(run_dir: str | os.PathLike, metrics=("mig", "active_units"), *, data=None,
                 num_points: int = 10_000, seed: int = 0, batch_size: int = 1000,
                 device: str = "auto", overwrite: bool = False) -> dict:
    """Score the trained model in ``run_dir`` and write ``run_dir/metrics.json``
    (``metrics_on_<dataset name>.json`` when ``data`` is another dataset than the
    training one, so the run's own scores are never overwritten).

    Args:
        run_dir: a finished training run (config.yaml + final checkpoint.pt).
        metrics: metric names; "active_units" is skipped for deterministic models.
        data: the dataset to evaluate on (default: the one it was trained on).
        num_points, seed, batch_size: sampling settings (disentanglement_lib: 10,000, 0).
        overwrite: recompute even when ``metrics.json`` exists with the same settings.

    Returns:
        the metrics dict (also written): metric results, ``settings`` and ``versions``.

    Raises:
        RunError: not a trained run, or the run is not finished.
    """
    from vaebias.data import load_dataset
    from vaebias.errors import RunError

    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise RunError(f"{str(run_dir)!r} is not a finished training run; train it first")
    dev = resolve_device(device)
    model, record = load_run(run_dir, dev)
    names = [m for m in metrics if m != "active_units" or getattr(model, "stochastic", False)]
    wanted = {"metrics": names, "num_points": num_points, "seed": seed}
    own = data is None or data.describe() == record.get("dataset_info")
    out = run_dir / ("metrics.json" if own else f"metrics_on_{data.name}.json")
    if out.exists() and not overwrite:
        old = read_json(out)
        if {k: old.get("settings", {}).get(k) for k in wanted} == wanted:
            return old
    if data is None:
        data = load_dataset(**record["dataset"])
    with torch.no_grad():
        result = evaluate(data, representation(model), names, num_points=num_points, seed=seed,
                          batch_size=batch_size, device=dev)
    result["model"] = record["model"]
    result["versions"] = versions()
    write_json(out, result)
    return result
