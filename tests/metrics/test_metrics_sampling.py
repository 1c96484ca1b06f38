"""Tests of the sampling-level metrics: FactorVAE score, BetaVAE score and UDR.

Three kinds of checks: hand-computed cases of the array-level cores; plain
one-batch-at-a-time loop implementations of the disentanglement_lib definitions
(written here, following the documented draw order) that must give the same
numbers as the vectorised code; and sanity values on tiny datasets (an exact
factor code scores 1, a code that ignores the image scores chance)."""

from __future__ import annotations

import importlib
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.preprocessing import StandardScaler

from vaebias.data.base import GroundTruthData
from vaebias.metrics import (
    available,
    beta_vae_score,
    evaluate,
    factor_vae_score,
    udr,
    udr_score,
)

fv = importlib.import_module("vaebias.metrics.factor_vae_score")
bv = importlib.import_module("vaebias.metrics.beta_vae_score")
um = importlib.import_module("vaebias.metrics.udr")


# ------------------------------------------------------------------ fixtures
class _Tiny(GroundTruthData):
    """Factors (1, 5, 4, 3) - the first is constant like dSprites' colour - written
    as class / size into the four pixels of a 1x1x4 image."""

    factor_names = ("const", "a", "b", "c")
    factor_sizes = (1, 5, 4, 3)
    observation_shape = (1, 1, 4)
    name = "tiny4"

    def _images_at(self, factors, device):
        f = torch.as_tensor(factors, dtype=torch.float32, device=device)
        sizes = torch.tensor(self.factor_sizes, dtype=torch.float32, device=device)
        return (f / sizes)[:, None, None, :]


def _tiny_identity(images):
    """The three varying factors' class indices, recovered exactly, as float64."""
    x = images[:, 0, 0, :].double().numpy()
    return np.rint(x[:, 1:] * np.array([5.0, 4.0, 3.0]))


_W = np.random.default_rng(11).normal(size=(5, 4))


def _tiny_entangled(images):
    """A deterministic, per-row (batch-size independent) entangled code with 5 latents,
    the last one constant (inactive)."""
    x = images[:, 0, 0, :].double().numpy()
    z = np.tanh((x[:, None, :] * _W[None]).sum(-1))
    z[:, 4] = 0.25
    return z


def _toy_identity(data):
    offs = torch.as_tensor(data._offsets)

    def represent(images):
        x = images[:, 0]
        col0 = x.amax(dim=1).argmax(dim=1)  # first on column
        row0 = x.amax(dim=2).argmax(dim=1)  # first on row
        f = torch.stack([torch.searchsorted(offs, col0), torch.searchsorted(offs, row0)], 1)
        return f.double() + 1e-3 * torch.sin(1000.0 * images.sum(dim=(1, 2, 3)))[:, None]

    return represent


def _random_represent(d, seed=0):
    g = np.random.default_rng(seed)
    return lambda images: g.normal(size=(images.shape[0], d))


