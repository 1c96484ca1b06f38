"""The commands of the ``vaebias`` command line, one function each, registered with
:func:`command` together with the function that adds its arguments. Each prints its
result on stdout; progress and log lines go to stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vaebias._internal.config import FAST_STEP, TrainConfig
from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import ensure_writable_dir, read_yaml, versions, write_json
from vaebias._internal.log import get_logger
from vaebias.audit import audit_datasets, audit_table, write_dataset_audit
from vaebias.audit.model import audit_model
from vaebias.cli.args import (
    add_config_flags,
    add_launcher_args,
    check_out,
    check_out_folder,
    config_values,
    epsilon_float,
    finite_float,
    key_values,
    positive_float,
    positive_int,
    print_and_write,
    seed_int,
)
from vaebias.data import available as dataset_names
from vaebias.data import load_dataset
from vaebias.experiments import evaluate_run, sweep, udr_runs
from vaebias.manipulation import (
    ManipulationConfig,
    export_variants,
    field_health,
    load_dataset_spec,
    train_manipulation,
    variant_dataset,
)
from vaebias.metrics import available as metric_names
from vaebias.metrics.sampling import FAST_MODE
from vaebias.models import available as model_names
from vaebias.paper.fig1 import fig1_experiment, figure_fig1
from vaebias.paper.fig5 import robustness_table, write_robustness
from vaebias.paper.reproduce import load_profile, profiles, reproduce
from vaebias.paper.theorem1 import PASS_TOLERANCE, theorem1_experiment
from vaebias.report import write_html_report, write_report, write_traversal
from vaebias.training import check_run_fits, is_finished, resolve_device, train

__all__ = ["COMMANDS", "Command", "command"]

# ruff: noqa: T201 - the commands print their results


@dataclass(frozen=True)
class Command:
    """A command: its help line, the function adding its arguments, the function running it
    (returns the exit status; None means 0)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


log = get_logger()

