"""The two reference models of the manipulation (paper Sec. 4.4): the most and least
disentangled of R restarts, or the best one and a rotated copy of it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaebias._internal.errors import RunError
from vaebias._internal.io import atomic_torch_save, ensure_writable_dir, load_checkpoint, read_yaml, write_yaml
from vaebias.data.base import GroundTruthData
from vaebias.training import load_run
from vaebias.training.rundir import CHECKPOINT

__all__ = ["dct_rotation", "rotate_reference", "select_references"]


def select_references(scores: dict[str, float]) -> dict:
    """Entangled = lowest score, disentangled = highest (paper Sec. 4.4; MIG).

    Args:
        scores: run directory -> MIG, for at least two restarts.

    Returns:
        ``{"entangled": dir, "disentangled": dir, "scores": scores}``.

    Raises:
        RunError: fewer than two restarts.
    """
    if len(scores) < 2:
        raise RunError(f"need at least 2 β-VAE restarts to pick references, got {len(scores)}")
    items = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))
    return {"entangled": items[0][0], "disentangled": items[-1][0], "scores": dict(scores)}


def dct_rotation(k: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix float64 (k, k): a rotation that mixes every axis
    with every other (for k = 2, the 45° rotation up to a reflection).

    Entry (i, j) = c_i cos(π (2j + 1) i / (2k)), c_0 = sqrt(1/k), c_i = sqrt(2/k).
    """
    if k < 1:
        raise ValueError(f"k = {k}: expected an integer >= 1")
    i = torch.arange(k, dtype=torch.float64)[:, None]
    j = torch.arange(k, dtype=torch.float64)[None, :]
    q = torch.cos(torch.pi * (2 * j + 1) * i / (2 * k)) * (2.0 / k) ** 0.5
    q[0] /= 2 ** 0.5
    return q


def rotate_reference(source_dir: str | os.PathLike, out_dir: str | os.PathLike, data: GroundTruthData, *,
                     num_points: int = 2000, threshold: float = 0.8, seed: int = 0) -> dict:
    """The entangled reference as the disentangled one with its latent space rotated
    (the ``entangled_reference: rotated`` option of a profile).

    Where every β-VAE restart disentangles (small datasets, e.g. ``blobs``), the paper's
    "lowest-MIG restart" is not entangled. This builds one that is, as an alignment the
    architecture can express: with Q the orthonormal DCT matrix (:func:`dct_rotation`)
    over the active units (mean posterior variance < ``threshold`` on ``num_points``
    samples; the identity on the others),

    - encoder mean head: W_μ <- Q W_μ, b_μ <- Q b_μ, so the codes are Q μ(x);
    - decoder's first layer: W <- W Qᵀ, so decode'(Q μ) = decode(μ) exactly;
    - log-variance head: unchanged, so rotated unit i keeps the posterior variance
      of unit i. The KL term is exactly the source's (|Qμ| = |μ|), and so are the
      reconstructions from the posterior mean; the posterior noise, axis-aligned in
      the new code space, lies along the rotated directions in the source's: the
      reference is a solution of the same loss up to the orientation of its noise --
      exactly the freedom the paper's argument is about (Sec. 4.1-4.2).

    The result is an ordinary β-VAE run directory (``config.yaml`` of the source plus a
    ``rotated_from`` entry and the matrix, ``checkpoint.pt``): its reconstructions from
    the posterior mean are the source's, its MIG is low.

    Args:
        source_dir: the disentangled reference's run directory (a GaussianVAE).
        out_dir: the new run directory (kept if it already holds this rotation).
        data: the dataset the reference was trained on.

    Returns:
        ``{"run_dir", "active", "rotation"}``: the directory, the rotated units and Q
        (list of lists).

    Raises:
        RunError: the source is not a stochastic model with ``encoder.heads`` and a
            linear first decoder layer, or has fewer than two active units.
    """
    out_dir = Path(out_dir)
    model, record = load_run(source_dir, "cpu")
    heads = getattr(getattr(model, "encoder", None), "heads", None)
    first = getattr(getattr(model, "decoder", None), "net", [None])[0]
    if not getattr(model, "stochastic", False) or not isinstance(heads, nn.Linear) or not isinstance(first, nn.Linear):
        raise RunError(f"{str(source_dir)!r}: rotating the latent space needs a VAE with the standard encoder "
                       f"heads and decoder (got {record.get('model')!r})")
    d = model.num_factors
    x = data.images(data.sample_factors(num_points, np.random.default_rng(seed)))
    with torch.no_grad():
        variances = torch.cat([model.posterior(b)[1] for b in x.split(500)]).mean(0)
    active = [int(i) for i in torch.nonzero(variances < threshold).flatten()]
    if len(active) < 2:
        raise RunError(f"{str(source_dir)!r} has {len(active)} active unit(s) (mean posterior variance < "
                       f"{threshold}); rotating needs at least 2")
    q = torch.eye(d, dtype=torch.float64)
    q[np.ix_(active, active)] = dct_rotation(len(active))
    with torch.no_grad():  # heads: [mean rows; log-variance rows]; only the mean rows turn
        heads.weight[:d] = (q @ heads.weight[:d].double()).float()
        heads.bias[:d] = (q @ heads.bias[:d].double()).float()
        first.weight.copy_((first.weight.double() @ q.T).float())
    # the source by a path relative to the rotated run: the record holds when the results folder moves
    rotation = {"source": os.path.relpath(Path(source_dir).resolve(), Path(out_dir).resolve()),
                "active_units": active, "matrix": q.tolist()}
    rec = dict(record, rotated_from=rotation)
    ensure_writable_dir(out_dir)
    if (out_dir / "config.yaml").exists() and (out_dir / CHECKPOINT).exists():
        old = read_yaml(out_dir / "config.yaml").get("rotated_from", {})
        if old.get("matrix") == rotation["matrix"] and old.get("active_units") == active:
            return {"run_dir": str(out_dir), "active": active, "rotation": q.tolist()}  # done before
        raise RunError(f"{out_dir / 'config.yaml'} holds another rotation; delete {str(out_dir)!r} to redo it")
    state = load_checkpoint(Path(source_dir) / CHECKPOINT, map_location="cpu")
    state["model"] = model.state_dict()
    atomic_torch_save(state, out_dir / CHECKPOINT)
    write_yaml(out_dir / "config.yaml", rec)
    return {"run_dir": str(out_dir), "active": active, "rotation": q.tolist()}


