"""Fast histogram gradient-boosted trees for the DCI importance matrix.

:func:`boosted_importances` fits the model family of scikit-learn's
``GradientBoostingClassifier()`` with its defaults - the classifier that
disentanglement_lib's DCI (Eastwood & Williams 2018) fits once per ground-truth
factor - and returns its ``feature_importances_`` and train/test accuracies. Same
definitions as sklearn (read from sklearn 1.9's ``ensemble/_gb.py``, ``_loss/loss.py``,
``tree/_tree.pyx``, ``tree/_splitter.pyx``):

* loss: multinomial deviance (``HalfMultinomialLoss``), one regression tree per class
  per stage, for K > 2 classes; binomial deviance (``HalfBinomialLoss``) and a single
  tree per stage for K = 2;
* initial raw prediction: the log class priors (``DummyClassifier(strategy="prior")``;
  K = 2: the logit of the positive class's prior);
* each tree: depth ``max_depth``, fitted to the negative gradient ``y_k - p_k`` with the
  squared-error split gain ``n_L n_R / n (mean_L - mean_R)^2`` (the ranking of
  ``friedman_mse`` and ``squared_error`` alike), ``min_samples_leaf=1``, thresholds
  at midpoints between consecutive node values more than 1e-7 apart, on the
  float32-cast codes;
* leaf values: one Newton step (``_update_terminal_regions``): ``(K-1)/K * sum(g) /
  sum(p (1-p))`` for K > 2 and ``sum(g) / sum(p (1-p))`` for K = 2 over the leaf's
  samples (0 where the hessian is ~0), times ``learning_rate``;
* importances: per tree, the weighted impurity decrease of its splits summed per
  feature and divided by the sample count
  (``Tree.compute_feature_importances(normalize=False)``); summed over all trees and
  normalised to sum 1 (all zeros when no tree split) - ``feature_importances_`` of
  sklearn >= 0.20 (older releases normalised each tree first).

Speed comes from histograms, as in LightGBM and sklearn's HistGradientBoosting:
every feature is cut once into at most ``max_bins`` equal-frequency bins, and the
trees of all classes grow together, level by level - the float32 gradient and count
histograms of every (node, feature, bin) of a level are one sparse-matrix product
(right children by subtraction), the best bin edge per node is one vectorised scan.
sklearn's exact search differs from a binned one mostly in where it can put a
threshold, so each chosen split is then searched exactly (float64) around the
winning edge (``_WINDOW_BINS``) and, for the features the node's ancestors split on,
at both ends of the node's range (``_BOUNDARY_BINS``; sklearn often trims a few
samples off an interval there). A feature with at most ``max_bins`` distinct values
gets exactly sklearn's candidate thresholds; with at most 64 bins the histograms are
float64 and the result equals sklearn's to rounding, ties aside (below).

What is not reproduced: sklearn's exact search over every threshold of every feature
(a binned search can prefer another feature, or miss a threshold outside the searched
windows); its random feature order per node, which decides exact ties between
features (here one random order per tree level, drawn from ``random_state``, decides
them - as differently as sklearn with another ``random_state``); and its split rule
by node impurity: sklearn splits a node whose gradient variance exceeds 2.2e-16 even
at zero gain, here a split needs a positive gain, and a pure node can split on float32
rounding (which moves no prediction and adds ~1e-13 importance). The measured
differences from sklearn are stated and tested in ``tests/metrics/test_gbt.py``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from vaebias.metrics._gbt_trees import Binned, TreeGrower

__all__ = ["boosted_importances"]

# sklearn/ensemble/_gb.py:_safe_divide: a Newton step with a ~zero hessian is 0.
_TINY_HESSIAN = 1e-150
_MAX_BINS_LIMIT = 65536
_MAX_DEPTH = 16  # node tables have (trees << depth) entries


# --------------------------------------------------------------------- inputs
def _to_numpy(x):
    """numpy view of an array-like or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_x(x, name: str) -> np.ndarray:
    """Validate real finite (N, d) codes; return them cast to float32 then float64.

    sklearn's trees work on float32 copies of X, so thresholds and comparisons are made
    on the float32-rounded values here too.
    """
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, d); got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have N >= 1 rows and d >= 1 columns; got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite; got {arr[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]} "
            f"(shape {arr.shape})"
        )
    with np.errstate(over="ignore"):
        arr32 = arr.astype(np.float32)
    if not np.all(np.isfinite(arr32)):
        bad = np.argwhere(~np.isfinite(arr32))[0]
        raise ValueError(
            f"{name} must fit in float32 (the dtype sklearn's trees use); got "
            f"{arr[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]}"
        )
    return arr32.astype(np.float64)