# ------------------------------------------- independent loop implementations
def _loop_factor_vae(data, represent, seed, batch_size, num_train, num_eval, num_var,
                     threshold=0.05):
    """disentanglement_lib's FactorVAE score, one batch per represent call, with the
    draw order documented in factor_vae_score."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(data.factor_sizes)
    varying = np.flatnonzero(sizes > 1)
    codes = np.asarray(represent(data.images(data.sample_factors(num_var, rng))), dtype=np.float64)
    gvar = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(gvar) >= threshold
    act_idx = np.flatnonzero(active)

    def votes(n):
        pos = rng.integers(0, varying.size, size=n)  # row of the vote table
        rows = data.sample_factors(n * batch_size, rng)
        table = np.zeros((varying.size, gvar.size), dtype=np.int64)
        for v in range(n):
            k = varying[pos[v]]
            f = rows[v * batch_size:(v + 1) * batch_size].copy()
            f[:, k] = f[0, k]
            r = np.asarray(represent(data.images(f)), dtype=np.float64)
            local = np.var(r, axis=0, ddof=1)
            table[pos[v], act_idx[np.argmin(local[active] / gvar[active])]] += 1
        return table

    train, ev = votes(num_train), votes(num_eval)
    cls = np.argmax(train, axis=0)
    cols = np.arange(train.shape[1])
    return train, ev, train[cls, cols].sum() / train.sum(), ev[cls, cols].sum() / ev.sum(), gvar


def _loop_beta_vae_points(data, represent, rng, batch_size, n):
    sizes = np.asarray(data.factor_sizes)
    varying = np.flatnonzero(sizes > 1)
    k = varying[rng.integers(0, varying.size, size=n)]
    rows1 = data.sample_factors(n * batch_size, rng)
    rows2 = data.sample_factors(n * batch_size, rng)
    feats = np.zeros((n, np.asarray(represent(data.images(rows1[:1]))).shape[1]))
    for v in range(n):
        f1 = rows1[v * batch_size:(v + 1) * batch_size]
        f2 = rows2[v * batch_size:(v + 1) * batch_size].copy()
        f2[:, k[v]] = f1[:, k[v]]
        r1 = np.asarray(represent(data.images(f1)), dtype=np.float64)
        r2 = np.asarray(represent(data.images(f2)), dtype=np.float64)
        feats[v] = np.mean(np.abs(r1 - r2), axis=0)
    return feats, k


def _loop_udr(codes, kls, correlation, filter_low_kl=True, thr=0.01):
    """disentanglement_lib's compute_udr_sklearn after sampling, pair by pair."""
    reps, masks = [], []
    for c, kl in zip(codes, kls):
        z = StandardScaler().fit(c).transform(c)
        if kl is not None:
            z = z * np.greater(kl, thr)
            masks.append(kl > thr)
        else:
            masks.append(np.ones(c.shape[1], bool))
        reps.append(z)
    m = len(codes)
    dis = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            if correlation == "lasso":
                coef = Lasso(alpha=0.1, random_state=0).fit(reps[i], reps[j]).coef_
                r = np.abs(np.reshape(coef, (reps[j].shape[1], reps[i].shape[1]))).T
            else:
                r = np.zeros((reps[i].shape[1], reps[j].shape[1]))
                with warnings.catch_warnings():  # constant (zeroed) latents: nan, as scipy warns
                    warnings.simplefilter("ignore")
                    for p in range(r.shape[0]):
                        for q in range(r.shape[1]):
                            r[p, q] = abs(spearmanr(reps[i][:, p], reps[j][:, q],
                                                    nan_policy="omit")[0])
            if filter_low_kl:
                r = r[masks[i]][:, masks[j]]
            with np.errstate(invalid="ignore", divide="ignore"):
                sx = np.nanmean(np.nan_to_num(np.max(r, axis=0) ** 2 / np.sum(r, axis=0)))
                sy = np.nanmean(np.nan_to_num(np.max(r, axis=1) ** 2 / np.sum(r, axis=1)))
            dis[i, j] = (sx + sy) / 2
    return dis, [float(np.median(np.delete(dis[:, i], i))) for i in range(m)]


# ================================================================ FactorVAE
def test_majority_vote_accuracy_by_hand():
    train = np.array([[5, 0, 1, 2, 0], [2, 3, 0, 2, 0]])
    # classifier: latent 0 -> factor 0 (5 > 2), 1 -> 1, 2 -> 0, 3 -> 0 (tie: lowest),
    # 4 -> no training vote. Right: 5 + 3 + 1 + 2 of 15.
    ev = np.array([[1, 1, 0, 3, 7], [1, 2, 4, 0, 1]])
    # right on eval: 1 (l0, f0) + 2 (l1, f1) + 0 (l2 predicts f0) + 3 (l3, f0) + 7: the argmax
    # of latent 4's all-zero training column is factor 0 (as in the reference).
    r = fv.factor_vae_accuracy(train, ev)
    assert r["train_accuracy"] == pytest.approx(11 / 15, abs=1e-15)
    assert r["eval_accuracy"] == pytest.approx((1 + 2 + 0 + 3 + 7) / 20, abs=1e-15)
    assert r["classifier"] == [0, 1, 0, 0, 0]
    assert set(fv.factor_vae_accuracy(train)) == {"train_accuracy", "classifier"}


