"""Theorem 1 of the paper, checked numerically: linear VAEs perform PCA (Sec. 4.1).

Setting (the paper's Eqs. 6-11): data x in R^D with distinct principal variances; a
linear VAE with a diagonal Gaussian posterior q(z|x) = N(W_E x, diag(exp(s))), the prior
N(0, I) and a Gaussian decoder p(x|z) = N(M_D z, sigma^2 I) with fixed sigma^2. The
theorem states that the decoder's SVD ``M_D = U Sigma V^T`` has

- ``V`` a signed permutation matrix (the latent axes are not rotated), and
- ``U`` the data's principal directions (up to sign and order),

i.e. the embedding is aligned exactly like PCA's. A plain linear autoencoder spans the
same subspace (Baldi & Hornik 1989) but nothing fixes its rotation, so its ``V`` is
arbitrary. The diagonal posterior is what breaks the rotational symmetry.

:func:`theorem1_experiment` fits both models on Gaussian data whose principal axes are
randomly rotated against the coordinate axes and reports, per seed, the distance of
``V`` from the nearest signed permutation and of ``U`` from the principal directions
(both Frobenius norms, 0 when the theorem's alignment holds, at most ``sqrt(2 d)``).

The VAE's objective is the negative ELBO per point with the reconstruction expectation in
closed form: ``E_q ||x - M_D z||^2 = ||x - M_D W_E x||^2 + sum_j exp(s_j) ||M_D[:, j]||^2``,
so the fit is deterministic (full-batch Adam, then L-BFGS, in float64).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

#: both distances of :func:`theorem1_check` below this count as Theorem 1's alignment
PASS_TOLERANCE = 0.05

__all__ = [
    "fit_linear_ae",
    "fit_linear_vae",
    "principal_data",
    "sample_principal_directions",
    "signed_permutation_distance",
    "subspace_alignment",
    "theorem1_check",
    "theorem1_experiment",
]


def principal_data(num_points: int, variances, seed: int = 0):
    """Centred Gaussian data with the given principal variances along randomly rotated axes.

    Args:
        num_points: N >= 2.
        variances: D positive principal variances.
        seed: seeds the rotation and the samples.

    Returns:
        (x float64 (N, D), directions float64 (D, D)): ``directions[:, i]`` is the unit
        principal direction of ``variances[i]`` (the data are ``g * sqrt(var) @ directions.T``
        with g standard normal, then centred).

    Raises:
        ValueError: N < 2 or a non-positive variance.
    """
    var = np.asarray(variances, dtype=np.float64)
    if num_points < 2 or var.ndim != 1 or var.size < 1 or np.any(var <= 0):
        raise ValueError(f"need num_points >= 2 and positive variances; got {num_points}, {variances!r}")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(var.size, var.size)))
    directions = q * np.sign(np.diag(r))
    x = (rng.normal(size=(num_points, var.size)) * np.sqrt(var)) @ directions.T
    return x - x.mean(0), directions


def sample_principal_directions(x) -> np.ndarray:
    """The principal directions of the data matrix itself: eigenvectors of ``x^T x / N``,
    float64 (D, D), columns sorted by decreasing eigenvalue (Theorem 1's ``V_X``)."""
    x = np.asarray(x, dtype=np.float64)
    vals, vecs = np.linalg.eigh(x.T @ x / x.shape[0])
    return vecs[:, np.argsort(vals)[::-1]]


def _check_square_orthonormal_ish(m, name):
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix; got shape {m.shape}")
    return m


def signed_permutation_distance(v) -> float:
    """Frobenius distance of a matrix with orthonormal columns from the nearest signed
    permutation: ``min_P ||v - P||_F`` over signed (partial) permutation matrices.

    For orthonormal columns ``||v - P||_F^2 = 2 d - 2 sum_i |v[pi(i), i]|``, so the nearest
    P follows from a linear assignment on ``|v|``.

    Args:
        v: float (n, d), n >= d, orthonormal columns.

    Returns:
        float in [0, sqrt(2 d)].
    """
    v = _check_square_orthonormal_ish(v, "v")
    rows, cols = linear_sum_assignment(-np.abs(v))
    p = np.zeros_like(v)
    p[rows, cols] = np.where(v[rows, cols] < 0, -1.0, 1.0)
    return float(np.linalg.norm(v - p))


def subspace_alignment(u, directions) -> float:
    """Frobenius distance between the columns of ``u`` and the nearest signed choice of
    distinct columns of ``directions`` (both orthonormal): 0 when every column of ``u``
    is (up to sign) one of the given directions.

    Args:
        u: float (D, d); directions: float (D, D') with d <= D'.

    Returns:
        float in [0, sqrt(2 d)].
    """
    u = _check_square_orthonormal_ish(u, "u")
    directions = _check_square_orthonormal_ish(directions, "directions")
    return signed_permutation_distance(directions.T @ u)


def theorem1_check(decoder, directions) -> dict:
    """Decompose a linear decoder ``M_D = U Sigma V^T`` and measure Theorem 1's alignment.

    Args:
        decoder: float (D, d), the decoder matrix M_D.
        directions: float (D, D), the data's principal directions (columns).

    Returns:
        dict: ``"v_distance"`` (:func:`signed_permutation_distance` of V),
        ``"u_distance"`` (:func:`subspace_alignment` of U to ``directions``) and
        ``"singular_values"`` (list of d floats).
    """
    m = _check_square_orthonormal_ish(decoder, "decoder")
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return {"v_distance": signed_permutation_distance(vt.T), "u_distance": subspace_alignment(u, directions),
            "singular_values": s.tolist()}


def _adam_fit(params, loss_fn, steps, lr):
    """``steps`` full-batch Adam steps, then L-BFGS (strong-Wolfe line search) to polish:
    the rotation that Theorem 1 pins down sits in a very flat valley, where Adam alone
    stalls. Runs on one torch thread (these problems are tiny; more threads only contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(params, loss_fn, steps, lr)
    finally:
        torch.set_num_threads(threads)


def _fit(params, loss_fn, steps, lr):
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                              history_size=50, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        value = loss_fn()
        value.backward()
        return value

    lbfgs.step(closure)
    return float(loss_fn().detach())


def fit_linear_vae(x, latent_dim: int | None = None, *, noise_var: float = 0.1, beta: float = 1.0,
                   steps: int = 1000, lr: float = 0.01, seed: int = 0) -> dict:
    """Fit the linear VAE of Theorem 1 by full-batch Adam on the closed-form negative ELBO.

    Per point: ``(||x - M_D W_E x||^2 + sum_j exp(s_j) ||M_D[:, j]||^2) / (2 noise_var)
    + beta * KL(N(W_E x, diag(exp(s))) || N(0, I))`` (constants dropped), averaged.

    Args:
        x: float (N, D) centred data.
        latent_dim: d (default D).
        noise_var: the decoder's fixed variance sigma^2 (> 0).
        beta: weight of the KL term (> 0).
        steps, lr: Adam steps and learning rate.
        seed: seeds the random initialisation.

    Returns:
        dict of float64 numpy arrays: ``"encoder"`` W_E (d, D), ``"log_var"`` s (d,),
        ``"decoder"`` M_D (D, d); and ``"loss"`` (float, the final objective).
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    d = latent_dim or x.shape[1]
    g = torch.Generator().manual_seed(seed)
    w_e = (0.1 * torch.randn(d, x.shape[1], generator=g, dtype=torch.float64)).requires_grad_()
    m_d = (0.1 * torch.randn(x.shape[1], d, generator=g, dtype=torch.float64)).requires_grad_()
    s = torch.full((d,), -1.0, dtype=torch.float64, requires_grad=True)

    def loss():
        mean = x @ w_e.T
        recon = ((x - mean @ m_d.T) ** 2).sum(1).mean() + (s.exp() * (m_d ** 2).sum(0)).sum()
        kl = 0.5 * ((mean ** 2).sum(1).mean() + (s.exp() - s - 1).sum())
        return recon / (2 * noise_var) + beta * kl

    final = _adam_fit([w_e, m_d, s], loss, steps, lr)
    return {"encoder": w_e.detach().numpy(), "log_var": s.detach().numpy(), "decoder": m_d.detach().numpy(),
            "loss": final}


def fit_linear_ae(x, latent_dim: int | None = None, *, steps: int = 1000, lr: float = 0.01,
                  seed: int = 0) -> dict:
    """Fit a plain linear autoencoder ``x -> M_D W_E x`` on the mean squared error.

    Args and returns as :func:`fit_linear_vae` (without ``log_var``).
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    d = latent_dim or x.shape[1]
    g = torch.Generator().manual_seed(seed)
    w_e = (0.1 * torch.randn(d, x.shape[1], generator=g, dtype=torch.float64)).requires_grad_()
    m_d = (0.1 * torch.randn(x.shape[1], d, generator=g, dtype=torch.float64)).requires_grad_()
    final = _adam_fit([w_e, m_d], lambda: ((x - x @ w_e.T @ m_d.T) ** 2).sum(1).mean(), steps, lr)
    return {"encoder": w_e.detach().numpy(), "decoder": m_d.detach().numpy(), "loss": final}


def theorem1_experiment(seeds=(0, 1, 2), variances=(9.0, 4.0, 1.0), *, num_points: int = 2000,
                        noise_var: float = 0.1, steps: int = 1000) -> list[dict]:
    """Fit a linear VAE and a linear AE per seed and check Theorem 1's alignment.

    Args:
        seeds: one data set and one initialisation per seed.
        variances: the data's principal variances (distinct, above ``noise_var`` for
            every latent to be used).
        num_points, noise_var, steps: see :func:`principal_data` and :func:`fit_linear_vae`.

    Returns:
        one row per (seed, model): ``{"seed", "model": "linear VAE" | "linear AE",
        "v_distance", "u_distance", "singular_values", "loss", "passes"}``; ``passes``:
        both distances below :data:`PASS_TOLERANCE`.
    """
    rows = []
    for seed in seeds:
        x, _ = principal_data(num_points, variances, seed)
        directions = sample_principal_directions(x)  # U* is the data matrix's own (Sec. 4.1)
        fits = {"linear VAE": fit_linear_vae(x, noise_var=noise_var, steps=steps, seed=seed),
                "linear AE": fit_linear_ae(x, steps=steps, seed=seed)}
        for name, res in fits.items():
            check = theorem1_check(res["decoder"], directions)
            rows.append({"seed": seed, "model": name, **check, "loss": res["loss"],
                         "passes": max(check["v_distance"], check["u_distance"]) < PASS_TOLERANCE})
    return rows
