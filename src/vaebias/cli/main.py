"""Command line: a thin layer over the Python API.

    vaebias reproduce --dataset dsprites --profile quick --out results/quick
    vaebias train --model beta_vae --dataset dsprites --steps 1000 --out runs/b0
    vaebias evaluate runs/b0
    vaebias manipulate --entangled runs/b0 --disentangled runs/b1 --out runs/manip
    vaebias report results/quick
    vaebias traverse runs/b0 --out traversal.png --gif traversal.gif
    vaebias sweep grid.yaml --launcher local|ray [--workers N] [--address ADDR]
    vaebias models | datasets | profiles

Errors of input (unknown names, bad values, missing or corrupt files, unwritable
folders) print one line ``vaebias: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import yaml

from vaebias import __version__
from vaebias._internal.config import FAST_STEP, TrainConfig
from vaebias._internal.errors import ConfigError, VaebiasError
from vaebias._internal.io import atomic_path, ensure_writable_dir, versions, write_json
from vaebias._internal.log import configure_cli_logging
from vaebias.data import available as dataset_names
from vaebias.data import load_dataset
from vaebias.data.base import DataError
from vaebias.experiments.scoring import evaluate_run, udr_runs
from vaebias.experiments.sweep import sweep
from vaebias.manipulation.field import ManipulationConfig, export_variants, train_manipulation
from vaebias.metrics import available as metric_names
from vaebias.metrics.sampling import FAST_MODE
from vaebias.models import available as model_names
from vaebias.paper.fig1 import fig1_experiment, figure_fig1
from vaebias.paper.fig5 import robustness_table, write_robustness
from vaebias.paper.reproduce import load_profile, profiles, reproduce
from vaebias.paper.theorem1 import PASS_TOLERANCE, theorem1_experiment
from vaebias.report.html import write_html_report
from vaebias.report.tables import write_report
from vaebias.report.traversal import write_traversal
from vaebias.training import train

__all__ = ["build_parser", "main"]


def _params(items: list[str] | None, flag: str = "--param") -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            where = f" ({e.problem})" if getattr(e, "problem", None) else ""
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML{where}") from None
    return out


def _positive(kind):
    """argparse type: a number of ``kind`` (int or float) that must be > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
        return value

    return parse


_positive_int = _positive(int)
_positive_float = _positive(float)


