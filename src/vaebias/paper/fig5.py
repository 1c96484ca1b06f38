"""Fig. 5 of the paper: robustness over each model's primary hyperparameter (Sec. 5.3).

A line search scales each model's literature value of its primary hyperparameter (by
default by 1/4, 1/2, 1, 2, 4) and trains R restarts per value on the original and the
modified data. Runs that over-prune -- fewer active units (E[sigma^2] < 0.8) than
ground-truth factors -- are discarded and counted, as in the paper; MIG is then shown as
mean +- std over the kept runs per value.

The runs are an ordinary sweep (:mod:`vaebias.experiments.sweep`): :func:`robustness_grid` builds its
grid, ``vaebias sweep`` runs it (resumable, local or Ray), and :func:`summarise_robustness`
/ :func:`figure_robustness` (``vaebias robustness OUT``) read its ``results.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import read_checked, write_json
from vaebias.models import get_model_class, primary_hyperparameters
from vaebias.report.figures import new_figure, save_figure

__all__ = ["SCALES", "dataset_label", "draw_robustness", "figure_robustness", "robustness_grid",
           "robustness_table", "summarise_robustness", "summarise_rows", "write_robustness"]

#: the default scale factors of the literature value
SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def robustness_grid(models, datasets, *, defaults_of: str, scales=SCALES, seeds=tuple(range(10)),
                    train: dict | None = None, evaluate: dict | None = None, out: str | None = None) -> dict:
    """The sweep grid of the line search.

    Args:
        models: names of models with a ``primary_hyperparameter``
            (:func:`vaebias.models.primary_hyperparameters`).
        datasets: dataset specs of the sweep (e.g. the original and the exported
            modified dataset: ``[{"name": "shapes3d"}, {"name": "path/to/modified.h5"}]``).
        defaults_of: the dataset whose literature values are scaled (``"dsprites"`` or
            ``"shapes3d"``).
        scales: factors applied to each literature value.
        seeds: restarts per value (the paper: 10).
        train, evaluate: the grid's ``train`` and ``evaluate`` sections (evaluation must
            include ``active_units``, which the over-pruning filter needs; added if absent).
        out: results folder.

    Returns:
        a grid mapping for :func:`vaebias.experiments.sweep.sweep`.

    Raises:
        ConfigError: a model without a primary hyperparameter, or no scale.
    """

    primary = primary_hyperparameters()
    unknown = [m for m in models if m not in primary]
    if unknown:
        raise ConfigError(f"model(s) {unknown} have no primary hyperparameter for the line search; "
                          f"available: {sorted(primary)}")
    if not scales:
        raise ConfigError("scales must hold at least one factor")
    params = {}
    for m in models:
        base = getattr(get_model_class(m).default_config(defaults_of), primary[m])
        params[m] = {primary[m]: [float(base) * float(s) for s in scales]}
    ev = dict(evaluate or {"metrics": ["mig", "active_units"]})
    ev["metrics"] = list(dict.fromkeys([*ev.get("metrics", ["mig"]), "mig", "active_units"]))
    grid = {"models": list(models), "datasets": list(datasets), "seeds": list(seeds), "model_params": params,
            "train": dict(train or {}), "evaluate": ev}
    if out is not None:
        grid["out"] = str(out)
    return grid


def _over_pruned(row: dict) -> bool:
    """Fewer active units than factors (rows of deterministic models have none: never)."""
    au, k = row.get("active_units"), row.get("active_units.num_factors")
    return au is not None and k is not None and au < k


def summarise_robustness(out: str | os.PathLike) -> list[dict]:
    """Per (model, dataset, hyperparameter value): runs, discarded (over-pruned) runs and
    MIG mean / std (ddof 0) over the kept runs, from a line-search sweep folder.

    Args:
        out: a finished (or partly finished) sweep folder with ``results.json``.

    Returns:
        the rows of :func:`summarise_rows`.

    Raises:
        RunError: no ``results.json`` in ``out``.
    """
    path = Path(out) / "results.json"
    if not path.exists():
        raise RunError(f"{str(path)!r} not found: run the line search's sweep first (vaebias sweep)")
    return summarise_rows(read_checked(path, list, "the per-run results of a sweep"))


def summarise_rows(results: list[dict]) -> list[dict]:
    """Group per-run results by (model, dataset, value of the primary hyperparameter).

    Args:
        results: one dict per run: ``model``, ``dataset`` (any label), ``model_params``
            (a mapping, or its JSON text) holding the primary hyperparameter, ``mig``, and
            for the filter ``active_units`` and ``active_units.num_factors`` (a sweep's
            ``results.json`` rows have these). Rows of models without a primary
            hyperparameter, or without ``mig``, are skipped.

    Returns:
        rows sorted by model, dataset, value: ``{"model", "dataset", "hyperparameter",
        "value", "runs", "discarded", "kept", "mig_mean", "mig_std"}`` (means None when
        every run was discarded; std with ddof 0).
    """
    primary = primary_hyperparameters()
    groups: dict[tuple, list[dict]] = {}
    for row in results:
        name = primary.get(row["model"])
        params = json.loads(row["model_params"]) if isinstance(row["model_params"], str) else row["model_params"]
        if name is None or name not in params or row.get("mig") is None:
            continue
        groups.setdefault((row["model"], row["dataset"], float(params[name])), []).append(row)
    rows = []
    for (model, dataset, value), runs in sorted(groups.items()):
        kept = [r["mig"] for r in runs if not _over_pruned(r)]
        rows.append({"model": model, "dataset": dataset, "hyperparameter": primary[model], "value": value,
                     "runs": len(runs), "discarded": len(runs) - len(kept), "kept": len(kept),
                     "mig_mean": float(np.mean(kept)) if kept else None,
                     "mig_std": float(np.std(kept)) if kept else None})
    return rows


def robustness_table(rows: list[dict]) -> str:
    """The rows of :func:`summarise_rows` as a Markdown table (datasets by
    :func:`dataset_label`; MIG as mean ± std over the kept runs, "—" when none was kept)."""
    lines = ["| model | dataset | hyperparameter | runs | discarded | MIG |", "|---|---|---|---|---|---|"]
    for r in rows:
        mig = "—" if r["mig_mean"] is None else f"{r['mig_mean']:.3f} ± {r['mig_std']:.3f}"
        lines.append(f"| {r['model']} | {dataset_label(r['dataset'])} | {r['hyperparameter']} = {r['value']:g} | "
                     f"{r['runs']} | {r['discarded']} | {mig} |")
    return "\n".join(lines) + "\n"


def dataset_label(dataset: str) -> str:
    """A dataset's short name for tables and legends: a file's name without its folder and
    suffix (``results/x/datasets/blobs_modified_eps0.1.h5`` -> ``blobs_modified_eps0.1``),
    a built-in dataset's name as it is."""
    p = Path(str(dataset))
    return p.stem if p.suffix in (".h5", ".hdf5", ".npz") else str(dataset)


