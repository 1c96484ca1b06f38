"""Tests of vaebias.metrics: MIG (against sklearn and hand-derived values), the
disentanglement_lib discretisation, active units and the evaluate loop."""

from __future__ import annotations

import importlib
import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from vaebias.data.base import GroundTruthData
from vaebias.metrics import (
    active_units,
    available,
    discretize,
    evaluate,
    mig,
    mutual_information_matrix,
)

# the package attribute ``vaebias.metrics.mig`` is the function; the module is here:
mig_module = importlib.import_module("vaebias.metrics.mig")


def _recipe_discretize(z, num_bins=20):
    """disentanglement_lib's recipe, column by column."""
    return np.stack(
        [np.digitize(z[:, j], np.histogram(z[:, j], num_bins)[1][:-1]) for j in range(z.shape[1])],
        axis=1,
    )


def _grid(*sizes, repeat=1):
    """Every combination of the factor classes, each repeated ``repeat`` times: int (n, K)."""
    g = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    return np.repeat(g, repeat, axis=0)


# ------------------------------------------------------------ discretisation
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_discretize_matches_histogram_digitize_recipe(dtype):
    rng = np.random.default_rng(0)
    z = np.concatenate(
        [
            rng.normal(size=(500, 3)),
            rng.exponential(size=(500, 1)) * 1e3,
            np.full((500, 1), 3.25),  # constant column
            rng.integers(0, 5, size=(500, 1)).astype(float),  # many ties, values on edges
            np.round(rng.uniform(-1, 1, size=(500, 1)), 1),
        ],
        axis=1,
    ).astype(dtype)
    for b in (1, 2, 7, 20):
        got = discretize(z, b)
        np.testing.assert_array_equal(got, _recipe_discretize(z, b))
        assert got.dtype == np.int64 and got.min() >= 1 and got.max() <= b
    # a constant column lands in one bin; a non-constant column's max is in the top bin
    d = discretize(z, 20)
    assert np.unique(d[:, 4]).size == 1
    assert d[:, 0].max() == 20 and d[:, 0].min() == 1


def test_discretize_accepts_torch():
    z = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(discretize(z), _recipe_discretize(z.numpy()))


