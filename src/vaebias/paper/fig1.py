"""Fig. 1 of the paper: local versus global PCA (Sec. 3.3).

A 2-D point cloud is built from small axis-aligned uniform rectangles ("patches") whose
centres lie on a lattice rotated by ``angle``: locally the principal axes are the
Cartesian ones (the patches are wider than tall), globally they are rotated by
``angle``. Three 2-D embeddings (data dimension = latent dimension = 2) are fitted:

- PCA (the covariance's eigenvectors);
- the linear VAE of Theorem 1 (:func:`vaebias.paper.theorem1.fit_linear_vae`), which the theorem
  says aligns like PCA;
- a nonlinear VAE: MLP encoder and decoder (2-64-64, tanh), diagonal Gaussian posterior,
  N(0, I) prior, Gaussian decoder with fixed variance ``noise_var``, trained by Adam.

The default decoder variance, 0.05 (noise std 0.22, near the patches' short side 0.3), is
where the nonlinear VAE's decoder frame followed the local one on the lattice (README); at
0.01 it followed the global one.

Two measures per method and seed:

- *data space*: the method's latent axes seen in data space are directions (PCA's
  principal directions, the linear VAE's decoder columns, the nonlinear VAE's decoder
  Jacobian columns at the encodings of data points). Their orientation modulo 90 degrees
  (two perpendicular axes form one frame) is the length-weighted circular mean of 4θ;
  the report gives its distance to the local frame (the patches' own PCA, 0°) and to the
  global one. The longer column dominates it.
- *latent space* (:func:`patch_tilt`, what the figure shows): how far each patch's image
  in latent space is tilted from the latent axes, averaged over patches, with the
  codes' spread per latent axis (``code_std``) to tell a collapsed axis.

The paper's figure shows the nonlinear VAE following the local frame. That is a
claim this module *measures*; it does not assume it (see the README for the numbers).
The loss times the decoder variance depends on β and that variance only through their
product, so ``noise_var`` alone sets the posterior noise's size (β stays 1 here).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vaebias.paper.theorem1 import fit_linear_vae
from vaebias.report.figures import new_figure, save_figure

__all__ = ["LAYOUTS", "axis_distance", "fig1_experiment", "figure_fig1", "fit_mlp_vae", "orientation",
           "patch_cloud", "patch_tilt"]

#: arrangements of the patch centres, all rotated by ``angle``: a 5 x 3 lattice, a line of 7, or 12
#: centres scattered uniformly (a fixed draw) over a 6 x 1.6 rectangle (times spacing / 1.6)
LAYOUTS = ("lattice", "line", "scatter")
#: the fixed draw of the "scatter" layout's centres (independent of the points' seed)
SCATTER_SEED = 1234


def patch_cloud(n: int, seed: int = 0, *, layout: str = "lattice", angle: float = 30.0, spacing: float = 1.6,
                width: float = 1.0, height: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points, uniform on axis-aligned ``width`` x ``height`` rectangles whose
    centres lie on a lattice (5 x 3) or a line (7) with step ``spacing``, or are 12 points
    scattered uniformly over a (6 x 1.6) * ``spacing`` / 1.6 rectangle (``"scatter"``, a
    fixed draw), the layout rotated by ``angle`` degrees; the patch of each point uniform.

    Returns:
        (x float64 (n, 2), centred; patch index int64 (n,)).

    Raises:
        ValueError: an unknown layout or a non-positive size.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout = {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if min(width, height, spacing) <= 0 or n < 1:
        raise ValueError(f"n, width, height, spacing = {n}, {width}, {height}, {spacing}: expected positive values")
    a = math.radians(angle)
    along, across = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    if layout == "line":
        grid = [(i, 0) for i in range(-3, 4)]
    elif layout == "lattice":
        grid = [(i, j) for j in (-1, 0, 1) for i in range(-2, 3)]
    else:
        grid = np.random.default_rng(SCATTER_SEED).uniform(-1, 1, (12, 2)) * np.array([3.0, 0.8]) / 1.6
    centres = np.array([(i * along + j * across) * spacing for i, j in grid])
    rng = np.random.default_rng(seed)
    patch = rng.integers(0, len(centres), n)
    x = centres[patch] + rng.uniform(-0.5, 0.5, (n, 2)) * np.array([width, height])
    return x - x.mean(0), patch


def orientation(vectors) -> float:
    """Orientation in degrees, in [0, 90), of a frame of perpendicular axes fitted to
    direction vectors (n, 2): the circular mean of 4θ (θ the vectors' angles, weighted
    by their squared lengths), over 4.

    A vector and its perpendicular give the same frame, so 10° and 100° both read 10.
    """
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, 2)
    theta = np.arctan2(v[:, 1], v[:, 0])
    w = (v ** 2).sum(1)  # a collapsed latent axis (a near-zero column) has no say
    mean = math.atan2((w * np.sin(4 * theta)).sum(), (w * np.cos(4 * theta)).sum()) / 4
    o = math.degrees(mean) % 90.0
    return 0.0 if o > 90.0 - 1e-9 else o  # -1e-16 % 90 reads 90: the same frame as 0


def patch_tilt(codes, patch) -> float:
    """Mean over patches of the angle in degrees, in [0, 45], between a patch's image in
    latent space (the principal axis of its codes' covariance) and the nearest latent axis.

    This is what the paper's Fig. 1 shows: near 0 when a method lays the patches out
    axis-aligned (the local frame), near the layout's rotation when it rotates the whole
    cloud onto its global principal axes. A latent axis that carries (almost) nothing
    makes every patch a segment along the other axis and the tilt trivially 0: read it
    together with the codes' spread per axis.

    Args:
        codes: float (n, 2); patch: int (n,) patch index of each point.
    """
    z, patch = np.asarray(codes, dtype=np.float64), np.asarray(patch)
    tilts = []
    for k in np.unique(patch):
        axis = np.linalg.eigh(np.cov(z[patch == k].T))[1][:, -1]
        tilts.append(axis_distance(math.degrees(math.atan2(axis[1], axis[0])), 0.0))
    return float(np.mean(tilts))


def axis_distance(a: float, b: float) -> float:
    """Angle in degrees, in [0, 45], between two frames of orientations ``a`` and ``b``."""
    d = (a - b) % 90.0
    return min(d, 90.0 - d)


class _MLPVAE(torch.nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.Tanh(), torch.nn.Linear(hidden, 4))
        self.dec = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.Tanh(), torch.nn.Linear(hidden, 2))


def fit_mlp_vae(x, *, noise_var: float = 0.05, beta: float = 1.0, steps: int = 20_000, seed: int = 0,
                batch_size: int = 512, lr: float = 1e-3):
    """Fit the nonlinear VAE of Fig. 1 on the points ``x`` (float (N, 2)) by Adam on
    minibatches drawn with replacement; float32. Seeds torch's global random generator (``torch.manual_seed``), as PyTorch training code usually does.

    Returns:
        (encode, decoder): ``encode(x) -> posterior means`` float64 (n, 2), and the
        decoder module (float32 (n, 2) -> (n, 2)).
    """
    torch.manual_seed(seed)
    data = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    model = _MLPVAE()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        xb = data[torch.randint(len(data), (batch_size,), generator=gen)]
        mean, logvar = model.enc(xb).chunk(2, 1)
        z = mean + torch.randn(mean.shape, generator=gen) * (0.5 * logvar).exp()
        recon = ((model.dec(z) - xb) ** 2).sum(1).mean() / (2 * noise_var)
        kl = 0.5 * (mean ** 2 + logvar.exp() - logvar - 1).sum(1).mean()
        opt.zero_grad()
        (recon + beta * kl).backward()
        opt.step()

    def encode(points):
        with torch.no_grad():
            return model.enc(torch.as_tensor(np.asarray(points), dtype=torch.float32)).chunk(2, 1)[0].double().numpy()

    return encode, model.dec


def fig1_experiment(seeds=(0, 1), *, num_points: int = 20_000, layout: str = "lattice", angle: float = 30.0,
                    noise_var: float = 0.05, steps: int = 20_000) -> dict:
    """Fit PCA, the linear VAE and the nonlinear VAE on :func:`patch_cloud` data and
    measure their latent axes' orientations (see module docstring).

    Returns:
        dict with ``"rows"``: one dict per (method, seed) with ``orientation``,
        ``to_local`` and ``to_global`` (degrees); ``"local"`` and ``"global"``: the
        frames' orientations; ``"x"``, ``"patch"`` and ``"codes"`` (method -> codes of
        the first seed) for :func:`figure_fig1`; ``"settings"``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-64-64 MLPs: one thread is fastest, and immune to a busy machine
    try:
        return _experiment(seeds, num_points, layout, angle, noise_var, steps)
    finally:
        torch.set_num_threads(threads)