def test_factor_vae_votes_by_hand():
    gv = np.array([1.0, 4.0, 1e-4])  # std 1, 2, 0.01: the last latent is inactive
    batches = np.array([
        # batch 0: latent 0 constant -> ratio 0 -> vote latent 0
        [[0.0, 0.0, 5.0], [0.0, 2.0, 1.0], [0.0, 4.0, 3.0]],
        # batch 1: ratios 1/1, 1/4, 0/1e-4 (inactive) -> latent 1
        [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 0.0]],
        # batch 2: ratios 1/1 and 4/4: a tie -> the lower index, latent 0
        [[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [2.0, 4.0, 0.0]],
    ])
    votes = fv.factor_vae_votes(batches, np.array([1, 0, 1]), gv, 2)
    np.testing.assert_array_equal(votes, [[0, 1, 0], [2, 0, 0]])
    assert votes.dtype == np.int64
    np.testing.assert_array_equal(fv.prune_dims(gv), [True, True, False])
    assert fv.prune_dims(np.array([0.0025]))[0]  # std exactly 0.05 is active (>=)
    with pytest.raises(ValueError, match=r"no active latent"):
        fv.factor_vae_votes(batches, np.array([1, 0, 1]), np.full(3, 1e-4), 2)


@pytest.mark.parametrize("represent, encode_batch", [(_tiny_entangled, 700), (_tiny_identity, 64)])
def test_factor_vae_equals_a_plain_loop(represent, encode_batch):
    data = _Tiny()
    train, ev, tacc, eacc, gvar = _loop_factor_vae(data, represent, 5, 16, 200, 120, 500)
    r = factor_vae_score(data, represent, random_state=5, batch_size=16, num_train=200,
                         num_eval=120, num_variance_estimate=500, encode_batch=encode_batch)
    np.testing.assert_array_equal(r["train_votes"], train)
    np.testing.assert_array_equal(r["eval_votes"], ev)
    assert r["train_accuracy"] == tacc and r["eval_accuracy"] == eacc
    np.testing.assert_allclose(r["global_variances"], gvar, rtol=1e-12, atol=0)  # ddof=1
    assert r["voted_factors"] == [1, 2, 3]  # the constant factor never votes
    assert set(r["classifier"]) <= {1, 2, 3}
    if represent is _tiny_entangled:
        assert r["num_active_dims"] == 4 and r["active_dims"] == [True] * 4 + [False]
        assert 0.3 < r["eval_accuracy"] < 1.0  # entangled: informative but imperfect


def test_factor_vae_batching_does_not_change_the_result():
    data = _Tiny()
    kw = {"random_state": 1, "batch_size": 8, "num_train": 50, "num_eval": 30,
          "num_variance_estimate": 100}
    calls = []

    def rep(images):
        calls.append(images.shape[0])
        return _tiny_entangled(images)

    a = factor_vae_score(data, rep, encode_batch=1, **kw)  # one batch of 8 per call at least
    n_small = len(calls)
    b = factor_vae_score(data, rep, encode_batch=10_000, **kw)
    assert a == b
    assert set(calls[100:n_small]) == {8}  # votes: whole batches (never split)
    assert len(calls) - n_small == 1 + 2  # variance sample, train votes, eval votes


def test_factor_vae_sanity_on_toy_squares(toy):
    ident = _toy_identity(toy)
    r = factor_vae_score(toy, ident, random_state=0, num_train=300, num_eval=200,
                         num_variance_estimate=500)
    assert r["train_accuracy"] == 1.0 and r["eval_accuracy"] == 1.0
    assert r["num_active_dims"] == 2 and r["classifier"] == [0, 1]


def test_factor_vae_random_code_is_chance():
    data = _Tiny()  # three varying factors: chance 1/3
    r = factor_vae_score(data, _random_represent(4), random_state=0, batch_size=32,
                         num_train=1000, num_eval=2000, num_variance_estimate=500)
    assert abs(r["eval_accuracy"] - 1 / 3) < 0.05
    assert r["num_active_dims"] == 4