#: name -> Command, in the order ``vaebias --help`` lists them
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register the decorated ``run(args)`` as the command ``name``."""

    def deco(run):
        COMMANDS[name] = Command(help, arguments, run)
        return run

    return deco


# ------------------------------------------------------------------ reproduce and sweep
def _reproduce_args(r: argparse.ArgumentParser) -> None:
    r.add_argument("--dataset", default="dsprites", help="dataset name or file path (default: dsprites)")
    r.add_argument("--profile", default="quick", help=f"{', '.join(profiles())}, or a profile YAML file")
    r.add_argument("--profile-option", action="append", metavar="KEY=VALUE",
                   help="override a profile field, e.g. seeds=[0,1] or "
                        "manipulation='{loss: l2, clip_in_objective: false, noise: sign}' (repeatable)")
    r.add_argument("--epsilon", type=positive_float, default=None,
                   help="the manipulation's epsilon in (0, 1] (default: the profile's, else the dataset's: "
                        "dsprites 0.1, shapes3d 0.175; an own dataset file needs one)")
    r.add_argument("--stop-after", choices=["manipulation"], default=None,
                   help="stop once the references and m_psi are trained (for vaebias audit)")
    r.add_argument("--out", required=True, help="results folder (rerun to resume)")
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    r.add_argument("--data-dir", default=None, help="folder with the real dataset file")
    r.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                   help="a dataset option, e.g. num_scales=1 for two-factor blobs (repeatable)")
    add_launcher_args(r)
    r.add_argument("--no-progress", action="store_true")


@command("reproduce", "run every stage of the paper's experiment", _reproduce_args)
def run_reproduce(args) -> None:
    overrides = key_values(args.profile_option, "--profile-option")
    profile = load_profile(args.profile, **overrides) if overrides else args.profile
    rep = reproduce(args.dataset, profile, args.out, device=args.device, data_dir=args.data_dir,
                    progress=not args.no_progress, launcher=args.launcher, workers=args.workers,
                    address=args.address, dataset_options=key_values(args.dataset_option, "--dataset-option"),
                    epsilon=args.epsilon, stop_after=args.stop_after)
    print(rep["markdown"])  # reproduce logs its own wall time


def _sweep_args(sw: argparse.ArgumentParser) -> None:
    sw.add_argument("grid", help="grid YAML file (see vaebias.experiments.sweep)")
    sw.add_argument("--out", default=None, help="results folder (default: the grid's 'out'); rerun to resume")
    add_launcher_args(sw)
    sw.add_argument("--dry-run", action="store_true", help="list the run ids and exit")
    sw.add_argument("--no-progress", action="store_true")


@command("sweep", "run a grid of runs (models x datasets x seeds x hyperparameters)", _sweep_args)
def run_sweep(args) -> int:
    res = sweep(args.grid, args.out, launcher=args.launcher, workers=args.workers or 1, address=args.address,
                progress=not args.no_progress, dry_run=args.dry_run)
    if args.dry_run:
        print("\n".join(res["ids"]))
    if res["failed"]:
        print(f"vaebias: {len(res['failed'])} of {res['total']} runs failed:", file=sys.stderr)
        for r in res["failed"]:
            print(f"  {r['id']}: {r['error']}", file=sys.stderr)
        print(f"  tracebacks in {res['out']}/failures.log; rerun the same command to retry the failed "
              f"and missing runs", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ one run
def _train_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("--model", required=True)
    t.add_argument("--dataset", default="dsprites", help="dataset name or file path")
    t.add_argument("--out", required=True, help="run directory (rerun to resume)")
    t.add_argument("--param", action="append", metavar="KEY=VALUE", help="model hyperparameter, e.g. beta=8")
    t.add_argument("--fast", action="store_true",
                   help="the fast training step: bf16 autocast, channels-last, fused Adam, automatic CPU "
                        "data parallelism (explicit options win over --fast)")
    add_config_flags(t.add_argument_group("training (TrainConfig)"), TrainConfig)
    t.add_argument("--no-progress", action="store_true")


@command("train", "train one model into a run directory", _train_args)
def run_train(args) -> None:
    settings = {**(FAST_STEP if args.fast else {}), **config_values(args, TrainConfig)}
    cfg = {"model": args.model, "dataset": {"name": args.dataset}, "model_params": key_values(args.param),
           "train": settings}
    train(cfg, args.out, progress=not args.no_progress)
    print(f"trained {args.model} into {args.out}")


def _evaluate_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("run_dir")
    e.add_argument("--metrics", nargs="+", default=["mig", "active_units"],
                   help="metric names (see `vaebias metrics`) or 'all'")
    e.add_argument("--num-points", type=positive_int, default=10_000,
                   help="shared sample; the train split of SAP/DCI/modularity")
    e.add_argument("--num-test", type=positive_int, default=5_000, help="test split of SAP/DCI/modularity")
    e.add_argument("--dci-backend", choices=["sklearn", "hist"], default=None,
                   help="sklearn (default): the reference's GradientBoostingClassifier; hist: the fast backend")
    e.add_argument("--score-num-train", type=positive_int, default=None,
                   help="votes training the FactorVAE/BetaVAE scores' classifiers (default 10,000)")
    e.add_argument("--score-num-eval", type=positive_int, default=None,
                   help="votes evaluating them (default 5,000)")
    e.add_argument("--score-sampling", choices=["fresh", "pool"], default=None,
                   help="fresh (default): the scores encode new images for every vote, as the reference; "
                        "pool: their batches are drawn from the shared and test samples' codes")
    e.add_argument("--fast", action="store_true",
                   help="fast mode: DCI's hist backend and pool sampling for the FactorVAE/BetaVAE scores "
                        "(explicit options win)")
    e.add_argument("--overwrite", action="store_true", help="recompute metrics already recorded")
    e.add_argument("--seed", type=seed_int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--dataset", default=None, help="evaluate on this dataset instead of the training one")


@command("evaluate", "score a trained run; writes its metrics.json", _evaluate_args)
def run_evaluate(args) -> None:
    data = load_dataset(args.dataset) if args.dataset else None
    names = "all" if args.metrics == ["all"] else args.metrics
    opts = dict(FAST_MODE) if args.fast else {}
    opts.update({k: v for k, v in (("dci_backend", args.dci_backend), ("score_num_train", args.score_num_train),
                                   ("score_num_eval", args.score_num_eval),
                                   ("score_sampling", args.score_sampling)) if v is not None})
    res = evaluate_run(args.run_dir, names, data=data, num_points=args.num_points, seed=args.seed,
                       device=args.device, overwrite=args.overwrite, num_test=args.num_test, **opts)
    for name, val in res.items():
        if name in ("settings", "settings_of", "model", "versions") or not isinstance(val, dict):
            continue
        scalars = {k: round(v, 4) for k, v in val.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in scalars.items()))


def _traverse_args(tv: argparse.ArgumentParser) -> None:
    tv.add_argument("run_dir")
    tv.add_argument("--out", required=True, help="PNG file to write")
    tv.add_argument("--gif", default=None, help="also write an animated GIF here")
    tv.add_argument("--num-values", type=positive_int, default=9)
    tv.add_argument("--seed", type=seed_int, default=0, help="draws the reference image")
    tv.add_argument("--device", default="cpu")


@command("traverse", "latent traversals of a trained run (PNG grid, optional GIF)", _traverse_args)
def run_traverse(args) -> None:
    if not 2 <= args.num_values <= 100:
        raise ConfigError(f"--num-values {args.num_values}: expected 2 to 100 (one image per value and latent)")
    check_out(args.out, ".png")  # before loading the run and rendering, not after
    if args.gif is not None:
        check_out(args.gif, ".gif", "--gif")
    res = write_traversal(args.run_dir, args.out, gif=args.gif, num_values=args.num_values, seed=args.seed,
                          device=args.device)
    print(f"wrote {res['png']}" + (f" and {res['gif']}" if "gif" in res else ""))


def _udr_args(u: argparse.ArgumentParser) -> None:
    u.add_argument("run_dirs", nargs="+", help="two or more finished runs on one dataset")
    u.add_argument("--out", required=True, help="JSON file to write")
    u.add_argument("--num-points", type=positive_int, default=1000)
    u.add_argument("--seed", type=seed_int, default=0)
    u.add_argument("--correlation", choices=["lasso", "spearman"], default="lasso")
    u.add_argument("--device", default="auto")


@command("udr", "UDR (Duan et al. 2020) of several trained runs; writes a JSON file", _udr_args)
def run_udr(args) -> None:
    check_out(args.out, ".json")  # before the scoring, not after
    res = udr_runs(args.run_dirs, args.out, num_points=args.num_points, seed=args.seed,
                   correlation=args.correlation, device=args.device)
    for rd, score in zip(res["runs"], res["udr"]):
        print(f"{rd}: UDR {score:.4f}")
    print(f"wrote {args.out}")


# ------------------------------------------------------------------ the manipulation
def _manipulate_args(m: argparse.ArgumentParser) -> None:
    m.add_argument("--entangled", required=True, help="run directory of the entangled reference")
    m.add_argument("--disentangled", required=True, help="run directory of the disentangled reference")
    m.add_argument("--out", required=True, help="manipulation run directory")
    m.add_argument("--dataset", default=None,
                   help="dataset name or file (default: the one the references were trained on)")
    m.add_argument("--epsilon", type=epsilon_float, default=None,
                   help="default: the dataset's (0.1 dSprites, 0.175 Shapes3D), else 0.1")
    m.add_argument("--steps", type=positive_int, default=100_000)
    m.add_argument("--seed", type=seed_int, default=0)
    m.add_argument("--field-width", type=positive_float, default=1.0)
    m.add_argument("--no-clip", action="store_true", help="do not clip x' to [0, 1]")
    m.add_argument("--loss", choices=("bernoulli", "l2"), default="bernoulli",
                   help="the decoders' reconstruction loss of x' (default bernoulli; the paper's Fig. 3 writes L2)")
    m.add_argument("--unclipped-objective", action="store_true",
                   help="compute L_ent - L_dis on the unclipped x + eps*m (needs --loss l2; "
                        "see ManipulationConfig.clip_in_objective)")
    m.add_argument("--export-dir", default=None, help="where to write the modified and noise datasets")
    m.add_argument("--device", default="auto")
    m.add_argument("--no-progress", action="store_true")


def _references_dataset(args):
    """The dataset both references were trained on (from their config.yaml)."""
    specs = []
    for run in (args.entangled, args.disentangled):
        cfg = Path(run) / "config.yaml"
        if not cfg.exists():
            raise ConfigError(f"{run}: not a training run (no config.yaml); expected the run directory of a "
                              f"reference")
        specs.append((read_yaml(cfg) or {}).get("dataset"))
    if specs[0] != specs[1]:
        raise ConfigError(f"the references were trained on different datasets ({specs[0]} and {specs[1]}); "
                          f"expected one dataset (or give --dataset)")
    return load_dataset_spec(specs[0])


@command("manipulate", "fit m_psi from two reference runs and export the datasets", _manipulate_args)
def run_manipulate(args) -> None:
    if args.unclipped_objective and args.loss != "l2":
        raise ConfigError("--unclipped-objective needs --loss l2 (the Bernoulli loss is "
                          "unbounded below for targets outside [0, 1])")
    check_out_folder(args.out)
    if args.export_dir is not None:
        check_out_folder(args.export_dir, "--export-dir")
    for flag, run in (("--entangled", args.entangled), ("--disentangled", args.disentangled)):
        if not is_finished(run):
            raise RunError(f"{flag} {run!r} is not a finished training run (expected config.yaml and a "
                           f"checkpoint at its last step); train it first")
    data = load_dataset(args.dataset) if args.dataset is not None else _references_dataset(args)
    eps = args.epsilon if args.epsilon is not None else data.epsilon
    if eps is None:
        raise ConfigError(f"dataset {data.name!r} has no default epsilon (paper Sec. 5.2: dsprites 0.1, "
                          f"shapes3d 0.175); give one with --epsilon")
    mcfg = ManipulationConfig(epsilon=eps, clip=not args.no_clip, field_width=args.field_width,
                              loss=args.loss, clip_in_objective=not args.unclipped_objective)
    tcfg = TrainConfig(steps=args.steps, seed=args.seed, device=args.device)
    resolve_device(args.device)
    for run in (args.entangled, args.disentangled):
        check_run_fits(run, data)
    log.info(f"m_psi on {data.name!r} with epsilon = {eps:g}"
             + (" (given)" if args.epsilon is not None else " (the dataset's default)"))
    train_manipulation(data, args.entangled, args.disentangled, args.out, mcfg, tcfg,
                       progress=not args.no_progress)
    health = field_health(data, args.out, device=args.device if args.device != "auto" else "cpu")
    write_json(Path(args.out) / "health.json", health)
    log.info(f"m_psi health: std over w {health['std_over_w']:.3f}, saturated {health['saturated_share']:.1%}, "
             f"mean {health['mean_m']:+.2f}")
    for w in health["warnings"]:
        log.warning(w)
    paths = export_variants(data, args.out, args.export_dir or args.out, device=args.device,
                            progress=not args.no_progress)
    for k, v in paths.items():
        print(f"{k}: {v}")


# ------------------------------------------------------------------ audits
def _audit_args(a: argparse.ArgumentParser) -> None:
    sub = a.add_subparsers(dest="audit_what", required=True)
    d = sub.add_parser("data", help="model-free: does the data's local variance line up with its factors?")
    d.add_argument("dataset", help="dataset name or file path")
    d.add_argument("--manipulation", default=None,
                   help="a trained m_psi on this dataset: also audit its modified data and noise control")
    d.add_argument("--points", type=positive_int, default=1000, help="grid points of the local alignment")
    d.add_argument("--pairs", type=positive_int, default=4000, help="random pairs of the rank correlation")
    d.add_argument("--seed", type=seed_int, default=0)
    d.add_argument("--out", default=None, help="folder for audit.md, audit.json and audit.png")
    d.add_argument("--dataset-option", action="append", metavar="KEY=VALUE", help="a dataset option (repeatable)")
    d.add_argument("--device", default="cpu")
    d.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("model", help="does a training recipe rely on the bias? (original / modified / noise)")
    m.add_argument("--model", required=True, help="a model name, or package.module:Class of your own Model")
    m.add_argument("--dataset", required=True, help="dataset name or file path")
    m.add_argument("--manipulation", default=None,
                   help="a trained m_psi on this dataset (vaebias manipulate, or reproduce --stop-after manipulation)")
    m.add_argument("--modified", default=None,
                   help="instead of --manipulation: a file of the modified dataset (e.g. an exported *_modified_*.h5)")
    m.add_argument("--epsilon", type=epsilon_float, default=None,
                   help="with --modified: epsilon of the noise controls (default: the file's epsilon attribute)")
    m.add_argument("--out", required=True, help="results folder (rerun to resume)")
    m.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2, 3, 4], help="default: 0 1 2 3 4")
    m.add_argument("--steps", type=positive_int, default=1500, help="training steps of every run (default: 1500)")
    m.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    m.add_argument("--lr", type=positive_float, default=1e-4, help="Adam's learning rate (default: 1e-4)")
    m.add_argument("--param", action="append", metavar="KEY=VALUE", help="model hyperparameter, e.g. beta=8")
    m.add_argument("--metrics", nargs="+", default=["mig", "active_units"],
                   help="metric names, or all (default: mig active_units)")
    m.add_argument("--eval-points", type=positive_int, default=10_000, help="default: 10000")
    m.add_argument("--dataset-option", action="append", metavar="KEY=VALUE", help="a dataset option (repeatable)")
    m.add_argument("--sign-noise", action="store_true",
                   help="also train on the sign-noise control x +- eps (the verdict takes the larger noise drop)")
    m.add_argument("--no-diagnostics", action="store_true", help="skip the decoder Jacobian diagnostics")
    m.add_argument("--device", default="auto")
    add_launcher_args(m)
    m.add_argument("--no-progress", action="store_true")


@command("audit", "audit your own data (audit data) or training recipe (audit model) for the bias", _audit_args)
def run_audit(args) -> None:
    options = key_values(args.dataset_option, "--dataset-option")
    if args.audit_what == "model":
        res = audit_model(args.model, args.dataset, args.manipulation, args.out,
                          modified=args.modified, epsilon=args.epsilon, seeds=args.seeds, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          model_params=key_values(args.param), metrics="all" if args.metrics == ["all"] else args.metrics,
                          eval_points=args.eval_points, device=args.device, launcher=args.launcher,
                          workers=args.workers, address=args.address, dataset_options=options,
                          progress=not args.no_progress, diagnostics=not args.no_diagnostics,
                          sign_noise=args.sign_noise)
        print(res["markdown"], end="")
        return
    data = load_dataset(args.dataset, **options)
    datasets = {"original": data}
    if args.manipulation is not None:
        datasets["modified"] = variant_dataset(data, "modified", args.manipulation)
        datasets["noise"] = variant_dataset(data, "noise", args.manipulation)
    if not data.is_full_grid:
        log.warning(f"{args.dataset}: a labelled sample, not the full grid: the local alignment needs neighbouring "
                    f"factor values, so only the rank correlation is computed")
    if args.out is not None:
        ensure_writable_dir(args.out)
    results = audit_datasets(datasets, points=args.points, pairs=args.pairs, seed=args.seed, device=args.device,
                             progress=not args.no_progress)
    for label, res in results.items():
        la = res["local_alignment"]
        if la is not None:
            log.info(f"{label}: local alignment {la['score']:.3f} [{la['ci_low']:.3f}, {la['ci_high']:.3f}]")
    if args.manipulation is not None:
        health = field_health(data, args.manipulation)
        results["original"]["manipulation_health"] = health
        for w in health["warnings"]:
            log.warning(w)
    if args.out is not None:
        paths = write_dataset_audit(results, args.out)
        print(paths["markdown"], end="")
        log.info("written: " + ", ".join(str(p) for p in (paths["md"], paths["json"], paths["png"]) if p))
    else:
        print(audit_table(results), end="")


# ------------------------------------------------------------------ the paper's other results
def _robustness_args(rb: argparse.ArgumentParser) -> None:
    rb.add_argument("sweep_out", help="the sweep's results folder (see vaebias.paper.fig5.robustness_grid)")


@command("robustness", "Fig. 5: summarise a line-search sweep (MIG over the primary hyperparameter, "
                       "over-pruned runs discarded)", _robustness_args)
def run_robustness(args) -> None:
    res = write_robustness(args.sweep_out)
    print(robustness_table(res["rows"]), end="")
    print(f"wrote {res['json']} and {res['png']}")


def _fig1_args(f1: argparse.ArgumentParser) -> None:
    f1.add_argument("--out", required=True,
                    help="the figure (.png); the table goes beside it as .md (settings, versions) and .json")
    f1.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2], help="default: 0 1 2")
    f1.add_argument("--layout", choices=["lattice", "line", "scatter"], default="lattice")
    f1.add_argument("--angle", type=finite_float, default=30.0,
                    help="rotation of the patch layout, i.e. of the patches' centres (degrees)")
    f1.add_argument("--noise-var", type=positive_float, default=0.05, help="the decoders' fixed variance")
    f1.add_argument("--steps", type=positive_int, default=20_000, help="Adam steps of the nonlinear VAE")


@command("fig1", "Fig. 1: local vs global PCA - angles of PCA, a linear and a nonlinear VAE", _fig1_args)
def run_fig1(args) -> None:
    check_out(args.out, ".png")  # before the minutes of fitting, not after
    res = fig1_experiment(args.seeds, layout=args.layout, angle=args.angle, noise_var=args.noise_var,
                          steps=args.steps)
    png = figure_fig1(res, args.out)
    write_json(Path(args.out).with_suffix(".json"),
               {**{k: res[k] for k in ("rows", "local", "global", "data_tilt", "settings")}, "versions": versions()})
    lines = [f"patches' local frame {res['local']:.1f}°, global principal frame {res['global']:.1f}° "
             f"(layout {args.layout}, decoder variance {args.noise_var})",
             f"patches in data space tilted {res['data_tilt']:.1f}° from the axes", "",
             "| method | seed | orientation | from local | from global | patch tilt | code std |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        seed = "-" if r["seed"] is None else r["seed"]
        std = ", ".join(f"{v:.2f}" for v in r["code_std"])
        lines.append(f"| {r['method']} | {seed} | {r['orientation']:.1f}° | {r['to_local']:.1f}° | "
                     f"{r['to_global']:.1f}° | {r['patch_tilt']:.1f}° | {std} |")
    print_and_write(lines, Path(args.out).with_suffix(".md"), res["settings"])
    print(f"wrote {png}")


def _theorem1_args(th: argparse.ArgumentParser) -> None:
    th.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2])
    th.add_argument("--variances", type=positive_float, nargs="+", default=[9.0, 4.0, 1.0],
                    help="the data's principal variances (distinct)")
    th.add_argument("--noise-var", type=positive_float, default=0.1, help="the decoder's fixed variance")
    th.add_argument("--num-points", type=positive_int, default=2000)
    th.add_argument("--out", help="also write the table, its settings and library versions to this .md file")


@command("theorem1", "check the paper's Theorem 1 (linear VAEs perform PCA) numerically", _theorem1_args)
def run_theorem1(args) -> None:
    if args.out is not None:
        check_out(args.out, ".md")
    rows = theorem1_experiment(args.seeds, args.variances, num_points=args.num_points, noise_var=args.noise_var)
    lines = [f"Theorem 1 on {args.num_points} points with principal variances {args.variances}, "
             f"decoder variance {args.noise_var}: distances of V from the nearest signed permutation "
             f"and of U from the data's principal directions (pass: both < {PASS_TOLERANCE})", "",
             "| seed | model | V distance | U distance | singular values | passes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['model']} | {r['v_distance']:.1e} | {r['u_distance']:.1e} | "
                     f"{', '.join(f'{v:.3f}' for v in r['singular_values'])} | "
                     f"{'yes' if r['passes'] else 'no'} |")
    settings = {"seeds": list(args.seeds), "variances": list(args.variances), "num_points": args.num_points,
                "noise_var": args.noise_var}
    print_and_write(lines, args.out and Path(args.out), settings)


# ------------------------------------------------------------------ reports and listings
def _report_args(rep: argparse.ArgumentParser) -> None:
    rep.add_argument("out")


@command("report", "write the table and figure of a reproduce or audit folder, and report.html "
                   "(one self-contained page) for any results folder", _report_args)
def run_report(args) -> None:
    for name in ("report.html", "table.md", "table.csv", "table.json"):  # what it writes: checked before the work
        if (Path(args.out) / name).is_dir():
            raise RunError(f"{str(Path(args.out) / name)!r} is a folder; expected a file there (or none)")
    if Path(args.out).is_dir():
        check_out_folder(args.out, "results folder")
    if any((Path(args.out) / n).exists() for n in ("profile.yaml", "audit.yaml")):  # its table and Fig. 4 first
        rep = write_report(args.out)
        print(rep["markdown"])
        print(f"written: {rep['table_md']}, {rep['table_csv']}, {rep['table_json']}, {rep.get('figure')}")
    print(f"written: {write_html_report(args.out)}")


@command("models", "list the registered models")
def run_models(args) -> None:
    print("\n".join(model_names()))


@command("datasets", "list the dataset names")
def run_datasets(args) -> None:
    print("\n".join(dataset_names()))


@command("metrics", "list the metric names usable in `vaebias evaluate`")
def run_metrics(args) -> None:
    print("\n".join(metric_names()))


@command("profiles", "list the built-in profiles")
def run_profiles(args) -> None:
    print("\n".join(profiles()))
