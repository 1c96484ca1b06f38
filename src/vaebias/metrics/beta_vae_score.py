"""BetaVAE disentanglement score (Higgins et al. 2017), the disentanglement_lib way.

Definition (``evaluation/metrics/beta_vae.py``, ``compute_beta_vae_sklearn``, of
disentanglement_lib, the field's reference; its configs use batch_size 64,
num_train 10,000, num_eval 5,000):

1. *a point*: pick a factor ``k`` uniformly, draw two batches of ``batch_size``
   factor rows, copy factor ``k`` of every row of the first batch into the same
   row of the second (pair ``i`` shares factor ``k``, nothing else on purpose),
   encode both; the feature is ``mean_i |r1_i - r2_i|`` (one value per latent)
   and the label is ``k``;
2. a ``sklearn.linear_model.LogisticRegression(random_state=...)`` with sklearn's
   default settings is fitted on ``num_train`` points; the score is its accuracy
   on them (``train_accuracy``) and on ``num_eval`` fresh points (``eval_accuracy``).

Only factors with more than one class are labels (dSprites' colour is not: the
reference's dSprites loader drops it from its latent factors too).

Divergences from the reference:

- "sklearn's default settings" depend on the sklearn version: up to 0.21 they were
  the liblinear solver with one-vs-rest, since 0.22 lbfgs with a multinomial
  (softmax) model. This module uses whatever the installed sklearn does, as the
  reference code would; record the version with the result (``evaluate`` does).
  The reference passes its ``RandomState``; lbfgs does not use it, here an int
  (``classifier_seed``, 0) is passed. lbfgs stops after sklearn's default 100
  iterations and may emit a ``ConvergenceWarning`` (kept, as in the reference).
- codes are taken as float64; draws use a ``numpy.random.Generator`` in the order
  documented at :func:`beta_vae_score` (the same seed gives different samples than
  disentanglement_lib's ``RandomState``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vaebias.data.arrays import require_full_grid
from vaebias.metrics._checks import (
    as_generator,
    check_int,
    draw_factor_index,
    encode_rows,
    evaluation_pool,
    to_numpy,
    varying_factor_indices,
)
from vaebias.metrics.factor_vae_score import DEFAULT_ENCODE_BATCH
from vaebias.metrics.pool import ValueGroups, check_pool
from vaebias.metrics.registry import register

__all__ = ["beta_vae_accuracy", "beta_vae_features", "beta_vae_score", "beta_vae_score_from_pool"]


# ------------------------------------------------------------ array-level core
def beta_vae_features(codes1, codes2) -> np.ndarray:
    """BetaVAE features: ``mean over the batch of |codes1 - codes2|``.

    Args:
        codes1, codes2: real arrays (n, B, d) of the same shape, B >= 1, finite:
            the codes of the B pairs of each of the n points (numpy or torch).

    Returns:
        float64 array (n, d).

    Raises:
        ValueError: not 3-D real arrays, shapes differ, B = 0 or non-finite codes.
    """
    a, b = to_numpy(codes1), to_numpy(codes2)
    for name, x in (("codes1", a), ("codes2", b)):
        if x.ndim != 3 or x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a real array (n, B, d); got shape {x.shape}, "
                             f"dtype {x.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"codes1 and codes2 must have the same shape; got {a.shape} and {b.shape}")
    if a.shape[1] < 1:
        raise ValueError(f"codes1 must hold at least one pair per point; got shape {a.shape}")
    a, b = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("codes1 and codes2 must be finite")
    return np.mean(np.abs(a - b), axis=1)


def _check_xy(x, y, name: str):
    x, y = to_numpy(x), to_numpy(y)
    if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "biuf":
        raise ValueError(f"{name}_features must be a non-empty real array (n, d); got shape {x.shape}, "
                         f"dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}_features must be finite")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"{name}_labels must be an int array of shape ({x.shape[0]},); got shape "
                         f"{y.shape}, dtype {y.dtype}")
    return x.astype(np.float64, copy=False), y.astype(np.int64)


def beta_vae_accuracy(train_features, train_labels, eval_features, eval_labels, *,
                      classifier_seed: int = 0) -> dict:
    """Fit the reference's classifier on BetaVAE points and report its accuracies.

    ``LogisticRegression(random_state=classifier_seed)`` with sklearn's defaults,
    fitted on the training points; accuracy = share of correctly predicted labels.

    Args:
        train_features: real array (n_train, d); train_labels: int (n_train,) with at
            least two distinct labels.
        eval_features: real array (n_eval, d); eval_labels: int (n_eval,).
        classifier_seed: ``random_state`` of the classifier (unused by lbfgs).

    Returns:
        dict with ``"train_accuracy"`` and ``"eval_accuracy"`` (floats in [0, 1]).

    Raises:
        ValueError: bad shapes/dtypes, non-finite features, different d, fewer than
            two training labels.
    """
    from sklearn.linear_model import LogisticRegression

    xt, yt = _check_xy(train_features, train_labels, "train")
    xe, ye = _check_xy(eval_features, eval_labels, "eval")
    if xe.shape[1] != xt.shape[1]:
        raise ValueError(f"eval_features must have {xt.shape[1]} columns like train_features; "
                         f"got shape {xe.shape}")
    if np.unique(yt).size < 2:
        raise ValueError(f"train_labels must hold at least two distinct factors; got only "
                         f"{np.unique(yt).tolist()}")
    model = LogisticRegression(random_state=classifier_seed)
    model.fit(xt, yt)
    return {
        "train_accuracy": float(np.mean(model.predict(xt) == yt)),
        "eval_accuracy": float(np.mean(model.predict(xe) == ye)),
    }


# ------------------------------------------------------------------ sampling
def _paired_batches(data, rng, varying, n: int, batch_size: int):
    """Draw ``n`` BetaVAE points: (labels (n,), rows1, rows2 int64 (n, B, K))."""
    _, k = draw_factor_index(rng, varying, n)
    rows1 = data.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
    rows2 = data.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
    v = np.arange(n)
    rows2[v, :, k] = rows1[v, :, k]
    return k, rows1, rows2


def _point_set(data, represent, rng, varying, n, batch_size, device, encode_batch):
    k, rows1, rows2 = _paired_batches(data, rng, varying, n, batch_size)
    num_factors = rows1.shape[2]
    per_call = max(1, encode_batch // (2 * batch_size))  # whole points per represent call
    features = []
    for start in range(0, n, per_call):
        f1, f2 = rows1[start:start + per_call], rows2[start:start + per_call]
        m = f1.shape[0]
        both = np.concatenate([f1.reshape(-1, num_factors), f2.reshape(-1, num_factors)])
        codes = encode_rows(data, represent, both, device=device, encode_batch=both.shape[0])
        if features and codes.shape[1] != features[0].shape[1]:
            raise ValueError(f"represent returned codes of different widths: "
                             f"{features[0].shape[1]} and {codes.shape[1]}")
        c = codes.reshape(2, m, batch_size, -1)
        features.append(beta_vae_features(c[0], c[1]))
    return np.concatenate(features, axis=0), k


def beta_vae_score(data, represent: Callable, *, random_state=0, batch_size: int = 64,
                   num_train: int = 10_000, num_eval: int = 5_000, classifier_seed: int = 0,
                   device=None, encode_batch: int = DEFAULT_ENCODE_BATCH) -> dict:
    """BetaVAE score of a representation on a ground-truth dataset (disentanglement_lib).

    Draw order (one generator ``rng``; a plain loop over points reproduces it): for the
    training set ``k = varying[rng.integers(0, len(varying), num_train)]`` (``varying``:
    factors with more than one class), then ``rows1 = data.sample_factors(num_train *
    batch_size, rng)``, then ``rows2 = data.sample_factors(num_train * batch_size, rng)``;
    point ``v`` pairs ``rows1[v*B:(v+1)*B]`` with ``rows2[v*B:(v+1)*B]`` whose column
    ``k[v]`` is copied from ``rows1``. The evaluation set follows, drawn the same way.

    Images are encoded ``encode_batch // (2 * batch_size)`` whole points per
    ``represent`` call (at least one; both halves of the pairs in the same call).

    Args:
        data: a :class:`vaebias.data.base.GroundTruthData` with at least two factors
            of more than one class.
        represent: callable ``images -> codes`` (see
            :func:`vaebias.metrics.factor_vae_score.factor_vae_score`).
        random_state: int seed, None or ``numpy.random.Generator`` (used in place).
        batch_size: pairs per point, >= 1 (64).
        num_train, num_eval: number of training / evaluation points, >= 1 (10,000 /
            5,000); the training points must cover at least two factors.
        classifier_seed: ``random_state`` of the LogisticRegression.
        device: torch device of the images (default CPU).
        encode_batch: images per ``represent`` call, >= 1.

    Returns:
        dict with ``"train_accuracy"``, ``"eval_accuracy"`` (floats in [0, 1]),
        ``"voted_factors"`` (list of the factor indices used as labels) and
        ``"settings"`` (the sizes above and the sklearn version).

    Raises:
        ValueError: a bad size, fewer than two varying factors, a malformed or
            non-finite output of ``represent``.
    """
    require_full_grid(data, "the BetaVAE score's fresh interventions (score_sampling='pool' works on a sample)")
    import sklearn

    batch_size = check_int(batch_size, "batch_size", 1)
    num_train = check_int(num_train, "num_train", 1)
    num_eval = check_int(num_eval, "num_eval", 1)
    encode_batch = check_int(encode_batch, "encode_batch", 1)
    classifier_seed = check_int(classifier_seed, "classifier_seed", 0)
    if not callable(represent):
        raise ValueError(f"represent must be callable; got {type(represent).__name__}")  # noqa: TRY004
    varying = varying_factor_indices(data)
    if varying.size < 2:
        raise ValueError(
            f"the BetaVAE score needs at least two factors with more than one class (a classifier "
            f"over one label is meaningless); factor_sizes = {tuple(data.factor_sizes)}"
        )
    rng = as_generator(random_state)
    x_train, y_train = _point_set(data, represent, rng, varying, num_train, batch_size, device,
                                  encode_batch)
    x_eval, y_eval = _point_set(data, represent, rng, varying, num_eval, batch_size, device,
                                encode_batch)
    acc = beta_vae_accuracy(x_train, y_train, x_eval, y_eval, classifier_seed=classifier_seed)
    acc["voted_factors"] = varying.tolist()
    acc["settings"] = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
                       "classifier_seed": classifier_seed, "sklearn": sklearn.__version__}
    return acc


def beta_vae_score_from_pool(codes, factors, *, random_state=0, batch_size: int = 64,
                             num_train: int = 10_000, num_eval: int = 5_000,
                             classifier_seed: int = 0) -> dict:
    """BetaVAE score with the pairs drawn from an encoded pool (no encoding).

    The procedure of :func:`beta_vae_score` on the pool's empirical distribution
    (:mod:`vaebias.metrics.pool`): a point picks a factor ``k`` uniformly among the
    factors that vary in the pool; each of its ``batch_size`` pairs is a pool row drawn
    uniformly with replacement and a second row drawn uniformly with replacement among
    the pool rows sharing the first's value of ``k``.

    Draw order (one generator ``rng``), for the training and then the evaluation points:
    ``k = varying[rng.integers(0, V, n)]``, ``first = rng.integers(0, N, (n, batch_size))``,
    then ``rng.random((n, batch_size))`` for the second rows.

    Args:
        codes: real array (N, d): the pool's codes.
        factors: int array (N, K): the pool's factor rows, uniformly drawn.
        random_state, batch_size, num_train, num_eval, classifier_seed: as in
            :func:`beta_vae_score`.

    Returns:
        the dict of :func:`beta_vae_score`; ``"settings"`` adds ``"sampling": "pool"`` and
        ``"pool_size"``.

    Raises:
        ValueError: a bad size, a malformed pool, fewer than two factors varying in the
            pool, a value of a varying factor held by fewer than ``batch_size`` pool rows.
    """
    import sklearn

    batch_size = check_int(batch_size, "batch_size", 1)
    num_train = check_int(num_train, "num_train", 1)
    num_eval = check_int(num_eval, "num_eval", 1)
    classifier_seed = check_int(classifier_seed, "classifier_seed", 0)
    c, f = check_pool(codes, factors)
    groups = ValueGroups(f, batch_size)
    varying = groups.varying
    if varying.size < 2:
        raise ValueError(f"the BetaVAE score needs at least two factors that vary in the pool; "
                         f"only factor {varying.tolist()} does")
    rng = as_generator(random_state)

    def points(n):
        _, k = draw_factor_index(rng, varying, n)
        first = rng.integers(0, c.shape[0], size=(n, batch_size))
        second = groups.same_value(rng, k, first)
        feats = [beta_vae_features(c[first[s:s + 2000]], c[second[s:s + 2000]])
                 for s in range(0, n, 2000)]  # bounded memory
        return np.concatenate(feats), k

    x_train, y_train = points(num_train)
    x_eval, y_eval = points(num_eval)
    acc = beta_vae_accuracy(x_train, y_train, x_eval, y_eval, classifier_seed=classifier_seed)
    acc["voted_factors"] = varying.tolist()
    acc["settings"] = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
                       "classifier_seed": classifier_seed, "sklearn": sklearn.__version__,
                       "sampling": "pool", "pool_size": int(c.shape[0])}
    return acc


@register("beta_vae_score")
def _beta_vae_metric(ctx) -> dict:
    """Registry adapter: defaults of disentanglement_lib, draws from ``ctx.rng(3)``; with
    ``ctx.score_sampling == "pool"`` from the shared and test samples' codes."""
    if ctx.score_sampling == "pool":
        codes, factors = evaluation_pool(ctx)
        return beta_vae_score_from_pool(codes, factors, random_state=ctx.rng(3),
                                        num_train=ctx.score_num_train,
                                        num_eval=ctx.score_num_eval)
    return beta_vae_score(ctx.data, ctx.represent, random_state=ctx.rng(3), device=ctx.device,
                          encode_batch=ctx.batch_size, num_train=ctx.score_num_train,
                          num_eval=ctx.score_num_eval)