def test_factor_vae_no_active_dims_scores_zero():
    r = factor_vae_score(_Tiny(), lambda x: np.full((x.shape[0], 3), 2.0), num_train=5,
                         num_eval=5, num_variance_estimate=50)
    assert r["train_accuracy"] == 0.0 and r["eval_accuracy"] == 0.0
    assert r["num_active_dims"] == 0 and r["train_votes"] == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 1}, r"batch_size must be an integer >= 2; got 1"),
        ({"num_train": 0}, r"num_train must be an integer >= 1; got 0"),
        ({"num_eval": 2.5}, r"num_eval must be an integer >= 1; got 2.5"),
        ({"num_variance_estimate": 1}, r"num_variance_estimate must be an integer >= 2; got 1"),
        ({"encode_batch": 0}, r"encode_batch must be an integer >= 1; got 0"),
        ({"prune_threshold": -1.0}, r"threshold must be a finite number >= 0; got -1.0"),
        ({"random_state": "abc"}, r"random_state must be an int seed.*'abc'"),
    ],
)
def test_factor_vae_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        factor_vae_score(_Tiny(), _tiny_identity, **kwargs)


def test_factor_vae_bad_represent_and_data():
    small = {"num_train": 2, "num_eval": 2, "num_variance_estimate": 10}
    with pytest.raises(ValueError, match=r"codes must be finite.*nan"):
        factor_vae_score(_Tiny(), lambda x: np.full((x.shape[0], 2), np.nan), **small)
    with pytest.raises(ValueError, match=r"codes of shape \(n, d\) for n=10 images; got shape \(3, 2\)"):
        factor_vae_score(_Tiny(), lambda x: np.zeros((3, 2)), **small)
    with pytest.raises(ValueError, match=r"represent must be callable"):
        factor_vae_score(_Tiny(), "nope", **small)

    class _Const(_Tiny):
        factor_sizes = (1, 1, 1, 1)

    with pytest.raises(ValueError, match=r"at least one factor with more than one class.*\(1, 1, 1, 1\)"):
        factor_vae_score(_Const(), _tiny_identity, **small)
    with pytest.raises(ValueError, match=r"factor_index holds 2; expected 0 <= index < num_factors = 2"):
        fv.factor_vae_votes(np.zeros((1, 2, 2)), np.array([2]), np.ones(2), 2)
    with pytest.raises(ValueError, match=r"at least 2 points per batch"):
        fv.factor_vae_votes(np.zeros((1, 1, 2)), np.array([0]), np.ones(2), 2)
    with pytest.raises(ValueError, match=r"eval_votes must have the shape of train_votes \(2, 2\)"):
        fv.factor_vae_accuracy(np.ones((2, 2), int), np.ones((2, 3), int))
    with pytest.raises(ValueError, match=r"train_votes holds no vote"):
        fv.factor_vae_accuracy(np.zeros((2, 2), int))


# ================================================================= BetaVAE
def test_beta_vae_features_by_hand():
    c1 = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    c2 = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(bv.beta_vae_features(c1, c2), [[1.5, 1.5]])
    with pytest.raises(ValueError, match=r"same shape.*\(1, 2, 2\) and \(1, 1, 2\)"):
        bv.beta_vae_features(c1, c2[:, :1])


def test_beta_vae_accuracy_by_hand():
    # features: the fixed factor's latent is 0, the others 1 -> separable
    x = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]] * 4)
    y = np.array([0, 1, 2] * 4)
    r = bv.beta_vae_accuracy(x, y, x[:3], np.array([0, 1, 1]))
    assert r == {"train_accuracy": 1.0, "eval_accuracy": pytest.approx(2 / 3, abs=1e-15)}
    with pytest.raises(ValueError, match=r"at least two distinct factors; got only \[1\]"):
        bv.beta_vae_accuracy(x, np.ones(12, int), x, y)