def _finite_float(text: str) -> float:
    """argparse type: a finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number")
    return value


def _launcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", choices=["local", "ray"], default="local",
                   help="local: this machine; ray: one Ray task per run")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="local launcher: runs in parallel, each in its own process with cores/N torch threads "
                        "(default: the profile's 'workers' for reproduce, else 1: in this process)")
    p.add_argument("--address", default=None,
                   help="ray launcher: cluster address host:port or 'auto' (default: $RAY_ADDRESS, "
                        "else a new local cluster)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaebias", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"vaebias {__version__}")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug log lines on stderr")
    loud.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run every stage of the paper's experiment")
    r.add_argument("--dataset", default="dsprites")
    r.add_argument("--profile", default="quick", help="quick, paper, or a profile YAML file")
    r.add_argument("--profile-option", action="append", metavar="KEY=VALUE",
                   help="override a profile field, e.g. seeds=[0,1] or "
                        "manipulation='{loss: l2, clip_in_objective: false, noise: sign}' (repeatable)")
    r.add_argument("--out", required=True, help="results folder (rerun to resume)")
    r.add_argument("--device", default="auto")
    r.add_argument("--data-dir", default=None, help="folder with the real dataset file")
    r.add_argument("--dataset-option", action="append", metavar="KEY=VALUE",
                   help="a dataset option, e.g. num_scales=1 for two-factor blobs (repeatable)")
    _launcher_args(r)
    r.add_argument("--no-progress", action="store_true")

    sw = sub.add_parser("sweep", help="run a grid of runs (models x datasets x seeds x hyperparameters)")
    sw.add_argument("grid", help="grid YAML file (see vaebias.experiments.sweep)")
    sw.add_argument("--out", default=None, help="results folder (default: the grid's 'out'); rerun to resume")
    _launcher_args(sw)
    sw.add_argument("--dry-run", action="store_true", help="list the run ids and exit")
    sw.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train one model into a run directory")
    t.add_argument("--model", required=True)
    t.add_argument("--dataset", default="dsprites", help="dataset name or file path")
    t.add_argument("--out", required=True, help="run directory (rerun to resume)")
    t.add_argument("--steps", type=_positive_int, default=300_000)
    t.add_argument("--batch-size", type=_positive_int, default=64)
    t.add_argument("--lr", type=_positive_float, default=1e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--checkpoint-every", type=_positive_int, default=1000)
    t.add_argument("--param", action="append", metavar="KEY=VALUE", help="model hyperparameter, e.g. beta=8")
    t.add_argument("--fast", action="store_true",
                   help="the fast training step: bf16 autocast, channels-last, fused Adam, automatic CPU "
                        "data parallelism (see --precision, --data-parallel)")
    t.add_argument("--data-parallel", type=int, default=None, metavar="N",
                   help="shards per batch on CPU threads (0: auto, 1: off; AE, beta-VAE, Slow-VAE; explicit "
                        "options win over --fast)")
    t.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="fp32 (default) or bf16 autocast of the forward passes (explicit options win over --fast)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model's networks")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("evaluate", help="score a trained run; writes its metrics.json")
    e.add_argument("run_dir")
    e.add_argument("--metrics", nargs="+", default=["mig", "active_units"],
                   help="metric names (see `vaebias metrics`) or 'all'")
    e.add_argument("--num-points", type=_positive_int, default=10_000,
                   help="shared sample; the train split of SAP/DCI/modularity")
    e.add_argument("--num-test", type=_positive_int, default=5_000, help="test split of SAP/DCI/modularity")
    e.add_argument("--dci-backend", choices=["sklearn", "hist"], default=None,
                   help="sklearn (default): the reference's GradientBoostingClassifier; hist: the fast backend")
    e.add_argument("--score-num-train", type=_positive_int, default=None,
                   help="votes training the FactorVAE/BetaVAE scores' classifiers (default 10,000)")
    e.add_argument("--score-num-eval", type=_positive_int, default=None,
                   help="votes evaluating them (default 5,000)")
    e.add_argument("--score-sampling", choices=["fresh", "pool"], default=None,
                   help="fresh (default): the scores encode new images for every vote, as the reference; "
                        "pool: their batches are drawn from the shared and test samples' codes")
    e.add_argument("--fast", action="store_true",
                   help="fast mode: DCI's hist backend and pool sampling for the FactorVAE/BetaVAE scores "
                        "(explicit options win)")
    e.add_argument("--overwrite", action="store_true", help="recompute metrics already recorded")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--dataset", default=None, help="evaluate on this dataset instead of the training one")

    rb = sub.add_parser("robustness", help="Fig. 5: summarise a line-search sweep (MIG over the primary "
                                           "hyperparameter, over-pruned runs discarded)")
    rb.add_argument("sweep_out", help="the sweep's results folder (see vaebias.paper.fig5.robustness_grid)")

    tv = sub.add_parser("traverse", help="latent traversals of a trained run (PNG grid, optional GIF)")
    tv.add_argument("run_dir")
    tv.add_argument("--out", required=True, help="PNG file to write")
    tv.add_argument("--gif", default=None, help="also write an animated GIF here")
    tv.add_argument("--num-values", type=_positive_int, default=9)
    tv.add_argument("--seed", type=int, default=0, help="draws the reference image")
    tv.add_argument("--device", default="cpu")

    f1 = sub.add_parser("fig1", help="Fig. 1: local vs global PCA - angles of PCA, a linear and a nonlinear VAE")
    f1.add_argument("--out", required=True,
                    help="the figure (.png); the table goes beside it as .md (settings, versions) and .json")
    f1.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default: 0 1 2")
    f1.add_argument("--layout", choices=["lattice", "line", "scatter"], default="lattice")
    f1.add_argument("--angle", type=_finite_float, default=30.0,
                    help="rotation of the patch layout, i.e. of the patches' centres (degrees)")
    f1.add_argument("--noise-var", type=_positive_float, default=0.05, help="the decoders' fixed variance")
    f1.add_argument("--steps", type=_positive_int, default=20_000, help="Adam steps of the nonlinear VAE")

    th = sub.add_parser("theorem1", help="check the paper's Theorem 1 (linear VAEs perform PCA) numerically")
    th.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    th.add_argument("--variances", type=_positive_float, nargs="+", default=[9.0, 4.0, 1.0],
                    help="the data's principal variances (distinct)")
    th.add_argument("--noise-var", type=_positive_float, default=0.1, help="the decoder's fixed variance")
    th.add_argument("--num-points", type=_positive_int, default=2000)
    th.add_argument("--out", help="also write the table, its settings and library versions to this .md file")

    u = sub.add_parser("udr", help="UDR (Duan et al. 2020) of several trained runs; writes a JSON file")
    u.add_argument("run_dirs", nargs="+", help="two or more finished runs on one dataset")
    u.add_argument("--out", required=True, help="JSON file to write")
    u.add_argument("--num-points", type=_positive_int, default=1000)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--correlation", choices=["lasso", "spearman"], default="lasso")
    u.add_argument("--device", default="auto")

    m = sub.add_parser("manipulate", help="fit m_psi from two reference runs and export the datasets")
    m.add_argument("--entangled", required=True, help="run directory of the entangled reference")
    m.add_argument("--disentangled", required=True, help="run directory of the disentangled reference")
    m.add_argument("--out", required=True, help="manipulation run directory")
    m.add_argument("--dataset", default="dsprites")
    m.add_argument("--epsilon", type=_positive_float, default=None, help="default: 0.1 dSprites")
    m.add_argument("--steps", type=_positive_int, default=100_000)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--field-width", type=_positive_float, default=1.0)
    m.add_argument("--no-clip", action="store_true", help="do not clip x' to [0, 1]")
    m.add_argument("--loss", choices=("bernoulli", "l2"), default="bernoulli",
                   help="the decoders' reconstruction loss of x' (default bernoulli; the paper's Fig. 3 writes L2)")
    m.add_argument("--unclipped-objective", action="store_true",
                   help="compute L_ent - L_dis on the unclipped x + eps*m (needs --loss l2; "
                        "see ManipulationConfig.clip_in_objective)")
    m.add_argument("--export-dir", default=None, help="where to write the modified and noise datasets")
    m.add_argument("--device", default="auto")
    m.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser("report", help="write the table and figure of a reproduce folder, and report.html "
                                        "(one self-contained page) for any results folder")
    rep.add_argument("out")

    sub.add_parser("models", help="list the registered models")
    sub.add_parser("datasets", help="list the dataset names")
    sub.add_parser("metrics", help="list the metric names usable in `vaebias evaluate`")
    sub.add_parser("profiles", help="list the built-in profiles")
    return p


def _check_out(path: str, suffix: str) -> None:
    """Refuse an output file of another type, or in a folder that cannot be written, before any work.

    Raises:
        ConfigError: the suffix is not ``suffix``; RunError: the folder is not writable.
    """

    if Path(path).suffix.lower() != suffix:
        raise ConfigError(f"--out {path!r}: expected a {suffix} path")
    ensure_writable_dir(Path(path).parent)


def _print_and_write(lines: list[str], path: Path | None, settings: dict) -> None:
    """Print a command's Markdown table; with ``path``, also write it there (atomically)
    with its settings and library versions, where ``vaebias report`` picks it up."""

    print("\n".join(line for line in lines if line))
    if path is not None:
        ver = ", ".join(f"{k} {v}" for k, v in versions().items())
        text = "\n".join(lines) + f"\n\nSettings: {settings}. Versions: {ver}.\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text)


def _run(args) -> int:
    if args.command == "reproduce":

        t0 = time.perf_counter()
        overrides = _params(args.profile_option, "--profile-option")
        profile = load_profile(args.profile, **overrides) if overrides else args.profile
        rep = reproduce(args.dataset, profile, args.out, device=args.device, data_dir=args.data_dir,
                        progress=not args.no_progress, launcher=args.launcher, workers=args.workers,
                        address=args.address, dataset_options=_params(args.dataset_option, "--dataset-option"))
        print(rep["markdown"])
        print(f"wall time: {time.perf_counter() - t0:.0f} s")
    elif args.command == "sweep":

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
    elif args.command == "train":

        cfg = {"model": args.model, "dataset": {"name": args.dataset}, "model_params": _params(args.param),
               "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                         "seed": args.seed, "device": args.device,
                         "checkpoint_every": args.checkpoint_every}}
        if args.fast:

            cfg["train"].update(FAST_STEP)
        if args.data_parallel is not None:
            cfg["train"]["data_parallel"] = args.data_parallel
        if args.precision:
            cfg["train"]["precision"] = args.precision
        if args.compile:
            cfg["train"]["compile"] = True
        train(cfg, args.out, progress=not args.no_progress)
        print(f"trained {args.model} into {args.out}")
    elif args.command == "evaluate":

        data = load_dataset(args.dataset) if args.dataset else None

        names = "all" if args.metrics == ["all"] else args.metrics
        opts = dict(FAST_MODE) if args.fast else {}
        opts.update({k: v for k, v in (("dci_backend", args.dci_backend),
                                       ("score_num_train", args.score_num_train),
                                       ("score_num_eval", args.score_num_eval),
                                       ("score_sampling", args.score_sampling)) if v is not None})
        res = evaluate_run(args.run_dir, names, data=data, num_points=args.num_points, seed=args.seed,
                           device=args.device, overwrite=args.overwrite, num_test=args.num_test, **opts)
        for name, val in res.items():
            if name in ("settings", "settings_of", "model", "versions") or not isinstance(val, dict):
                continue
            scalars = {k: round(v, 4) for k, v in val.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in scalars.items()))
    elif args.command == "robustness":

        res = write_robustness(args.sweep_out)
        print(robustness_table(res["rows"]), end="")
        print(f"wrote {res['json']} and {res['png']}")
    elif args.command == "traverse":

        if args.num_values < 2:
            raise SystemExit(f"vaebias: error: --num-values {args.num_values}: expected at least 2")
        res = write_traversal(args.run_dir, args.out, gif=args.gif, num_values=args.num_values, seed=args.seed,
                              device=args.device)
        print(f"wrote {res['png']}" + (f" and {res['gif']}" if "gif" in res else ""))
    elif args.command == "fig1":

        _check_out(args.out, ".png")  # before the minutes of fitting, not after
        res = fig1_experiment(args.seeds, layout=args.layout, angle=args.angle, noise_var=args.noise_var,
                              steps=args.steps)
        png = figure_fig1(res, args.out)
        write_json(Path(args.out).with_suffix(".json"),
                   {**{k: res[k] for k in ("rows", "local", "global", "data_tilt", "settings")},
                    "versions": versions()})
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
        _print_and_write(lines, Path(args.out).with_suffix(".md"), res["settings"])
        print(f"wrote {png}")
    elif args.command == "theorem1":

        if args.out is not None:
            _check_out(args.out, ".md")
        rows = theorem1_experiment(args.seeds, args.variances, num_points=args.num_points,
                                   noise_var=args.noise_var)
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
        _print_and_write(lines, args.out and Path(args.out), settings)
    elif args.command == "udr":

        res = udr_runs(args.run_dirs, args.out, num_points=args.num_points, seed=args.seed,
                       correlation=args.correlation, device=args.device)
        for rd, score in zip(res["runs"], res["udr"]):
            print(f"{rd}: UDR {score:.4f}")
        print(f"wrote {args.out}")
    elif args.command == "metrics":

        print("\n".join(metric_names()))
    elif args.command == "manipulate":

        if args.unclipped_objective and args.loss != "l2":
            raise ConfigError("--unclipped-objective needs --loss l2 (the Bernoulli loss is "
                              "unbounded below for targets outside [0, 1])")
        data = load_dataset(args.dataset)
        eps = args.epsilon if args.epsilon is not None else (type(data).epsilon or 0.1)
        mcfg = ManipulationConfig(epsilon=eps, clip=not args.no_clip, field_width=args.field_width,
                                  loss=args.loss, clip_in_objective=not args.unclipped_objective)
        tcfg = TrainConfig(steps=args.steps, seed=args.seed, device=args.device)
        train_manipulation(data, args.entangled, args.disentangled, args.out, mcfg, tcfg,
                           progress=not args.no_progress)
        paths = export_variants(data, args.out, args.export_dir or args.out, device=args.device,
                                progress=not args.no_progress)
        for k, v in paths.items():
            print(f"{k}: {v}")
    elif args.command == "report":

        if (Path(args.out) / "profile.yaml").exists():  # a reproduce folder: its table and Fig. 4 first
            rep = write_report(args.out)
            print(rep["markdown"])
            print(f"written: {rep['table_md']}, {rep['table_csv']}, {rep['table_json']}, {rep.get('figure')}")
        print(f"written: {write_html_report(args.out)}")
    elif args.command == "models":

        print("\n".join(model_names()))
    elif args.command == "datasets":

        print("\n".join(dataset_names()))
    elif args.command == "profiles":

        print("\n".join(profiles()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    configure_cli_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        return _run(args)
    except (VaebiasError, DataError) as exc:
        print(f"vaebias: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaebias: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
