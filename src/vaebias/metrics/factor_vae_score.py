"""FactorVAE disentanglement score (Kim & Mnih 2018), the disentanglement_lib way.

Definition (``evaluation/metrics/factor_vae.py``, ``compute_factor_vae``, of
disentanglement_lib, the field's reference; its configs use batch_size 64,
num_train 10,000, num_eval 5,000, num_variance_estimate 10,000, prune threshold 0.05):

1. *global variances*: encode ``num_variance_estimate`` uniformly drawn points and
   take every latent's variance with ``ddof=1``;
2. *active dims*: latents whose global standard deviation is ``>= 0.05``
   (``prune_dims``); with no active latent the score is 0;
3. *a vote*: pick a factor ``k`` uniformly, draw ``batch_size`` factor rows, set
   factor ``k`` of every row to the value of the first row, encode, take each
   latent's variance over the batch (``ddof=1``) divided by its global variance,
   and vote ``(k, argmin over the active latents)``;
4. *classifier*: every latent predicts the factor that got most of its
   ``num_train`` training votes (ties: the lowest factor index); accuracy = share
   of votes that the classifier gets right, on the training votes and on
   ``num_eval`` fresh evaluation votes.

Only factors with more than one class are voted on (dSprites' colour is not: the
reference's dSprites loader drops it from its latent factors too).

Divergences from the reference, none of which changes a score:

- the reference's ``num_active_dims`` is ``len`` of the boolean mask, i.e. the
  number of *all* latents; here it is the number of active latents;
- the reference records the argmin's position among the active latents in its
  vote table; here the vote goes to the latent's own index (a relabelling of the
  columns; accuracies are identical). The table's rows are the voted factors, as
  in the reference (whose datasets list only the varying factors), so a latent
  without training votes predicts the first voted factor in both;
- the codes are taken as float64 (the reference computes in the float32 of its
  TensorFlow encoder);
- draws use a ``numpy.random.Generator`` in the order documented at
  :func:`factor_vae_score` (the reference uses ``RandomState``, one vote at a
  time), so the same seed gives different samples than disentanglement_lib.

The array-level core (:func:`factor_vae_votes`, :func:`factor_vae_accuracy`) takes
codes and votes; :func:`factor_vae_score` samples a dataset and encodes many vote
batches per ``represent`` call.
"""

from __future__ import annotations

import math
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
from vaebias.metrics.pool import ValueGroups, check_pool
from vaebias.metrics.registry import register

__all__ = ["factor_vae_accuracy", "factor_vae_score", "factor_vae_score_from_pool", "factor_vae_votes",
           "prune_dims"]

#: images per ``represent`` call in the sampling functions (100 vote batches of 64)
DEFAULT_ENCODE_BATCH = 6400


# ------------------------------------------------------------ shared helpers


