"""Disentanglement metrics (disentanglement_lib definitions) and their evaluation loop.

Array-level metrics take codes (N, d) and factor class indices (N, K):

- :func:`mig` - Mutual Information Gap (Chen et al. 2018), with the helpers
  :func:`discretize` (20 equal-width bins per latent) and
  :func:`mutual_information_matrix` (sklearn-equal plug-in MI, nats);
- :func:`active_units` - active latent units from posterior variances (the paper,
  Sec. 5.3).

Train/test metrics take train codes/factors and test codes/factors:
:func:`sap` (Kumar et al. 2018), :func:`dci` (Eastwood & Williams 2018; its
entropy part alone is :func:`dci_from_importances`) and
:func:`modularity_explicitness` (Ridgeway & Mozer 2018).

Sampling-level metrics draw their own fixed-factor batches from a dataset:
:func:`factor_vae_score` (Kim & Mnih 2018), :func:`beta_vae_score` (Higgins et al.
2017) and, across several models on the same inputs, :func:`udr_score` / :func:`udr`
(Duan et al. 2020). :func:`factor_vae_score_from_pool` and
:func:`beta_vae_score_from_pool` draw the two scores' batches from already encoded
points instead (:mod:`vaebias.metrics.pool`; the fast mode of :func:`evaluate`).

:func:`evaluate` samples a dataset, encodes it and runs metrics chosen by name from
the registry below. A new metric plugs in with::

    @register("my_metric")
    def _my_metric(ctx):      # ctx: vaebias.metrics.sampling.EvalContext
        return my_metric(ctx.codes, ctx.factors)   # or draw its own samples via ctx
"""

from __future__ import annotations

from collections.abc import Callable

from .active_units import active_units
from .beta_vae_score import _beta_vae_metric, beta_vae_score, beta_vae_score_from_pool
from .dci import _dci_metric, dci, dci_from_importances
from .evaluate import EvalContext, _active_units_metric, _mig_metric, evaluate
from .factor_vae_score import _factor_vae_metric, factor_vae_score, factor_vae_score_from_pool
from .mig import discretize, mig, mutual_information_matrix
from .modularity import _modularity_explicitness_metric, modularity_explicitness
from .sap import _sap_metric, sap
from .udr import udr, udr_score

__all__ = [
    "METRICS",
    "EvalContext",
    "active_units",
    "available",
    "beta_vae_score",
    "beta_vae_score_from_pool",
    "dci",
    "dci_from_importances",
    "discretize",
    "evaluate",
    "factor_vae_score",
    "factor_vae_score_from_pool",
    "mig",
    "modularity_explicitness",
    "mutual_information_matrix",
    "register",
    "sap",
    "udr",
    "udr_score",
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
register("sap")(_sap_metric)  # train: shared sample; test: ctx.test_codes (rng(1))
register("dci")(_dci_metric)  # same split; backend: ctx.dci_backend
register("modularity_explicitness")(_modularity_explicitness_metric)  # same split
register("factor_vae_score")(_factor_vae_metric)  # own draws: ctx.rng(2)
register("beta_vae_score")(_beta_vae_metric)  # own draws: ctx.rng(3)
