"""The dataset audit: does a dataset's local variance line up with its factors? Model-free.

The paper's argument (Zietlow et al. 2021, Sec. 3, after Rolinek et al. 2019): a VAE in the
polarised regime aligns its latent axes with the *local principal directions* of the data. Those
directions single out the ground-truth factors only when, near every point w of the factor grid,
the pixel changes of the different factors are orthogonal and of distinct size. This module
measures exactly that.

**Local alignment** (:func:`local_alignment`). At sampled grid points w:

1. the factor Jacobian J(w) (D × K', D pixels, K' ordinal factors with more than one class) by
   central finite differences on the grid, one column per factor: J_k = (g(w + e_k) −
   g(w − e_k)) / 2 (units: pixel values per class step). The points w are drawn from the grid's
   interior (:func:`audit_points`), so that no two columns share an image; a factor with two
   classes only has the one-sided difference;
2. the local Gram matrix G(w) = JᵀJ (K' × K'); its eigenvectors v_i are the local principal
   directions *in factor space*, its eigenvalues λ_i the variance along them;
3. the axis alignment of each direction, a_i = (K'·max_k v_ik² − 1)/(K' − 1) ∈ [0, 1]
   (1: v_i is a factor axis; 0: v_i spreads evenly over all factors);
4. the eigen-gap of each direction, γ_i = min_{j≠i} |λ_i − λ_j|: directions of equal variance
   cannot be aligned, only chosen, so they carry no weight (gaps below ``GAP_TOLERANCE``·tr G,
   float32 rounding, count as zero).

The score is the gap-weighted mean of the alignments, each point normalised by its total
variance tr G(w):

    S = Σ_w Σ_i γ_i(w)·a_i(w) / tr G(w)  ÷  Σ_w Σ_i γ_i(w) / tr G(w)   ∈ [0, 1].

S = 1 when every factor moves its own orthogonal pixel pattern with distinct sizes; a rotation
of the factors (x = g(Rw)) lowers it (for two factors S = |cos 2θ| at rotation angle θ). The
per-pair breakdown restricts G to factors (k, l): with a = G_kk, d = G_ll, b = G_kl the 2 × 2
version is S_kl = Σ_w |a − d|/(a + d) ÷ Σ_w √((a − d)² + 4b²)/(a + d) = the gap-weighted mean
of |cos 2θ_kl|, θ_kl the angle of the pair's principal directions to the axes; ``overlap`` is
the mean |cos| between the two columns, |b|/√(ad). Intervals: percentile bootstrap over points.

**Rank correlation** (:func:`rank_correlation`, after Michlo et al., IJCAI 2023, the
``rcorr_ground_data`` of disent): Spearman's ρ between the L1 distance of random pairs of
points in factor space (class indices) and their mean squared pixel distance, over all factors
and along each factor alone (the others fixed).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from vaebias._internal.errors import ConfigError
from vaebias._internal.io import atomic_path, write_json
from vaebias.data import GroundTruthData, require_full_grid
from vaebias.report.figures import new_figure, save_figure

__all__ = ["alignment_from_gram", "factor_jacobian", "local_alignment", "local_gram", "ordinal_factors",
           "audit_datasets", "audit_points", "ratio_ci", "systematic_shift", "rank_correlation", "audit_dataset",
           "audit_table", "write_dataset_audit"]


#: eigen-gaps below this share of tr G count as zero: float32 images make the finite differences
#: exact to about 1e-7 of a pixel value, so smaller gaps are rounding, not structure
GAP_TOLERANCE = 1e-4


def ordinal_factors(data: GroundTruthData) -> list[int]:
    """Indices of the factors the audit differentiates: not categorical, more than one class."""
    cats = set(int(c) for c in data.categorical_factors)
    return [k for k, s in enumerate(data.factor_sizes) if k not in cats and s > 1]


@torch.no_grad()
def factor_jacobian(data: GroundTruthData, factors: np.ndarray, *, device=None) -> torch.Tensor:
    """The finite-difference factor Jacobian J(w) at each factor row (module docstring).

    Args:
        data: a full-grid dataset.
        factors: int (n, K) grid points w.

    Returns:
        float32 (n, D, K'): one column per ordinal factor with more than one class
        (:func:`ordinal_factors`), pixel values per class step, D = C·H·W.

    Raises:
        DataError: ``data`` is not a full factor grid.
        ConfigError: fewer than two ordinal factors with more than one class.
    """
    require_full_grid(data, "the dataset audit's finite differences")
    ords = ordinal_factors(data)
    if len(ords) < 2:
        raise ConfigError(f"dataset {data.name!r} has {len(ords)} ordinal factor(s) with more than one class; "
                          f"the local alignment needs at least two")
    sizes = np.asarray(data.factor_sizes, dtype=np.int64)
    w = np.asarray(factors, dtype=np.int64)
    m, kk = len(w), len(ords)
    plus, minus = [], []
    for k in ords:
        p, q = w.copy(), w.copy()
        p[:, k] = np.minimum(w[:, k] + 1, sizes[k] - 1)
        q[:, k] = np.maximum(w[:, k] - 1, 0)
        plus.append(p)
        minus.append(q)
    steps = np.stack([p[:, k] - q[:, k] for p, q, k in zip(plus, minus, ords)], 1)  # (m, K')
    x = data.images(np.concatenate(plus + minus), device=device).flatten(1)
    jac = (x[: kk * m] - x[kk * m:]).view(kk, m, -1).permute(1, 2, 0)              # (m, D, K')
    return jac / torch.from_numpy(steps).to(jac)[:, None, :]


def audit_points(data: GroundTruthData, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` grid points uniform over the grid's interior: each ordinal factor with three or
    more classes at 1 .. size − 2, so that every Jacobian column is a central difference and
    no two columns share an image (at the edge, one-sided differences would all contain the
    point's own image, and per-image noise there would look like a correlated change of the
    columns, a rotation). The other factors are uniform. int64 (n, K)."""
    w = data.sample_factors(n, rng)
    sizes = data.factor_sizes
    for k in ordinal_factors(data):
        if sizes[k] >= 3:
            w[:, k] = rng.integers(1, sizes[k] - 1, n)
    return w


def local_gram(data: GroundTruthData, factors: np.ndarray, *, device=None, chunk: int = 64) -> np.ndarray:
    """G(w) = J(w)ᵀJ(w) of :func:`factor_jacobian` at each factor row, in float64.

    Returns:
        float64 (n, K', K').

    Raises:
        as :func:`factor_jacobian`.
    """
    factors = np.asarray(factors, dtype=np.int64)
    parts = []
    if len(factors) == 0:
        k = len(ordinal_factors(data))
        return np.zeros((0, k, k))
    for a in range(0, len(factors), chunk):
        jac = factor_jacobian(data, factors[a:a + chunk], device=device).double()
        parts.append((jac.transpose(1, 2) @ jac).cpu().numpy())
    return np.concatenate(parts)


def alignment_from_gram(gram: np.ndarray) -> dict:
    """Per-point numerator and denominator of the local alignment S (module docstring).

    Args:
        gram: float (n, K, K) symmetric positive semi-definite, K >= 2.

    Returns:
        ``{"num": (n,), "den": (n,), "alignment": (n, K), "gap": (n, K), "eigenvalues": (n, K)}``
        (float64; rows with tr G = 0 have num = den = 0; gaps below ``GAP_TOLERANCE``·tr G
        are 0). S = num.sum() / den.sum().
    """
    g = np.asarray(gram, dtype=np.float64)
    n, k, _ = g.shape
    lam, vec = np.linalg.eigh(g)                                    # ascending; columns v_i
    lam = np.clip(lam, 0.0, None)
    align = (k * (vec ** 2).max(axis=1) - 1.0) / (k - 1.0)          # (n, K): per eigenvector
    diff = np.abs(lam[:, :, None] - lam[:, None, :])
    diff[:, np.arange(k), np.arange(k)] = np.inf
    gap = diff.min(axis=2)
    trace = np.trace(g, axis1=1, axis2=2)
    safe = np.where(trace > 0, trace, 1.0)
    gap = np.where(gap > GAP_TOLERANCE * safe[:, None], gap, 0.0)  # float32 images: smaller gaps are rounding
    num = np.where(trace > 0, (gap * align).sum(1) / safe, 0.0)
    den = np.where(trace > 0, gap.sum(1) / safe, 0.0)
    return {"num": num, "den": den, "alignment": align, "gap": gap, "eigenvalues": lam}


def ratio_ci(num: np.ndarray, den: np.ndarray, *, resamples: int, seed: int, level: float = 0.95):
    """(Σnum/Σden, low, high): the ratio and its percentile bootstrap interval over rows
    (float arrays (n,)); NaNs when Σden = 0."""
    total = den.sum()
    value = float(num.sum() / total) if total > 0 else float("nan")
    if not total > 0:
        return value, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n = len(num)
    stats = np.empty(resamples)
    for i in range(0, resamples, 256):
        idx = rng.integers(0, n, size=(min(256, resamples - i), n))
        d = den[idx].sum(1)
        stats[i:i + len(idx)] = np.where(d > 0, num[idx].sum(1) / np.where(d > 0, d, 1), np.nan)
    lo, hi = np.nanpercentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return value, float(lo), float(hi)


def local_alignment(data: GroundTruthData, *, points: int = 1000, seed: int = 0, resamples: int = 2000,
                    device=None, progress: bool = False) -> dict:
    """The local alignment score S of ``data`` with its interval and per-pair breakdown.

    Args:
        data: a full-grid dataset with at least two ordinal factors of more than one class.
        points: grid points w drawn uniformly from the grid's interior (:func:`audit_points`,
            generator ``seed``).
        resamples: bootstrap resamples of the 95 % interval.

    Returns:
        ``{"score", "ci_low", "ci_high", "points", "factors" (names of the K' ordinal
        factors), "pairs": [{"factors", "alignment", "ci_low", "ci_high", "overlap"}],
        "identifiable": mean over points of Σγ/tr G (0: isotropic, the directions are only
        chosen)}``.

    Raises:
        DataError: not a full grid; ConfigError: fewer than two ordinal factors, points < 2.
    """
    return _alignment_of(data, _gram_at_audit_points(data, points, seed, device, progress), resamples, seed)


def _gram_at_audit_points(data: GroundTruthData, points: int, seed: int, device, progress: bool) -> np.ndarray:
    """G at the ``points`` audit points of generator ``seed``: float64 (points, K', K')."""
    if not (isinstance(points, int) and points >= 2):
        raise ConfigError(f"points = {points!r}; expected an integer >= 2")
    require_full_grid(data, "the dataset audit's finite differences")
    w = audit_points(data, points, np.random.default_rng(seed))
    grams = []
    for a in tqdm(range(0, points, 256), disable=not progress, desc=f"audit {data.name}", leave=False):
        grams.append(local_gram(data, w[a:a + 256], device=device))
    return np.concatenate(grams)


def _alignment_of(data: GroundTruthData, gram: np.ndarray, resamples: int, seed: int) -> dict:
    """:func:`local_alignment`'s result from the Gram matrices at the audit points."""
    ords = ordinal_factors(data)
    parts = alignment_from_gram(gram)
    score, lo, hi = ratio_ci(parts["num"], parts["den"], resamples=resamples, seed=seed)
    pairs = []
    for i in range(len(ords)):
        for j in range(i + 1, len(ords)):
            a, d, b = gram[:, i, i], gram[:, j, j], gram[:, i, j]
            s = a + d
            ok = s > 0
            num = np.where(ok, np.abs(a - d) / np.where(ok, s, 1), 0.0)
            den = np.where(ok, np.sqrt((a - d) ** 2 + 4 * b ** 2) / np.where(ok, s, 1), 0.0)
            v, pl, ph = ratio_ci(num, den, resamples=resamples, seed=seed + 1 + i * len(ords) + j)
            both = (a > 0) & (d > 0)
            overlap = float(np.mean(np.abs(b[both]) / np.sqrt(a[both] * d[both]))) if both.any() else float("nan")
            pairs.append({"factors": [data.factor_names[ords[i]], data.factor_names[ords[j]]], "alignment": v,
                          "ci_low": pl, "ci_high": ph, "overlap": overlap})
    return {"score": score, "ci_low": lo, "ci_high": hi, "points": len(gram),
            "factors": [data.factor_names[k] for k in ords], "pairs": pairs,
            "identifiable": float(parts["den"].mean())}


def _pair_correlations(gram: np.ndarray) -> np.ndarray:
    """G_kl / sqrt(G_kk G_ll) over the pairs k < l: float64 (n, pairs)."""
    k = gram.shape[1]
    iu = np.triu_indices(k, 1)
    s = np.sqrt(np.einsum("nii->ni", gram))
    return gram[:, iu[0], iu[1]] / np.maximum(s[:, iu[0]] * s[:, iu[1]], 1e-30)


def systematic_shift(base: GroundTruthData, other: GroundTruthData, *, points: int = 1000, seed: int = 0,
                     resamples: int = 2000, device=None) -> dict:
    """How consistently ``other`` changes the local structure of ``base``, at the same grid
    points: per factor pair, the mean over points of the change of the columns' correlation
    G_kl/√(G_kk G_ll); summarised as the mean of its absolute per-pair means, with a 95 %
    bootstrap interval over points.

    Zero-mean per-image noise changes G at each point but not in expectation: its shift is
    near 0 (i.i.d. noise adds D·Var/2 to the diagonal and nothing to the off-diagonals on
    average). A change that moves the local principal directions consistently, as m_ψ does,
    has a shift well above it. Both datasets need the same factor grid.

    Returns:
        ``{"shift", "ci_low", "ci_high", "mean_abs_change", "pairs": {"a × b": mean change}}``;
        ``mean_abs_change`` is the mean per-point |change| (noise and structure alike).
    """
    _check_same_grid(base, other)
    return _shift_of(base, _gram_at_audit_points(base, points, seed, device, False),
                     _gram_at_audit_points(other, points, seed, device, False), resamples, seed)


def _check_same_grid(base: GroundTruthData, other: GroundTruthData) -> None:
    if tuple(base.factor_sizes) != tuple(other.factor_sizes):
        raise ConfigError(f"{other.name!r} has factor sizes {tuple(other.factor_sizes)}, {base.name!r} "
                          f"{tuple(base.factor_sizes)}; expected the same grid")


def _shift_of(base: GroundTruthData, g_base: np.ndarray, g_other: np.ndarray, resamples: int, seed: int) -> dict:
    """:func:`systematic_shift`'s result from the Gram matrices at the same audit points."""
    delta = _pair_correlations(g_other) - _pair_correlations(g_base)
    points = len(delta)
    value = float(np.abs(delta.mean(0)).mean())
    rng = np.random.default_rng(seed)
    boots = [float(np.abs(delta[rng.integers(0, points, points)].mean(0)).mean()) for _ in range(resamples)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    names = [base.factor_names[k] for k in ordinal_factors(base)]
    iu = np.triu_indices(len(names), 1)
    return {"shift": value, "ci_low": float(lo), "ci_high": float(hi), "mean_abs_change": float(np.abs(delta).mean()),
            "pairs": {f"{names[i]} × {names[j]}": float(v) for i, j, v in zip(*iu, delta.mean(0))}}


def _image_distances(data: GroundTruthData, a: np.ndarray, b: np.ndarray, device) -> np.ndarray:
    """Mean squared pixel distance between the images of factor rows ``a`` and ``b``: float64 (n,)."""
    return np.concatenate([_mse(data.images(a[i:i + 512], device=device).cpu(),
                                data.images(b[i:i + 512], device=device).cpu()) for i in range(0, len(a), 512)])


def _mse(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (x - y).pow(2).flatten(1).mean(1).double().numpy()


def _spearman_ci(u: np.ndarray, v: np.ndarray, *, resamples: int, seed: int) -> tuple[float, float, float]:
    if np.ptp(u) == 0 or np.ptp(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rho = float(spearmanr(u, v)[0])
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(resamples):
        idx = rng.integers(0, len(u), len(u))
        if np.ptp(u[idx]) > 0 and np.ptp(v[idx]) > 0:
            stats.append(spearmanr(u[idx], v[idx])[0])
    lo, hi = np.percentile(stats, [2.5, 97.5]) if stats else (float("nan"), float("nan"))
    return rho, float(lo), float(hi)


@torch.no_grad()
def rank_correlation(data: GroundTruthData, *, pairs: int = 4000, seed: int = 0, resamples: int = 200,
                     device=None) -> dict:
    """Spearman's ρ between factor distance and data distance of random pairs (Michlo et al.
    2023; disent's ``rcorr_ground_data``).

    Factor distance: L1 over class indices; data distance: mean squared pixel difference.
    ``"global"``: pairs of independent uniform points (works on labelled samples too);
    ``"per_factor"``: pairs that differ in one factor only, the others shared (full grids).

    Returns:
        ``{"global": {"rho", "ci_low", "ci_high"}, "per_factor": {name: {...}}, "pairs"}``.
    """
    if not (isinstance(pairs, int) and pairs >= 10):
        raise ConfigError(f"pairs = {pairs!r}; expected an integer >= 10")
    rng = np.random.default_rng(seed)
    a, b = data.sample_factors(pairs, rng), data.sample_factors(pairs, rng)
    fd = np.abs(a - b).sum(1).astype(np.float64)
    dd = _image_distances(data, a, b, device)
    out = {"global": dict(zip(("rho", "ci_low", "ci_high"), _spearman_ci(fd, dd, resamples=resamples, seed=seed))),
           "per_factor": {}, "pairs": pairs}
    if not data.is_full_grid:
        return out
    per = max(10, pairs // max(1, data.num_factors))
    for k, size in enumerate(data.factor_sizes):
        if size < 3:  # with two classes every pair has distance 0 or 1
            continue
        p = data.sample_factors(per, rng)
        q = p.copy()
        q[:, k] = rng.integers(0, size, per)
        d = _image_distances(data, p, q, device)
        out["per_factor"][data.factor_names[k]] = dict(zip(
            ("rho", "ci_low", "ci_high"),
            _spearman_ci(np.abs(p[:, k] - q[:, k]).astype(np.float64), d, resamples=resamples, seed=seed + 1 + k)))
    return out


def audit_dataset(data: GroundTruthData, *, points: int = 1000, pairs: int = 4000, seed: int = 0, device=None,
                  progress: bool = False) -> dict:
    """:func:`local_alignment` and :func:`rank_correlation` of one dataset, with its description.
    On a labelled sample (not the full grid) the local alignment needs neighbours it does not
    have: ``"local_alignment"`` is None and only the rank correlation is computed."""
    return audit_datasets({"data": data}, points=points, pairs=pairs, seed=seed, device=device,
                          progress=progress)["data"]


def audit_datasets(datasets: dict[str, GroundTruthData], *, points: int = 1000, pairs: int = 4000, seed: int = 0,
                   resamples: int = 2000, device=None, progress: bool = False) -> dict[str, dict]:
    """:func:`audit_dataset` of each dataset at the same points, and for every dataset after
    the first (the original) its :func:`systematic_shift` from the first, under ``"shift"``.
    Each dataset's Gram matrices are computed once.

    Args:
        datasets: ``{label: dataset}`` on one factor grid, the original first.

    Returns:
        ``{label: {"dataset", "local_alignment" (None on a labelled sample), "rank_correlation"[,
        "shift"]}}``.
    """
    base_label, base = next(iter(datasets.items()))
    grid = getattr(base, "is_full_grid", True)
    out, base_gram = {}, None
    for label, data in datasets.items():
        _check_same_grid(base, data)
        res = {"dataset": data.describe(), "local_alignment": None}
        if grid:
            gram = _gram_at_audit_points(data, points, seed, device, progress)
            res["local_alignment"] = _alignment_of(data, gram, resamples, seed)
            if label == base_label:
                base_gram = gram
            else:
                res["shift"] = _shift_of(base, base_gram, gram, resamples, seed)
        res["rank_correlation"] = rank_correlation(data, pairs=pairs, seed=seed, device=device)
        out[label] = res
    return out


def _fmt(v: float, lo: float, hi: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def audit_table(results: dict[str, dict]) -> str:
    """Markdown: one row per audited dataset (``{label: audit_dataset(...)}``)."""
    rows = ["| data | local alignment S [95 % CI] | rank correlation ρ [95 % CI] | shift vs original [95 % CI] "
            "| points |", "|---|---|---|---|---|"]
    for label, r in results.items():
        la, rc, sh = r["local_alignment"], r["rank_correlation"]["global"], r.get("shift")
        shift = "" if sh is None else _fmt(sh["shift"], sh["ci_low"], sh["ci_high"])
        s = "n/a (a labelled sample, not the full grid)" if la is None else _fmt(la["score"], la["ci_low"],
                                                                                   la["ci_high"])
        rows.append(f"| {label} | {s} | {_fmt(rc['rho'], rc['ci_low'], rc['ci_high'])} | {shift} | "
                    f"{'' if la is None else la['points']} |")
    return "\n".join(rows) + "\n"


def _pair_table(results: dict[str, dict]) -> str:
    labels = [lab for lab, r in results.items() if r["local_alignment"] is not None]
    if not labels:
        return ""
    first = results[labels[0]]["local_alignment"]["pairs"]
    head = "| factor pair | " + " | ".join(f"{lab}: S_kl (overlap)" for lab in labels) + " |"
    rows = [head, "|---|" + "---|" * len(labels)]
    for i, p in enumerate(first):
        cells = []
        for lab in labels:
            q = results[lab]["local_alignment"]["pairs"][i]
            cells.append(f"{q['alignment']:.2f} ({q['overlap']:.2f})")
        rows.append(f"| {p['factors'][0]} × {p['factors'][1]} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_dataset_audit(results: dict[str, dict], out: str | os.PathLike) -> dict:
    """Write ``audit.json``, ``audit.md`` and ``audit.png`` (per-pair alignment of each
    dataset) into the folder ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "audit.json", results)
    md = ("Dataset audit: local alignment S of the data's local principal directions with the factor axes "
          "(1: aligned and identifiable, 0: not), the rank correlation of factor and pixel distances, and for "
          "a variant the systematic shift of its local structure from the original (0: none; zero-mean "
          "per-image noise stays near 0).\n\n"
          + audit_table(results))
    health = next((r["manipulation_health"] for r in results.values() if r.get("manipulation_health")), None)
    if health is not None:
        md += (f"\nm_ψ's health: std over w {health['std_over_w']:.3f}, saturated {health['saturated_share']:.1%}, "
               f"mean {health['mean_m']:+.2f}\n" + "".join(f"- warning: {w}\n" for w in health["warnings"]))
    pairs = _pair_table(results)
    if pairs:
        md += ("\nPer factor pair: S_kl, and in brackets the mean |cos| between the two factors' pixel changes.\n\n"
               + pairs)
    with atomic_path(out / "audit.md") as tmp:
        tmp.write_text(md, encoding="utf-8")
    labels = [lab for lab, r in results.items() if r["local_alignment"] is not None]
    if not labels:
        return {"json": str(out / "audit.json"), "md": str(out / "audit.md"), "png": None, "markdown": md}
    names = results[labels[0]]["local_alignment"]["factors"]
    k = len(names)
    fig, axes = new_figure(1, len(labels), figsize=(3.2 * len(labels) + 0.8, 3.2), squeeze=False)
    for ax, lab in zip(axes[0], labels):
        m = np.full((k, k), np.nan)
        for p in results[lab]["local_alignment"]["pairs"]:
            i, j = names.index(p["factors"][0]), names.index(p["factors"][1])
            m[i, j] = m[j, i] = p["alignment"]
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(k):
            for j in range(k):
                if i != j and not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if m[i, j] < 0.6 else "black")
        ax.set_xticks(range(k), names, rotation=60, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        la = results[lab]["local_alignment"]
        ax.set_title(f"{lab}: S = {la['score']:.2f}\npair alignment S_kl (0-1)", fontsize=8)
    png = save_figure(fig, out / "audit.png")
    return {"json": str(out / "audit.json"), "md": str(out / "audit.md"), "png": str(png), "markdown": md}
