"""The metric registry: name -> ``fn(ctx) -> dict``, used by :func:`vaebias.metrics.evaluate`.

A leaf module: every metric module registers its adapter here with :func:`register`, and
:mod:`vaebias.metrics.sampling` looks names up here. An own metric plugs in with::

    from vaebias.metrics import register

    @register("my_metric")
    def my_metric_adapter(ctx):   # ctx: vaebias.metrics.sampling.EvalContext
        return my_metric(ctx.codes, ctx.factors)   # or draw its own samples via ctx
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["METRICS", "available", "register"]

#: name -> function(ctx: EvalContext) -> result dict
METRICS: dict[str, Callable] = {}


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
    """Sorted names of the metrics usable in :func:`vaebias.metrics.evaluate`."""
    return sorted(METRICS)