def _check_y(y, name: str, n: int) -> np.ndarray:
    """Validate a 1-D array of n integer class labels -> int64."""
    arr = _to_numpy(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (N,) of class indices; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} labels but the codes have {n} rows")
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        integral = finite & (arr == np.round(np.where(finite, arr, 0)))
        if not np.all(integral):
            bad = int(np.flatnonzero(~integral)[0])
            raise ValueError(
                f"{name} must hold integer class indices; got {arr[bad]} at index {bad} "
                f"(dtype {arr.dtype})"
            )
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer class indices; got dtype {arr.dtype}")


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")  # noqa: TRY004
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return value


def _softmax(raw: np.ndarray) -> np.ndarray:
    z = raw - raw.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _expit(raw: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * raw))


def boosted_importances(
    x_train,
    y_train,
    x_test,
    y_test,
    random_state=0,
    *,
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    max_depth: int = 3,
    max_bins: int = 255,
):
    """Importances and accuracies of a histogram gradient-boosted tree classifier.

    The fast counterpart of fitting sklearn's ``GradientBoostingClassifier(
    n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth,
    random_state=random_state)`` on ``(x_train, y_train)`` and reading
    ``feature_importances_``, ``mean(predict(x_train) == y_train)`` and
    ``mean(predict(x_test) == y_test)`` - the per-factor step of disentanglement_lib's
    DCI (Eastwood & Williams 2018). Same loss, initialisation, tree growth, Newton leaf
    values and importance definition; splits are searched on at most ``max_bins``
    quantile bins per feature and then exactly near the winning bin edge (see the
    module docstring). The differences from sklearn measured on test fixtures are
    stated in ``tests/metrics/test_gbt.py``. Runs on the CPU in one thread (torch's intra-op
    thread count is set to 1 for the call and restored after).

    Args:
        x_train: real (N, d) codes, N >= 1, d >= 1 (numpy array-like or torch tensor);
            compared as float32, as sklearn's trees do.
        y_train: (N,) integer class labels (any integers; integral floats accepted).
        x_test: real (M, d) codes, M >= 1.
        y_test: (M,) integer class labels; a label absent from ``y_train`` counts as
            a wrong prediction.
        random_state: int >= 0, None (fresh entropy) or a ``numpy.random.Generator``:
            the random order in which features are compared, which only decides exact
            ties between features (e.g. duplicated columns). Deterministic for a given
            int.
        n_estimators: boosting stages, >= 1.
        learning_rate: shrinkage, finite and > 0.
        max_depth: depth of every tree, 1 <= max_depth <= 16.
        max_bins: bins per feature, 2 <= max_bins <= 65536. A feature with at most
            ``max_bins`` distinct training values gets every threshold sklearn would
            consider; with at most 64 bins in all features the search is float64 and
            the result equals sklearn's to rounding (up to ties, see above).

    Returns:
        ``(importances, train_accuracy, test_accuracy)``: float64 (d,) non-negative
        importances summing to 1 (all zeros when no tree made a split: constant codes,
        a constant gradient, or a single training class), and two Python floats. A
        constant code column never receives importance. With a single class in
        ``y_train`` (sklearn refuses to fit) every point is predicted as that class.

    Raises:
        ValueError: a wrong shape, dtype, non-finite or float32-overflowing code value,
            a non-integer label, mismatched lengths or an out-of-range hyperparameter
            (the message names the value).
    """
    x_tr = _check_x(x_train, "x_train")
    x_te = _check_x(x_test, "x_test")
    if x_te.shape[1] != x_tr.shape[1]:
        raise ValueError(
            f"x_test has {x_te.shape[1]} columns but x_train has {x_tr.shape[1]}"
        )
    y_tr = _check_y(y_train, "y_train", x_tr.shape[0])
    y_te = _check_y(y_test, "y_test", x_te.shape[0])
    n_estimators = _check_int(n_estimators, "n_estimators", 1)
    max_depth = _check_int(max_depth, "max_depth", 1, _MAX_DEPTH)
    max_bins = _check_int(max_bins, "max_bins", 2, _MAX_BINS_LIMIT)
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, numbers.Real)
        or not math.isfinite(float(learning_rate))
        or float(learning_rate) <= 0.0
    ):
        raise ValueError(f"learning_rate must be a finite number > 0; got {learning_rate!r}")
    learning_rate = float(learning_rate)
    if isinstance(random_state, np.random.Generator):
        rng = random_state
    elif random_state is None:
        rng = np.random.default_rng()
    else:
        random_state = _check_int(random_state, "random_state", 0)
        rng = np.random.default_rng(random_state)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tensors are small: more threads only add waiting
    try:
        return _fit(x_tr, y_tr, x_te, y_te, rng, n_estimators, learning_rate, max_depth,
                    max_bins)
    finally:
        torch.set_num_threads(threads)


