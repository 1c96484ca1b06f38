"""Tables and figures from results folders (run directories only, never live objects).

:func:`write_report` turns a :func:`vaebias.paper.reproduce.reproduce` folder into Table 1's
columns for its dataset (Markdown, CSV, JSON: MIG mean ± std over seeds per model and
variant, with active units) and the Fig. 4-style picture (original, ε·m(w), altered).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from vaebias._internal.errors import RunError
from vaebias._internal.io import atomic_path, read_checked, read_json, write_json
from vaebias.data import load_dataset
from vaebias.manipulation import load_variant
from vaebias.models import model_label, table_order
from vaebias.report.figures import new_figure, save_figure
from vaebias.report.statistics import difference
from vaebias.report.traversal import write_traversal

__all__ = ["collect_runs", "difference_panel", "drops", "summarise", "write_report", "figure_manipulation",
           "figure_manipulation_health", "figure_seeds", "figure_loss_curves"]

#: row labels of Table 1
VARIANT_LABELS = {"original": "orig.", "modified": "mod.", "noise": "noise"}


def collect_runs(out: str | os.PathLike) -> list[dict]:
    """One record per evaluated run under ``out/runs/<variant>/<model>_seed<s>/``:
    variant, model, seed, steps, mig, gaps (MIG's per-factor gaps), factor_names,
    active_units (None for deterministic models), run_dir."""
    rows = []
    for mpath in sorted(Path(out).glob("runs/*/*/metrics.json")):
        m = read_checked(mpath, dict, "a run's metrics")
        cfg = read_checked(mpath.parent / "config.yaml", dict, "a run's configuration")
        if not isinstance(m.get("mig"), dict) or "mig" not in m["mig"] or not isinstance(cfg.get("train"), dict):
            raise RunError(f"{mpath}: no MIG (or its config.yaml no 'train'); expected an evaluated run of "
                           f"vaebias (rerun the command that made the folder to redo it)")
        au = (m.get("active_units") or {}).get("active_units")
        rows.append({
            "variant": mpath.parent.parent.name,
            "model": cfg["model"],
            "seed": cfg["train"]["seed"],
            "steps": cfg["train"]["steps"],
            "mig": m["mig"]["mig"],
            "gaps": m["mig"].get("gaps"),
            "factor_names": (cfg.get("dataset_info") or {}).get("factor_names"),
            "active_units": au,
            "run_dir": str(mpath.parent),
        })
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (ddof=1; 0 for one seed) of MIG per (model, variant)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["variant"]), []).append(r["mig"])
    out = []
    for (model, variant), vals in cells.items():
        v = np.asarray(vals, dtype=np.float64)
        out.append({
            "model": model, "variant": variant, "n": int(v.size),
            "mig_mean": float(v.mean()), "mig_std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        })
    return out


#: the columns of a drop (:func:`drops`) in table.csv and table.json
DROP_KEYS = ("diff_vs_original", "ci_low", "ci_high", "p_value")


def drops(rows: list[dict], *, level: float = 0.95, seed: int = 0) -> list[dict]:
    """The change of mean MIG from the original data to each other variant, per model:
    mean(variant) − mean(original) over seeds, its percentile bootstrap interval and the
    two-sided permutation p-value (:func:`vaebias.report.statistics.difference`; the cells are
    independent samples of seeds).

    Args:
        rows: :func:`collect_runs` records (``model``, ``variant``, ``mig``).

    Returns:
        one dict per (model, variant other than original) that has both cells:
        ``model``, ``variant``, ``n_original``, ``n``, ``diff_vs_original``, ``ci_low``,
        ``ci_high`` (MIG units), ``p_value``, and ``above_ae``: whether the model's original
        MIG is clearly above the AE's (the bootstrap interval of original − AE's original
        lies above 0; None without AE runs, or for the AE). A model that is not does not
        disentangle at this scale, and its drops say nothing about the paper's effect.
    """
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["variant"]), []).append(r["mig"])
    ae = cells.get(("ae", "original"))
    out = []
    for (model, variant), vals in cells.items():
        base = cells.get((model, "original"))
        if variant == "original" or not base:
            continue
        d = difference(base, vals, level=level, seed=seed)
        above = None
        if ae and model != "ae":  # does the model disentangle beyond the plain AE at all?
            above = difference(ae, base, level=level, seed=seed)["ci_low"] > 0
        out.append({"model": model, "variant": variant, "n_original": d["n_a"], "n": d["n_b"],
                    "diff_vs_original": d["diff"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                    "p_value": d["p_value"], "above_ae": above})
    return out


def _drops_markdown(drop_rows: list[dict], dataset: str) -> str:
    if not drop_rows:
        return ""
    models, variants = _order({d["model"] for d in drop_rows}, {d["variant"] for d in drop_rows})
    cell = {(d["model"], d["variant"]): d for d in drop_rows}
    with_ae = any(d["above_ae"] is not None for d in drop_rows)
    lines = [f"\nChange of mean MIG from the original data ({dataset}): mean(variant) − mean(original), "
             "[95 % percentile bootstrap interval], two-sided permutation p-value over seeds."
             + (" A model whose original MIG is not clearly above the AE's (the interval of the "
                "difference includes 0) does not disentangle at this scale: its changes say nothing "
                "about the paper's effect." if with_ae else "") + "\n",
             "| model | " + " | ".join(f"{VARIANT_LABELS.get(v, v)} − orig." for v in variants) + (" | |" if with_ae else " |"),
             "|---|" + "---|" * (len(variants) + (1 if with_ae else 0))]
    for m in models:
        vals = []
        for v in variants:
            d = cell.get((m, v))
            vals.append("–" if d is None else
                        f"{d['diff_vs_original']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}], p = {d['p_value']:.3f}")
        above = next((d["above_ae"] for d in drop_rows if d["model"] == m), None)
        note = "does not disentangle at this scale" if above is False else ""
        lines.append(f"| {model_label(m)} | " + " | ".join(vals) + (f" | {note} |" if with_ae else " |"))
    return "\n".join(lines) + "\n"


def _manipulation_markdown(selection: dict | None, health: dict | None) -> str:
    """The reference selection (every restart's MIG, the two picked) and m_ψ's health."""
    lines = ["# The manipulation\n"]
    if selection:
        lines.append("Reference selection (Sec. 4.4): MIG of every β-VAE restart; the entangled reference is "
                     + ("the best restart with its latent space rotated" if selection.get("entangled_reference")
                        == "rotated" else "the lowest") + ", the disentangled one the highest.\n")
        lines += ["| restart | MIG | picked as |", "|---|---|---|"]
        for run, mig_value in sorted(selection["scores"].items(), key=lambda kv: kv[1]):
            role = ("entangled" if run == selection["entangled"] else
                    "disentangled" if run == selection["disentangled"] else "")
            lines.append(f"| {Path(run).name} | {mig_value:.3f} | {role} |")
        lines.append("")
    if health:
        for w in health.get("warnings", []):
            lines.append(f'<p style="color:#b00000"><b>Warning:</b> {w}</p>\n')
        gap = ("" if health.get("gap_start") is None else
               f"; the gap L_dis − L_ent went from {health['gap_start']:.4g} to {health['gap_end']:.4g} "
               f"({'opened' if health['gap_opened'] else 'did not open'})")
        lines.append(f"m_ψ over {health['points']} factor values: std over w {health['std_over_w']:.3f} "
                     f"(mean over pixels), mean |m| {health['mean_abs_m']:.3f}, saturated (|m| > 0.99) "
                     f"{health['saturated_share']:.1%}{gap}.\n")
    return "\n".join(lines)


def figure_manipulation_health(log_csv: str | os.PathLike, out_png: str | os.PathLike, *, title: str = "") -> Path:
    """m_ψ's training curves from its ``train_log.csv``: L_ent and L_dis (left) and the
    gap L_dis − L_ent that ψ maximises (right), per logged step."""
    with open(log_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("l_ent") and r.get("l_dis")]
    step = [int(r["step"]) for r in rows]
    l_ent = np.array([float(r["l_ent"]) for r in rows])
    l_dis = np.array([float(r["l_dis"]) for r in rows])
    fig, (a, b) = new_figure(1, 2, figsize=(8, 3))
    a.plot(step, l_ent, label="L_ent (entangled decoder)")
    a.plot(step, l_dis, label="L_dis (disentangled decoder)")
    a.set_xlabel("m_ψ step")
    a.set_ylabel("reconstruction loss of x'")
    a.legend(fontsize=8)
    b.plot(step, l_dis - l_ent, color="k")
    b.axhline(0, color="grey", lw=0.5)
    b.set_xlabel("m_ψ step")
    b.set_ylabel("gap L_dis − L_ent")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png, dpi=100)


def figure_seeds(rows: list[dict], out_png: str | os.PathLike, *, title: str = "") -> Path:
    """Every run's MIG as one point, per model (x) and variant (colour, side by side),
    with each cell's mean as a bar: the per-seed view behind Table 1's mean ± std."""
    models, variants = _order({r["model"] for r in rows}, {r["variant"] for r in rows})
    fig, ax = new_figure(figsize=(1.3 * len(models) + 1.5, 3.4))
    width = 0.8 / max(1, len(variants))
    colours = {"original": "tab:blue", "modified": "tab:red", "noise": "tab:grey"}
    for j, v in enumerate(variants):
        for i, m in enumerate(models):
            vals = [r["mig"] for r in rows if r["model"] == m and r["variant"] == v]
            if not vals:
                continue
            x = i - 0.4 + width * (j + 0.5)
            jitter = np.linspace(-0.25, 0.25, len(vals)) * width if len(vals) > 1 else np.zeros(1)
            ax.scatter(x + jitter, vals, s=14, color=colours.get(v), label=v if i == 0 else None, zorder=3)
            ax.hlines(np.mean(vals), x - width * 0.4, x + width * 0.4, color=colours.get(v), lw=2)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([model_label(m) for m in models], fontsize=8)
    ax.set_ylabel("MIG (one point per seed)")
    ax.set_ylim(0, max(0.5, max(r["mig"] for r in rows) * 1.1))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out_png, dpi=100)


def _gaps_markdown(rows: list[dict]) -> str:
    """Mean of MIG's per-factor gap (mutual-information gap / factor entropy) per model and
    variant: which factors a model disentangles, and which the manipulation hides."""
    rows = [r for r in rows if r.get("gaps") and r.get("factor_names")]
    if not rows:
        return ""
    names = rows[0]["factor_names"]
    models, variants = _order({r["model"] for r in rows}, {r["variant"] for r in rows})
    lines = ["# MIG per factor\n",
             "Each factor's gap (the mutual information of its best latent minus that of its second best, "
             "over the factor's entropy), mean over seeds; MIG is their mean.\n",
             "| model | data | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for m in models:
        for v in variants:
            g = [r["gaps"] for r in rows if r["model"] == m and r["variant"] == v]
            if g:
                mean = np.nanmean(np.asarray(g, dtype=np.float64), axis=0)
                lines.append(f"| {model_label(m)} | {VARIANT_LABELS.get(v, v)} | "
                             + " | ".join(f"{x:.2f}" for x in mean) + " |")
    return "\n".join(lines) + "\n"


def _log_curve(run_dir: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, loss) of a run's ``train_log.csv``, or None without one."""
    path = Path(run_dir) / "train_log.csv"
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "loss" not in rows[0]:
        return None
    return (np.array([int(r["step"]) for r in rows]), np.array([float(r["loss"]) for r in rows]))


def figure_loss_curves(rows: list[dict], out_png: str | os.PathLike, *, title: str = "") -> Path:
    """Each run group's training loss (``train_log.csv``'s ``loss``, mean over seeds per
    logged step), one panel per model, one line per variant."""
    models, variants = _order({r["model"] for r in rows}, {r["variant"] for r in rows})
    cols = min(4, len(models))
    nrows = -(-len(models) // cols)
    fig, axes = new_figure(nrows, cols, figsize=(3.2 * cols, 2.5 * nrows), squeeze=False)
    colours = {"original": "tab:blue", "modified": "tab:red", "noise": "tab:grey"}
    for k, m in enumerate(models):
        ax = axes[k // cols, k % cols]
        for v in variants:
            curves = [c for c in (_log_curve(r["run_dir"]) for r in rows if r["model"] == m and r["variant"] == v)
                      if c is not None]
            if not curves:
                continue
            n = min(len(c[0]) for c in curves)
            ax.plot(curves[0][0][:n], np.mean([c[1][:n] for c in curves], axis=0), ".-", color=colours.get(v),
                    label=f"{v} ({len(curves)})")
        ax.set_title(model_label(m), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for k in range(len(models), nrows * cols):
        axes[k // cols, k % cols].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png, dpi=90)


def _order(models, variants):
    models = table_order(models)
    vorder = list(VARIANT_LABELS)
    variants = sorted(variants, key=lambda v: vorder.index(v) if v in vorder else len(vorder))
    return models, variants


def _markdown(summary, dataset: str, profile: dict) -> str:
    models, variants = _order({s["model"] for s in summary}, {s["variant"] for s in summary})
    cell = {(s["model"], s["variant"]): s for s in summary}
    lines = []
    if profile.get("audit"):  # a `vaebias audit model` folder
        lines.append(f"Model audit ({profile.get('train_steps')} training steps, {len(profile.get('seeds', []))} "
                     f"seeds per variant; see audit_model.md for the verdict).\n")
    elif profile.get("reduced", True):
        per_model = ", ".join(f"{model_label(m)} {n}" for m, n in (profile.get("model_steps") or {}).items())
        lines.append(
            f"**Reduced protocol** (profile `{profile.get('name')}`: {profile.get('train_steps')} training "
            f"steps{f' ({per_model})' if per_model else ''}, {len(profile.get('seeds', []))} seeds; "
            "the paper uses 300,000 steps and 10 seeds). "
            "These numbers show that the pipeline runs; they are not comparable to the paper's Table 1.\n"
        )
    else:
        lines.append(f"Profile `{profile.get('name')}` (the paper's protocol).\n")
    lines.append(f"MIG, mean ± std over seeds (n per cell in brackets), dataset **{dataset}**.\n")
    labels = dict(VARIANT_LABELS)
    if (profile.get("manipulation") or {}).get("noise", "uniform") != "uniform":  # the ±ε control
        labels["noise"] = f"{profile['manipulation']['noise']} noise"
    head = "| model | " + " | ".join(f"{dataset} {labels.get(v, v)}" for v in variants) + " |"
    lines += [head, "|---|" + "---|" * len(variants)]
    for m in models:
        vals = []
        for v in variants:
            s = cell.get((m, v))
            vals.append("–" if s is None else f"{s['mig_mean']:.2f} ± {s['mig_std']:.2f} ({s['n']})")
        lines.append(f"| {model_label(m)} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _hwc(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> what imshow takes: (H, W) for one channel, else (H, W, C) clipped."""
    show = img.transpose(1, 2, 0)
    return show[:, :, 0] if show.shape[2] == 1 else np.clip(show, 0, 1)


def difference_panel(d: np.ndarray, epsilon: float) -> tuple[np.ndarray, dict]:
    """How Fig. 4's middle panel shows a change ``d = x' - x`` (C, H, W) with |d| <= epsilon.

    One channel: ``d`` itself on a diverging colour map over [-epsilon, epsilon]. RGB:
    ``0.5 + d / (2 epsilon)`` per channel, so that no change is mid-grey and +-epsilon
    reach 1 and 0 (imshow would otherwise clip every negative change of an RGB image to black).

    Returns:
        (array for imshow, its keyword arguments).
    """
    if d.shape[0] == 1:
        return d[0], {"vmin": -epsilon, "vmax": epsilon, "cmap": "RdBu_r"}
    return np.clip(0.5 + d.transpose(1, 2, 0) / (2 * epsilon), 0, 1), {}


def figure_manipulation(base, altered, out_png, *, epsilon: float, num: int = 4, seed: int = 0,
                        title: str = "") -> Path:
    """Fig. 4: for ``num`` random images, the original x, the change ε·m = x' − x and x'.

    Args:
        base, altered: datasets on the same factor grid (original and modified).
        out_png: file to write (atomically).
        epsilon: colour range of the middle column (±ε; see :func:`difference_panel`).
    """
    rng = np.random.default_rng(seed)
    f = base.sample_factors(num, rng)
    x = base.images(f).numpy()
    xa = altered.images(f).numpy()
    d = xa - x
    rgb = x.shape[1] == 3
    middle = (f"0.5 + (x' − x)/(2·{epsilon:g})" if rgb else f"x' − x (±{epsilon:g})")
    fig, axes = new_figure(num, 3, figsize=(7.2, 2.2 * num + 0.4), squeeze=False)
    for i in range(num):
        for j, img in enumerate([x[i], d[i], xa[i]]):
            ax = axes[i, j]
            show, kw = difference_panel(img, epsilon) if j == 1 else (_hwc(img), {"vmin": 0, "vmax": 1})
            if show.ndim == 2:
                kw.setdefault("cmap", "gray")
            im = ax.imshow(show, **kw)
            if j == 1 and not rgb:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(["original x", middle, "altered x'"][j], fontsize=9)
            if j == 0:  # the row's factors (class indices), so a row can be named
                ax.set_ylabel("\n".join(f"{n} {int(c)}" for n, c in zip(base.factor_names, f[i])),
                              fontsize=6, rotation=0, ha="right", va="center")
    title = (title + "\n" if title else "") + f"max |x' − x| over these images: {np.abs(d).max():.3f}"
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png, dpi=100)


def _file_label(dataset: str) -> str:
    """A dataset name, or a dataset file's stem, for file names and titles."""
    return Path(dataset).stem if ("/" in dataset or "." in dataset) else dataset


def write_report(out: str | os.PathLike) -> dict:
    """Write ``table.md``, ``table.csv``, ``table.json`` (with the drops and their
    statistics), ``manipulation.md`` (references, m_ψ's health), ``factor_gaps.md`` and the
    figures (``fig4_<dataset>.png``, ``seeds_<dataset>.png``, ``loss_curves_<dataset>.png``,
    ``mpsi_health_<dataset>.png``, the two references' traversals) in a reproduce folder ``out``.

    Raises:
        RunError: ``out`` is not a reproduce folder or holds no evaluated runs.
    """

    out = Path(out)
    spec_path = next((out / n for n in ("profile.yaml", "audit.yaml") if (out / n).exists()), None)
    if spec_path is None:
        raise RunError(f"{str(out)!r} is not a results folder of `vaebias reproduce` or `vaebias audit model` "
                       f"(no profile.yaml or audit.yaml)")
    spec = read_checked(spec_path, dict, "the settings of a reproduction or an audit")
    rows = collect_runs(out)
    if not rows:
        raise RunError(f"{str(out)!r} holds no evaluated runs yet (runs/*/*/metrics.json)")
    summary = summarise(rows)
    drop_rows = drops(rows)
    by_cell = {(d["model"], d["variant"]): d for d in drop_rows}
    for s in summary:  # the drop of each non-original cell beside its mean (None for original)
        d = by_cell.get((s["model"], s["variant"]), {})
        s.update({k: d.get(k) for k in DROP_KEYS})
    profile = spec["profile"]
    dataset = _file_label(spec["dataset"])
    md = _markdown(summary, dataset, profile) + _drops_markdown(drop_rows, dataset)
    paths = {"table_md": out / "table.md", "table_csv": out / "table.csv", "table_json": out / "table.json"}
    with atomic_path(paths["table_md"]) as tmp:
        tmp.write_text(md)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["model", "variant", "n", "mig_mean", "mig_std", *DROP_KEYS])
    w.writeheader()
    w.writerows(summary)
    with atomic_path(paths["table_csv"]) as tmp:
        tmp.write_text(buf.getvalue())
    selection = out / "manipulation" / "selection.json"
    write_json(paths["table_json"], {
        "dataset": dataset, "profile": profile, "reduced_protocol": bool(profile.get("reduced", True)),
        "summary": summary, "drops": drop_rows, "runs": rows,
        "references": read_json(selection) if selection.exists() else None,
    })
    result = {k: str(v) for k, v in paths.items()}
    result["seeds_figure"] = str(figure_seeds(rows, out / f"seeds_{dataset}.png",
                                              title=f"Table 1 on {dataset}, every run"))
    result["loss_figure"] = str(figure_loss_curves(rows, out / f"loss_curves_{dataset}.png",
                                                   title=f"training loss per run group ({dataset})"))
    gaps_md = _gaps_markdown(rows)
    if gaps_md:
        with atomic_path(out / "factor_gaps.md") as tmp:
            tmp.write_text(gaps_md)
        result["factor_gaps_md"] = str(out / "factor_gaps.md")
    man = out / spec["manipulation"] if spec.get("manipulation") else out / "manipulation"
    health = read_json(man / "health.json") if (man / "health.json").exists() else None
    if selection.exists() or health:
        md_path = out / "manipulation.md"
        with atomic_path(md_path) as tmp:
            tmp.write_text(_manipulation_markdown(read_json(selection) if selection.exists() else None, health))
        result["manipulation_md"] = str(md_path)
    if (man / "train_log.csv").exists():
        result["health_figure"] = str(figure_manipulation_health(
            man / "train_log.csv", out / f"mpsi_health_{dataset}.png", title=f"m_ψ on {dataset}"))
    modified = sorted((out / "datasets").glob("*_modified_*.h5"))
    base_spec = {"name": spec["dataset"], **spec.get("dataset_options", {})}
    if spec.get("data_dir"):
        base_spec["data_dir"] = spec["data_dir"]
    altered = None
    if modified:
        altered = load_dataset(str(modified[0]))
    elif (man / "checkpoint.pt").exists():  # profile export: false, or an audit's m_psi
        altered = load_variant(**base_spec, variant="modified", manipulation=str(man))
    base = load_dataset(**base_spec)
    if selection.exists():  # what the two references' latents do

        sel = read_json(selection)
        for role in ("entangled", "disentangled"):
            try:
                # relative to the results folder (before: as --out was spelled)
                ref = out / sel[role] if (out / sel[role]).exists() else Path(sel[role])
                result[f"traversal_{role}"] = write_traversal(ref, out / f"traversal_{role}_reference.png",
                                                              data=base)["png"]
            except RunError:  # a reference folder moved or deleted: the table stands without it
                pass
    if altered is not None:
        fig = figure_manipulation(base, altered, out / f"fig4_{dataset}.png", epsilon=altered.epsilon,
                                  title=f"{dataset}: x' = x + ε·m(w), ε = {altered.epsilon:g}")
        result["figure"] = str(fig)
    result["markdown"] = md
    return result
