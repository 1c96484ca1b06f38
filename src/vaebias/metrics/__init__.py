"""Disentanglement metrics (disentanglement_lib definitions) and their evaluation loop.

Array-level metrics take codes (N, d) and factor class indices (N, K):

- :func:`mig` - Mutual Information Gap (Chen et al. 2018), with the helpers
  :func:`discretize` (20 equal-width bins per latent) and
  :func:`mutual_information_matrix` (sklearn-equal plug-in MI, nats);
- :func:`active_units` - active latent units from posterior variances (the paper,
  Sec. 5.3).

:func:`evaluate` samples a dataset, encodes it and runs metrics chosen by name from
the registry below. A new metric plugs in with::

    @register("sap")
    def _sap(ctx):            # ctx: vaebias.metrics.evaluate.EvalContext
        return sap(ctx.codes, ctx.factors)   # or draw its own samples via ctx
"""

from __future__ import annotations

from typing import Callable

from .active_units import active_units
from .evaluate import EvalContext, _active_units_metric, _mig_metric, evaluate
from .mig import discretize, mig, mutual_information_matrix

__all__ = [
    "mig",
    "discretize",
    "mutual_information_matrix",
    "active_units",
    "evaluate",
    "available",
    "register",
    "METRICS",
    "EvalContext",
]

#: name -> function(ctx: EvalContext) -> result dict; used by :func:`evaluate`.
METRICS: dict[str, Callable[[EvalContext], dict]] = {}


def register(name: str):
    """Decorator adding ``fn(ctx) -> dict`` to the registry under ``name``.

    Raises:
        ValueError: ``name`` is empty, not a string, or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric name must be a non-empty string; got {name!r}")

    def deco(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = fn
        return fn

    return deco


def available() -> list[str]:
    """Sorted names of the metrics usable in :func:`evaluate`."""
    return sorted(METRICS)


register("mig")(_mig_metric)
register("active_units")(_active_units_metric)
