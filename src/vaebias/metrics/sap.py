"""Separated Attribute Predictability (SAP) score, and the train/test input checks.

Definition (Kumar et al. 2018, "Variational Inference of Disentangled Latent
Concepts from Unlabeled Observations", Sec. 3), computed the way
disentanglement_lib does it for discrete factors (the field's reference:
``evaluation/metrics/sap_score.py``, ``compute_sap`` / ``_compute_sap``; its
``sap_score.gin`` config uses 10,000 train / 5,000 test points):

1. for every latent ``j`` and factor ``k`` a linear SVM
   ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` is fitted on the
   single train column ``z_j`` to predict ``w_k``;
2. ``S[j, k]`` is its accuracy on the test sample;
3. the gap of factor ``k`` is the largest minus the second largest ``S[j, k]``
   over the latents, and SAP is the mean gap.

Speed: the d x K fits are independent calls into liblinear, which dominate the
cost (0.7-1.6 s of one core for 10,000/5,000 points, 10 latents and dSprites'
factor sizes, depending on the codes); the Python-side work around them is kept minimal (one contiguous
float64 column per latent, predictions from ``coef_``/``intercept_`` without
sklearn's per-call input validation, the same arithmetic as
``LinearSVC.predict``). liblinear releases the GIL, so ``n_jobs > 1`` runs the
fits in threads. The numbers are those of the plain per-pair ``LinearSVC`` loop
exactly (a closed-form or hand-written solver would converge to a slightly
different point than liblinear's stopping rule and flip predictions near the
decision boundaries).
"""

from __future__ import annotations

import numpy as np

from vaebias.metrics._checks import (
    check_n_jobs,
    check_split,
    ctx_random_state,
    varying_factor_mask,
)
from vaebias.metrics.registry import register

__all__ = ["sap"]


# --------------------------------------------------------------------- inputs


# ------------------------------------------------------------------------ SAP
def _sap_pair(x_tr, y_tr, x_te, y_te, C, random_state) -> float:
    """Test accuracy of ``LinearSVC(C, class_weight="balanced")`` on one latent column."""
    from sklearn.svm import LinearSVC

    clf = LinearSVC(C=C, class_weight="balanced", random_state=random_state)
    clf.fit(x_tr, y_tr)
    # LinearSVC.predict without its input validation: scores = x @ coef.T + intercept
    # (one product per entry for a single feature, hence bit-identical).
    scores = x_te * clf.coef_[:, 0][None, :] + clf.intercept_[None, :]
    if scores.shape[1] == 1:  # binary: the positive class is classes_[1]
        pred = clf.classes_[(scores[:, 0] > 0).astype(np.intp)]
    else:
        pred = clf.classes_[np.argmax(scores, axis=1)]
    return float(np.mean(pred == y_te))


def sap(train_codes, train_factors, test_codes, test_factors, *, C: float = 0.01,
        random_state: int | None = 0, n_jobs: int = 1) -> dict:
    """SAP score of a representation (Kumar et al. 2018; disentanglement_lib, discrete factors).

    For every latent ``j`` and factor ``k``, ``sklearn.svm.LinearSVC(C=C,
    class_weight="balanced", random_state=random_state)`` (other arguments at
    sklearn's defaults) is fitted on the train column ``z_j`` alone and ``S[j, k]``
    is its accuracy on the test sample. The gap of factor ``k`` is
    ``max_j S[j, k] - second max_j S[j, k]``; SAP is the mean gap over factors.

    Edge cases:

    - a constant latent column is passed to liblinear like any other (it fits an
      intercept-only-like model and predicts a single class; sklearn does not
      fail on it), so its accuracies are exactly the reference's;
    - a factor with a single class in the *train* sample cannot be fitted
      (``LinearSVC`` raises, and so would disentanglement_lib): its column of
      ``score_matrix`` and its gap are ``nan`` and it is left out of the mean,
      which gives the reference's number on the factor set without it (its
      dSprites loader drops the constant colour factor beforehand);
    - test classes never seen in training are simply mispredicted.

    Determinism: the fits are deterministic for a fixed ``random_state`` (with
    current sklearn, ``dual="auto"`` selects liblinear's primal solver for N > 1,
    which uses no randomness). Note that sklearn < 1.5 defaulted to
    ``dual=True`` (dual coordinate descent, which may stop at ``max_iter``); numbers
    computed under those versions can differ slightly.

    Args:
        train_codes: real array (N, d), d >= 2, finite (numpy or torch; for a VAE
            the encoder means); the SVMs are fitted in float64.
        train_factors: non-negative integer class indices (N, K), K >= 1.
        test_codes: real array (M, d), same d.
        test_factors: integer class indices (M, K), same K.
        C: the SVM's inverse regularisation (0.01 in disentanglement_lib), > 0.
        random_state: passed to every ``LinearSVC``.
        n_jobs: threads running the fits (liblinear releases the GIL); 1 = serial,
            -1 = all cores. The result does not depend on it.

    Returns:
        dict with ``"sap"`` (float in [0, 1]), ``"score_matrix"`` (d x K nested
        list of test accuracies; ``nan`` columns for single-class factors) and
        ``"gaps"`` (list of K floats, ``nan`` for single-class factors).

    Raises:
        ValueError: malformed arrays (not 2-D, empty, non-finite codes,
            negative/non-integral factors); N differing between codes and factors
            of a split; d or K differing between train and test; d < 2 (the gap
            compares the top two latents); K = 0; every factor single-class on
            train; ``C <= 0``; a bad ``n_jobs``.
    """
    z_tr, w_tr, z_te, w_te = check_split(train_codes, train_factors, test_codes, test_factors,
                                          min_latents=2)
    if isinstance(C, bool) or not isinstance(C, (int, float, np.integer, np.floating)) \
            or not np.isfinite(C) or C <= 0:
        raise ValueError(f"C must be a finite number > 0; got {C!r}")
    n_jobs = check_n_jobs(n_jobs)
    varying = varying_factor_mask(w_tr, "SAP")
    d, K = z_tr.shape[1], w_tr.shape[1]
    # one contiguous float64 (N, 1) column per latent, shared by all factors
    cols_tr = [np.ascontiguousarray(z_tr[:, j:j + 1], dtype=np.float64) for j in range(d)]
    cols_te = [np.ascontiguousarray(z_te[:, j:j + 1], dtype=np.float64) for j in range(d)]
    pairs = [(j, k) for k in range(K) if varying[k] for j in range(d)]

    def one(pair):
        j, k = pair
        return _sap_pair(cols_tr[j], w_tr[:, k], cols_te[j], w_te[:, k], float(C), random_state)

    if n_jobs == 1:
        accs = [one(p) for p in pairs]
    else:
        from joblib import Parallel, delayed

        accs = Parallel(n_jobs=n_jobs, backend="threading")(delayed(one)(p) for p in pairs)

    score = np.full((d, K), np.nan)
    for (j, k), acc in zip(pairs, accs):
        score[j, k] = acc
    top2 = -np.sort(-score[:, varying], axis=0)[:2]
    gaps = np.full(K, np.nan)
    gaps[varying] = top2[0] - top2[1]
    return {
        "sap": float(np.mean(gaps[varying])),
        "score_matrix": score.tolist(),
        "gaps": [float(g) for g in gaps],
    }


# ------------------------------------------------- adapter used by the registry
@register("sap")
def _sap_metric(ctx) -> dict:
    """Registry adapter: train = the shared sample, test = ``ctx.test_codes/test_factors``."""
    return sap(ctx.codes, ctx.factors, ctx.test_codes, ctx.test_factors,
               random_state=ctx_random_state(ctx))


