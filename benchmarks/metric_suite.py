"""Speed of vaebias's metric suite against straightforward implementations of the same
definitions, measured in the same run (issue: the metric suite).

Part 1, array level: 10,000 train / 5,000 test synthetic codes (10 latents, entangled
by a random rotation plus noise) of dSprites-sized factors (3, 6, 40, 32, 32 classes).
For each metric: the straightforward implementation (one sklearn call per
(factor, latent) pair or per factor, the disentanglement_lib recipe), vaebias in
parity mode, and vaebias's fast mode where it has one (DCI's ``hist`` backend),
with the largest difference from the straightforward numbers.

Part 2, a trained dSprites model: the whole suite (MIG, SAP, DCI,
modularity/explicitness, FactorVAE and BetaVAE scores) through
``vaebias.metrics.evaluate`` in fast mode (``FAST`` below: DCI's hist backend, the
scores' batches drawn from the encoded shared and test samples) and, with
``--reference-suite``, in parity mode at disentanglement_lib's sizes. The
straightforward FactorVAE/BetaVAE scores (one encoder call per 64-image batch) are
timed on ``--baseline-votes`` votes and scaled linearly to the reference's 15,000.

The last line is the ratio: straightforward suite time / vaebias fast suite time.

    .venv/bin/python benchmarks/metric_suite.py [--run RUN_DIR] [--skip-sklearn-dci]

``--run``: a finished dSprites run (default: a 2,000-step beta-VAE trained once into
``--cache``). The sklearn DCI (baseline and parity mode) takes several minutes each on
2 cores; ``--skip-sklearn-dci`` leaves both out (the ratio then omits DCI).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from vaebias.metrics import dci, evaluate, mig, modularity_explicitness, sap
from vaebias.metrics.sampling import FAST_MODE as FAST

SIZES = (3, 6, 40, 32, 32)


# ------------------------------------------------------------ straightforward baselines
def _disc(codes, bins=20):
    return np.stack([np.digitize(c, np.histogram(c, bins)[1][:-1]) for c in codes.T], axis=1)


def base_mig(codes, factors):
    z = _disc(codes)
    mi = np.array([[mutual_info_score(f, zj) for zj in z.T] for f in factors.T])
    h = np.array([mutual_info_score(f, f) for f in factors.T])
    top = np.sort(mi, axis=1)
    return {"mig": float(np.mean((top[:, -1] - top[:, -2]) / h))}


def base_sap(xtr, ytr, xte, yte):
    s = np.zeros((xtr.shape[1], ytr.shape[1]))
    for i in range(xtr.shape[1]):
        for j in range(ytr.shape[1]):
            clf = LinearSVC(C=0.01, class_weight="balanced").fit(xtr[:, i:i + 1], ytr[:, j])
            s[i, j] = np.mean(clf.predict(xte[:, i:i + 1]) == yte[:, j])
    top = np.sort(s, axis=0)
    return {"sap": float(np.mean(top[-1] - top[-2]))}


def base_modularity_explicitness(xtr, ytr, xte, yte):
    z = _disc(xtr)
    mi = np.array([[mutual_info_score(f, zj) for f in ytr.T] for zj in z.T])  # (d, K)
    sq = mi ** 2
    mx = sq.max(axis=1)
    mod = np.where(mx > 0, 1 - (sq.sum(axis=1) - mx) / np.where(mx > 0, mx, 1) / (sq.shape[1] - 1), 0)
    mean, std = xtr.mean(0), xtr.std(0)
    ntr, nte = (xtr - mean) / std, (xte - mean) / std
    exp_tr, exp_te = [], []
    for k in range(ytr.shape[1]):
        clf = LogisticRegression().fit(ntr, ytr[:, k])
        mlb = MultiLabelBinarizer(classes=clf.classes_)
        exp_tr.append(roc_auc_score(mlb.fit_transform(ytr[:, k:k + 1]), clf.predict_proba(ntr)))
        exp_te.append(roc_auc_score(mlb.fit_transform(yte[:, k:k + 1]), clf.predict_proba(nte)))
    return {"modularity": float(mod.mean()), "explicitness_train": float(np.mean(exp_tr)),
            "explicitness_test": float(np.mean(exp_te))}


def base_dci(xtr, ytr, xte, yte):
    r = np.zeros((xtr.shape[1], ytr.shape[1]))
    acc_tr, acc_te = [], []
    for k in range(ytr.shape[1]):
        clf = GradientBoostingClassifier(random_state=0).fit(xtr, ytr[:, k])
        r[:, k] = np.abs(clf.feature_importances_)
        acc_tr.append(np.mean(clf.predict(xtr) == ytr[:, k]))
        acc_te.append(np.mean(clf.predict(xte) == yte[:, k]))
    per_code = 1 - entropy(r.T + 1e-11, base=r.shape[1])
    dis = float(np.sum(per_code * r.sum(1) / r.sum()))
    per_factor = 1 - entropy(r + 1e-11, base=r.shape[0])
    com = float(np.sum(per_factor * r.sum(0) / r.sum()))
    return {"disentanglement": dis, "completeness": com, "informativeness_train": float(np.mean(acc_tr)),
            "informativeness_test": float(np.mean(acc_te))}


def base_factor_vae(data, represent, votes, rng, batch=64):
    """One encoder call per vote; returns seconds per vote (the classifier is negligible)."""
    varying = [k for k, s in enumerate(data.factor_sizes) if s > 1]
    t0 = time.perf_counter()
    for _ in range(votes):
        k = varying[rng.integers(len(varying))]
        f = data.sample_factors(batch, rng)
        f[:, k] = f[0, k]
        with torch.no_grad():
            codes = represent(data.images(f))
        codes = (codes[0] if isinstance(codes, tuple) else codes).numpy()
        np.argmin(np.var(codes, axis=0, ddof=1))
    return (time.perf_counter() - t0) / votes


def base_beta_vae(data, represent, votes, rng, batch=64):
    varying = [k for k, s in enumerate(data.factor_sizes) if s > 1]
    t0 = time.perf_counter()
    for _ in range(votes):
        k = varying[rng.integers(len(varying))]
        f1, f2 = data.sample_factors(batch, rng), data.sample_factors(batch, rng)
        f2[:, k] = f1[:, k]
        with torch.no_grad():
            c1, c2 = represent(data.images(f1)), represent(data.images(f2))
        c1 = (c1[0] if isinstance(c1, tuple) else c1).numpy()
        c2 = (c2[0] if isinstance(c2, tuple) else c2).numpy()
        np.mean(np.abs(c1 - c2), axis=0)
    return (time.perf_counter() - t0) / votes


# ------------------------------------------------------------------------ helpers
def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def max_diff(a: dict, b: dict) -> float:
    keys = [k for k in a if k in b and isinstance(a[k], float)]
    return max(abs(a[k] - b[k]) for k in keys)


def synthetic(n_train=10_000, n_test=5_000, d=10, seed=0):
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n_train + n_test) for s in SIZES], axis=1)
    z = np.concatenate([f / np.asarray(SIZES), rng.normal(size=(f.shape[0], d - len(SIZES)))], axis=1)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mix = 0.8 * np.eye(d) + 0.2 * q  # mostly aligned, partly rotated
    codes = z @ mix + 0.05 * rng.normal(size=z.shape)
    return codes[:n_train], f[:n_train], codes[n_train:], f[n_train:]


def trained_run(cache: Path) -> Path:
    from vaebias.training import is_finished, train

    run = cache / "beta_vae_dsprites_2000"
    if not is_finished(run):
        print(f"training a 2,000-step beta-VAE on dSprites into {run} (once) ...", flush=True)
        train({"model": "beta_vae", "dataset": {"name": "dsprites"},
               "train": {"steps": 2000, "seed": 0, "device": "cpu"}}, run, progress=False)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a finished dSprites run directory")
    p.add_argument("--cache", default="results/bench_cache")
    p.add_argument("--skip-sklearn-dci", action="store_true")
    p.add_argument("--reference-suite", action="store_true",
                   help="also time the whole suite in parity mode at the reference's sizes (long)")
    p.add_argument("--baseline-votes", type=int, default=300)
    args = p.parse_args()

    # ---------------------------------------------------------------- part 1
    xtr, ytr, xte, yte = synthetic()
    print("## Part 1: array level, 10,000 train / 5,000 test, 10 latents, factor sizes", SIZES)
    print("| metric | straightforward s | vaebias s | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    base_total = 0.0
    fast_part1 = 0.0
    rows = [("MIG", lambda: base_mig(xtr, ytr), lambda: mig(xtr, ytr)),
            ("SAP", lambda: base_sap(xtr, ytr, xte, yte), lambda: sap(xtr, ytr, xte, yte)),
            ("modularity/explicitness", lambda: base_modularity_explicitness(xtr, ytr, xte, yte),
             lambda: modularity_explicitness(xtr, ytr, xte, yte))]
    for name, base_fn, ours_fn in rows:
        ours_fn()  # warm-up (imports, caches)
        b, tb = timed(base_fn)
        o, to = timed(ours_fn)
        base_total += tb
        fast_part1 += to
        print(f"| {name} | {tb:.3f} | {to:.3f} | {tb / to:.1f}x | {max_diff(b, o):.1e} |", flush=True)
    o, t_hist = timed(dci, xtr, ytr, xte, yte, backend="hist")
    if not args.skip_sklearn_dci:
        b, tb = timed(base_dci, xtr, ytr, xte, yte)
        base_total += tb
        p_, tp = timed(dci, xtr, ytr, xte, yte, backend="sklearn")
        print(f"| DCI, parity mode (sklearn) | {tb:.1f} | {tp:.1f} | {tb / tp:.1f}x | {max_diff(b, p_):.1e} |")
        print(f"| DCI, fast mode (hist) | {tb:.1f} | {t_hist:.2f} | {tb / t_hist:.0f}x | "
              f"{max_diff(b, o):.1e} |", flush=True)
    else:
        print(f"| DCI, fast mode (hist) | (skipped) | {t_hist:.2f} | | |", flush=True)

    # ---------------------------------------------------------------- part 2
    from vaebias.data import load_dataset
    from vaebias.experiments.scoring import representation
    from vaebias.training import load_run

    run = Path(args.run) if args.run else trained_run(Path(args.cache))
    model, record = load_run(run, "cpu")
    data = load_dataset(**record["dataset"])
    rep = representation(model)
    suite = ["mig", "sap", "dci", "modularity_explicitness", "factor_vae_score", "beta_vae_score"]
    print(f"\n## Part 2: the whole suite on {run} ({record['model']}, {data.name})")
    res_fast, t_fast = timed(evaluate, data, rep, suite, **FAST)
    print(f"fast mode {FAST}: {t_fast:.1f} s")
    for m in suite:
        r = res_fast[m]
        print(f"  {m}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, float)))
    rng = np.random.default_rng(0)
    per_fv = base_factor_vae(data, rep, args.baseline_votes, rng)
    per_bv = base_beta_vae(data, rep, args.baseline_votes, rng)
    t_scores_base = 15_000 * (per_fv + per_bv)
    print(f"straightforward FactorVAE + BetaVAE scores at 15,000 votes each: {t_scores_base:.0f} s "
          f"(measured {per_fv * 1e3:.1f} + {per_bv * 1e3:.1f} ms per vote on {args.baseline_votes} votes)")
    if args.reference_suite:
        res_ref, t_ref = timed(evaluate, data, rep, suite)
        print(f"parity mode at the reference's sizes: {t_ref:.0f} s")
        for m in suite:
            print(f"  {m}: fast - parity, largest difference {max_diff(res_ref[m], res_fast[m]):.4f}")
    # the straightforward suite: part 1's array-level metrics (same sizes) + both scores
    total_base = base_total + t_scores_base
    print(f"straightforward suite {total_base:.0f} s ({'without' if args.skip_sklearn_dci else 'with'} "
          f"sklearn DCI) vs vaebias fast suite {t_fast:.1f} s")
    print(f"speed-up ratio (straightforward suite / vaebias fast suite): {total_base / t_fast:.1f}x")


if __name__ == "__main__":
    main()