def test_beta_vae_equals_a_plain_loop():
    data = _Tiny()
    rng = np.random.default_rng(9)
    xt, yt = _loop_beta_vae_points(data, _tiny_entangled, rng, 8, 150)
    xe, ye = _loop_beta_vae_points(data, _tiny_entangled, rng, 8, 100)
    # the vectorised point sets, same generator state
    rng2 = np.random.default_rng(9)
    varying = np.array([1, 2, 3])
    xt2, yt2 = bv._point_set(data, _tiny_entangled, rng2, varying, 150, 8, None, 300)
    np.testing.assert_array_equal(yt2, yt)
    np.testing.assert_allclose(xt2, xt, rtol=0, atol=1e-12)
    model = LogisticRegression(random_state=0).fit(xt, yt)
    r = beta_vae_score(data, _tiny_entangled, random_state=9, batch_size=8, num_train=150,
                       num_eval=100, encode_batch=300)
    assert r["train_accuracy"] == np.mean(model.predict(xt) == yt)
    assert r["eval_accuracy"] == model.score(xe, ye)
    assert r["voted_factors"] == [1, 2, 3] and "sklearn" in r["settings"]


def test_beta_vae_sanity_on_toy_squares(toy):
    r = beta_vae_score(toy, _toy_identity(toy), random_state=0, batch_size=16, num_train=200,
                       num_eval=100)
    assert r["train_accuracy"] == 1.0 and r["eval_accuracy"] == 1.0


def test_beta_vae_random_code_is_chance():
    r = beta_vae_score(_Tiny(), _random_represent(4, seed=1), random_state=0, batch_size=16,
                       num_train=600, num_eval=1500)
    assert abs(r["eval_accuracy"] - 1 / 3) < 0.06


def test_beta_vae_validation():
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1; got 0"):
        beta_vae_score(_Tiny(), _tiny_identity, batch_size=0)

    class _One(_Tiny):
        factor_sizes = (1, 5, 1, 1)

    with pytest.raises(ValueError, match=r"at least two factors with more than one class.*\(1, 5, 1, 1\)"):
        beta_vae_score(_One(), _tiny_identity, num_train=5, num_eval=5)


# ================================================================ registry
def test_registry_runs_the_sampling_metrics_with_their_own_generators():
    assert {"factor_vae_score", "beta_vae_score"} <= set(available())
    data = _Tiny()
    res = evaluate(data, _tiny_entangled, metrics=("factor_vae_score",), seed=4, batch_size=6400)
    direct = factor_vae_score(data, _tiny_entangled, random_state=np.random.default_rng([4, 2]),
                              encode_batch=6400)
    assert res["factor_vae_score"] == direct
    s = direct["settings"]
    assert (s["batch_size"], s["num_train"], s["num_eval"], s["num_variance_estimate"]) == (
        64, 10_000, 5_000, 10_000)
    assert s["prune_threshold"] == 0.05


def test_registry_beta_vae_defaults():
    data = _Tiny()
    res = evaluate(data, _tiny_identity, metrics="beta_vae_score", seed=0, batch_size=6400)
    direct = beta_vae_score(data, _tiny_identity, random_state=np.random.default_rng([0, 3]),
                            encode_batch=6400)
    assert res["beta_vae_score"] == direct
    assert direct["eval_accuracy"] == 1.0


