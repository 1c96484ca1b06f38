"""Disentanglement, Completeness and Informativeness (DCI) with gradient-boosted trees.

Definition (Eastwood & Williams 2018, "A Framework for the Quantitative
Evaluation of Disentangled Representations"), computed the way
disentanglement_lib does it (the field's reference: ``evaluation/metrics/dci.py``,
``compute_dci`` / ``_compute_dci``, ``compute_importance_gbt``, ``disentanglement``,
``completeness``; its ``dci.gin`` config uses 10,000 train / 5,000 test points):

1. for every factor ``k`` one ``sklearn.ensemble.GradientBoostingClassifier``
   (sklearn's defaults: 100 stages of depth-3 trees, learning rate 0.1) is fitted
   on all latents of the train sample; the importance matrix column is
   ``R[:, k] = |feature_importances_|`` (d codes x K factors);
2. informativeness = the classifiers' accuracy, averaged over factors, on the
   train and on the test sample;
3. disentanglement of code ``j``: ``D_j = 1 - H_K(P_j)`` where ``P_j`` is row ``j``
   of ``R + 1e-11`` normalised to sum 1 and ``H_K`` the entropy in base ``K``;
   code weight ``rho_j = sum_k R[j, k] / sum R``; ``D = sum_j rho_j D_j``;
4. completeness of factor ``k``: ``C_k = 1 - H_d(P~_k)`` with ``P~_k`` column
   ``k`` of ``R + 1e-11`` normalised, entropy in base ``d``; factor weight
   ``sum_j R[j, k] / sum R``; ``C = sum_k weight_k C_k``.

When ``R`` is all zeros (e.g. every code constant, so no tree ever splits) the
weights become uniform, as in the reference; the per-row entropies are then
those of the uniform ``1e-11`` rows, so ``D = C = 0`` up to rounding.

The classifier is a pluggable backend (``BACKENDS``): ``"sklearn"`` is the
parity mode (one sklearn classifier per factor, exactly the reference's call
plus a fixed ``random_state``); ``"hist"`` is the fast mode
(:mod:`vaebias.metrics._gbt`: D and C within 0.01 of the reference's, accuracies
within 0.04, on the fixtures of ``tests/metrics/test_gbt.py``). A backend is a function
``fn(x_train (N, d) float64, y_train (N,) int64, x_test (M, d) float64,
y_test (M,) int64, random_state) -> (importances float64 (d,), train_accuracy
float, test_accuracy float)`` and is only called for factors with at least two
classes in the train sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vaebias.metrics._checks import check_n_jobs, check_split, ctx_random_state, to_numpy, varying_factor_mask
from vaebias.metrics._gbt import boosted_importances
from vaebias.metrics.registry import register

__all__ = ["dci", "dci_from_importances"]

#: +1e-11 added to every importance before the entropies, as in disentanglement_lib.
_EPS = 1e-11


# ------------------------------------------------------------------ backends
def _sklearn_backend(x_train, y_train, x_test, y_test, random_state):
    """Parity backend: ``GradientBoostingClassifier(random_state=random_state)``, defaults otherwise.

    Returns:
        (importances float64 (d,) = |feature_importances_|, train accuracy, test accuracy).
    """
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=random_state)
    model.fit(x_train, y_train)
    importances = np.abs(np.asarray(model.feature_importances_, dtype=np.float64))
    acc_train = float(np.mean(model.predict(x_train) == y_train))
    acc_test = float(np.mean(model.predict(x_test) == y_test))
    return importances, acc_train, acc_test


def _hist_backend(x_train, y_train, x_test, y_test, random_state):
    """Fast backend: :func:`vaebias.metrics._gbt.boosted_importances`, the same boosted-tree
    model on histogram-binned codes with exact refinement of each chosen split (~20x
    faster than sklearn on dSprites-sized inputs; differences stated in ``gbt``'s
    docstring and pinned by ``tests/metrics/test_gbt.py``)."""
    return boosted_importances(x_train, y_train, x_test, y_test, random_state)


#: name -> backend function (see the module docstring for the contract).
BACKENDS: dict[str, Callable] = {"sklearn": _sklearn_backend, "hist": _hist_backend}


# ------------------------------------------------------- scores from R alone
def _normalised_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (base ``base``) of each column of the non-negative array ``p`` (n, m), normalised
    per column first (``scipy.stats.entropy(p, base=base)`` along axis 0)."""
    q = p / p.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, -q * np.log(q), 0.0)
    return terms.sum(axis=0) / math.log(base)