def draw_robustness(rows: list[dict]):
    """The Fig. 5 figure (a matplotlib Figure): MIG (mean +- std over kept runs) against
    the hyperparameter on a log2 axis, one panel per model, one line per dataset. Each
    point with discarded (over-pruned) runs is annotated ``-n``; a value whose runs were
    all discarded gets an ``x`` on the axis at MIG 0. MIG spans [0, 1].

    Raises:
        RunError: no rows.
    """

    models = list(dict.fromkeys(r["model"] for r in rows))
    if not models:
        raise RunError("no finished runs of a model with a primary hyperparameter to plot")
    fig, axes = new_figure(1, len(models), figsize=(max(6.0, 4.2 * len(models)), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for k, dataset in enumerate(dict.fromkeys(r["dataset"] for r in mine)):
            pts = [r for r in mine if r["dataset"] == dataset]
            xs = [r["value"] for r in pts]
            ys = [np.nan if r["mig_mean"] is None else r["mig_mean"] for r in pts]
            es = [0.0 if r["mig_std"] is None else r["mig_std"] for r in pts]
            line = ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=dataset_label(dataset))
            colour = line[0].get_color()
            for r, y in zip(pts, ys):
                if np.isnan(y):  # side by side, one per dataset, so that none hides another
                    ax.plot([r["value"] * 1.07 ** k], [0.0], marker="x", color=colour, markersize=8, clip_on=False)
                if r["discarded"]:
                    ax.annotate(f"-{r['discarded']}", (r["value"], 0.0 if np.isnan(y) else y), fontsize=7,
                                color=colour, textcoords="offset points", xytext=(4, 4 + 9 * k))
        values = [r["value"] for r in mine]
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(values) / 1.5, max(values) * 1.5)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel(mine[0]["hyperparameter"])
        ax.set_ylabel("MIG")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("MIG over the primary hyperparameter\n(mean ± std over kept runs; -n: over-pruned runs "
                 "discarded; x: all discarded)", fontsize=9)
    return fig


def figure_robustness(rows: list[dict], out_png: str | os.PathLike) -> Path:
    """Fig. 5 (:func:`draw_robustness`) written to ``out_png``."""

    return save_figure(draw_robustness(rows), out_png, dpi=110)


def write_robustness(out: str | os.PathLike) -> dict:
    """Summarise a line-search sweep folder: ``robustness.json`` and ``fig5.png`` in it.

    Returns:
        ``{"rows", "json", "png"}``.
    """
    rows = summarise_robustness(out)
    json_path = Path(out) / "robustness.json"
    write_json(json_path, rows)
    png = figure_robustness(rows, Path(out) / "fig5.png")
    return {"rows": rows, "json": str(json_path), "png": str(png)}
