"""Modularity and explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled
Embeddings With the F-Statistic Loss"), the way disentanglement_lib computes them
(the field's reference: ``evaluation/metrics/modularity_explicitness.py``,
``compute_modularity_explicitness``, ``modularity``, ``explicitness_per_factor``; its
``modularity_explicitness.gin`` config uses 10,000 train / 5,000 test points).

Modularity, from the train sample only:

1. every latent is discretised into ``num_bins`` (20) equal-width bins over its
   train range (:func:`vaebias.metrics.discretize`, as for MIG);
2. ``m[j, k]`` = mutual information (nats, sklearn's ``mutual_info_score``)
   between discretised latent ``j`` and factor ``k``;
3. per latent: ``delta_j = (sum_k m[j, k]^2 - max_k m[j, k]^2) / (max_k m[j, k]^2 (K - 1))``
   and ``modularity_j = 1 - delta_j``, set to 0 where ``max_k m[j, k] = 0``
   (a latent carrying no information, e.g. a constant one);
4. modularity = mean over latents.

Explicitness:

1. codes are standardised with the train mean and (population, ddof=0) std;
2. per factor a ``sklearn.linear_model.LogisticRegression()`` (sklearn's defaults,
   as the reference) is fitted on all standardised train codes;
3. its ``predict_proba`` is scored against the one-hot labels with macro-averaged
   ROC-AUC (one binary AUC per class, averaged), on train and on test;
4. explicitness = mean over factors (train and test).
"""

from __future__ import annotations

import warnings

import numpy as np

from vaebias.metrics._checks import check_num_bins, check_split, ctx_random_state, varying_factor_mask
from vaebias.metrics.mig import discretize, mutual_information_matrix
from vaebias.metrics.registry import register

__all__ = ["modularity_explicitness"]


