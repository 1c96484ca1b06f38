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
the registry (:mod:`vaebias.metrics.registry`). A new metric plugs in with::

    @register("my_metric")
    def my_metric_adapter(ctx):   # ctx: vaebias.metrics.sampling.EvalContext
        return my_metric(ctx.codes, ctx.factors)   # or draw its own samples via ctx
"""

from vaebias.metrics.active_units import active_units
from vaebias.metrics.beta_vae_score import beta_vae_score, beta_vae_score_from_pool
from vaebias.metrics.dci import dci, dci_from_importances
from vaebias.metrics.factor_vae_score import factor_vae_score, factor_vae_score_from_pool
from vaebias.metrics.mig import discretize, mig, mutual_information_matrix
from vaebias.metrics.modularity import modularity_explicitness
from vaebias.metrics.registry import METRICS, available, register
from vaebias.metrics.sampling import EvalConfig, EvalContext, evaluate
from vaebias.metrics.sap import sap
from vaebias.metrics.udr import udr, udr_score

__all__ = [
    "METRICS",
    "EvalConfig",
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
