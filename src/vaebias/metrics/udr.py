"""Unsupervised Disentanglement Ranking (UDR; Duan et al. 2020), the disentanglement_lib way.

Definition (``evaluation/udr/metrics/udr.py``, ``compute_udr_sklearn``, of
disentanglement_lib, the field's reference). Given the codes of M
models on the SAME inputs, and optionally each model's KL divergence to the prior
per latent:

1. every model's codes are standardised per latent (``sklearn`` ``StandardScaler``:
   mean 0, population std 1; a constant latent becomes 0); with KLs, latents whose
   KL is ``<= kl_threshold`` (0.01) are set to 0 (always, as in the reference) and,
   with ``filter_low_kl`` (default), are left out of the score;
2. for every ordered pair ``(i, j)``, ``i != j``, a non-negative matrix
   ``R (d_i, d_j)`` relates model i's latents (rows) to model j's (columns):

   - ``"lasso"``: ``|coef|`` of ``Lasso(alpha=0.1)`` predicting all of model j's
     standardised latents from model i's, transposed;
   - ``"spearman"``: ``|Spearman rank correlation|`` of each pair of latents
     (``nan`` for a constant latent);

3. the pairwise score is the reference's ``relative_strength_disentanglement`` of
   the (filtered) ``R``: for every column ``max(col)^2 / sum(col)``, for every row
   ``max(row)^2 / sum(row)`` (a ``nan`` or 0/0 ratio counts as 0; a ``nan`` entry
   poisons its row and column, as in the reference), and
   ``score = (mean over columns + mean over rows) / 2``;
4. a model's UDR is the median of ``pairwise[j, i]`` over the other models ``j``
   (the reference's column-wise median).

Notes and divergences:

- with ``"lasso"`` even a perfect match scores below 1: for orthogonal
  standardised latents ``coef = 1 - alpha`` on the matched latent, so identical or
  permuted/sign-flipped models score ``1 - alpha = 0.9``; ``"spearman"`` gives 1;
- the paper's formula (Duan et al. 2020) weights the two sums by the number of
  informative latents, ``(sum over columns + sum over rows) / (d_i + d_j)``; the
  reference (followed here) averages the column mean and the row mean, which
  differs when the two models keep different numbers of informative latents;
- the reference requires every model to have the same width and raises on a pair
  with no informative latent; here widths may differ and such a pair scores 0.0;
- the reference zeroes low-KL latents at a fixed 0.01 and filters at
  ``kl_filter_threshold`` (also 0.01 by default); here one ``kl_threshold`` does both;
- the pairwise matrix has ``nan`` on its diagonal (the reference stores 0 there and
  never uses it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from vaebias.metrics._checks import as_generator, check_codes, check_int, check_output, to_numpy

__all__ = [
    "gaussian_kl",
    "lasso_correlation",
    "relative_strength",
    "spearman_correlation",
    "udr",
    "udr_score",
]

_CORRELATIONS = ("lasso", "spearman")


# ------------------------------------------------------------ array-level core
def relative_strength(corr) -> float:
    """The reference's pairwise UDR score of a non-negative matrix ``R`` (d_i, d_j).

    ``(mean_j max_i R^2 / sum_i R  +  mean_i max_j R^2 / sum_j R) / 2`` where a
    ratio that is ``nan`` (0/0, or a ``nan`` entry in its row/column) counts as 0.
    Examples: identity -> 1; ``[[1, 1, 0], [1, 1, 0], [0, 0, 1]]`` -> 2/3; all ones
    (3 x 3) -> 1/3; all zeros -> 0. An empty matrix scores 0.0 (the reference raises).

    Args:
        corr: real 2-D array, entries >= 0 or nan.

    Returns:
        float >= 0 (at most 1 when every entry is at most 1).

    Raises:
        ValueError: not 2-D, non-real, negative or infinite entries.
    """
    r = to_numpy(corr)
    if r.ndim != 2 or r.dtype.kind not in "biuf":
        raise ValueError(f"corr must be a real 2-D array; got shape {r.shape}, dtype {r.dtype}")
    r = r.astype(np.float64)
    if np.any(np.isinf(r)) or np.any(r < 0):
        bad = r[np.isinf(r) | (r < 0)][0]
        raise ValueError(f"corr must hold non-negative finite values (or nan); got {bad}")
    if r.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = np.max(r, axis=0) ** 2 / np.sum(r, axis=0)
        rows = np.max(r, axis=1) ** 2 / np.sum(r, axis=1)
    cols = np.where(np.isnan(cols), 0.0, cols)
    rows = np.where(np.isnan(rows), 0.0, rows)
    return float((cols.mean() + rows.mean()) / 2)


def lasso_correlation(a, b, *, alpha: float = 0.1, random_state: int = 0) -> np.ndarray:
    """``|coef|`` of ``sklearn.linear_model.Lasso(alpha)`` regressing ``b`` on ``a``, transposed.

    Args:
        a: real array (N, d_a); b: real array (N, d_b) (standardised codes).
        alpha: Lasso penalty (0.1 in the reference).
        random_state: passed to Lasso (unused by its default cyclic selection).

    Returns:
        float64 array (d_a, d_b): entry ``[p, q]`` = |weight of a's latent p in the
        prediction of b's latent q|.
    """
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=alpha, random_state=random_state)
    model.fit(a, b)
    coef = np.reshape(model.coef_, (b.shape[1], a.shape[1]))
    return np.abs(coef).T


def spearman_correlation(a, b) -> np.ndarray:
    """``|Spearman rank correlation|`` between every latent of ``a`` and every latent of ``b``.

    Ranks are ``scipy.stats.rankdata`` (ties averaged), correlated with Pearson's
    formula: the same numbers as ``scipy.stats.spearmanr`` per pair (to ~1e-15),
    in one matrix product. A constant column gives ``nan`` (as spearmanr does).

    Args:
        a: real array (N, d_a); b: real array (N, d_b).

    Returns:
        float64 array (d_a, d_b) with values in [0, 1] or nan.
    """
    from scipy.stats import rankdata

    ra = rankdata(a, axis=0).astype(np.float64)
    rb = rankdata(b, axis=0).astype(np.float64)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    na = np.sqrt(np.sum(ra * ra, axis=0))
    nb = np.sqrt(np.sum(rb * rb, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (ra.T @ rb) / np.outer(na, nb)
    corr[(na == 0)[:, None] | (nb == 0)[None, :]] = np.nan
    return np.abs(np.clip(corr, -1.0, 1.0))


def gaussian_kl(mean, variance) -> np.ndarray:
    """KL(N(mean, variance) || N(0, 1)) per latent, averaged over the points.

    ``mean over rows of 0.5 * (mean^2 + variance - 1 - log variance)``, as
    disentanglement_lib's UDR evaluation computes it from the encoder's outputs.

    Args:
        mean, variance: real arrays (N, d) of the same shape; variance > 0, finite.

    Returns:
        float64 array (d,) (nats).

    Raises:
        ValueError: shapes differ, non-finite values, variance <= 0.
    """
    mu = check_codes(mean, "mean").astype(np.float64, copy=False)
    var = to_numpy(variance)
    if var.shape != mu.shape or var.dtype.kind not in "biuf":
        raise ValueError(f"variance must be a real array of the mean's shape {mu.shape}; "
                         f"got shape {var.shape}, dtype {var.dtype}")
    var = var.astype(np.float64)
    if not np.all(np.isfinite(var)) or var.min() <= 0:
        bad = var[~np.isfinite(var) | (var <= 0)][0]
        raise ValueError(f"variance must be finite and > 0 (pass sigma^2, not log-variances); "
                         f"got {bad}")
    return np.mean(0.5 * (mu ** 2 + var - 1.0 - np.log(var)), axis=0)


def _check_threshold(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def udr(codes: Sequence, kl: Sequence | None = None, *, correlation: str = "lasso",
        filter_low_kl: bool = True, kl_threshold: float = 0.01, alpha: float = 0.1,
        random_state: int = 0, include_correlations: bool = False) -> dict:
    """UDR of M models from their codes on the same N inputs (disentanglement_lib).

    Args:
        codes: list of M >= 2 real arrays (N, d_i) (numpy or torch; for VAEs the
            encoder means), row n of every array encoding the same input; N >= 2.
        kl: optional list of M entries, each None or a real array (d_i,) of the
            model's mean KL per latent (see :func:`gaussian_kl`). A model without KL
            keeps all its latents.
        correlation: ``"lasso"`` (default, as the reference) or ``"spearman"``.
        filter_low_kl: leave latents with KL <= ``kl_threshold`` out of the score.
        kl_threshold: 0.01 in the reference.
        alpha: the Lasso penalty (0.1).
        random_state: Lasso's ``random_state`` (unused by cyclic coordinate descent).
        include_correlations: also return the raw (unfiltered) matrices R.

    Returns:
        dict with ``"udr"`` (list of M floats: each model's median pairwise score),
        ``"pairwise"`` (M x M nested list; ``[i][j]`` scores R of the pair (i, j),
        rows = model i's latents; ``nan`` on the diagonal), ``"num_informative"``
        (list of M ints: latents with KL > threshold, or d_i without KL),
        ``"settings"`` and, with ``include_correlations``, ``"correlations"``
        (M x M nested lists of d_i x d_j matrices, None on the diagonal).

    Raises:
        ValueError: fewer than two models, a code array that is not 2-D/finite, N
            differing between models or N < 2, a KL array of the wrong shape or
            non-finite, an unknown ``correlation``, a bad threshold or alpha.
    """
    from sklearn.preprocessing import StandardScaler

    if isinstance(codes, np.ndarray) or not isinstance(codes, (list, tuple)):
        raise ValueError(f"codes must be a list of (N, d_i) arrays, one per model; got "  # noqa: TRY004
                         f"{type(codes).__name__}")
    if len(codes) < 2:
        raise ValueError(f"UDR compares models: codes must hold at least 2 arrays; got {len(codes)}")
    z = [check_codes(c, f"codes[{i}]").astype(np.float64, copy=False) for i, c in enumerate(codes)]
    ns = [c.shape[0] for c in z]
    if len(set(ns)) > 1:
        raise ValueError(f"every model must encode the same N inputs; got N = {ns} "
                         f"(shapes {[c.shape for c in z]})")
    if ns[0] < 2:
        raise ValueError(f"UDR needs at least 2 inputs; got N = {ns[0]}")
    if correlation not in _CORRELATIONS:
        raise ValueError(f"correlation must be one of {_CORRELATIONS}; got {correlation!r}")
    kl_threshold = _check_threshold(kl_threshold, "kl_threshold")
    alpha = _check_threshold(alpha, "alpha")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    m = len(z)
    if kl is None:
        kl = [None] * m
    if isinstance(kl, np.ndarray) or not isinstance(kl, (list, tuple)) or len(kl) != m:
        raise ValueError(f"kl must be None or a list of {m} entries (None or (d_i,) arrays); got "
                         f"{type(kl).__name__}" + (f" of length {len(kl)}" if hasattr(kl, '__len__') else ""))

    informative = []
    for i in range(m):
        d = z[i].shape[1]
        if kl[i] is None:
            informative.append(np.ones(d, dtype=bool))
        else:
            k = to_numpy(kl[i])
            if k.shape != (d,) or k.dtype.kind not in "biuf" or not np.all(np.isfinite(k)):
                raise ValueError(f"kl[{i}] must be a finite real array of shape ({d},) like codes[{i}] "
                                 f"{z[i].shape}; got shape {k.shape}, dtype {k.dtype}")
            informative.append(k.astype(np.float64) > kl_threshold)
        z[i] = StandardScaler().fit_transform(z[i])
        if kl[i] is not None:
            z[i] = z[i] * informative[i]

    pairwise = np.full((m, m), np.nan)
    raw = [[None] * m for _ in range(m)]
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            if correlation == "lasso":
                r = lasso_correlation(z[i], z[j], alpha=alpha, random_state=random_state)
            else:
                r = spearman_correlation(z[i], z[j])
            raw[i][j] = r
            if filter_low_kl:
                r = r[informative[i]][:, informative[j]]
            pairwise[i, j] = relative_strength(r)
    scores = [float(np.median(np.delete(pairwise[:, i], i))) for i in range(m)]
    out = {
        "udr": scores,
        "pairwise": pairwise.tolist(),
        "num_informative": [int(x.sum()) for x in informative],
        "settings": {"correlation": correlation, "filter_low_kl": bool(filter_low_kl),
                     "kl_threshold": kl_threshold, "alpha": alpha, "num_points": ns[0]},
    }
    if include_correlations:
        out["correlations"] = [[None if r is None else r.tolist() for r in row] for row in raw]
    return out


# ------------------------------------------------------------------ sampling
def udr_score(data, represents: Sequence[Callable], *, num_points: int = 1000, random_state=0,
              correlation: str = "lasso", filter_low_kl: bool = True, kl_threshold: float = 0.01,
              alpha: float = 0.1, device=None, encode_batch: int = 1000,
              include_correlations: bool = False) -> dict:
    """UDR of several models on the same ``num_points`` inputs sampled from a dataset.

    Draws ``data.sample_factors(num_points, rng)`` (one call; ``rng`` from
    ``random_state``), renders the images ``encode_batch`` at a time and passes each
    batch to every model under ``torch.no_grad()``. A model returning ``(mean,
    variance)`` contributes its KL per latent, :func:`gaussian_kl` over all points
    (the reference averages per-batch means of equal batches: the same number); a
    model returning codes only keeps all its latents. Then :func:`udr`.

    Args:
        data: a :class:`vaebias.data.base.GroundTruthData`.
        represents: list of M >= 2 callables ``images -> codes`` or ``images ->
            (mean, variance)`` (posterior variance sigma^2, not its log).
        num_points: inputs, >= 2 (1000 in the reference's UDR configs).
        random_state: int seed, None or ``numpy.random.Generator``.
        correlation, filter_low_kl, kl_threshold, alpha, include_correlations: see
            :func:`udr`.
        device: torch device of the images (default CPU).
        encode_batch: images per call, >= 1.

    Returns:
        :func:`udr`'s dict, with ``"kl"`` (list per model: list of d_i floats or None).

    Raises:
        ValueError: fewer than two callables, bad sizes, a malformed output of a
            model, and everything :func:`udr` raises.
    """
    import torch

    if isinstance(represents, (str, bytes)) or not isinstance(represents, (list, tuple)) \
            or len(represents) < 2:
        raise ValueError(f"represents must be a list of at least 2 callables, one per model; got "
                         f"{represents!r}")
    for i, fn in enumerate(represents):
        if not callable(fn):
            raise ValueError(f"represents[{i}] must be callable; got {type(fn).__name__}")  # noqa: TRY004
    num_points = check_int(num_points, "num_points", 2)
    encode_batch = check_int(encode_batch, "encode_batch", 1)
    rng = as_generator(random_state)
    factors = data.sample_factors(num_points, rng)
    means = [[] for _ in represents]
    variances = [[] for _ in represents]
    with torch.no_grad():
        for start in range(0, num_points, encode_batch):
            f = factors[start:start + encode_batch]
            images = data.images(f, device=device)
            for i, fn in enumerate(represents):
                c, v = check_output(fn(images), f.shape[0], with_variance=True)
                means[i].append(c)
                variances[i].append(v)
    codes, kls = [], []
    for i in range(len(represents)):
        widths = {c.shape[1] for c in means[i]}
        if len(widths) > 1:
            raise ValueError(f"represents[{i}] returned codes of different widths: {sorted(widths)}")
        codes.append(np.concatenate(means[i], axis=0))
        got = [v is not None for v in variances[i]]
        if any(got) and not all(got):
            raise ValueError(f"represents[{i}] returned variances for some batches but not for others")
        kls.append(gaussian_kl(codes[i], np.concatenate(variances[i], axis=0)) if all(got) else None)
    out = udr(codes, kls, correlation=correlation, filter_low_kl=filter_low_kl,
              kl_threshold=kl_threshold, alpha=alpha, include_correlations=include_correlations)
    out["kl"] = [None if k is None else k.tolist() for k in kls]
    return out
