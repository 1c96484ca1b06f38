"""The model audit: does a training recipe rely on the local-alignment bias?

The paper's test (Zietlow et al. 2021, Sec. 5.2) applied to one recipe (a model, its
hyperparameters, a training budget) on one dataset: train it over several seeds on

- ``original``: the dataset;
- ``modified``: x + ε·m_ψ(w), which keeps the factors but moves the local variance (a trained
  m_ψ, from ``vaebias manipulate`` or ``vaebias reproduce --stop-after manipulation``);
- ``noise``: x + U[−ε, ε] fixed per image, the control of the same size (the m_ψ run's noise
  setting); with ``sign_noise``, also ``sign_noise``: x ± ε, the most power the bound allows;

and compare MIG (and the other metrics asked for): the change of the mean from the original
cell, its percentile bootstrap interval and its permutation p-value
(:func:`vaebias.report.drops`). A recipe that relies on the bias loses MIG on the modified data
but not on the noise.

``out`` is laid out like a reproduction (``runs/<variant>/<model>_seed<s>/``), so
``vaebias evaluate``, ``traverse`` and ``report`` work on it; ``audit.yaml`` records the audit,
``audit_model.md``/``.json`` hold the result and its verdict.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from vaebias._internal.config import TrainConfig, check, to_dict
from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import atomic_path, ensure_writable_dir, read_checked, write_json, write_yaml
from vaebias._internal.lock import folder_lock
from vaebias._internal.log import get_logger
from vaebias.audit.diagnostics import decoder_diagnostics
from vaebias.data import load_dataset
from vaebias.experiments.launchers import Runner
from vaebias.manipulation import field_health, load_field, load_variant, variant_dataset
from vaebias.metrics import available as metric_names
from vaebias.models import build_model, defaults_key, get_model_class, model_label
from vaebias.report import collect_runs, drops, write_report
from vaebias.training import RunConfig, resolve_device

__all__ = ["AUDIT_VARIANTS", "MIN_ORIGINAL_MIG", "audit_model", "verdict"]

log = get_logger()

AUDIT_VARIANTS = ("original", "modified", "noise", "sign_noise")
#: below this mean MIG on the original data the recipe does not disentangle, and the audit
#: cannot tell whether it relies on the bias (the AE's MIG on the paper's datasets is 0.05-0.15)
MIN_ORIGINAL_MIG = 0.15


def verdict(mig: dict[str, list[float]], drop_rows: dict[str, dict]) -> str:
    """The one-line verdict from MIG per variant and the drops of ``modified``/``noise``
    (:func:`vaebias.report.drops` rows keyed by variant)."""
    orig = float(np.mean(mig["original"]))
    mod = drop_rows.get("modified")
    controls = [drop_rows[v] for v in ("noise", "sign_noise") if v in drop_rows]
    noise = min(controls, key=lambda d: d["diff_vs_original"]) if controls else None  # the larger drop
    if orig < MIN_ORIGINAL_MIG:
        return (f"INCONCLUSIVE: MIG on the original data is only {orig:.2f} (< {MIN_ORIGINAL_MIG}): the recipe "
                f"does not disentangle here, so there is nothing to lose; train longer or tune it first")

    def said(d):
        return f"{d['diff_vs_original']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], p = {d['p_value']:.2g}"

    if mod is not None and mod["ci_high"] < 0:
        if noise is not None and noise["ci_high"] < 0 and noise["diff_vs_original"] <= 0.5 * mod["diff_vs_original"]:
            return (f"NOT SPECIFIC: MIG drops on the modified data ({said(mod)}) and as much on {noise['variant']} "
                    f"of the same size ({said(noise)}): the recipe is sensitive to any ε-change, not only to the loss of local "
                    f"alignment")
        return (f"RELIES ON THE BIAS: MIG drops on the modified data ({said(mod)}) but not as much on "
                f"{noise['variant'] if noise else 'noise'} of the same size ({said(noise) if noise else 'not run'}): "
                f"the recipe's disentanglement follows the "
                f"data's local alignment")
    return (f"NO EVIDENCE OF RELIANCE: MIG changes by {said(mod) if mod else 'n/a'} on the modified data "
            f"(the interval reaches 0 or above)")


def _check_inputs(seeds, steps, metrics, batch_size, lr) -> tuple[list[int], list[str]]:
    seeds = list(seeds)
    check(len(seeds) >= 2 and len(set(seeds)) == len(seeds)
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds),
          "seeds", seeds, "at least two distinct integers >= 0 (five or more for a useful interval)")
    check(isinstance(steps, int) and not isinstance(steps, bool) and steps > 0, "steps", steps, "an integer > 0")
    metrics = list(metric_names()) if metrics == "all" else list(metrics)
    unknown = [m for m in metrics if m not in metric_names()]
    check(not unknown, "metrics", unknown, f"names among {', '.join(metric_names())}, or 'all'")
    if "mig" not in metrics:
        metrics.insert(0, "mig")
    TrainConfig(steps=steps, batch_size=batch_size, lr=lr)  # validates
    return seeds, metrics


def audit_model(model: str, dataset: str, manipulation: str | os.PathLike | None, out: str | os.PathLike, *,
                modified: str | os.PathLike | None = None, epsilon: float | None = None,
                seeds=(0, 1, 2, 3, 4), steps: int = 1500, batch_size: int = 64, lr: float = 1e-4,
                model_params: dict | None = None, metrics=("mig", "active_units"), eval_points: int = 10_000,
                device: str = "auto", launcher: str = "local", workers: int | None = None,
                address: str | None = None, dataset_options: dict | None = None, progress: bool = True,
                diagnostics: bool = True, sign_noise: bool = False) -> dict:
    """Audit a training recipe (module docstring). Resumable: finished runs are kept.

    Args:
        model: a registered model name or the import path ``package.module:Class`` of a
            :class:`~vaebias.models.base.Model` subclass.
        dataset: dataset name or file path (:func:`vaebias.data.load_dataset`).
        manipulation: the folder of a trained m_ψ on this dataset (or None with ``modified``).
        out: results folder (created; rerun to resume).
        modified: instead of an m_ψ, a file of the modified dataset (same factor grid and image
            shape, e.g. an exported ``*_modified_*.h5``); the noise controls then take
            ``epsilon`` (default: the file's ``epsilon`` attribute) and noise seed 0.
        seeds: training seeds of every variant (>= 2 distinct; 5 by default).
        steps, batch_size, lr: training budget of every run.
        model_params: hyperparameters of the model (its per-dataset defaults apply otherwise).
        metrics: metric names scored on every run (MIG always), or ``"all"``.
        eval_points: the metrics' shared sample.
        launcher, workers, address: how the runs are executed
            (:class:`vaebias.experiments.launchers.Runner`).
        sign_noise: also train on the sign-noise control x ± ε (as much power as a saturated
            m_ψ; the verdict then compares the modified data with the larger of the two drops).
        diagnostics: also compute :func:`vaebias.audit.diagnostics.decoder_diagnostics` per
            run (models with a decoder).

    Returns:
        ``{"verdict", "mig", "drops", "gaps", "health", "diagnostics", "markdown", paths}``.

    Raises:
        ConfigError: a bad argument, an unknown or unimportable model, a model that cannot
            take the dataset's images; DataError: a bad dataset; RunError: no finished m_ψ in
            ``manipulation``, an m_ψ of another dataset, or ``out`` holding another audit;
            all of them before any folder is created or run trained.
    """
    seeds, metrics = _check_inputs(seeds, steps, metrics, batch_size, lr)
    get_model_class(model)  # an unknown name or a bad import path: its own message
    options = dict(dataset_options or {})
    data = load_dataset(dataset, **options)
    if (manipulation is None) == (modified is None):
        raise ConfigError("give exactly one of manipulation (a trained m_psi) and modified (a modified dataset file)")
    if manipulation is not None:
        man = Path(manipulation)
        _, mcfg = load_field(man, "cpu")  # RunError when not a finished m_ψ run
        altered = variant_dataset(data, "modified", man)  # ConfigError when m_ψ belongs to other data
        eps = mcfg.epsilon
    else:
        man = None
        altered = load_dataset(modified)
        if (tuple(altered.factor_sizes), tuple(altered.observation_shape)) != \
                (tuple(data.factor_sizes), tuple(data.observation_shape)):
            raise ConfigError(f"modified = {str(modified)!r} has factor sizes {tuple(altered.factor_sizes)} and "
                              f"images {tuple(altered.observation_shape)}; expected those of {data.name!r}: "
                              f"{tuple(data.factor_sizes)}, {tuple(data.observation_shape)}")
        eps = epsilon if epsilon is not None else altered.epsilon
        if eps is None or not 0 < float(eps) <= 1:
            raise ConfigError(f"epsilon = {eps!r}; expected a number in (0, 1] for the noise controls (the "
                              f"modified file records none: give epsilon)")
    try:
        build_model(model, data.observation_shape, data.num_factors, dict(model_params or {}),
                    dataset=defaults_key(data), dataset_size=len(data))
    except ValueError as e:
        raise ConfigError(f"model {model!r} cannot train on dataset {data.name!r} "
                          f"{tuple(data.observation_shape)}: {e}") from None
    resolve_device(device)  # an unknown or absent device: refused before any work
    runner = Runner(launcher, workers=workers or 1, address=address, progress=progress, fail_fast=False,
                    resources={"num_cpus": 1, "num_gpus": 1 if str(device).startswith("cuda") else 0})
    variants = AUDIT_VARIANTS if sign_noise else AUDIT_VARIANTS[:3]
    out = ensure_writable_dir(out)  # only after every check
    with folder_lock(out, "audit folder"):  # one audit per folder
        spec = {"audit": "model", "model": model, "dataset": dataset, "dataset_options": options,
                "epsilon": float(eps),
                "seeds": seeds, "steps": steps, "batch_size": batch_size, "lr": lr,
                "model_params": dict(model_params or {}), "metrics": metrics, "eval_points": eval_points,
                "variants": list(variants),
                "profile": {"name": "audit", "audit": True, "reduced": True, "train_steps": steps, "seeds": seeds}}
        # the inputs lie outside the audit folder: recorded by their full paths, so that the folder can
        # be spelled any way or moved
        if man is not None:
            spec["manipulation"] = str(man.resolve())
        else:
            spec["modified"] = str(Path(modified).resolve())
        spec_path = out / "audit.yaml"
        if spec_path.exists() and _inputs_resolved(read_checked(spec_path, dict, "an audit's settings"), out) != spec:
            raise RunError(f"{str(out)!r} holds another audit (see {spec_path}); use a new --out folder")
        write_yaml(spec_path, spec)
        health = field_health(data, man) if man is not None else None
        for w in (health or {}).get("warnings", []):
            log.warning(w)
        base = {"name": str(Path(dataset).resolve()) if Path(dataset).exists() else str(dataset), **options}
        if man is not None:
            variant_spec = {"original": base, **{v: {**base, "variant": v, "manipulation": spec["manipulation"]}
                                                 for v in variants[1:]}}
        else:
            variant_spec = {"original": base, "modified": {"name": spec["modified"]},
                            **{v: {**base, "variant": v, "noise_epsilon": float(eps)} for v in variants[2:]}}
        evaluation = {"metrics": metrics, "num_points": eval_points, "seed": 0, "batch_size": 1000}
        safe = model.replace(":", "_").replace(".", "_")
        tasks = []
        for variant in variants:
            for seed in seeds:
                rd = out / "runs" / variant / f"{safe}_seed{seed}"
                cfg = RunConfig(model=model, dataset=variant_spec[variant], model_params=dict(model_params or {}),
                                train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                                  checkpoint_every=max(1, min(1000, steps)), log_every=min(100, steps)))
                tasks.append({"id": rd.relative_to(out).as_posix(), "run_dir": str(rd.resolve()), "config": to_dict(cfg),
                              "evaluate": evaluation, "meta": {"variant": variant, "seed": seed}, "cwd": os.getcwd()})

        def said(t, res):
            if res["status"] != "failed":
                log.info(f"{t['meta']['variant']:>8} seed {t['meta']['seed']}: MIG {res['metrics']['mig']['mig']:.3f}")

        with runner:
            results = runner.run(tasks, on_result=said)
        bad = [(t, r) for t, r in zip(tasks, results) if r["status"] == "failed"]
        if bad:
            raise RunError(f"{len(bad)} run(s) failed (rerun to retry): "
                           + "; ".join(f"{t['id']}: {r['error']}" for t, r in bad))
        on = {"original": data, "modified": altered}
        for v in variants[2:]:
            on[v] = load_variant(**variant_spec[v])
        report = _summarise(out, model, data, on, metrics, health, diagnostics, device)
        report["table"] = write_report(out)
        return report


def _inputs_resolved(spec: dict, out: Path) -> dict:
    """An ``audit.yaml`` with its inputs as full paths (folders written before 2026-12-05 recorded
    m_ψ relative to the audit folder and the modified file as given)."""
    spec = dict(spec)
    for key, base in (("manipulation", out), ("modified", Path.cwd())):
        value = spec.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            spec[key] = str((base / value).resolve())
    return spec


def _summarise(out: Path, model: str, data, on: dict, metrics, health, diagnostics: bool, device: str) -> dict:
    rows = [r for r in collect_runs(out) if r["model"] == model]
    mig = {v: [r["mig"] for r in rows if r["variant"] == v] for v in AUDIT_VARIANTS
           if any(r["variant"] == v for r in rows)}
    drop_rows = {d["variant"]: d for d in drops(rows)}
    names = rows[0]["factor_names"] or []
    gaps = {v: np.mean([r["gaps"] for r in rows if r["variant"] == v and r["gaps"]], axis=0).tolist()
            for v in AUDIT_VARIANTS if any(r["gaps"] for r in rows if r["variant"] == v)}
    diag = {}
    if diagnostics:
        for v in mig:
            vals = [decoder_diagnostics(r["run_dir"], on[v], device="cpu") for r in rows if r["variant"] == v]
            vals = [x for x in vals if x is not None]
            if vals:
                diag[v] = {k: (float(np.mean([x[k] for x in vals])) if vals[0][k] is not None else None)
                           for k in ("column_overlap", "follows_principal", "follows_factors")}
    line = verdict(mig, drop_rows)
    md = _markdown(model, data, mig, drop_rows, names, gaps, health, diag, line)
    paths = {"md": str(out / "audit_model.md"), "json": str(out / "audit_model.json")}
    with atomic_path(out / "audit_model.md") as tmp:
        tmp.write_text(md, encoding="utf-8")
    result = {"verdict": line, "mig": mig, "drops": drop_rows, "factor_names": names, "gaps": gaps,
              "health": health, "diagnostics": diag, "markdown": md, **paths}
    write_json(out / "audit_model.json", {k: v for k, v in result.items() if k != "markdown"})
    log.info(line)
    return result


def _fmt(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0.0:.3f} ({len(vals)})"


def _markdown(model, data, mig, drop_rows, names, gaps, health, diag, line) -> str:
    lines = [f"# Model audit: {model_label(model)} on {data.name}", "", f"**Verdict.** {line}", "",
             "| variant | MIG mean ± std (seeds) | change vs original [95 % CI] | p |", "|---|---|---|---|"]
    for v in mig:
        d = drop_rows.get(v)
        change = "" if d is None else f"{d['diff_vs_original']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
        p = "" if d is None else f"{d['p_value']:.2g}"
        lines.append(f"| {v} | {_fmt(mig[v]) if mig[v] else 'n/a'} | {change} | {p} |")
    if gaps and names:
        lines += ["", "MIG's gap per factor (mean over seeds):", "",
                  "| factor | " + " | ".join(gaps) + " |", "|---|" + "---|" * len(gaps)]
        for i, n in enumerate(names):
            lines.append(f"| {n} | " + " | ".join(f"{gaps[v][i]:.3f}" for v in gaps) + " |")
    if health is not None:
        lines += ["", f"m_ψ's health: std over w {health['std_over_w']:.3f}, saturated "
                  f"{health['saturated_share']:.1%}, mean {health['mean_m']:+.2f}"
                  + ("" if health.get("gap_end") is None else
                     f", gap L_dis − L_ent {health['gap_start']:.3g} → {health['gap_end']:.3g}")]
        lines += [f"- warning: {w}" for w in health["warnings"]]
    if diag:
        lines += ["", "Decoder diagnostics (Rolinek et al. 2019; mean over seeds): |cos| between decoder Jacobian "
                  "columns (0 = orthogonal), and how closely the latent axes follow the data's local principal "
                  "directions and the factors (1 = exactly).", "",
                  "| variant | column overlap | follows principal directions | follows factors |", "|---|---|---|---|"]
        for v, d in diag.items():
            def f(x):
                return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
            lines.append(f"| {v} | {f(d['column_overlap'])} | {f(d['follows_principal'])} | "
                         f"{f(d['follows_factors'])} |")
    return "\n".join(lines) + "\n"