# ------------------------------------------------------ mutual information
def test_mutual_information_matrix_equals_sklearn():
    rng = np.random.default_rng(1)
    n = 3000
    a = np.stack(
        [
            rng.integers(0, 2, n),
            rng.integers(0, 40, n),
            rng.choice([0, 5, 17, 99], n),  # labels with gaps
            np.zeros(n, dtype=int),  # a single class -> MI 0
            rng.integers(10**9, 10**9 + 7, n),  # huge label values (np.unique path)
        ],
        axis=1,
    )
    b = np.stack(
        [
            (a[:, 1] // 3 + rng.integers(0, 3, n)),  # dependent on a[:, 1]
            rng.integers(1, 21, n),
            a[:, 0] * 2 + (rng.random(n) < 0.1),
        ],
        axis=1,
    )
    got = mutual_information_matrix(a, b)
    ref = np.array([[mutual_info_score(a[:, i], b[:, j]) for j in range(b.shape[1])] for i in range(a.shape[1])])
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.all(got[3] == 0.0)
    assert got[1, 0] > 0.5  # the dependence is visible


def test_mutual_information_matrix_sparse_path_equals_sklearn(monkeypatch):
    rng = np.random.default_rng(2)
    n = 4000
    a = rng.integers(0, 2500, size=(n, 2))
    b = np.stack([a[:, 0] // 2, rng.integers(0, 3000, n)], axis=1)
    ref = np.array([[mutual_info_score(a[:, i], b[:, j]) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(mutual_information_matrix(a, b), ref, rtol=0, atol=1e-12)
    # force the sort-based path even for small tables: same numbers
    monkeypatch.setattr(mig_module, "_DENSE_CELL_LIMIT", 0)
    np.testing.assert_allclose(mutual_information_matrix(a, b), ref, rtol=0, atol=1e-12)
    small = rng.integers(0, 6, size=(500, 3))
    ref_small = np.array([[mutual_info_score(small[:, i], small[:, j]) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(mutual_information_matrix(small, small), ref_small, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mig_internals_equal_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    f = np.stack([rng.integers(0, s, n) for s in (3, 6, 40, 1, 2)], axis=1)
    z = rng.normal(size=(n, 6))
    z[:, 0] += f[:, 2] * 0.3
    z[:, 1] = np.tanh(f[:, 1] - 2.5 + 0.2 * z[:, 1])
    z[:, 5] = 0.7  # constant latent
    r = mig(z, f)
    zd = _recipe_discretize(z)
    ref_mi = np.array([[mutual_info_score(f[:, k], zd[:, j]) for j in range(6)] for k in range(5)])
    ref_h = np.array([mutual_info_score(f[:, k], f[:, k]) for k in range(5)])
    np.testing.assert_allclose(r["mutual_information"], ref_mi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r["entropy"], ref_h, rtol=0, atol=1e-12)
    s = np.sort(ref_mi, axis=1)
    ref_gaps = (s[:, -1] - s[:, -2]) / np.where(ref_h > 0, ref_h, np.nan)
    np.testing.assert_allclose(r["gaps"], ref_gaps, rtol=0, atol=1e-12)  # nan == nan here
    assert math.isnan(r["gaps"][3])  # the one-class factor
    assert r["mig"] == pytest.approx(np.nanmean(ref_gaps), abs=1e-12)
    assert np.all(np.array(r["mutual_information"])[:, 5] == 0.0)


# ------------------------------------------------------------- MIG by hand
def test_mig_hand_computed_case():
    # 8 points, factors f = 0000 1111 and g = 0101 0101 (independent, H = log 2 each).
    # latent z1 = f (affinely rescaled), latent z2 = 0001 1111; both take two values,
    # which the 20 bins keep apart (bins 1 and 20).
    #   I(f;z1) = log 2,  I(g;z1) = 0 (f and g are exactly independent)
    #   f vs z2: cells (f0,z0)=3, (f0,z1)=1, (f1,z1)=4 with p(z0)=3/8, p(z1)=5/8:
    #     I = 3/8 log 2 + 1/8 log(2/5) + 1/2 log(8/5) = 2 log 2 - 5/8 log 5 ~ 0.3804
    #   g vs z2: cells (g0,z0)=2, (g1,z0)=1, (g0,z1)=2, (g1,z1)=3:
    #     I = 1/4 log(4/3) + 1/8 log(2/3) + 1/4 log(4/5) + 3/8 log(6/5)
    #       = 3/2 log 2 - 5/8 log 5 ~ 0.0338   (the log 3 terms cancel)
    #   gap_f = (log 2 - (2 log 2 - 5/8 log 5)) / log 2 = 5/8 log2(5) - 1 ~ 0.4512
    #   gap_g = (3/2 log 2 - 5/8 log 5 - 0) / log 2     = 3/2 - 5/8 log2(5) ~ 0.0488
    #   MIG = (gap_f + gap_g) / 2 = 1/4 exactly.
    f = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    g = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    z1 = 3.7 * f - 1.0
    z2 = np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    r = mig(np.stack([z1, z2], 1), np.stack([f, g], 1))
    l2, l5 = math.log(2), math.log(5)
    np.testing.assert_allclose(
        r["mutual_information"],
        [[l2, 2 * l2 - 5 / 8 * l5], [0.0, 1.5 * l2 - 5 / 8 * l5]],
        rtol=0, atol=1e-14,
    )
    np.testing.assert_allclose(r["entropy"], [l2, l2], rtol=0, atol=1e-14)
    np.testing.assert_allclose(
        r["gaps"], [5 / 8 * math.log2(5) - 1, 1.5 - 5 / 8 * math.log2(5)], rtol=0, atol=1e-14
    )
    assert r["mig"] == pytest.approx(0.25, abs=1e-14)
    assert isinstance(r["mig"], float)


# ---------------------------------------------------------- MIG sanity cases
def test_identity_code_is_exactly_one_on_a_balanced_grid():
    # Exactly 1 needs (a) the 20 bins to keep every class of a factor apart, and
    # (b) the other latents to carry exactly zero empirical MI about it.
    # (a): the bins have width (n-1)/20 for n classes 0..n-1; since the last edge
    # is dropped, classes n-2 and n-1 share the top bin iff width >= 1, i.e. n >= 21.
    # So n <= 20 separates all classes. (b): a full, balanced factorial grid makes
    # the factors exactly independent.
    f = _grid(20, 8, 3, repeat=2)
    r = mig(f.astype(float), f)
    assert r["mig"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(r["gaps"], 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r["entropy"], np.log([20, 8, 3]), rtol=0, atol=1e-12)


def test_identity_code_with_21_classes_merges_the_top_two():
    # With 21 equally likely classes the bin width is exactly 1: classes 19 and 20
    # both fall in the top bin, so I(f; z) = H(f) - (2/21) log 2 and the gap drops
    # to 1 - (2/21) log 2 / log 21.
    f = _grid(21, 2, repeat=3)
    r = mig(f.astype(float), f)
    expected = 1 - (2 / 21) * math.log(2) / math.log(21)
    assert r["gaps"][0] == pytest.approx(expected, abs=1e-12)
    assert r["gaps"][1] == pytest.approx(1.0, abs=1e-12)


def test_identity_code_on_random_samples_is_close_to_one():
    rng = np.random.default_rng(3)
    f = np.stack([rng.integers(0, s, 10_000) for s in (10, 8, 4)], axis=1)
    r = mig(f.astype(np.float32), f)
    # the other latents have a small positive plug-in MI, so slightly below 1
    assert 0.99 < r["mig"] < 1.0


def test_constant_code_gives_zero():
    f = _grid(10, 8, repeat=2)
    r = mig(np.full((f.shape[0], 4), 2.5), f)
    assert r["mig"] == 0.0
    assert r["gaps"] == [0.0, 0.0]
    assert np.all(np.array(r["mutual_information"]) == 0.0)


def test_duplicated_latents_give_zero():
    f = _grid(10, 8, repeat=2)
    z = np.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 1]], axis=1).astype(float)
    r = mig(z, f)
    assert abs(r["mig"]) < 1e-12
    mi = np.array(r["mutual_information"])
    assert mi[0, 0] == pytest.approx(math.log(10), abs=1e-12)


def test_random_code_is_near_zero():
    rng = np.random.default_rng(4)
    f = np.stack([rng.integers(0, s, 10_000) for s in (10, 8)], axis=1)
    r = mig(rng.normal(size=(10_000, 10)), f)
    assert 0.0 <= r["mig"] < 0.01


def test_rotation_of_two_factors_is_clearly_below_identity():
    f = _grid(10, 10, repeat=5).astype(float)
    labels = f.astype(int)
    identity = mig(f, labels)["mig"]
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot45 = mig(f @ np.array([[c, -s], [s, c]]), labels)["mig"]
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    rot22 = mig(f @ np.array([[c, -s], [s, c]]), labels)["mig"]
    assert identity == pytest.approx(1.0, abs=1e-12)
    assert rot45 < 0.05  # both latents equally informative about each factor
    assert rot45 < rot22 < 0.8


def test_constant_factor_is_reported_nan_and_excluded():
    f = _grid(10, 8, repeat=2)
    f3 = np.concatenate([np.zeros((f.shape[0], 1), dtype=int), f], axis=1)
    r3 = mig(np.c_[f, f[:, :1]].astype(float), f3)
    r = mig(np.c_[f, f[:, :1]].astype(float), f)
    assert math.isnan(r3["gaps"][0]) and r3["entropy"][0] == 0.0
    assert r3["gaps"][1:] == pytest.approx(r["gaps"])
    assert r3["mig"] == pytest.approx(r["mig"], abs=1e-15)
    with pytest.raises(ValueError, match="every factor is constant"):
        mig(np.random.default_rng(0).normal(size=(50, 3)), np.full((50, 2), 4))


def test_mig_accepts_torch_and_keeps_float32_binning():
    rng = np.random.default_rng(5)
    f = np.stack([rng.integers(0, 10, 1000), rng.integers(0, 5, 1000)], axis=1)
    z = (f + 0.3 * rng.normal(size=f.shape)).astype(np.float32)
    a = mig(torch.from_numpy(z), torch.from_numpy(f))
    b = mig(z, f)
    assert a == b
    zd = _recipe_discretize(z)  # the recipe on float32 input
    ref = [[mutual_info_score(f[:, k], zd[:, j]) for j in range(2)] for k in range(2)]
    np.testing.assert_allclose(a["mutual_information"], ref, rtol=0, atol=1e-12)


def test_mig_is_fast():
    rng = np.random.default_rng(6)
    f = np.stack([rng.integers(0, s, 10_000) for s in (3, 6, 40, 32, 32)], axis=1)
    z = rng.normal(size=(10_000, 10))
    mig(z, f)
    t0 = time.perf_counter()
    mig(z, f)
    assert time.perf_counter() - t0 < 0.5


# ------------------------------------------------------------ MIG validation
@pytest.mark.parametrize(
    "codes, factors, kwargs, match",
    [
        (np.zeros(10), np.zeros((10, 1), int), {}, r"codes must be a 2-D array .*\(10,\)"),
        (np.zeros((10, 2, 1)), np.zeros((10, 1), int), {}, r"codes must be a 2-D array .*\(10, 2, 1\)"),
        (np.zeros((10, 2)), np.zeros(10, int), {}, r"factors must be a 2-D array .*\(10,\)"),
        (np.zeros((10, 2)), np.zeros((9, 1), int), {}, r"same number of rows.*\(10, 2\).*\(9, 1\)"),
        (np.array([[0.0, np.nan]] * 4), np.zeros((4, 1), int), {}, r"codes must be finite.*nan.*row 0, column 1"),
        (np.array([[0.0, np.inf]] * 4), np.zeros((4, 1), int), {}, r"codes must be finite.*inf"),
        (np.zeros((4, 2)), np.array([[0.5]] * 4), {}, r"factors must hold integer class indices.*0\.5"),
        (np.zeros((4, 2)), np.array([["a"]] * 4), {}, r"factors must hold integer class indices.*dtype"),
        (np.zeros((4, 2)), np.array([[0], [1], [-2], [0]]), {}, r"factors must be non-negative.*-2.*row 2"),
        (np.zeros((4, 1)), np.zeros((4, 1), int), {}, r"at least 2 latent dimensions.*\(4, 1\)"),
        (np.zeros((0, 2)), np.zeros((0, 1), int), {}, r"at least one row"),
        (np.zeros((4, 2)), np.zeros((4, 0), int), {}, r"factors must have at least one column"),
        (np.array([["x", "y"]] * 4), np.zeros((4, 1), int), {}, r"codes must hold real numbers"),
        (np.zeros((4, 2)), np.zeros((4, 1), int), {"num_bins": 0}, r"num_bins must be an integer >= 1; got 0"),
        (np.zeros((4, 2)), np.zeros((4, 1), int), {"num_bins": 2.5}, r"num_bins"),
    ],
)
def test_mig_input_validation(codes, factors, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mig(codes, factors, **kwargs)


def test_integral_float_factors_are_accepted():
    f = _grid(4, 3).astype(float)
    assert mig(f, f)["mig"] == pytest.approx(1.0, abs=1e-12)


def test_mutual_information_matrix_validation():
    with pytest.raises(ValueError, match=r"a_discrete and b_discrete must have the same number of rows"):
        mutual_information_matrix(np.zeros((5, 1), int), np.zeros((4, 1), int))
    with pytest.raises(ValueError, match=r"b_discrete must be non-negative"):
        mutual_information_matrix(np.zeros((5, 1), int), -np.ones((5, 1), int))


# ------------------------------------------------------------- active units
def test_active_units_hand_made():
    v = np.array(
        [
            [0.1, 1.0, 0.8, 0.0, 0.9],
            [0.3, 0.9, 0.8, 0.0, 0.6],
        ]
    )
    # means: 0.2, 0.95, 0.8 (not < 0.8: inactive), 0.0, 0.75
    r = active_units(v, num_factors=4)
    assert r["active"] == [True, False, False, True, True]
    assert r["active_units"] == 3 and isinstance(r["active_units"], int)
    np.testing.assert_allclose(r["mean_variance"], [0.2, 0.95, 0.8, 0.0, 0.75], atol=1e-15)
    assert r["over_pruned"] is True
    assert active_units(v, num_factors=3)["over_pruned"] is False
    assert "over_pruned" not in active_units(v)
    assert active_units(v, threshold=0.96)["active_units"] == 5
    assert active_units(torch.tensor(v, dtype=torch.float32))["active_units"] == 3


@pytest.mark.parametrize(
    "v, kwargs, match",
    [
        (np.ones(3), {}, r"variances must be a 2-D array .*\(3,\)"),
        (np.zeros((0, 3)), {}, r"at least one row"),
        (np.array([[0.5, np.nan]]), {}, r"variances must be finite"),
        (np.array([[0.5, -0.1]]), {}, r"variances must be >= 0.*-0\.1.*column 1"),
        (np.ones((2, 2)), {"threshold": 0}, r"threshold must be a finite number > 0"),
        (np.ones((2, 2)), {"threshold": float("nan")}, r"threshold"),
        (np.ones((2, 2)), {"num_factors": -1}, r"num_factors must be an integer >= 0"),
        (np.ones((2, 2)), {"num_factors": 2.0}, r"num_factors"),
    ],
)
def test_active_units_validation(v, kwargs, match):
    with pytest.raises(ValueError, match=match):
        active_units(v, **kwargs)


# ----------------------------------------------------------------- evaluate
class _TinyData(GroundTruthData):
    """Two factors (10 and 8 classes) written into the first two pixels of a 1x4x4 image."""

    factor_names = ("a", "b")
    factor_sizes = (10, 8)
    observation_shape = (1, 4, 4)
    name = "tiny"

    def _images_at(self, factors, device):
        x = torch.zeros((factors.shape[0], 1, 4, 4), dtype=torch.float32, device=device)
        x[:, 0, 0, 0] = torch.as_tensor(factors[:, 0] / 9.0, dtype=torch.float32, device=device)
        x[:, 0, 0, 1] = torch.as_tensor(factors[:, 1] / 7.0, dtype=torch.float32, device=device)
        x[:, 0, 3, 3] = 1.0
        return x


def _identity_represent(images):
    return images[:, 0, 0, :2]  # a torch tensor (n, 2): the two factors, rescaled


def test_available_lists_registered_metrics():
    names = available()
    assert "mig" in names and "active_units" in names
    assert names == sorted(names)


def test_evaluate_identity_and_sampling_protocol():
    data = _TinyData()
    res = evaluate(data, _identity_represent, num_points=2000, seed=7, batch_size=300)
    assert set(res) == {"mig", "settings"}
    assert 0.97 < res["mig"]["mig"] <= 1.0
    # the same numbers as MIG on factors drawn with default_rng(seed) in one call
    f = data.sample_factors(2000, np.random.default_rng(7))
    direct = mig(_identity_represent(data.images(f)), f)
    assert res["mig"] == direct
    s = res["settings"]
    assert s["num_points"] == 2000 and s["seed"] == 7 and s["batch_size"] == 300
    assert s["num_bins"] == 20 and s["metrics"] == ["mig"] and s["num_latents"] == 2
    assert s["dataset"]["name"] == "tiny" and "numpy" in s["versions"]


def test_evaluate_is_deterministic_and_batches():
    data = _TinyData()
    sizes = []

    def represent(images):
        sizes.append(images.shape[0])
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 4, 4)
        noise = torch.sin(images.sum(dim=(1, 2, 3)) * 1000.0)[:, None]
        return (images[:, 0, 0, :2] + 0.05 * noise).numpy()

    a = evaluate(data, represent, num_points=1000, seed=3, batch_size=300)
    assert sizes == [300, 300, 300, 100]
    b = evaluate(data, represent, num_points=1000, seed=3, batch_size=1000)
    c = evaluate(data, represent, num_points=1000, seed=4)
    assert a["mig"] == b["mig"]  # batching does not change the result
    assert a["mig"] != c["mig"]  # another seed draws other points


def test_evaluate_active_units_from_mean_variance_tuple():
    data = _TinyData()

    def represent(images):
        mean = torch.cat([images[:, 0, 0, :2], torch.zeros(images.shape[0], 2)], dim=1)
        var = torch.tensor([0.1, 0.2, 1.0, 0.95]).expand(images.shape[0], 4)
        return mean, var

    res = evaluate(data, represent, metrics=("mig", "active_units"), num_points=500)
    assert res["active_units"]["active"] == [True, True, False, False]
    assert res["active_units"]["active_units"] == 2
    assert res["active_units"]["over_pruned"] is False  # 2 active units, 2 factors
    assert res["mig"]["mig"] > 0.95
    with pytest.raises(ValueError, match=r"needs posterior variances"):
        evaluate(data, _identity_represent, metrics="active_units", num_points=50)


def test_evaluate_errors():
    data = _TinyData()
    with pytest.raises(ValueError, match=r"unknown metric.*'nope'.*available: .*'mig'"):
        evaluate(data, _identity_represent, metrics=("mig", "nope"))
    with pytest.raises(ValueError, match=r"num_points must be an integer >= 1"):
        evaluate(data, _identity_represent, num_points=0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1"):
        evaluate(data, _identity_represent, batch_size=0)
    with pytest.raises(ValueError, match=r"represent must return codes of shape \(n, d\)"):
        evaluate(data, lambda x: x[:, 0, 0, 0], num_points=10)
