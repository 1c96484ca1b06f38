"""The dataset audit's local alignment and rank correlation, validated on synthetic data
whose answer is known in closed form."""

import math

import numpy as np
import pytest
import torch

from vaebias.audit import alignment_from_gram, local_alignment, local_gram, rank_correlation, systematic_shift
from vaebias.data import DataError, GroundTruthData, Noisy, from_arrays


class LinearPatterns(GroundTruthData):
    """x = 0.5 + Σ_k (R(w − c))_k · s_k · P_k with orthonormal pixel patterns P_k: the factor
    Jacobian is P·diag(s)·R exactly, so G = Rᵀ diag(s²) R everywhere."""

    observation_shape = (1, 16, 16)
    name = "linear_patterns"

    def __init__(self, sizes=(9, 9), scales=(0.01, 0.02), rotation=None, categorical=(), blocks=False):
        self.factor_sizes = tuple(sizes)
        self.factor_names = tuple(f"f{k}" for k in range(len(sizes)))
        self.categorical_factors = tuple(categorical)
        k = len(sizes)
        if blocks:  # disjoint blocks of 16 pixels at 1/4: orthonormal, and exact in float32
            q = np.zeros((256, k))
            for i in range(k):
                q[16 * i: 16 * (i + 1), i] = 0.25
        else:
            q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(256, k)))
        self.patterns = torch.from_numpy(q.T.copy()).float()          # (K, 256) orthonormal rows
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.rotation = torch.eye(k) if rotation is None else torch.as_tensor(rotation, dtype=torch.float32)

    def _images_at(self, factors, device):
        c = torch.tensor([(s - 1) / 2 for s in self.factor_sizes])
        w = torch.as_tensor(factors, dtype=torch.float32) - c
        coeff = (w @ self.rotation.T) * self.scales                    # (n, K)
        return (0.5 + coeff @ self.patterns).view(-1, 1, 16, 16).to(device)


def rot2(theta):
    return [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]


@pytest.mark.parametrize("theta", [0.0, math.pi / 12, math.pi / 8, math.pi / 6, math.pi / 4])
def test_two_factors_score_is_cos_two_theta(theta):
    data = LinearPatterns(rotation=rot2(theta))
    res = local_alignment(data, points=64, resamples=50)
    assert res["score"] == pytest.approx(abs(math.cos(2 * theta)), abs=1e-4)
    assert res["pairs"][0]["alignment"] == pytest.approx(abs(math.cos(2 * theta)), abs=1e-4)


def test_orthogonal_patterns_of_distinct_sizes_score_one_rotated_low():
    aligned = local_alignment(LinearPatterns(sizes=(8, 8, 8), scales=(0.01, 0.02, 0.04)), points=100,
                              resamples=100)
    assert aligned["score"] == pytest.approx(1.0, abs=1e-6)
    assert aligned["ci_low"] == pytest.approx(1.0, abs=1e-6)
    assert all(p["overlap"] < 1e-5 for p in aligned["pairs"])
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    rotated = local_alignment(LinearPatterns(sizes=(8, 8, 8), scales=(0.01, 0.02, 0.04), rotation=rot),
                              points=100, resamples=100)
    # the exact value: G = Rᵀ diag(s²) R at every point
    g = rot.T @ np.diag([1e-4, 4e-4, 16e-4]) @ rot
    parts = alignment_from_gram(g[None])
    assert rotated["score"] == pytest.approx(parts["num"][0] / parts["den"][0], abs=1e-4)
    assert rotated["score"] < 0.6


def test_alignment_from_gram_by_hand():
    # diag(1, 4): aligned, S = 1; [[2.5, 1.5], [1.5, 2.5]]: eigenvectors at 45 degrees, S = 0
    p = alignment_from_gram(np.array([[[1.0, 0.0], [0.0, 4.0]], [[2.5, 1.5], [1.5, 2.5]]]))
    assert p["gap"][0].tolist() == [3.0, 3.0]
    assert p["num"][0] / p["den"][0] == pytest.approx(1.0)
    assert p["num"][1] == pytest.approx(0.0, abs=1e-12) and p["den"][1] == pytest.approx((3.0 + 3.0) / 5.0)
    # isotropic: no gap, no weight
    iso = alignment_from_gram(np.eye(3)[None])
    assert iso["den"][0] == 0.0