# ===================================================================== UDR
def _walsh(n_rows=8, cols=3):
    """Columns of a 2^3 factorial design in +-1: mean 0, std 1, exactly orthogonal."""
    g = np.stack(np.meshgrid(*[[-1.0, 1.0]] * cols, indexing="ij"), -1).reshape(-1, cols)
    return np.repeat(g, n_rows // g.shape[0], axis=0)


def test_relative_strength_by_hand():
    rs = um.relative_strength
    assert rs(np.eye(3)) == 1.0
    assert rs([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) == pytest.approx(2 / 3, abs=1e-15)
    assert rs(np.ones((3, 3))) == pytest.approx(1 / 3, abs=1e-15)
    assert rs(np.zeros((3, 3))) == 0.0
    # rectangular: columns 1, 1, 1; rows 1, 1/2 -> (1 + 3/4) / 2 = 7/8 (the paper's
    # (3 + 3/2) / (2 + 3) = 0.9 differs: the reference averages the two means)
    assert rs([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]) == pytest.approx(7 / 8, abs=1e-15)
    # a nan entry zeroes its row's and column's ratios
    assert rs([[np.nan, 0.0], [0.0, 1.0]]) == pytest.approx(0.5, abs=1e-15)
    assert rs(np.zeros((0, 3))) == 0.0
    with pytest.raises(ValueError, match=r"non-negative finite.*-1.0"):
        rs([[1.0, -1.0]])


def test_udr_two_models_by_hand():
    a = _walsh()
    b = -a[:, [2, 0, 1]] * np.array([1.0, -1.0, 1.0])  # permuted and sign-flipped
    # Lasso on exactly orthogonal standardised latents: coef = soft-threshold(1, 0.1) = 0.9
    # on the matched latent, 0 elsewhere -> R = 0.9 * permutation -> every ratio 0.81/0.9.
    for other in (a.copy(), b):
        r = udr([a, other], include_correlations=True)
        assert r["udr"] == pytest.approx([0.9, 0.9], abs=1e-12)
        assert math.isnan(r["pairwise"][0][0]) and r["pairwise"][0][1] == pytest.approx(0.9, abs=1e-12)
        assert np.sort(np.ravel(r["correlations"][0][1]))[-3:] == pytest.approx([0.9] * 3, abs=1e-12)
    # Spearman: |rho| = 1 on the match, exactly 0 between orthogonal balanced columns
    assert udr([a, b], correlation="spearman")["udr"] == pytest.approx([1.0, 1.0], abs=1e-12)
    # a model unrelated to the first: low
    noise = np.random.default_rng(0).normal(size=(400, 3))
    struct = np.random.default_rng(1).normal(size=(400, 3))
    assert max(udr([struct, noise])["udr"]) < 0.15
    assert max(udr([struct, noise], correlation="spearman")["udr"]) < 0.15


def test_udr_kl_filter_by_hand():
    rng = np.random.default_rng(2)
    a = np.c_[_walsh(16), rng.normal(size=16)]  # 4th latent: collapsed (KL 0)
    b = np.c_[-_walsh(16)[:, [1, 2, 0]], rng.normal(size=16)]
    kl = [np.array([1.0, 2.0, 0.5, 0.0]), np.array([0.3, 0.3, 0.3, 0.01])]  # 0.01 is not > 0.01
    r = udr([a, b], kl)
    assert r["udr"] == pytest.approx([0.9, 0.9], abs=1e-12) and r["num_informative"] == [3, 3]
    # unfiltered: the zeroed latents add a zero row and column: ratios 0.9, 0.9, 0.9, 0
    r = udr([a, b], kl, filter_low_kl=False)
    assert r["udr"] == pytest.approx([0.675, 0.675], abs=1e-12)
    # without KLs the random latents are kept and match nothing
    assert udr([a, b])["udr"][0] < 0.9


@pytest.mark.parametrize("correlation", ["lasso", "spearman"])
@pytest.mark.parametrize("filter_low_kl", [True, False])
def test_udr_equals_a_plain_loop(correlation, filter_low_kl):
    rng = np.random.default_rng(3)
    n = 300
    f = rng.normal(size=(n, 3))
    codes = [
        np.c_[f + 0.3 * rng.normal(size=(n, 3)), rng.normal(size=n)],
        np.c_[np.tanh(f[:, [1, 0]]), f[:, 2] + f[:, 0], 0.1 * rng.normal(size=n)],
        np.c_[rng.normal(size=(n, 2)), f[:, 2] ** 3, np.zeros(n)],
    ]
    kls = [np.array([1.0, 0.5, 0.2, 0.001]), None, np.array([0.3, 0.02, 0.9, 0.0])]
    if correlation == "spearman" and not filter_low_kl:
        kls[1] = np.array([1.0, 1.0, 1.0, 1.0])
    dis, med = _loop_udr(codes, kls, correlation, filter_low_kl)
    r = udr(codes, kls, correlation=correlation, filter_low_kl=filter_low_kl)
    got = np.nan_to_num(np.array(r["pairwise"]), nan=0.0)
    np.testing.assert_allclose(got, dis, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r["udr"], med, rtol=0, atol=1e-12)


def test_spearman_matrix_equals_scipy():
    rng = np.random.default_rng(4)
    a = np.c_[rng.normal(size=(200, 2)), np.round(rng.normal(size=200))]  # ties
    b = np.c_[a[:, 0] ** 3, rng.normal(size=200), np.full(200, 3.0)]  # constant column
    got = um.spearman_correlation(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.array([[abs(spearmanr(a[:, p], b[:, q])[0]) for q in range(3)] for p in range(3)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)  # nan == nan
    assert np.isnan(got[:, 2]).all() and got[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_gaussian_kl_by_hand():
    mean = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    var = np.array([[1.0, 1.0, math.e], [1.0, 1.0, math.e]])
    np.testing.assert_allclose(um.gaussian_kl(mean, var), [0.0, 0.5, 0.5 * (math.e - 2)], atol=1e-15)
    with pytest.raises(ValueError, match=r"variance must be finite and > 0.*-0.5"):
        um.gaussian_kl(mean, -0.5 * np.ones_like(mean))


def test_udr_score_equals_sampling_then_udr(toy):
    ident = _toy_identity(toy)

    def vae_like(images):  # (mean, variance) with a collapsed third latent
        z = ident(images)
        n = z.shape[0]
        mean = torch.cat([-z[:, [1]], 2 * z[:, [0]], torch.zeros(n, 1, dtype=z.dtype)], 1)
        var = torch.tensor([0.01, 0.02, 1.0], dtype=z.dtype).expand(n, 3)
        return mean, var

    r = udr_score(toy, [ident, vae_like], num_points=400, random_state=7, encode_batch=150)
    f = toy.sample_factors(400, np.random.default_rng(7))
    images = toy.images(f)
    m, v = vae_like(images)
    kl = um.gaussian_kl(m, v)
    direct = udr([ident(images), m], [None, kl])
    assert r["udr"] == pytest.approx(direct["udr"], abs=1e-12)
    assert r["kl"][0] is None and r["kl"][1][2] == pytest.approx(0.0, abs=1e-15)
    assert r["num_informative"] == [2, 2]
    assert r["udr"] == pytest.approx([0.9, 0.9], abs=0.02)  # lasso: a perfect match is 1 - alpha
    rs = udr_score(toy, [ident, vae_like], num_points=400, correlation="spearman")
    assert min(rs["udr"]) > 0.95


def test_udr_validation():
    a = np.zeros((10, 2)) + np.arange(10)[:, None]
    with pytest.raises(ValueError, match=r"same N inputs; got N = \[10, 9\].*\(10, 2\).*\(9, 2\)"):
        udr([a, a[:9]])
    with pytest.raises(ValueError, match=r"at least 2 arrays; got 1"):
        udr([a])
    with pytest.raises(ValueError, match=r"correlation must be one of.*'pearson'"):
        udr([a, a], correlation="pearson")
    with pytest.raises(ValueError, match=r"kl\[1\] must be a finite real array of shape \(2,\).*got shape \(3,\)"):
        udr([a, a], [None, np.ones(3)])
    with pytest.raises(ValueError, match=r"kl must be None or a list of 2 entries"):
        udr([a, a], [None])
    with pytest.raises(ValueError, match=r"codes\[1\] must be finite"):
        udr([a, a * np.nan])
    with pytest.raises(ValueError, match=r"represents must be a list of at least 2 callables"):
        udr_score(_Tiny(), [_tiny_identity])
    with pytest.raises(ValueError, match=r"num_points must be an integer >= 2; got 1"):
        udr_score(_Tiny(), [_tiny_identity, _tiny_identity], num_points=1)
