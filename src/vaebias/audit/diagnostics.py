"""Trained-model diagnostics of the paper's mechanism (Zietlow et al. 2021, Sec. 3, after
Rolinek et al., CVPR 2019): a VAE in the polarised regime has a decoder whose Jacobian columns
are orthogonal, and its latent axes follow the data's local principal directions; they follow
the factors only where those two coincide.

For a trained run with a decoder (``model.decode``, Bernoulli logits), at points w of the grid
with images x = g(w) and codes z = encode(x) (the posterior mean):

- ``column_overlap``: the mean |cos| between the decoder Jacobian columns ∂σ(decode(z))/∂z_j of
  the active latents (0: orthogonal, as Rolinek et al. find for VAEs);
- ``follows_principal``: for each active latent, the largest |cos| between its column and the
  data's local principal directions J(w)v_i (v_i the eigenvectors of J(w)ᵀJ(w), J(w) the factor
  Jacobian of :mod:`vaebias.audit.data`), averaged;
- ``follows_factors``: the same against the factor columns J_k(w) themselves.

Active latents: variance of the code over the points above 0.01 (as active units).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vaebias.audit.data import audit_points, factor_jacobian, ordinal_factors
from vaebias.data import GroundTruthData
from vaebias.training import load_run

__all__ = ["decoder_diagnostics"]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def _codes(model, x):
    return model.encode(x)


def decoder_diagnostics(run_dir: str | os.PathLike, data: GroundTruthData, *, points: int = 64, seed: int = 0,
                        device="cpu") -> dict | None:
    """The diagnostics of the module docstring for the run in ``run_dir`` on ``data``.

    Args:
        run_dir: a finished training run.
        data: the dataset to probe at (the run's own, or a variant); the factor-based
            numbers need a full grid and are None on a labelled sample.
        points: grid points w (uniform, generator ``seed``).

    Returns:
        ``{"column_overlap", "follows_principal", "follows_factors", "active", "points"}``
        (floats in [0, 1], the active latent indices), or None for a model without a
        ``decode`` method or with fewer than two active latents.
    """
    model, _ = load_run(run_dir, device)
    if not callable(getattr(model, "decode", None)):
        return None
    grid = getattr(data, "is_full_grid", True)
    w = audit_points(data, points, np.random.default_rng(seed)) if grid else data.sample_factors(
        points, np.random.default_rng(seed))
    x = data.images(w, device=device)
    z = _codes(model, x).float()
    active = torch.nonzero(z.var(0) > 0.01).flatten().tolist()
    if len(active) < 2:
        return None

    def pixels(code):
        return torch.sigmoid(model.decode(code)).flatten(1)

    cols = []
    for j in active:
        tangent = torch.zeros_like(z)
        tangent[:, j] = 1.0
        cols.append(torch.func.jvp(pixels, (z,), (tangent,))[1].detach())  # (n, D)
    c = torch.stack(cols, 1).double()                                         # (n, A, D)
    cu = c / c.norm(dim=2, keepdim=True).clamp_min(1e-12)
    cos = (cu @ cu.transpose(1, 2)).abs()
    a = len(active)
    iu = torch.triu_indices(a, a, 1)
    out = {"column_overlap": float(cos[:, iu[0], iu[1]].mean()), "active": active, "points": points,
           "follows_principal": None, "follows_factors": None}
    if not grid or len(ordinal_factors(data)) < 2:
        return out
    jac = factor_jacobian(data, w, device=device).double()                   # (n, D, K')
    _, _, vh = torch.linalg.svd(jac.transpose(1, 2) @ jac)                    # G = V S Vᵀ
    principal = jac @ vh.transpose(1, 2)                                      # (n, D, K'): J v_i
    pu = principal / principal.norm(dim=1, keepdim=True).clamp_min(1e-12)
    fu = jac / jac.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out["follows_principal"] = float((cu @ pu).abs().amax(2).mean())
    out["follows_factors"] = float((cu @ fu).abs().amax(2).mean())
    return out
