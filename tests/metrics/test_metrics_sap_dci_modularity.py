"""SAP, DCI and modularity/explicitness: parity with disentanglement_lib's definitions,
hand-computed cases, edge cases, bad input and the evaluate() registry path.

The ``_ref_*`` functions below are written independently of the code under test,
following disentanglement_lib's structure: (num_codes, N) / (num_factors, N)
transposed layouts, one sklearn estimator per pair or per factor,
``sklearn.metrics.mutual_info_score`` and ``scipy.stats.entropy``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from vaebias.data.toy import ToySquares
from vaebias.metrics import (
    dci,
    dci_from_importances,
    evaluate,
    modularity_explicitness,
    sap,
)
from vaebias.metrics.modularity import _modularity


# ------------------------------------------------------------ reference code
def _ref_sap(mus, ys, mus_test, ys_test):
    """disentanglement_lib SAP (discrete factors); inputs (num_codes|num_factors, N)."""
    score = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            clf = LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(mus[i, :][:, np.newaxis], ys[j, :])
            pred = clf.predict(mus_test[i, :][:, np.newaxis])
            score[i, j] = np.mean(pred == ys_test[j, :])
    srt = np.sort(score, axis=0)
    return np.mean(srt[-1, :] - srt[-2, :]), score


def _ref_dci(mus, ys, mus_test, ys_test, random_state=0):
    """disentanglement_lib DCI (plus the same fixed random_state as the code under test)."""
    imp = np.zeros([mus.shape[0], ys.shape[0]])
    acc_tr, acc_te = [], []
    for i in range(ys.shape[0]):
        model = GradientBoostingClassifier(random_state=random_state)
        model.fit(mus.T, ys[i, :])
        imp[:, i] = np.abs(model.feature_importances_)
        acc_tr.append(np.mean(model.predict(mus.T) == ys[i, :]))
        acc_te.append(np.mean(model.predict(mus_test.T) == ys_test[i, :]))
    dis, comp = _ref_dc(imp)
    return {"disentanglement": dis, "completeness": comp, "informativeness_train": np.mean(acc_tr),
            "informativeness_test": np.mean(acc_te), "importance_matrix": imp}


def _ref_dc(imp):
    per_code = 1.0 - scipy.stats.entropy(imp.T + 1e-11, base=imp.shape[1])
    per_factor = 1.0 - scipy.stats.entropy(imp + 1e-11, base=imp.shape[0])
    w = np.ones_like(imp) if imp.sum() == 0.0 else imp
    dis = np.sum(per_code * (w.sum(axis=1) / w.sum()))
    comp = np.sum(per_factor * (w.sum(axis=0) / w.sum()))
    return dis, comp


def _ref_modularity_explicitness(mus, ys, mus_test, ys_test, num_bins=20, zero_std_as_one=False):
    """disentanglement_lib modularity/explicitness. ``zero_std_as_one`` applies the documented
    divergence (the reference divides by a zero std and its classifier then fails)."""
    disc = np.zeros_like(mus)
    for i in range(mus.shape[0]):
        disc[i, :] = np.digitize(mus[i, :], np.histogram(mus[i, :], num_bins)[1][:-1])
    mi = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            mi[i, j] = sklearn.metrics.mutual_info_score(ys[j, :], disc[i, :])
    sq = np.square(mi)
    mx = np.max(sq, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mod = 1.0 - (np.sum(sq, axis=1) - mx) / (mx * (sq.shape[1] - 1.0))
    mod[mx == 0.0] = 0.0
    mean, std = np.mean(mus, axis=1), np.std(mus, axis=1)
    if zero_std_as_one:
        std = np.where(std == 0, 1.0, std)
    tr = (mus - mean[:, None]) / std[:, None]
    te = (mus_test - mean[:, None]) / std[:, None]
    e_tr, e_te = [], []
    for i in range(ys.shape[0]):
        clf = LogisticRegression().fit(tr.T, ys[i, :])
        mlb = MultiLabelBinarizer()
        e_tr.append(sklearn.metrics.roc_auc_score(mlb.fit_transform(ys[i, :][:, None]),
                                                  clf.predict_proba(tr.T)))
        e_te.append(sklearn.metrics.roc_auc_score(mlb.fit_transform(ys_test[i, :][:, None]),
                                                  clf.predict_proba(te.T)))
    return {"modularity": np.mean(mod), "explicitness_train": np.mean(e_tr),
            "explicitness_test": np.mean(e_te), "mutual_information": mi}


# ----------------------------------------------------------------- fixtures
SIZES = (3, 4, 5)


def _factors(n, sizes, rng):
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def _codes(kind, f, sizes, rng):
    """Codes (N, d) of one fixture kind from factors (N, K)."""
    base = f / (np.asarray(sizes) - 1.0)  # in [0, 1]
    n = f.shape[0]

    def noise(d):
        return 0.05 * rng.standard_normal((n, d))

    if kind == "identity":
        return base + noise(base.shape[1])
    if kind == "rotated":
        q, _ = np.linalg.qr(np.random.default_rng(123).standard_normal((base.shape[1],) * 2))
        return (base + noise(base.shape[1])) @ q
    if kind == "duplicated":
        ident = base + noise(base.shape[1])
        return np.concatenate([ident, ident[:, :1] + 0.01 * rng.standard_normal((n, 1)),
                               rng.standard_normal((n, 1))], axis=1)
    if kind == "random":
        return rng.standard_normal((n, base.shape[1] + 1))
    if kind == "warped":  # non-linear warps and one collapsed (constant) dimension
        ident = base + noise(base.shape[1])
        warps = [lambda x: np.tanh(3 * x - 1.5), lambda x: np.exp(2 * x), lambda x: x ** 3]
        cols = [warps[k % 3](ident[:, k]) for k in range(ident.shape[1])]
        # 0.5: its float mean is exactly 0.5, so the std is exactly 0 (with e.g. 0.7 the mean
        # is off by one ulp and both implementations divide by a ~1e-17 std alike)
        return np.stack(cols + [np.full(n, 0.5)], axis=1)
    raise KeyError(kind)


def _split(kind, n_train, n_test=None, sizes=SIZES, seed=0):
    n_test = n_test if n_test is not None else n_train // 2
    rng = np.random.default_rng(seed)
    f_tr, f_te = _factors(n_train, sizes, rng), _factors(n_test, sizes, rng)
    return _codes(kind, f_tr, sizes, rng), f_tr, _codes(kind, f_te, sizes, rng), f_te


KINDS = ["identity", "rotated", "duplicated", "random", "warped"]


# ------------------------------------------------------------------- parity
@pytest.mark.parametrize("kind", KINDS)
def test_sap_parity(kind):
    z, f, zt, ft = _split(kind, 3000)
    got = sap(z, f, zt, ft)
    ref, ref_matrix = _ref_sap(z.T, f.T, zt.T, ft.T)
    assert abs(got["sap"] - ref) <= 1e-6
    assert np.max(np.abs(np.asarray(got["score_matrix"]) - ref_matrix)) <= 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_modularity_explicitness_parity(kind):
    z, f, zt, ft = _split(kind, 3000)
    got = modularity_explicitness(z, f, zt, ft)
    ref = _ref_modularity_explicitness(z.T, f.T, zt.T, ft.T, zero_std_as_one=kind == "warped")
    assert abs(got["modularity"] - ref["modularity"]) <= 1e-9
    assert np.max(np.abs(np.asarray(got["mutual_information"]) - ref["mutual_information"])) <= 1e-12
    assert abs(got["explicitness_train"] - ref["explicitness_train"]) <= 1e-9
    assert abs(got["explicitness_test"] - ref["explicitness_test"]) <= 1e-9
    if kind == "warped":  # the unpatched reference divides the constant code by std 0 and fails
        with pytest.raises(ValueError, match="NaN"), np.errstate(invalid="ignore"):
            _ref_modularity_explicitness(z.T, f.T, zt.T, ft.T)


@pytest.mark.parametrize("kind", KINDS)
def test_dci_parity(kind):
    # small N and two factors keep the 2 x 100-stage boosting in the default suite
    z, f, zt, ft = _split(kind, 1000, sizes=(2, 3))
    got = dci(z, f, zt, ft, random_state=0)
    ref = _ref_dci(z.T, f.T, zt.T, ft.T, random_state=0)
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert abs(got[key] - ref[key]) <= 5e-3, key  # observed: exactly 0
    assert np.max(np.abs(np.asarray(got["importance_matrix"]) - ref["importance_matrix"])) <= 5e-3


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_parity_10k(kind):
    z, f, zt, ft = _split(kind, 10_000, 5_000, seed=1)
    got = sap(z, f, zt, ft)
    assert abs(got["sap"] - _ref_sap(z.T, f.T, zt.T, ft.T)[0]) <= 1e-6
    got = modularity_explicitness(z, f, zt, ft)
    ref = _ref_modularity_explicitness(z.T, f.T, zt.T, ft.T, zero_std_as_one=kind == "warped")
    for key in ("modularity", "explicitness_train", "explicitness_test"):
        assert abs(got[key] - ref[key]) <= 1e-9, key
    got = dci(z, f, zt, ft)
    ref = _ref_dci(z.T, f.T, zt.T, ft.T)
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert abs(got[key] - ref[key]) <= 5e-3, key


def test_sap_float32_and_torch_inputs_match_float64():
    z, f, zt, ft = _split("identity", 600)
    z32, zt32 = z.astype(np.float32), zt.astype(np.float32)
    got = sap(torch.from_numpy(z32), torch.from_numpy(f), zt32, ft)
    ref, _ = _ref_sap(z32.T, f.T, zt32.T, ft.T)
    assert abs(got["sap"] - ref) <= 1e-6


# ------------------------------------------------------- hand-computed cases
def test_dci_from_importances_hand_cases():
    d, c = dci_from_importances(np.eye(3))
    assert d == pytest.approx(1.0, abs=1e-8) and c == pytest.approx(1.0, abs=1e-8)
    d, c = dci_from_importances(np.ones((3, 3)))
    assert d == pytest.approx(0.0, abs=1e-12) and c == pytest.approx(0.0, abs=1e-12)
    # R = [[3, 1], [0, 0]]: code 0 spreads 3:1 over the two factors, code 1 is unused.
    # D = 1 - H2(0.75) (code 0 has all the weight); C = 1 (each factor uses one code).
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # 0.8112781244591328
    d, c = dci_from_importances([[3.0, 1.0], [0.0, 0.0]])
    assert d == pytest.approx(1.0 - h, abs=1e-9) and c == pytest.approx(1.0, abs=1e-9)
    # R = [[1, 0], [1, 1]]: D = (1 * 1 + 2 * 0) / 3, C = (2 * 0 + 1 * 1) / 3
    d, c = dci_from_importances(np.array([[1.0, 0.0], [1.0, 1.0]]))
    assert d == pytest.approx(1 / 3, abs=1e-9) and c == pytest.approx(1 / 3, abs=1e-9)
    # all zeros: uniform weights, uniform rows -> 0, 0 (the reference's handling)
    d, c = dci_from_importances(np.zeros((4, 3)))
    assert d == pytest.approx(0.0, abs=1e-12) and c == pytest.approx(0.0, abs=1e-12)
    # agrees with scipy.stats.entropy on a random matrix
    r = np.random.default_rng(0).random((6, 4))
    assert np.allclose(dci_from_importances(r), _ref_dc(r), atol=1e-12, rtol=0)
    # degenerate sizes (documented convention instead of the reference's nan)
    assert dci_from_importances([[0.3], [0.7]])[0] == pytest.approx(1.0)
    assert dci_from_importances([[0.3, 0.7]])[1] == pytest.approx(1.0)


def test_dci_from_importances_bad_input():
    with pytest.raises(ValueError, match=r"2-D.*\(3,\)"):
        dci_from_importances(np.ones(3))
    with pytest.raises(ValueError, match=r">= 0.*-0.5"):
        dci_from_importances([[1.0, -0.5]])
    with pytest.raises(ValueError, match="finite"):
        dci_from_importances([[1.0, np.nan]])


def test_modularity_hand_made_mi():
    mi = np.array([[1.0, 0.0, 0.0],      # one factor only -> 1
                   [0.5, 0.5, 0.0],      # two equal factors -> 1 - 0.25 / (0.25 * 2) = 0.5
                   [0.0, 0.0, 0.0]])     # no information -> 0
    assert _modularity(mi) == pytest.approx(0.5, abs=1e-15)
    assert _modularity(np.array([[0.2, 0.4]])) == pytest.approx(1 - 0.04 / 0.16, abs=1e-15)


def test_modularity_on_a_full_factor_grid():
    # every (f0, f1) combination equally often: the factors are exactly independent
    f = np.array([(a, b) for a in range(3) for b in range(4)] * 50)
    codes = np.stack([f[:, 0], f[:, 1]], axis=1).astype(float)
    out = modularity_explicitness(codes, f, codes, f)
    assert out["modularity"] == pytest.approx(1.0, abs=1e-12)
    # a latent mixing both factors (12 distinct values, 12 of the 20 bins):
    # MI = (log 3, log 4) -> 1 - (log 3 / log 4)^2
    mixed = np.stack([f[:, 0] * 4 + f[:, 1], f[:, 1]], axis=1).astype(float)
    out = modularity_explicitness(mixed, f, mixed, f)
    expected = 0.5 * ((1 - (math.log(3) / math.log(4)) ** 2) + 1.0)
    assert out["modularity"] == pytest.approx(expected, abs=1e-12)


# ------------------------------------------------------------- edge cases
def test_constant_code_dimension_does_not_crash():
    z, f, zt, ft = _split("identity", 400, sizes=(2, 3))
    z = np.concatenate([z, np.full((400, 1), 2.5)], axis=1)
    zt = np.concatenate([zt, np.full((200, 1), 2.5)], axis=1)
    s = sap(z, f, zt, ft)
    assert np.isfinite(s["sap"])
    assert np.allclose(s["score_matrix"], _ref_sap(z.T, f.T, zt.T, ft.T)[1], atol=1e-12, rtol=0)
    d = dci(z, f, zt, ft)
    assert np.isfinite(d["disentanglement"]) and np.allclose(np.asarray(d["importance_matrix"])[-1], 0)
    m = modularity_explicitness(z, f, zt, ft)
    assert np.isfinite(m["explicitness_test"]) and np.isfinite(m["modularity"])
    # every code constant: DCI's all-zero importances give D = C = 0 as in the reference
    c = np.ones((300, 2))
    d = dci(c, f[:300], c[:100], ft[:100])
    assert d["disentanglement"] == pytest.approx(0.0, abs=1e-9)
    assert d["completeness"] == pytest.approx(0.0, abs=1e-9)
    assert modularity_explicitness(c, f[:300], c[:100], ft[:100])["modularity"] == 0.0
    assert sap(c, f[:300], c[:100], ft[:100])["sap"] == 0.0


def test_single_class_factor_is_left_out():
    z, f, zt, ft = _split("identity", 600, sizes=(2, 3))
    f1 = np.concatenate([f, np.zeros((600, 1), np.int64)], axis=1)  # like dSprites' colour
    ft1 = np.concatenate([ft, np.zeros((300, 1), np.int64)], axis=1)
    z1 = np.concatenate([z, np.ones((600, 1))], axis=1)
    zt1 = np.concatenate([zt, np.ones((300, 1))], axis=1)
    s, s_ref = sap(z1, f1, zt1, ft1), sap(z1, f, zt1, ft)
    assert s["sap"] == s_ref["sap"] and math.isnan(s["gaps"][2])
    assert all(math.isnan(r[2]) for r in s["score_matrix"])
    m, m_ref = modularity_explicitness(z1, f1, zt1, ft1), modularity_explicitness(z1, f, zt1, ft)
    for key in ("modularity", "explicitness_train", "explicitness_test"):
        assert m[key] == m_ref[key]
    assert math.isnan(m["explicitness_per_factor_test"][2])
    d, d_ref = dci(z1[:, :2], f1, zt1[:, :2], ft1), dci(z1[:, :2], f, zt1[:, :2], ft)
    for key in ("disentanglement", "completeness", "informativeness_test"):
        assert d[key] == d_ref[key]
    with pytest.raises(ValueError, match="single class"):
        sap(z1, f1[:, 2:], zt1, ft1[:, 2:])


def test_test_class_unseen_in_train_is_handled():
    z, f, zt, ft = _split("identity", 600, sizes=(3, 3))
    keep = f[:, 0] != 2  # class 2 of factor 0 never seen in training
    out = modularity_explicitness(z[keep], f[keep], zt, ft)
    assert 0.5 < out["explicitness_test"] <= 1.0
    assert np.isfinite(sap(z[keep], f[keep], zt, ft)["sap"])


def test_determinism_and_n_jobs():
    z, f, zt, ft = _split("rotated", 500, sizes=(2, 3))
    assert sap(z, f, zt, ft) == sap(z, f, zt, ft) == sap(z, f, zt, ft, n_jobs=2)
    assert modularity_explicitness(z, f, zt, ft) == modularity_explicitness(z, f, zt, ft)


@pytest.mark.slow  # starting joblib's worker processes takes seconds on a loaded machine
def test_dci_n_jobs_gives_the_same_result():
    z, f, zt, ft = _split("duplicated", 200, sizes=(2, 3, 2))
    assert dci(z, f, zt, ft) == dci(z, f, zt, ft, n_jobs=2)


# ----------------------------------------------------------------- sanity
def test_sanity_identity_vs_random():
    sizes = (2, 3, 4)
    ident, rand = _split("identity", 3000, sizes=sizes), _split("random", 3000, sizes=sizes)
    s_id, s_rand = sap(*ident), sap(*rand)
    # a 1-D linear SVM separates a binary identity latent almost perfectly (gap ~ 0.5 vs a
    # latent at chance); multi-class factors are only partly linearly separable in 1-D
    assert s_id["sap"] > 0.2 and s_id["gaps"][0] > 0.45
    assert abs(s_rand["sap"]) < 0.05
    m_id, m_rand = modularity_explicitness(*ident), modularity_explicitness(*rand)
    assert m_id["modularity"] > 0.9 and m_id["explicitness_test"] > 0.9
    assert m_rand["modularity"] < m_id["modularity"] - 0.2
    assert abs(m_rand["explicitness_test"] - 0.5) < 0.05


def test_dci_sanity_identity_vs_random():
    sizes = (2, 3)
    ident = _split("identity", 800, sizes=sizes)
    rand = _split("random", 800, sizes=sizes)
    d_id, d_rand = dci(*ident), dci(*rand)
    assert d_id["disentanglement"] > 0.9 and d_id["completeness"] > 0.9
    assert d_id["informativeness_test"] > 0.95
    assert d_rand["disentanglement"] < 0.4
    assert d_rand["informativeness_test"] < 0.6


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [sap, dci, modularity_explicitness])
def test_bad_input(fn):
    z, f, zt, ft = _split("identity", 100, sizes=(2, 2))
    with pytest.raises(ValueError, match=r"train_codes \(100, 2\) and train_factors \(99, 2\)"):
        fn(z, f[:99], zt, ft)
    with pytest.raises(ValueError, match=r"test_codes \(50, 2\) and test_factors \(49, 2\)"):
        fn(z, f, zt, ft[:49])
    with pytest.raises(ValueError, match=r"train_codes \(100, 2\) and test_codes \(50, 3\)"):
        fn(z, f, np.concatenate([zt, zt[:, :1]], axis=1), ft)
    with pytest.raises(ValueError, match=r"train_factors \(100, 2\) and test_factors \(50, 1\)"):
        fn(z, f, zt, ft[:, :1])
    with pytest.raises(ValueError, match=r"2-D.*\(100,\)"):
        fn(z[:, 0], f, zt, ft)
    with pytest.raises(ValueError, match="finite"):
        fn(np.where(z > 0.5, np.nan, z), f, zt, ft)
    with pytest.raises(ValueError, match="non-negative"):
        fn(z, f - 1, zt, ft)


def test_bad_options():
    z, f, zt, ft = _split("identity", 100, sizes=(2, 2))
    with pytest.raises(ValueError, match=r"at least 2 latent.*\(100, 1\)"):
        sap(z[:, :1], f, zt[:, :1], ft)
    with pytest.raises(ValueError, match="C must be"):
        sap(z, f, zt, ft, C=0)
    with pytest.raises(ValueError, match="unknown DCI backend 'nope'; available: .*sklearn"):
        dci(z, f, zt, ft, backend="nope")
    with pytest.raises(ValueError, match="n_jobs"):
        dci(z, f, zt, ft, n_jobs=0)
    with pytest.raises(ValueError, match="num_bins"):
        modularity_explicitness(z, f, zt, ft, num_bins=0)


# ------------------------------------------------------ evaluate() registry
def _exact_position_codes(images):
    """(first column, first row) of the square, / 64, plus a constant code: exact functions of
    the factors posX, posY."""
    img = images[:, 0] > 0.5
    col = img.any(dim=1).float().argmax(dim=1)
    row = img.any(dim=2).float().argmax(dim=1)
    return torch.stack([col / 64.0, row / 64.0, torch.full_like(col, 0.5, dtype=torch.float32)], 1)


def test_evaluate_registry_path():
    data = ToySquares(8)
    names = ["sap", "dci", "modularity_explicitness"]
    res = evaluate(data, _exact_position_codes, names, num_points=600, num_test=300, seed=3)
    assert res["settings"]["num_test"] == 300 and res["settings"]["dci_backend"] == "sklearn"
    assert res["settings"]["metrics"] == names
    # the same numbers from the array-level functions on the documented draws
    f = data.sample_factors(600, np.random.default_rng(3))
    ft = data.sample_factors(300, np.random.default_rng([3, 1]))
    with torch.no_grad():
        z, zt = _exact_position_codes(data.images(f)).numpy(), _exact_position_codes(data.images(ft)).numpy()
    assert res["sap"] == sap(z, f, zt, ft, random_state=3)
    assert res["modularity_explicitness"] == modularity_explicitness(z, f, zt, ft, random_state=3)
    assert res["dci"]["disentanglement"] == dci(z, f, zt, ft, random_state=3)["disentanglement"]
    # exact position codes: two perfectly modular latents and a constant one (modularity 0,
    # as in the reference), explicit, and the trees predict perfectly
    assert res["modularity_explicitness"]["modularity"] == pytest.approx(2 / 3, abs=0.02)
    assert res["modularity_explicitness"]["explicitness_test"] > 0.9
    assert res["dci"]["informativeness_test"] == 1.0 and res["dci"]["disentanglement"] > 0.95
    with pytest.raises(ValueError, match="num_test"):
        evaluate(data, _exact_position_codes, "sap", num_points=50, num_test=0)
    with pytest.raises(ValueError, match="dci_backend"):
        evaluate(data, _exact_position_codes, "dci", num_points=50, dci_backend="nope")