# ------------------------------------------------------------ array-level core
def prune_dims(global_variances, threshold: float = 0.05) -> np.ndarray:
    """Active latents: ``sqrt(variance) >= threshold`` (disentanglement_lib's ``prune_dims``).

    Args:
        global_variances: real array (d,) of non-negative variances.
        threshold: standard-deviation threshold (0.05 in disentanglement_lib's configs).

    Returns:
        bool array (d,).

    Raises:
        ValueError: not 1-D, non-finite or negative variances; a negative or
            non-finite threshold.
    """
    v = to_numpy(global_variances)
    if v.ndim != 1 or v.dtype.kind not in "biuf":
        raise ValueError(f"global_variances must be a real 1-D array (d,); got shape {v.shape}, "
                         f"dtype {v.dtype}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)) or (v.size and v.min() < 0):
        bad = v[~np.isfinite(v) | (v < 0)][0]
        raise ValueError(f"global_variances must be finite and >= 0; got {bad}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0; got {threshold!r}")
    return np.sqrt(v) >= threshold


def factor_vae_votes(batch_codes, factor_index, global_variances, num_factors: int, *,
                     threshold: float = 0.05) -> np.ndarray:
    """The vote table of a set of fixed-factor batches.

    Vote ``v`` goes to ``(factor_index[v], j)`` where ``j`` is the active latent
    (see :func:`prune_dims`) with the smallest ``var_ddof1(batch_codes[v, :, j]) /
    global_variances[j]``; ties go to the lowest latent index.

    Args:
        batch_codes: real array (n, B, d), B >= 2: the codes of the B points of each
            of the n batches (numpy or torch; computed in float64).
        factor_index: int array (n,): the row of the factor held fixed in each batch
            (its position among the voted factors), in ``0 .. num_factors - 1``.
        global_variances: real array (d,): the latents' variances over the data
            (``ddof=1``).
        num_factors: K, the number of rows of the table (the voted factors).
        threshold: active-dimension threshold on the global standard deviation.

    Returns:
        int64 array (K, d): ``votes[k, j]`` = number of batches with factor k fixed
        whose argmin was latent j. Columns of inactive latents are 0.

    Raises:
        ValueError: wrong shapes, B < 2, non-finite codes, a factor index outside
            ``0 .. K-1``, or no active latent (the score is then 0 by definition;
            :func:`factor_vae_score` handles that case before voting).
    """
    codes = to_numpy(batch_codes)
    if codes.ndim != 3 or codes.dtype.kind not in "biuf":
        raise ValueError(f"batch_codes must be a real array (n, B, d); got shape {codes.shape}, "
                         f"dtype {codes.dtype}")
    n, b, d = codes.shape
    if b < 2:
        raise ValueError(f"batch_codes needs at least 2 points per batch (variance with ddof=1); "
                         f"got shape {codes.shape}")
    codes = codes.astype(np.float64, copy=False)
    if not np.all(np.isfinite(codes)):
        raise ValueError("batch_codes must be finite")
    num_factors = check_int(num_factors, "num_factors", 1)
    k = to_numpy(factor_index)
    if k.shape != (n,) or (k.size and k.dtype.kind not in "iu"):
        raise ValueError(f"factor_index must be an int array of shape ({n},); got shape {k.shape}, "
                         f"dtype {k.dtype}")
    k = k.astype(np.int64)
    if k.size and (k.min() < 0 or k.max() >= num_factors):
        bad = k[(k < 0) | (k >= num_factors)][0]
        raise ValueError(f"factor_index holds {bad}; expected 0 <= index < num_factors = {num_factors}")
    gv = to_numpy(global_variances)
    if gv.shape != (d,):
        raise ValueError(f"global_variances must have shape ({d},) to match batch_codes {codes.shape}; "
                         f"got {gv.shape}")
    active = prune_dims(gv, threshold)
    if not active.any():
        raise ValueError(f"no active latent: every global standard deviation is below {threshold}")
    gv = gv.astype(np.float64)
    local = np.var(codes, axis=1, ddof=1)  # (n, d)
    active_idx = np.flatnonzero(active)
    winner = active_idx[np.argmin(local[:, active] / gv[active], axis=1)]
    votes = np.zeros((num_factors, d), dtype=np.int64)
    np.add.at(votes, (k, winner), 1)
    return votes


def _check_votes(votes, name: str, shape=None) -> np.ndarray:
    v = to_numpy(votes)
    if v.ndim != 2 or (v.size and v.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 2-D int array (K, d) of vote counts; got shape {v.shape}, "
                         f"dtype {v.dtype}")
    if shape is not None and v.shape != shape:
        raise ValueError(f"{name} must have the shape of train_votes {shape}; got {v.shape}")
    v = v.astype(np.int64)
    if v.size and v.min() < 0:
        raise ValueError(f"{name} must be non-negative counts; got {v.min()}")
    if v.sum() == 0:
        raise ValueError(f"{name} holds no vote (all counts are 0; shape {v.shape})")
    return v


def factor_vae_accuracy(train_votes, eval_votes=None) -> dict:
    """Majority-vote classifier of the FactorVAE score and its accuracies.

    Latent ``j`` predicts ``argmax_k train_votes[k, j]`` (ties: the lowest ``k``);
    the accuracy of a vote table is ``sum_j votes[classifier[j], j] / sum(votes)``.

    Args:
        train_votes: int array (K, d) of non-negative counts, at least one vote.
        eval_votes: optional int array (K, d) of the same shape.

    Returns:
        dict with ``"train_accuracy"`` (float), ``"eval_accuracy"`` (float, only
        when ``eval_votes`` is given) and ``"classifier"`` (list of d ints: the
        predicted row of each latent; a latent without training votes predicts row
        0, the argmax of an all-zero column, as in the reference).

    Raises:
        ValueError: not 2-D integer counts, negative counts, no vote, shapes differ.
    """
    tv = _check_votes(train_votes, "train_votes")
    cls = np.argmax(tv, axis=0)
    cols = np.arange(tv.shape[1])
    out = {"train_accuracy": float(tv[cls, cols].sum() / tv.sum())}
    if eval_votes is not None:
        ev = _check_votes(eval_votes, "eval_votes", tv.shape)
        out["eval_accuracy"] = float(ev[cls, cols].sum() / ev.sum())
    out["classifier"] = cls.tolist()
    return out


# ------------------------------------------------------------------ sampling
def _empty_result(global_variances, active, varying, settings) -> dict:
    """The score's result before voting (accuracies 0, as when no latent is active)."""
    return {
        "train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": int(active.sum()),
        "active_dims": active.tolist(), "global_variances": global_variances.tolist(),
        "classifier": [], "train_votes": [], "eval_votes": [],
        "voted_factors": varying.tolist(), "settings": settings,
    }


def _with_votes(out: dict, train_votes, eval_votes, varying) -> dict:
    """``out`` completed with the majority-vote classifier of the vote tables."""
    acc = factor_vae_accuracy(train_votes, eval_votes)
    out.update(train_accuracy=acc["train_accuracy"], eval_accuracy=acc["eval_accuracy"],
               classifier=varying[acc["classifier"]].tolist(), train_votes=train_votes.tolist(),
               eval_votes=eval_votes.tolist())
    return out


def _fixed_factor_batches(data, rng, varying, n: int, batch_size: int):
    """Draw ``n`` fixed-factor batches: (position in ``varying`` of the fixed factor (n,),
    factor rows int64 (n, B, K))."""
    pos, k = draw_factor_index(rng, varying, n)
    rows = data.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
    v = np.arange(n)
    rows[v, :, k] = rows[v, 0, k][:, None]
    return pos, rows


def _vote_set(data, represent, rng, varying, n, batch_size, global_variances, threshold, device,
              encode_batch):
    k, rows = _fixed_factor_batches(data, rng, varying, n, batch_size)
    num_factors = rows.shape[2]
    per_call = max(1, encode_batch // batch_size)  # whole batches per represent call
    votes = np.zeros((varying.size, global_variances.size), dtype=np.int64)
    for start in range(0, n, per_call):
        f = rows[start:start + per_call]
        codes = encode_rows(data, represent, f.reshape(-1, num_factors), device=device,
                             encode_batch=f.shape[0] * batch_size)
        if codes.shape[1] != global_variances.size:
            raise ValueError(f"represent returned {codes.shape[1]} latents for the vote batches but "
                             f"{global_variances.size} for the variance sample")
        votes += factor_vae_votes(codes.reshape(f.shape[0], batch_size, -1), k[start:start + per_call],
                                  global_variances, varying.size, threshold=threshold)
    return votes


def factor_vae_score(data, represent: Callable, *, random_state=0, batch_size: int = 64,
                     num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                     device=None, encode_batch: int = DEFAULT_ENCODE_BATCH) -> dict:
    """FactorVAE score of a representation on a ground-truth dataset (disentanglement_lib).

    Draw order (one generator ``rng``; a plain loop over batches reproduces it):

    1. ``data.sample_factors(num_variance_estimate, rng)``: the variance sample;
    2. training votes: ``k = varying[rng.integers(0, len(varying), num_train)]`` where
       ``varying`` are the factors with more than one class, then
       ``rows = data.sample_factors(num_train * batch_size, rng)``; batch ``v`` is
       ``rows[v*B:(v+1)*B]`` with column ``k[v]`` set to its first row's value;
    3. evaluation votes: the same with ``num_eval``.

    Images are rendered and encoded ``encode_batch // batch_size`` whole batches per
    ``represent`` call (at least one), under ``torch.no_grad()``.

    Args:
        data: a :class:`vaebias.data.base.GroundTruthData`.
        represent: callable ``images -> codes`` (float32 tensor (n, C, H, W) on
            ``device`` -> (n, d) numpy array or tensor; for a VAE the encoder mean); a
            tuple ``(mean, variance)`` is accepted and its mean used.
        random_state: int seed, None or ``numpy.random.Generator`` (used in place).
        batch_size: points per vote batch, >= 2 (64).
        num_train, num_eval: number of training / evaluation votes, >= 1 (10,000 / 5,000).
        num_variance_estimate: points for the global variances, >= 2 (10,000).
        prune_threshold: active latents have global std >= this (0.05).
        device: torch device of the images (default CPU).
        encode_batch: images per ``represent`` call, >= 1.

    Returns:
        dict with ``"train_accuracy"``, ``"eval_accuracy"`` (floats in [0, 1]; both 0.0
        when no latent is active, as in the reference), ``"num_active_dims"`` (int),
        ``"active_dims"`` (list of d bools), ``"global_variances"`` (list of d floats),
        ``"voted_factors"`` (list of the V factor indices with more than one class),
        ``"train_votes"`` / ``"eval_votes"`` (V x d nested lists of ints: row ``r`` counts
        the batches with factor ``voted_factors[r]`` fixed; empty when no latent is
        active), ``"classifier"`` (list of d factor indices: the majority-vote
        prediction of each latent; a latent without training votes predicts
        ``voted_factors[0]``, as in the reference; empty when no latent is active) and
        ``"settings"`` (the sizes above).

    Raises:
        ValueError: a bad size or threshold, a dataset without a varying factor, a
            malformed or non-finite output of ``represent``.
    """
    require_full_grid(data, "the FactorVAE score's fresh interventions (score_sampling='pool' works on a sample)")
    batch_size = check_int(batch_size, "batch_size", 2)
    num_train = check_int(num_train, "num_train", 1)
    num_eval = check_int(num_eval, "num_eval", 1)
    num_variance_estimate = check_int(num_variance_estimate, "num_variance_estimate", 2)
    encode_batch = check_int(encode_batch, "encode_batch", 1)
    prune_dims(np.zeros(0), prune_threshold)  # validates the threshold
    if not callable(represent):
        raise ValueError(f"represent must be callable; got {type(represent).__name__}")  # noqa: TRY004
    varying = varying_factor_indices(data)
    rng = as_generator(random_state)

    factors = data.sample_factors(num_variance_estimate, rng)
    codes = encode_rows(data, represent, factors, device=device, encode_batch=encode_batch)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = prune_dims(global_variances, prune_threshold)
    settings = {
        "batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
        "num_variance_estimate": num_variance_estimate, "prune_threshold": float(prune_threshold),
    }
    out = _empty_result(global_variances, active, varying, settings)
    if not active.any():
        return out

    def votes(n):
        return _vote_set(data, represent, rng, varying, n, batch_size, global_variances,
                         prune_threshold, device, encode_batch)

    train_votes = votes(num_train)  # drawn before the evaluation votes
    eval_votes = votes(num_eval)
    return _with_votes(out, train_votes, eval_votes, varying)


def factor_vae_score_from_pool(codes, factors, *, random_state=0, batch_size: int = 64,
                               num_train: int = 10_000, num_eval: int = 5_000,
                               prune_threshold: float = 0.05) -> dict:
    """FactorVAE score with the vote batches drawn from an encoded pool (no encoding).

    The procedure of :func:`factor_vae_score` on the pool's empirical distribution
    (:mod:`vaebias.metrics.pool`): the global variances are those of all pool codes
    (``ddof=1``); a vote picks a factor ``k`` uniformly among the factors that vary in
    the pool, an anchor row uniformly, and ``batch_size - 1`` rows uniformly with
    replacement among the pool rows sharing the anchor's value of ``k``.

    Draw order (one generator ``rng``), for the training and then the evaluation votes:
    ``pos = rng.integers(0, V, n)`` (``k = varying[pos]``), ``anchors =
    rng.integers(0, N, n)``, then ``rng.random((n, batch_size - 1))`` for the other rows.

    Args:
        codes: real array (N, d): the pool's codes (for a VAE the encoder means).
        factors: int array (N, K): the pool's factor rows, uniformly drawn.
        random_state: int seed, None or ``numpy.random.Generator`` (used in place).
        batch_size, num_train, num_eval, prune_threshold: as in :func:`factor_vae_score`.

    Returns:
        the dict of :func:`factor_vae_score`; ``"settings"`` adds ``"sampling": "pool"``
        and ``"pool_size"``; ``num_variance_estimate`` is the pool size.

    Raises:
        ValueError: a bad size or threshold, a malformed pool, a value of a varying
            factor held by fewer than ``batch_size`` pool rows.
    """
    batch_size = check_int(batch_size, "batch_size", 2)
    num_train = check_int(num_train, "num_train", 1)
    num_eval = check_int(num_eval, "num_eval", 1)
    prune_dims(np.zeros(0), prune_threshold)  # validates the threshold
    c, f = check_pool(codes, factors)
    groups = ValueGroups(f, batch_size)
    varying = groups.varying
    rng = as_generator(random_state)
    global_variances = np.var(c, axis=0, ddof=1)
    active = prune_dims(global_variances, prune_threshold)
    settings = {
        "batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
        "num_variance_estimate": int(c.shape[0]), "prune_threshold": float(prune_threshold),
        "sampling": "pool", "pool_size": int(c.shape[0]),
    }
    out = _empty_result(global_variances, active, varying, settings)
    if not active.any():
        return out

    def votes(n):
        pos, k = draw_factor_index(rng, varying, n)
        anchors = rng.integers(0, c.shape[0], size=n)
        others = groups.same_value(rng, k, np.repeat(anchors[:, None], batch_size - 1, axis=1))
        rows = np.concatenate([anchors[:, None], others], axis=1)  # (n, B)
        table = np.zeros((varying.size, c.shape[1]), dtype=np.int64)
        for s in range(0, n, 2000):  # bounded memory: 2000 x B x d codes at a time
            table += factor_vae_votes(c[rows[s:s + 2000]], pos[s:s + 2000], global_variances,
                                      varying.size, threshold=prune_threshold)
        return table

    train_votes = votes(num_train)
    eval_votes = votes(num_eval)
    return _with_votes(out, train_votes, eval_votes, varying)


@register("factor_vae_score")
def _factor_vae_metric(ctx) -> dict:
    """Registry adapter: defaults of disentanglement_lib, draws from ``ctx.rng(2)``; with
    ``ctx.score_sampling == "pool"`` from the shared and test samples' codes."""
    if ctx.score_sampling == "pool":
        codes, factors = evaluation_pool(ctx)
        return factor_vae_score_from_pool(codes, factors, random_state=ctx.rng(2),
                                          num_train=ctx.score_num_train,
                                          num_eval=ctx.score_num_eval)
    return factor_vae_score(ctx.data, ctx.represent, random_state=ctx.rng(2), device=ctx.device,
                            encode_batch=ctx.batch_size, num_train=ctx.score_num_train,
                            num_eval=ctx.score_num_eval)