def _fit(x_tr, y_tr, x_te, y_te, rng, n_estimators, learning_rate, max_depth, max_bins):
    """boosted_importances on validated inputs."""
    n, d = x_tr.shape
    classes, y_idx = np.unique(y_tr, return_inverse=True)
    k = classes.size
    pos = np.searchsorted(classes, y_te)
    known = (pos < k) & (classes[np.minimum(pos, k - 1)] == y_te)
    y_te_idx = np.where(known, pos, -1)  # -1: a class the model never saw
    if k == 1:
        return np.zeros(d), 1.0, float(np.mean(y_te_idx == 0))

    grower = TreeGrower(x_tr, x_te, Binned(x_tr, max_bins), max_depth, rng)
    eps = np.finfo(np.float64).eps
    prior = np.clip(np.bincount(y_idx, minlength=k) / n, eps, 1.0 - eps)
    binary = k == 2
    if binary:
        target = (y_idx == 1).astype(np.float64)[:, None]  # (N, 1)
        init = np.log(prior[1] / (1.0 - prior[1]))
        raw = np.full((n, 1), init)
        raw_test = np.full((x_te.shape[0], 1), init)
        factor = 1.0
    else:
        target = np.zeros((n, k))
        target[np.arange(n), y_idx] = 1.0
        init = np.log(prior) - np.log(prior).mean()
        raw = np.tile(init, (n, 1))
        raw_test = np.tile(init, (x_te.shape[0], 1))
        factor = (k - 1) / k
    t_count = raw.shape[1]
    size = t_count << max_depth
    importance_sum = np.zeros(d)
    for _ in range(n_estimators):
        prob = _expit(raw) if binary else _softmax(raw)
        g = target - prob  # negative gradient of the half deviance
        leaf, leaf_test, imp = grower.grow(g)  # flat leaf index t * 2**max_depth + j
        importance_sum += imp
        # one Newton step per leaf (sklearn _update_terminal_regions)
        flat = leaf.ravel()
        sum_g = np.bincount(flat, weights=g.ravel(), minlength=size)
        prob *= 1.0 - prob  # the hessian's diagonal p (1 - p)
        sum_h = np.bincount(flat, weights=prob.ravel(), minlength=size)
        count = np.bincount(flat, minlength=size)
        ok = sum_h >= _TINY_HESSIAN * np.maximum(count, 1)
        value = np.where(ok, factor * sum_g / np.where(ok, sum_h, 1.0), 0.0)
        value *= learning_rate
        raw += value[leaf]
        raw_test += value[leaf_test]

    total = importance_sum.sum()
    importances = importance_sum / total if total > 0.0 else np.zeros(d)
    if binary:
        pred, pred_test = (raw[:, 0] > 0).astype(np.int64), (raw_test[:, 0] > 0).astype(np.int64)
    else:
        pred, pred_test = raw.argmax(axis=1), raw_test.argmax(axis=1)
    return (
        importances.astype(np.float64),
        float(np.mean(pred == y_idx)),
        float(np.mean(pred_test == y_te_idx)),
    )
