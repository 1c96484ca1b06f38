"""MIG against training steps, to size a profile (`standard` on dSprites, `laptop` on Shapes3D).

Trains each model/seed once up to the largest milestone and scores MIG (10,000 points,
encoder mean, seed 0, the disentanglement_lib protocol) at every milestone. Each
(model, seed) is a resumable run directory under --out; scores go to
``curve.csv`` (one row per model, seed, step, with the training seconds so far, evaluation
excluded), ``curve.md`` (mean ± std per step) and ``curve.png``.

    .venv/bin/python benchmarks/mig_vs_steps.py --models ae beta_vae --seeds 0 1 \
        --milestones 500 1000 3000 6000 10000 --out results/curve
    # every Table 1 model on Shapes3D with the laptop profile's training settings
    .venv/bin/python benchmarks/mig_vs_steps.py --dataset shapes3d --fast --lr 1e-3 --batch-size 32 \
        --param width=0.5 --models ae beta_vae factor_vae beta_tc_vae slow_vae pcl weak_gan \
        --out results/curve_s3d
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from vaebias._internal.config import TrainConfig
from vaebias.data import load_dataset
from vaebias.metrics import mig
from vaebias.models import build_model, get_model_class
from vaebias.training import fit

#: hyperparameters of the weakly supervised GAN when --param sets a width (its networks
#: have their own widths; see vaebias.models.weak_gan)
GAN_WIDTHS = ("disc_width", "enc_width", "gen_width")


def model_params(name: str, params: list[str]) -> dict:
    """``--param`` values (``KEY=VALUE`` for every model that has KEY, ``MODEL.KEY=VALUE``
    for one model) as ``name``'s hyperparameters."""
    fields = set(get_model_class(name).Config.__dataclass_fields__)
    out = {}
    for item in params:
        key, _, value = item.partition("=")
        model, _, key = key.rpartition(".")
        if (model and model != name) or (not model and key not in fields):
            continue
        out[key] = yaml.safe_load(value)
    return out


def score(model, data, points: int) -> float:
    f = data.sample_factors(points, np.random.default_rng(0))
    codes = []
    with torch.no_grad():
        for s in range(0, points, 1000):
            codes.append(model.encode(data.images(f[s:s + 1000])).cpu().numpy())
    return float(mig(np.concatenate(codes), f)["mig"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="dsprites")
    p.add_argument("--models", nargs="+", default=["ae", "beta_vae"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--milestones", nargs="+", type=int, default=[500, 1000, 3000, 6000, 10000])
    p.add_argument("--eval-points", type=int, default=10_000)
    p.add_argument("--out", default="results/curve")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); run one process per model with "
                        "--threads 1 to use two cores well")
    p.add_argument("--fast", action="store_true", help="the fast training step (TrainConfig.fast())")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--param", action="append", default=[], metavar="[MODEL.]KEY=VALUE",
                   help="a hyperparameter of every model that has it (width=0.5), or of one "
                        "model (weak_gan.disc_width=1.0); repeatable")
    p.add_argument("--max-steps", action="append", default=[], metavar="MODEL=STEPS",
                   help="train MODEL only up to STEPS (milestones beyond it are skipped); repeatable")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing; tabulate the scores already under --out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset)
    if hasattr(data, "prepare"):
        data.prepare()  # the Shapes3D renderer traces its geometry once, outside the timings
    all_milestones = sorted(set(args.milestones))
    caps = {k: int(v) for k, _, v in (m.partition("=") for m in args.max_steps)}
    for model_name in ([] if args.report_only else args.models):
        milestones = [m for m in all_milestones if m <= caps.get(model_name, all_milestones[-1])]
        params = model_params(model_name, args.param)
        for seed in args.seeds:
            run = out / f"{model_name}_seed{seed}"
            scores_path = run / "curve_scores.json"
            scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
            torch.manual_seed(seed)
            model = build_model(model_name, data.observation_shape, data.num_factors, params,
                                dataset=data.name, dataset_size=len(data))
            clock = {"t0": time.perf_counter()}

            def at_step(step, terms, model=model, scores=scores, run=run, clock=clock,
                        milestones=milestones, model_name=model_name, seed=seed):
                if step in milestones and str(step) not in scores:
                    train_s = time.perf_counter() - clock["t0"]
                    model.eval()
                    mig_value = score(model, data, args.eval_points)
                    model.train()
                    scores[str(step)] = {"mig": mig_value, "train_s": train_s}
                    clock["t0"] += time.perf_counter() - clock["t0"] - train_s  # evaluation excluded
                    run.mkdir(parents=True, exist_ok=True)
                    (run / "curve_scores.json").write_text(json.dumps(scores, indent=1))
                    print(f"{model_name} seed {seed} step {step}: MIG {scores[str(step)]['mig']:.3f}",
                          flush=True)

            settings = TrainConfig.fast().__dict__ if args.fast else {}
            cfg = TrainConfig(**{**settings, "steps": milestones[-1], "seed": seed, "device": "cpu",
                                 "checkpoint_every": min(milestones), "log_every": 100, "lr": args.lr,
                                 "batch_size": args.batch_size})
            record = {"benchmark": "mig_vs_steps", "model": model_name, "seed": seed,
                      "dataset": args.dataset, "milestones": milestones, "model_params": params,
                      "fast": args.fast, "lr": args.lr, "batch_size": args.batch_size}
            fit(model, data, run, cfg, record, progress=False, callback=at_step)
    milestones = all_milestones
    rows = []
    for model_name in args.models:
        for seed in args.seeds:
            scores_path = out / f"{model_name}_seed{seed}" / "curve_scores.json"
            scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
            for step in milestones:
                if str(step) in scores:
                    rows.append({"model": model_name, "seed": seed, "step": step,
                                 "mig": scores[str(step)]["mig"],
                                 "train_s": scores[str(step)]["train_s"]})
    with open(out / "curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["model", "seed", "step", "mig", "train_s"])
        w.writeheader()
        w.writerows(rows)
    lines = ["| steps | " + " | ".join(args.models) + " |", "|---|" + "---|" * len(args.models)]
    for step in milestones:
        cells = []
        for m in args.models:
            v = np.array([r["mig"] for r in rows if r["model"] == m and r["step"] == step])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0:.3f} ({v.size})" if v.size else "–")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    (out / "curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in args.models:
        steps = [s for s in milestones if any(r["model"] == m and r["step"] == s for r in rows)]
        mean = [np.mean([r["mig"] for r in rows if r["model"] == m and r["step"] == s]) for s in steps]
        std = [np.std([r["mig"] for r in rows if r["model"] == m and r["step"] == s]) for s in steps]
        ax.errorbar(steps, mean, yerr=std, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel(f"training steps (batch {args.batch_size}, lr {args.lr:g})")
    ax.set_ylabel(f"MIG ({args.dataset}, {args.eval_points} points)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)


if __name__ == "__main__":
    main()