def _check_importances(importance_matrix) -> np.ndarray:
    r = to_numpy(importance_matrix)
    if r.ndim != 2:
        raise ValueError(
            f"importance_matrix must be a 2-D array (num_codes d, num_factors K); got shape {r.shape}"
        )
    if r.shape[0] < 1 or r.shape[1] < 1:
        raise ValueError(f"importance_matrix must have d >= 1 rows and K >= 1 columns; got shape {r.shape}")
    if r.dtype.kind not in "biuf":
        raise ValueError(f"importance_matrix must hold real numbers; got dtype {r.dtype}")
    r = r.astype(np.float64)
    if not np.all(np.isfinite(r)):
        bad = np.argwhere(~np.isfinite(r))[0]
        raise ValueError(
            f"importance_matrix must be finite; got {r[bad[0], bad[1]]} at row {bad[0]}, column "
            f"{bad[1]} (shape {r.shape})"
        )
    if r.min() < 0:
        bad = np.argwhere(r < 0)[0]
        raise ValueError(
            f"importance_matrix must be >= 0 (pass |importances|); got {r[bad[0], bad[1]]} at row "
            f"{bad[0]}, column {bad[1]} (shape {r.shape})"
        )
    return r


def dci_from_importances(importance_matrix) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix (disentanglement_lib's formulas).

    ``D = sum_j rho_j (1 - H_K(row_j))`` with ``rho_j = R[j].sum() / R.sum()`` and
    ``C = sum_k w_k (1 - H_d(col_k))`` with ``w_k = R[:, k].sum() / R.sum()``,
    each row/column taken from ``R + 1e-11`` and normalised to a distribution;
    entropies in base K (for D) and base d (for C). An all-zero ``R`` gets uniform
    weights (as in the reference) and hence ``D = C = 0``. A diagonal R gives
    (1, 1); a constant R gives (0, 0).

    Degenerate sizes (divergence: the reference divides by ``log 1 = 0`` and
    returns nan): with a single factor (K = 1) every code is perfectly
    disentangled, ``D_j = 1``; with a single code (d = 1) every factor is
    perfectly complete, ``C_k = 1``.

    Args:
        importance_matrix: non-negative finite array (d codes, K factors) (numpy,
            torch or nested lists), e.g. ``dci(...)["importance_matrix"]`` restricted
            to factors without nan.

    Returns:
        (disentanglement, completeness) as floats in [0, 1] (up to ~1e-10 from the
        1e-11 smoothing).

    Raises:
        ValueError: not 2-D, an empty axis, non-real, non-finite or negative entries.
    """
    r = _check_importances(importance_matrix)
    d, k = r.shape
    per_code = 1.0 - _normalised_entropy(r.T + _EPS, k) if k > 1 else np.ones(d)
    per_factor = 1.0 - _normalised_entropy(r + _EPS, d) if d > 1 else np.ones(k)
    weights = r if r.sum() != 0.0 else np.ones_like(r)
    code_importance = weights.sum(axis=1) / weights.sum()
    factor_importance = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_code * code_importance)), float(np.sum(per_factor * factor_importance))


# ------------------------------------------------------------------------ DCI
def dci(train_codes, train_factors, test_codes, test_factors, *, backend: str = "sklearn",
        random_state: int | None = 0, n_jobs: int = 1) -> dict:
    """DCI scores of a representation (Eastwood & Williams 2018; disentanglement_lib).

    One gradient-boosted classifier per factor predicts the factor from all codes;
    ``R[:, k] = |feature_importances_|``; disentanglement and completeness come
    from :func:`dci_from_importances`; informativeness is the mean classification
    accuracy over factors on the train and on the test sample (the reference's
    ``informativeness_train/test``; an accuracy despite the reference's
    ``train_err``/``test_err`` variable names).

    Backends: ``"sklearn"`` (parity mode) fits
    ``GradientBoostingClassifier(random_state=random_state)`` with all other
    arguments at sklearn's defaults. disentanglement_lib passes no random_state;
    with subsample=1 and max_features=None the seed only breaks ties between
    equally good splits (e.g. duplicated code columns), so the numbers agree with
    the reference up to those ties. More backends may be registered in
    ``vaebias.metrics.dci.BACKENDS``.

    Edge cases:

    - a constant code dimension is fine: no tree splits on it, its importance
      row is 0 (weight 0 in D);
    - a factor with a single class in the *train* sample cannot be fitted (the
      reference's classifier raises): its importance column and accuracies are
      ``nan``, and it is left out of D, C and informativeness (the reference's
      number on the factor set without it; its dSprites loader drops the constant
      colour factor beforehand);
    - test classes never seen in training are simply mispredicted.

    Args:
        train_codes: real array (N, d), d >= 1, finite (numpy or torch); passed to
            the backend as float64 (sklearn's trees work in float32 either way).
        train_factors: non-negative integer class indices (N, K), K >= 1.
        test_codes: real array (M, d), same d.
        test_factors: integer class indices (M, K), same K.
        backend: a key of ``BACKENDS`` (``"sklearn"``).
        random_state: passed to the backend (the sklearn classifiers' seed).
        n_jobs: factors fitted in parallel with joblib (processes); 1 = serial
            (default), -1 = all cores. The result does not depend on it.

    Returns:
        dict with ``"disentanglement"``, ``"completeness"``,
        ``"informativeness_train"``, ``"informativeness_test"`` (floats in [0, 1]),
        ``"importance_matrix"`` (d x K nested list, nan columns for single-class
        factors), ``"accuracy_train"``/``"accuracy_test"`` (lists of K floats,
        nan for single-class factors) and ``"backend"`` (str).

    Raises:
        ValueError: malformed arrays (not 2-D, empty, non-finite codes,
            negative/non-integral factors); N differing between codes and factors
            of a split; d or K differing between train and test; K = 0; every
            factor single-class on train; an unknown backend (the message lists
            the available ones); a bad ``n_jobs``; a backend returning importances
            of the wrong shape or negative/non-finite values.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown DCI backend {backend!r}; available: {sorted(BACKENDS)}")
    z_tr, w_tr, z_te, w_te = check_split(train_codes, train_factors, test_codes, test_factors)
    n_jobs = check_n_jobs(n_jobs)
    varying = varying_factor_mask(w_tr, "DCI")
    fn = BACKENDS[backend]
    d, K = z_tr.shape[1], w_tr.shape[1]
    x_tr = np.ascontiguousarray(z_tr, dtype=np.float64)
    x_te = np.ascontiguousarray(z_te, dtype=np.float64)
    used = [k for k in range(K) if varying[k]]
    args = [(x_tr, np.ascontiguousarray(w_tr[:, k]), x_te, np.ascontiguousarray(w_te[:, k]),
             random_state) for k in used]
    if n_jobs == 1 or len(used) == 1:
        outs = [fn(*a) for a in args]
    else:
        from joblib import Parallel, delayed

        # the factor with the most classes costs most: start it first
        order = sorted(range(len(used)), key=lambda i: -np.unique(args[i][1]).size)
        res = Parallel(n_jobs=n_jobs)(delayed(fn)(*args[i]) for i in order)
        outs = [None] * len(used)
        for i, r in zip(order, res):
            outs[i] = r

    importance = np.full((d, K), np.nan)
    acc_tr = np.full(K, np.nan)
    acc_te = np.full(K, np.nan)
    for k, (imp, a_tr, a_te) in zip(used, outs):
        imp = np.asarray(imp, dtype=np.float64)
        if imp.shape != (d,) or not np.all(np.isfinite(imp)) or imp.min() < 0:
            raise ValueError(
                f"DCI backend {backend!r} returned invalid importances for factor {k}: expected "
                f"{d} finite non-negative values, got shape {imp.shape}"
            )
        importance[:, k] = imp
        acc_tr[k], acc_te[k] = float(a_tr), float(a_te)
    dis, comp = dci_from_importances(importance[:, varying])
    return {
        "disentanglement": dis,
        "completeness": comp,
        "informativeness_train": float(np.mean(acc_tr[varying])),
        "informativeness_test": float(np.mean(acc_te[varying])),
        "importance_matrix": importance.tolist(),
        "accuracy_train": acc_tr.tolist(),
        "accuracy_test": acc_te.tolist(),
        "backend": backend,
    }


# ------------------------------------------------- adapter used by the registry
@register("dci")
def _dci_metric(ctx) -> dict:
    """Registry adapter: train = the shared sample, test = ``ctx.test_codes/test_factors``."""
    return dci(ctx.codes, ctx.factors, ctx.test_codes, ctx.test_factors,
               backend=getattr(ctx, "dci_backend", "sklearn"), random_state=ctx_random_state(ctx))
