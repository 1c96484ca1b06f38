"""The paper's experiment as one resumable pipeline (Zietlow et al. 2021, Sec. 4-5).

``reproduce(dataset, profile, out)`` runs, in ``out``::

    profile.yaml                       the profile used (a rerun must use the same)
    references/beta_vae_seed<r>/       R β-VAE restarts (run directories)
    manipulation/selection.json        entangled (lowest MIG) / disentangled (highest)
    manipulation/                      m_ψ training run (checkpoint, log, config)
    datasets/<name>_modified_eps<ε>.h5 the altered dataset   (vaebias dataset file)
    datasets/<name>_noise_eps<ε>_seed<s>.h5  the noise control
    runs/<variant>/<model>_seed<s>/    one run directory per cell and seed
    table.md, table.csv, table.json    Table 1's columns for this dataset
    fig4_<name>.png                    original, ε·m(w), altered images

Every stage is idempotent: finished runs and files are kept, interrupted ones resume.
The reference and table runs go through the sweep runner (:mod:`vaebias.experiments.sweep`): each
is one task (train, evaluate, then a "finished" line in its ``task_log.jsonl``), run in
this process, in worker processes or on Ray (``launcher``), with the same results.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from vaebias._internal.config import TrainConfig, to_dict, with_defaults
from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import (
    atomic_path,
    canonical_json,
    ensure_writable_dir,
    read_checked,
    read_yaml,
    write_json,
    write_yaml,
)
from vaebias._internal.lock import folder_lock
from vaebias._internal.log import get_logger
from vaebias.data import load_dataset
from vaebias.data.registry import PATH_KEYS, located_spec
from vaebias.experiments.launchers import Runner
from vaebias.experiments.scoring import evaluate_run
from vaebias.manipulation.export import export_variants
from vaebias.manipulation.field import ManipulationConfig, field_health, train_manipulation
from vaebias.manipulation.references import rotate_reference, select_references
from vaebias.models import build_model, defaults_key, get_model_class, primary_hyperparameters
from vaebias.paper.fig5 import figure_robustness, robustness_table, summarise_rows
from vaebias.paper.profile import TABLE1_MODELS, VARIANTS, Profile, load_profile, profiles
from vaebias.report.tables import write_report
from vaebias.training import RunConfig, resolve_device

__all__ = ["Profile", "load_profile", "profiles", "reproduce", "VARIANTS", "TABLE1_MODELS"]

def _same_spec(old: dict, new: dict) -> bool:
    """Whether a results folder's ``profile.yaml`` describes this reproduction: compared
    after filling in the Profile fields added since it was written."""
    try:
        old = with_defaults(old, "profile", Profile)
    except (TypeError, ValueError):  # a damaged profile.yaml (ConfigError is a ValueError): not this one
        return False
    if old is None:
        return False

    def core(spec: dict) -> dict:  # Fig. 5's plan may change: it adds runs, it changes none; so may
        # the number of worker processes
        return {**spec, "profile": {k: v for k, v in spec["profile"].items() if k not in ("robustness", "workers")}}

    return core(old) == core(new)


def _relative_spec(spec: dict, run_dir: Path, root: Path) -> dict:
    """``spec`` with its absolute paths inside the results folder ``root`` written relative to
    ``run_dir`` (how a run of a results folder records the folder's own datasets)."""
    out = dict(spec)
    for key in ("name", *PATH_KEYS):
        value = out.get(key)
        if isinstance(value, str) and Path(value).is_absolute() and Path(value).is_relative_to(root):
            out[key] = Path(os.path.relpath(value, run_dir)).as_posix()
    return out


def _epsilon_of(prof: Profile, data) -> float | None:
    """ε of the manipulation: the profile's, else the dataset's default (None: neither)."""
    eps = prof.manipulation.get("epsilon", getattr(data, "epsilon", None))
    return None if eps is None or eps != eps else float(eps)


def _check_models_fit(prof: Profile, data) -> None:
    """Build every model of the profile once on ``data``'s shapes, so that a model that
    cannot take these images (e.g. the weak GAN, 64x64 only, on 32x32 blobs) is refused
    before hours of other runs, not after.

    Raises:
        ConfigError: naming the model, the dataset and the model's reason.
    """

    extra = prof.robustness_plan()["models"] if prof.robustness is not None else []
    for m in dict.fromkeys(("beta_vae", *prof.models, *extra)):
        try:
            build_model(m, data.observation_shape, data.num_factors, dict(prof.model_params.get(m, {})),
                        dataset=defaults_key(data), dataset_size=len(data))
        except ValueError as e:  # ConfigError is a ValueError too
            raise ConfigError(f"model {m!r} cannot train on dataset {data.name!r} "
                              f"{tuple(data.observation_shape)}: {e}") from None


log = get_logger()



def reproduce(dataset: str = "dsprites", profile: str | Profile = "quick", out: str | os.PathLike = "results",
              *, device: str = "auto", data_dir: str | None = None, progress: bool = True,
              launcher: str = "local", workers: int | None = None, address: str | None = None,
              dataset_options: dict | None = None, epsilon: float | None = None,
              stop_after: str | None = None) -> dict:
    """Run every stage of the paper's experiment for one dataset (see module docstring).

    Args:
        dataset: dataset name ("dsprites").
        profile: a :class:`Profile` or a built-in profile name ("quick", "paper") or path.
        out: results folder (created; rerunning resumes it).
        device: "auto", "cpu" or "cuda[:N]".
        data_dir: folder with the real dataset file (default: $VAEBIAS_DATA_DIR, else
            the procedural renderer).
        dataset_options: options of the dataset (e.g. blobs' ``{"num_scales": 1}``; see
            :func:`vaebias.data.load_dataset`), recorded in ``profile.yaml`` and in every
            run's config.
        epsilon: the manipulation's ε in (0, 1], overriding the profile's
            ``manipulation.epsilon`` and the dataset's default (paper Sec. 5.2: dSprites 0.1,
            Shapes3D 0.175). A dataset without a default (your own file) needs one of the two.
        stop_after: ``"manipulation"`` stops once the references and m_ψ are trained (for
            ``vaebias audit``); None runs every stage.
        launcher, workers, address: how the reference and table runs are executed
            (:class:`vaebias.experiments.launchers.Runner`): ``"local"`` with 1 worker runs them in this
            process in order (``workers=None``: the profile's ``workers``, else 1); N workers in N processes; ``"ray"`` one Ray task per run
            (1 CPU, and 1 GPU when ``device`` is CUDA) on the cluster at ``address``.
            Same directories and numbers either way.

    Returns:
        dict with the table rows and the paths written.

    Raises:
        RunError: ``out`` is unwritable or holds results of a different profile/dataset,
            or runs failed under a parallel launcher (each named).
        ConfigError: unknown dataset, profile, model or launcher.
    """

    t0 = time.perf_counter()
    if stop_after not in (None, "manipulation"):
        raise ConfigError(f"stop_after = {stop_after!r}; expected 'manipulation' or None")
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    given_epsilon = epsilon is not None
    if epsilon is not None:
        if not (isinstance(epsilon, (int, float)) and 0 < float(epsilon) <= 1):
            raise ConfigError(f"epsilon = {epsilon!r}; expected a number in (0, 1] (images lie in [0, 1])")
        prof = dataclasses.replace(prof, manipulation={**prof.manipulation, "epsilon": float(epsilon)})
    # one runner for the reference and the table runs: a worker pool or a Ray connection
    # is started once, on first use (validates launcher, workers and Ray's presence now)
    workers = workers if workers is not None else (prof.workers or 1)
    runner = Runner(launcher, workers=workers, address=address, progress=progress, fail_fast=True,
                    resources={"num_cpus": 1, "num_gpus": 1 if str(device).startswith("cuda") else 0})
    resolve_device(device)  # an unknown or absent device: refused now
    notes = []  # logged once every check passed: a refusal is one line
    if prof.reduced:
        notes.append(f"profile {prof.name!r} is a REDUCED protocol ({prof.train_steps} training steps, "
                     f"{len(prof.seeds)} seeds; the paper: 300,000 steps, 10 seeds)")
    options = dict(dataset_options or {})
    for key in ("name", "path", "data_dir"):
        if key in options:
            raise ConfigError(f"dataset option {key!r}: set by reproduce's own arguments, not an option")
    data_spec = {"name": dataset, **options}
    if data_dir:
        if not Path(data_dir).is_dir():
            raise ConfigError(f"--data-dir {str(data_dir)!r}: no such folder; expected the folder of the real "
                              f"dataset file (leave it out for the procedural renderer)")
        data_spec["data_dir"] = str(data_dir)
    if Path(dataset).exists() or data_dir:  # the runs live elsewhere: a file or data_dir by its full path
        data_spec = located_spec(data_spec, Path.cwd())
    data = load_dataset(**data_spec)
    notes.append(f"dataset {data!r}" + (f" with {options}" if options else ""))
    _check_models_fit(prof, data)  # before anything is written
    epsilon = _epsilon_of(prof, data)
    if epsilon is None:
        raise ConfigError(f"dataset {dataset!r} has no default epsilon for the manipulation (paper Sec. 5.2: "
                          f"dSprites 0.1, Shapes3D 0.175); give one with --epsilon (Python: epsilon=) or the "
                          f"profile's manipulation.epsilon")
    notes.append(f"epsilon = {epsilon:g} ("
                 + ("given" if given_epsilon else "the profile's" if "epsilon" in prof.manipulation else
                    f"the default of dataset {data.name!r}") + ")")
    out = ensure_writable_dir(out)  # created only after the checks above: a refusal leaves no folder
    with folder_lock(out, "results folder"):  # one reproduction per folder
        return _reproduce_locked(out, dataset, prof, data, data_spec, data_dir, options, runner, device=device,
                                 progress=progress, stop_after=stop_after, t0=t0, notes=notes)


def _reproduce_locked(out: Path, dataset: str, prof: Profile, data, data_spec: dict, data_dir, options: dict,
                      runner, *, device: str, progress: bool, stop_after: str | None, t0: float,
                      notes: list[str]) -> dict:
    """:func:`reproduce` once its inputs are checked and its results folder is locked."""
    spec = {"dataset": dataset, "data_dir": data_dir, "profile": to_dict(prof)}
    if options:  # absent when empty, so folders written before options existed still match
        spec["dataset_options"] = options
    spec_path = out / "profile.yaml"
    if spec_path.exists():
        old = read_yaml(spec_path)
        if not isinstance(old, dict) or not _same_spec(old, spec):
            raise RunError(f"{str(out)!r} holds results of a different profile or dataset "
                           f"(see {spec_path}); use a new --out folder")
        if (old.get("profile") or {}).get("robustness") != spec["profile"]["robustness"]:
            write_yaml(spec_path, spec)  # the same experiment with another Fig. 5 plan: record the new one
    else:
        write_yaml(spec_path, spec)
    for note in notes:
        log.info(note)

    def train_cfg(steps: int, seed: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=prof.batch_size, seed=seed, device=device,
                           checkpoint_every=prof.checkpoint_every, log_every=min(100, steps), lr=prof.lr,
                           **prof.train_settings)

    evaluation = {"metrics": ["mig", "active_units"], "num_points": prof.eval_points, "seed": 0,
                  "batch_size": 1000}
    runner.preloaded = {canonical_json(data_spec): data}
    with runner:
        report = _reproduce_stages(out, dataset, prof, data, data_spec, runner, train_cfg, evaluation,
                                   device=device, progress=progress, stop_after=stop_after)
    wall = time.perf_counter() - t0
    if stop_after is None:
        log.info(f"table written to {report['table_md']}; figure {report.get('figure')}")
    log.info(f"wall time {wall:.0f} s ({wall / 60:.1f} min)")
    report["wall_time_s"] = wall
    return report


def _reproduce_stages(out: Path, dataset: str, prof: Profile, data, data_spec: dict, runner, train_cfg,
                      evaluation: dict, *, device: str, progress: bool, stop_after: str | None = None) -> dict:
    """Stages 1-7 of :func:`reproduce` (the runs go through ``runner``)."""

    root = out.resolve()

    def task(rd: Path, cfg: RunConfig, **meta) -> dict:
        # inside the results folder everything refers to everything else by relative paths: the run's
        # config names the folder's own datasets relative to the run, and its spec's paths are relative
        # to the run (cwd); the folder can be spelled any way or moved
        rel = rd.relative_to(out)
        here = root / rel
        cfg = dataclasses.replace(cfg, dataset=_relative_spec(cfg.dataset, here, root))
        return {"id": rel.as_posix(), "run_dir": str(here), "config": to_dict(cfg), "evaluate": evaluation,
                "meta": meta, "cwd": str(here), "import_root": os.getcwd()}

    def failed(results: list[dict], what: str) -> None:
        bad = [r for r in results if r["status"] == "failed"]
        if bad:
            raise RunError(f"{len(bad)} {what} failed (rerun to retry): "
                           + "; ".join(f"{r['id']}: {r['error']}" for r in bad))

    scores = _reference_stage(out, prof, data_spec, runner, train_cfg, task, failed)
    sel = _selection_stage(out, prof, data, scores, evaluation, device)
    variant_spec = _manipulation_stage(out, prof, data, data_spec, sel, train_cfg, device, progress)
    if stop_after == "manipulation":
        man = out / "manipulation"
        log.info(f"stopped after the manipulation: m_psi in {man}")
        return {"manipulation": str(man), "markdown": f"m_psi trained in {man}; audit it with "
                                                      f"`vaebias audit data {dataset} --manipulation {man}`"}

    # 5. the table's runs
    table_tasks = []
    for variant in VARIANTS:
        for model in prof.models:
            for seed in prof.seeds:
                rd = out / "runs" / variant / f"{model}_seed{seed}"
                cfg = RunConfig(model=model, dataset=variant_spec[variant],
                                model_params=dict(prof.model_params.get(model, {})),
                                train=train_cfg(prof.steps_of(model), seed))
                table_tasks.append(task(rd, cfg, variant=variant, model=model, seed=seed))

    def said_run(spec, res):
        if res["status"] != "failed":
            meta = spec["meta"]
            log.info(f"{meta['variant']:>8} {meta['model']:<9} seed {meta['seed']}: "
                 f"MIG {res['metrics']['mig']['mig']:.3f}")

    failed(runner.run(table_tasks, on_result=said_run), "table runs")

    # 6. report: the table and Fig. 4 (written before Fig. 5's runs, so they are there early)
    report = write_report(out)

    # 7. Fig. 5's line search (Sec. 5.3), when the profile asks for it
    if prof.robustness is not None:
        report["robustness"] = _robustness_stage(out, dataset, prof, data, variant_spec, runner, task, failed,
                                                 train_cfg)
    return report


def _reference_stage(out: Path, prof: Profile, data_spec: dict, runner, train_cfg, task, failed) -> dict:
    """Stage 1: the reference restarts; their MIG keyed by run directory."""
    # 1. references: R β-VAE restarts (seeds 1000 + r, disjoint from the table's seeds), with
    #    the β-VAE hyperparameters of the table's runs
    ref_tasks = []
    for r in range(prof.reference_restarts):
        rd = out / "references" / f"beta_vae_seed{1000 + r}"
        cfg = RunConfig(model="beta_vae", dataset=data_spec, model_params=dict(prof.model_params.get("beta_vae", {})),
                        train=train_cfg(prof.reference_steps, 1000 + r))
        ref_tasks.append(task(rd, cfg, restart=r))

    def said_reference(spec, res):
        if res["status"] != "failed":
            log.info(f"reference {spec['meta']['restart'] + 1}/{prof.reference_restarts}: "
                 f"MIG {res['metrics']['mig']['mig']:.3f}")

    results = runner.run(ref_tasks, on_result=said_reference)
    failed(results, "reference runs")
    # keyed by the run directory relative to the results folder (selection.json records these)
    scores = {spec["id"]: res["metrics"]["mig"]["mig"] for spec, res in zip(ref_tasks, results)}
    return scores


def _selection_stage(out: Path, prof: Profile, data, scores: dict, evaluation: dict, device: str) -> dict:
    """Stage 2: the two references, recorded in ``manipulation/selection.json``."""
    # 2. selection (paper Sec. 4.4), or the rotated disentangled reference
    sel = select_references(scores)
    if prof.entangled_reference == "rotated":
        best = Path(sel["disentangled"])
        rotated = f"references/rotated_{best.name}"
        rot = rotate_reference(out / best, out / rotated, data)
        ev = {k: v for k, v in evaluation.items() if k != "metrics"}
        rot_mig = evaluate_run(rot["run_dir"], evaluation["metrics"], data=data, device=device, **ev)["mig"]["mig"]
        sel = {"entangled": rotated, "disentangled": best.as_posix(), "scores": {**scores, rotated: rot_mig},
               "entangled_reference": "rotated", "rotated_units": rot["active"]}
        log.info(f"entangled reference: {best.name} rotated over units {rot['active']} (MIG {rot_mig:.3f})")
    man_dir = out / "manipulation"
    sel_path = man_dir / "selection.json"
    # compared by the run's name: folders written before the paths became relative recorded them as given
    before = read_checked(sel_path, dict, "the reference selection") if sel_path.exists() else None
    if before is not None and Path(str(before.get("entangled"))).name != Path(sel["entangled"]).name:
        raise RunError(f"{sel_path} disagrees with the reference scores; delete {man_dir} to redo it")
    write_json(sel_path, sel)
    log.info(f"entangled reference {Path(sel['entangled']).name} (MIG {sel['scores'][sel['entangled']]:.3f}), "
         f"disentangled {Path(sel['disentangled']).name} (MIG {sel['scores'][sel['disentangled']]:.3f})")
    return sel


def _manipulation_stage(out: Path, prof: Profile, data, data_spec: dict, sel: dict, train_cfg, device: str,
                        progress: bool) -> dict:
    """Stages 3-4: m_ψ, its health, and the dataset spec of each variant."""
    # 3. m_ψ (paper Sec. 4.5)
    man_dir = out / "manipulation"
    epsilon = _epsilon_of(prof, data)  # checked by reproduce
    mcfg = ManipulationConfig(**{**prof.manipulation, "epsilon": epsilon, "field_width": prof.field_width})
    train_manipulation(data, out / sel["entangled"], out / sel["disentangled"], man_dir, mcfg,
                       train_cfg(prof.manipulation_steps, 0), progress=progress)
    health = field_health(data, man_dir, device=device)
    write_json(man_dir / "health.json", health)
    gap = ("" if health["gap_start"] is None else
           f", gap L_dis - L_ent {health['gap_start']:.3g} -> {health['gap_end']:.3g}")
    log.info(f"manipulation trained: m_psi std over w {health['std_over_w']:.3f}, saturated "
         f"{health['saturated_share']:.1%}{gap}")
    for w in health["warnings"]:
        log.warning(w)

    # 4. the modified and noise datasets: exported, or computed on the fly from m_ψ
    if prof.export:
        paths = export_variants(data, man_dir, out / "datasets", device=device, progress=progress)
        log.info(f"datasets written: {paths['modified'].name}, {paths['noise'].name}")
        variant_spec = {"original": data_spec, "modified": {"name": str(paths["modified"].resolve())},
                        "noise": {"name": str(paths["noise"].resolve())}}
    else:
        variant_spec = {"original": data_spec, **{v: {**data_spec, "variant": v, "manipulation": str(man_dir.resolve())}
                                                  for v in ("modified", "noise")}}
        log.info("modified and noise data computed on the fly from m_psi (profile export: false)")
    return variant_spec


def _robustness_stage(out: Path, dataset: str, prof: Profile, data, variant_spec: dict, runner, task, failed,
                      train_cfg) -> dict:
    """Stage 7 of :func:`reproduce`: the line search of ``prof.robustness`` on the
    pipeline's own datasets, then ``robustness.json``, ``robustness.md`` and
    ``fig5_<dataset>.png`` in ``out``. Runs at scale 1 with the table's models and seeds
    are the table's runs (same directory and config: found finished, not retrained); the
    others go to ``out/robustness/<variant>/<model>_<hyperparameter><value>_seed<seed>``."""

    plan = prof.robustness_plan()
    tasks = []
    for variant in plan["variants"]:
        for model in plan["models"]:
            hp = primary_hyperparameters()[model]
            params = dict(prof.model_params.get(model, {}))
            base = float(params.get(hp, getattr(get_model_class(model).default_config(defaults_key(data)), hp)))
            for scale in plan["scales"]:
                value = base * scale
                for seed in plan["seeds"]:
                    if scale == 1.0:  # the model's value in this profile: the table's runs where they exist
                        p = params
                        table_run = model in prof.models and seed in prof.seeds
                        rd = (out / "runs" if table_run else out / "robustness") / variant / f"{model}_seed{seed}"
                    else:
                        p = {**params, hp: value}
                        rd = out / "robustness" / variant / f"{model}_{hp}{value:g}_seed{seed}"
                    cfg = RunConfig(model=model, dataset=variant_spec[variant], model_params=p,
                                    train=train_cfg(prof.steps_of(model), seed))
                    tasks.append(task(rd, cfg, variant=variant, model=model, seed=seed, hyperparameter=hp,
                                      value=value))
    reused = sum(t["id"].startswith("runs/") for t in tasks)
    log.info(f"Fig. 5 line search: {len(plan['models'])} model(s) x {len(plan['scales'])} values x "
         f"{len(plan['seeds'])} seeds x {len(plan['variants'])} variants = {len(tasks)} runs, "
         f"{reused} of them the table's")

    def said(spec, res):
        if res["status"] != "failed":
            m = spec["meta"]
            au = res["metrics"].get("active_units", {})
            log.info(f"fig5 {m['variant']:>8} {m['model']:<9} {m['hyperparameter']} = {m['value']:g} seed {m['seed']}: "
                 f"MIG {res['metrics']['mig']['mig']:.3f}, {au.get('active_units')} active units")

    results = runner.run(tasks, on_result=said)
    failed(results, "line-search runs")
    per_run = []
    for spec, res in zip(tasks, results):
        m, au = spec["meta"], res["metrics"].get("active_units", {})
        per_run.append({"id": spec["id"], "model": m["model"], "dataset": m["variant"], "seed": m["seed"],
                        "model_params": {m["hyperparameter"]: m["value"]}, "mig": res["metrics"]["mig"]["mig"],
                        "active_units": au.get("active_units"), "active_units.num_factors": au.get("num_factors")})
    rows = summarise_rows(per_run)
    json_path = out / "robustness.json"
    write_json(json_path, {"dataset": dataset, "plan": plan, "rows": rows, "runs": per_run})
    table = robustness_table(rows)
    md_path = out / "robustness.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"Fig. 5 (Sec. 5.3) on **{dataset}**, profile {prof.name!r}: MIG over the primary "
                       f"hyperparameter, mean ± std over the kept runs; runs with fewer active units than "
                       f"factors discarded.\n\n{table}", encoding="utf-8")
    png = figure_robustness(rows, out / f"fig5_{dataset}.png")
    log.info("Fig. 5 table:\n%s", table)
    log.info(f"Fig. 5 written: {md_path.name}, {png.name}, {json_path.name}")
    return {"rows": rows, "json": str(json_path), "md": str(md_path), "png": str(png)}