def _modularity(mi: np.ndarray) -> float:
    """Mean per-latent modularity of an MI matrix (d latents, K factors)."""
    sq = np.square(mi)
    mx = sq.max(axis=1)
    num = sq.sum(axis=1) - mx
    k = sq.shape[1]
    out = np.zeros(sq.shape[0])
    pos = mx > 0
    if k > 1:
        out[pos] = 1.0 - num[pos] / (mx[pos] * (k - 1.0))
    else:  # a single factor: every informative latent is trivially modular
        out[pos] = 1.0
    return float(np.mean(out))


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC-AUC (ties count one half), equal to sklearn's ``roc_auc_score`` for the same
    inputs; needs at least one positive and one negative."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)  # average ranks for ties
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _macro_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Macro ROC-AUC of ``proba`` (n, C; columns = ``classes``) against one-hot labels ``y``.

    Rule for labels that do not line up with the classifier's classes (the
    reference would crash or silently misalign columns): points whose label is not
    among ``classes`` are dropped; a class without positives or without negatives
    among the remaining points has no AUC and is left out of the average. Returns
    nan when no class is left.
    """
    known = np.isin(y, classes)
    y, proba = y[known], proba[known]
    aucs = []
    for c, cls in enumerate(classes):
        pos = y == cls
        if 0 < pos.sum() < pos.size:
            aucs.append(_auc(pos, proba[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def _mean_finite(values: np.ndarray) -> float:
    """Mean of the non-nan entries (nan when there are none)."""
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if finite.size else float("nan")


def _explicitness_factor(x_tr, y_tr, x_te, y_te, random_state):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(random_state=random_state)
    with warnings.catch_warnings():
        # sklearn's default max_iter=100 often stops lbfgs early; the reference ran the same
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    return (_macro_auc(y_tr, clf.predict_proba(x_tr), clf.classes_),
            _macro_auc(y_te, clf.predict_proba(x_te), clf.classes_))


def modularity_explicitness(train_codes, train_factors, test_codes, test_factors, *,
                            num_bins: int = 20, random_state: int | None = 0) -> dict:
    """Modularity and explicitness of a representation (Ridgeway & Mozer 2018; disentanglement_lib).

    Modularity: ``m`` = MI (nats) between the ``num_bins``-bin discretised train
    codes and the train factors (d x K, :func:`vaebias.metrics.discretize` and
    :func:`vaebias.metrics.mutual_information_matrix`); per latent
    ``1 - (sum_k m^2 - max_k m^2) / (max_k m^2 (K - 1))``, 0 where ``max_k m = 0``;
    mean over latents (a constant latent counts as 0, as in the reference).

    Explicitness: codes standardised with the train mean/std; per factor
    ``LogisticRegression(random_state=random_state)`` (sklearn's defaults, the
    reference's ``LogisticRegression()``; with sklearn >= 0.22 that is a
    multinomial lbfgs fit, which uses no randomness, whereas the reference was
    written when the default was one-vs-rest liblinear, so numbers computed with
    old sklearn differ slightly; lbfgs' ConvergenceWarning at the default
    ``max_iter=100`` is silenced) fitted on the train codes; macro ROC-AUC of
    ``predict_proba`` against one-hot labels (a per-class binary AUC with ties
    counting one half, as sklearn's ``roc_auc_score`` on
    ``MultiLabelBinarizer`` labels); mean over factors, on train and on test.

    Divergences from disentanglement_lib (identical numbers whenever the reference
    runs without error):

    - a constant code dimension (train std exactly 0) is standardised with std 1
      instead of dividing by 0 (the reference produces NaN codes and its classifier
      raises). A constant column whose float mean is off by an ulp has a tiny
      non-zero std and is divided by it, as in the reference (same numbers);
    - a factor with a single class in the *train* sample is left out of both
      metrics (its MI column and explicitness are excluded; ``nan`` in the
      per-factor lists): the reference's classifier raises on it, and its dSprites
      loader drops the constant colour factor beforehand;
    - labels vs. the classifier's classes, per factor: test points whose class never
      occurs in train are left out of the test AUC, and a class with no positive
      (or no negative) point in the scored sample is left out of the macro average
      (the reference one-hot encodes the test labels on their own, which crashes
      or misaligns columns when the class sets differ, and returns nan for a class
      absent from the test sample); a factor left with no scorable class gets nan
      and is left out of the mean over factors;
    - a single factor (K = 1): an informative latent has modularity 1 (the
      reference divides 0 by 0).

    Args:
        train_codes: real array (N, d), d >= 1, finite (numpy or torch). Floating
            dtypes are kept for the binning and the standardisation (as in the
            reference); ints/bools become float64.
        train_factors: non-negative integer class indices (N, K), K >= 1.
        test_codes: real array (M, d), same d.
        test_factors: integer class indices (M, K), same K.
        num_bins: bins per latent for the MI, >= 1 (20 in disentanglement_lib).
        random_state: passed to every ``LogisticRegression``.

    Returns:
        dict with ``"modularity"``, ``"explicitness_train"``,
        ``"explicitness_test"`` (floats in [0, 1]; explicitness 0.5 = chance),
        ``"mutual_information"`` (d x K nested list, nats, on train),
        ``"explicitness_per_factor_train"``/``"explicitness_per_factor_test"``
        (lists of K floats, nan for single-class factors).

    Raises:
        ValueError: malformed arrays (not 2-D, empty, non-finite codes,
            negative/non-integral factors); N differing between codes and factors
            of a split; d or K differing between train and test; K = 0; every
            factor single-class on train; ``num_bins < 1``.
    """
    z_tr, w_tr, z_te, w_te = check_split(train_codes, train_factors, test_codes, test_factors)
    num_bins = check_num_bins(num_bins)
    varying = varying_factor_mask(w_tr, "modularity/explicitness")
    K = w_tr.shape[1]

    mi = mutual_information_matrix(discretize(z_tr, num_bins), w_tr)  # (d, K)
    modularity = _modularity(mi[:, varying])

    mean = np.mean(z_tr, axis=0)
    std = np.std(z_tr, axis=0)
    std = np.where(std == 0, np.ones_like(std), std)
    x_tr = (z_tr - mean[None, :]) / std[None, :]
    x_te = (z_te - mean[None, :]) / std[None, :]
    exp_tr = np.full(K, np.nan)
    exp_te = np.full(K, np.nan)
    for k in range(K):
        if varying[k]:
            exp_tr[k], exp_te[k] = _explicitness_factor(x_tr, w_tr[:, k], x_te, w_te[:, k],
                                                        random_state)
    return {
        "modularity": modularity,
        "explicitness_train": _mean_finite(exp_tr),
        "explicitness_test": _mean_finite(exp_te),
        "mutual_information": mi.tolist(),
        "explicitness_per_factor_train": exp_tr.tolist(),
        "explicitness_per_factor_test": exp_te.tolist(),
    }


# ------------------------------------------------- adapter used by the registry
@register("modularity_explicitness")
def _modularity_explicitness_metric(ctx) -> dict:
    """Registry adapter: train = the shared sample, test = ``ctx.test_codes/test_factors``."""
    return modularity_explicitness(ctx.codes, ctx.factors, ctx.test_codes, ctx.test_factors,
                                   num_bins=ctx.num_bins, random_state=ctx_random_state(ctx))