def _experiment(seeds, num_points, layout, angle, noise_var, steps) -> dict:

    x, patch = patch_cloud(num_points, 0, layout=layout, angle=angle)
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    evals, evecs = evals[::-1], evecs[:, ::-1]  # first principal direction first
    global_frame = orientation(evecs.T)
    local_frame = orientation(np.concatenate(
        [np.linalg.eigh(np.cov(x[patch == k].T))[1].T for k in np.unique(patch)]))
    rows, codes = [], {}

    def add(method, seed, directions, z):
        o = orientation(directions)
        rows.append({"method": method, "seed": seed, "orientation": o, "to_local": axis_distance(o, local_frame),
                     "to_global": axis_distance(o, global_frame), "patch_tilt": patch_tilt(z, patch),
                     "code_std": [float(v) for v in z.std(0)]})
        codes.setdefault(method, z)

    add("PCA", None, evecs.T, x @ evecs / np.sqrt(evals))
    for seed in seeds:
        lin = fit_linear_vae(x[:4000], noise_var=noise_var, steps=3000, seed=seed)
        add("linear VAE", seed, lin["decoder"].T, x @ lin["encoder"].T)
        encode, decoder = fit_mlp_vae(x, noise_var=noise_var, steps=steps, seed=seed)
        z = encode(x[:3000])
        jac = torch.func.vmap(torch.func.jacrev(decoder))(torch.as_tensor(z, dtype=torch.float32)).detach()
        add("nonlinear VAE", seed, torch.cat([jac[:, :, 0], jac[:, :, 1]]).numpy(), encode(x))
    return {"rows": rows, "local": local_frame, "global": global_frame, "data_tilt": patch_tilt(x, patch),
            "x": x, "patch": patch, "codes": codes,
            "settings": {"seeds": list(seeds), "num_points": num_points, "layout": layout, "angle": angle,
                         "noise_var": noise_var, "steps": steps}}