def test_isotropic_data_has_no_score():
    res = local_alignment(LinearPatterns(scales=(0.02, 0.02)), points=20, resamples=10)
    assert math.isnan(res["score"]) and res["identifiable"] == pytest.approx(0.0, abs=1e-6)


def test_categorical_and_single_class_factors_are_skipped():
    data = LinearPatterns(sizes=(9, 1, 9, 4), scales=(0.01, 0.05, 0.03, 0.2), categorical=(3,))
    res = local_alignment(data, points=30, resamples=10)
    assert res["factors"] == ["f0", "f2"] and res["score"] == pytest.approx(1.0, abs=1e-6)


def test_rank_correlation_along_a_linear_factor_is_one():
    res = rank_correlation(LinearPatterns(sizes=(9, 9), scales=(2.0 ** -6, 2.0 ** -4), blocks=True), pairs=400,
                           resamples=20)
    # along one factor the pixel MSE is s²Δ²/D: monotone in |Δ|
    assert res["per_factor"]["f0"]["rho"] == pytest.approx(1.0)
    assert res["per_factor"]["f1"]["rho"] == pytest.approx(1.0)
    assert 0.5 < res["global"]["rho"] < 1.0


def test_labelled_sample_is_refused_for_finite_differences():
    imgs = np.random.default_rng(0).integers(0, 255, (5, 1, 16, 16), dtype=np.uint8)
    sample = from_arrays(imgs, np.array([[0, 0], [1, 2], [2, 1], [3, 3], [0, 3]]))
    with pytest.raises(DataError, match="a labelled sample of 5 points, not the full grid of 16 .*; the dataset "
                                        "audit's finite differences requires neighbouring factor values"):
        local_alignment(sample, points=10)
    assert "global" in rank_correlation(sample, pairs=20, resamples=5)


def test_systematic_shift_separates_noise_from_a_rotation():
    base = LinearPatterns(scales=(0.02, 0.04))
    theta = math.pi / 12
    rotated = LinearPatterns(scales=(0.02, 0.04), rotation=rot2(theta))
    res = systematic_shift(base, rotated, points=50, resamples=50)
    # G' = Rᵀ diag(s²) R at every point: the columns' correlation, in closed form
    g = np.array(rot2(theta)).T @ np.diag([0.02 ** 2, 0.04 ** 2]) @ np.array(rot2(theta))
    assert res["shift"] == pytest.approx(abs(g[0, 1]) / math.sqrt(g[0, 0] * g[1, 1]), abs=1e-4)
    big = LinearPatterns(sizes=(40, 40), scales=(0.02, 0.04))  # many distinct points, each its own noise
    noisy = systematic_shift(big, Noisy(big, 0.05, seed=0, clip=False), points=400, resamples=50)
    assert noisy["mean_abs_change"] > 0.01        # the noise moves each point ...
    assert noisy["shift"] < noisy["mean_abs_change"] / 5   # ... but not on average


def test_per_image_noise_does_not_read_as_misalignment():
    # the audit's points lie inside the grid, so no two Jacobian columns share an image; at an
    # edge both one-sided differences would contain the point's own noisy image
    big = LinearPatterns(sizes=(40, 40), scales=(0.5, 1.0))   # signal above the noise, as in real data
    clean = local_alignment(big, points=300, resamples=20)["score"]
    noisy = local_alignment(Noisy(big, 0.05, seed=0, clip=False), points=300, resamples=20)["score"]
    assert clean == pytest.approx(1.0, abs=1e-6) and noisy > 0.97
    corners = np.array([[0, 0], [39, 39], [0, 39], [39, 0]] * 20)  # one-sided: the columns share w's image
    p = alignment_from_gram(local_gram(Noisy(big, 0.05, seed=0, clip=False), corners))
    assert p["num"].sum() / p["den"].sum() < 0.9
    assert local_alignment(LinearPatterns(sizes=(40, 40), scales=(0.02, 0.04), rotation=rot2(math.pi / 12)),
                           points=50, resamples=10)["score"] == pytest.approx(math.cos(math.pi / 6), abs=1e-4)