def figure_fig1(result: dict, path) -> Path:
    """Four panels, coloured by patch: the nonlinear VAE's codes, the data, the linear
    VAE's and PCA's codes, the VAEs' of the first seed (named in the titles), with the
    measured angles in the titles; a PNG at ``path``."""

    first = {}
    for r in result["rows"]:
        first.setdefault(r["method"], r)
    fig, axes = new_figure(1, 4, figsize=(16, 4.2))
    panels = [("nonlinear VAE", result["codes"]["nonlinear VAE"]), ("data", result["x"]),
              ("linear VAE", result["codes"]["linear VAE"]), ("PCA", result["codes"]["PCA"])]
    for ax, (name, pts) in zip(axes, panels):
        idx = np.random.default_rng(0).permutation(len(pts))[:4000]
        ax.scatter(pts[idx, 0], pts[idx, 1], c=result["patch"][idx], s=2, cmap="tab20")
        ax.set_aspect("equal")
        if name == "data":
            ax.set_title(f"data: local frame {result['local']:.1f}°, global {result['global']:.1f}°", fontsize=9)
            ax.set_xlabel("x₁")
            ax.set_ylabel("x₂")
        else:
            r = first[name]
            seed = "" if r["seed"] is None else f" (seed {r['seed']})"
            ax.set_title(f"{name}{seed}: patches tilted {r['patch_tilt']:.1f}° from the axes\n"
                         f"decoder frame {r['to_local']:.1f}° from local, {r['to_global']:.1f}° from global",
                         fontsize=9)
            ax.set_xlabel("z₁")
            ax.set_ylabel("z₂")
    return save_figure(fig, path)
