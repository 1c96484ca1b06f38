"""Bad input to every command keeps the command line's promise (src/vaebias/cli/main.py):
exactly one line on stderr, ``vaebias: error: ...``, exit status 2, no file or folder left
behind and none changed, and the refusal comes before any long work.

Each case builds its inputs in ``tmp_path`` (damaged copies of tiny runs, broken files,
unwritable places), snapshots every file under ``tmp_path`` and under the shared fixtures,
runs ``main(argv)`` in this process and checks the promise. The commands get tiny settings
(blobs, a few steps, few evaluation points) so that a case whose bad input slips through
costs seconds, not hours.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from vaebias.cli.main import main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "running as root: permissions are ignored, a chmod 555 folder stays writable"
CUDA_SKIP = "CUDA is available here: device 'cuda' is not bad input"
HAS_CUDA = torch.cuda.is_available()
#: nothing can be created below /proc, not even by root
UNWRITABLE = "/proc/vaebias-unwritable"

FAST_TRAIN = ["--device", "cpu", "--no-progress", "--steps", "2", "--batch-size", "8"]


# ------------------------------------------------------------------------------ fixtures
def _square_grid(n: int = 4, side: int = 32, sq: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A full 4x4 factor grid of white squares: uint8 images (16, 1, side, side), factors (16, 2)."""
    images = np.zeros((n * n, 1, side, side), np.uint8)
    factors = np.zeros((n * n, 2), np.int64)
    pos = np.linspace(0, side - sq, n).round().astype(int)
    for i in range(n):
        for j in range(n):
            k = i * n + j
            images[k, 0, pos[j]:pos[j] + sq, pos[i]:pos[i] + sq] = 255
            factors[k] = (i, j)
    return images, factors


def write_h5(path: Path, images=None, factors=None, attrs=None, drop=()) -> Path:
    """A vaebias dataset file (HDF5) of the 4x4 square grid, with parts replaced or left out."""
    img, fac = _square_grid()
    images = img if images is None else images
    factors = fac if factors is None else factors
    base = {"format": "vaebias-dataset", "format_version": 1, "name": path.stem, "kind": "copy",
            "factor_names": '["a", "b"]', "factor_sizes": "[4, 4]", "epsilon": 0.1}
    base.update(attrs or {})
    with h5py.File(path, "w") as f:
        if "images" not in drop:
            f.create_dataset("images", data=images)
        if "factors" not in drop:
            f.create_dataset("factors", data=factors)
        for k, v in base.items():
            if k not in drop:
                f.attrs[k] = v
    return path


def write_npz(path: Path, drop=(), **arrays) -> Path:
    """A plain .npz dataset of the 4x4 square grid, with arrays replaced or left out."""
    img, fac = _square_grid()
    data = {"images": img, "factors": fac, "factor_names": np.array(["a", "b"]),
            "factor_sizes": np.array([4, 4])}
    data.update(arrays)
    for k in drop:
        data.pop(k, None)
    with open(path, "wb") as fh:
        np.savez(fh, allow_pickle=True, **data)
    return path


def _cli(argv: list[str]) -> None:
    rc = main(argv)
    assert rc == 0, f"fixture command failed: {argv}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Tiny finished runs (beta-VAE on blobs, 3 steps, seeds 0 and 1; one on a 4x4 square grid),
    an m_psi trained from the two blobs runs (2 steps, with its exported datasets), valid small
    dataset files and a tiny profile. Cases only read these; they copy what they damage."""
    d = tmp_path_factory.mktemp("shared")
    write_npz(d / "squares.npz", epsilon=np.asarray(0.1))
    write_npz(d / "squares_no_eps.npz")
    write_h5(d / "squares.h5")
    img64, fac64 = _square_grid(side=64, sq=12)
    write_npz(d / "squares64.npz", images=img64, factors=fac64, epsilon=np.asarray(0.1))
    common = ["--model", "beta_vae", "--steps", "3", "--batch-size", "8", "--device", "cpu", "--no-progress",
              "--log-every", "1"]
    _cli(["-q", "train", "--dataset", "blobs", "--out", str(d / "r0"), "--seed", "0", *common])
    _cli(["-q", "train", "--dataset", "blobs", "--out", str(d / "r1"), "--seed", "1", *common])
    _cli(["-q", "train", "--dataset", str(d / "squares.npz"), "--out", str(d / "rsq"), *common])
    _cli(["-q", "manipulate", "--entangled", str(d / "r0"), "--disentangled", str(d / "r1"), "--out",
          str(d / "m"), "--steps", "2", "--device", "cpu", "--no-progress"])
    # a results folder of `vaebias report`: one evaluated run
    _cli(["-q", "evaluate", str(d / "r0"), "--metrics", "mig", "--num-points", "50", "--num-test", "50",
          "--device", "cpu"])
    (d / "profile_tiny.yaml").write_text(yaml.safe_dump(TINY_PROFILE, sort_keys=False))
    return d


#: the smallest reproduction: what a reproduce case runs when its bad input slips through
TINY_PROFILE = {"name": "tiny", "reduced": False, "reference_restarts": 2, "reference_steps": 2,
                "manipulation_steps": 2, "train_steps": 2, "seeds": [0], "models": ["beta_vae"],
                "eval_points": 50, "batch_size": 8, "checkpoint_every": 2, "export": False}

#: the smallest sweep: one beta-VAE on blobs, 2 steps, no evaluation
TINY_GRID = {"models": ["beta_vae"], "datasets": ["blobs"], "seeds": [0],
             "train": {"steps": 2, "batch_size": 8, "device": "cpu", "log_every": 1, "checkpoint_every": 2},
             "evaluate": {"metrics": []}}


@dataclasses.dataclass
class Env:
    """What a case builds its argv from: its own folder and the shared fixtures."""

    tmp: Path
    shared: Path
    locked: list = dataclasses.field(default_factory=list)

    def p(self, name: str) -> str:
        return str(self.tmp / name)

    def s(self, name: str) -> str:
        return str(self.shared / name)

    def copy(self, name: str = "r0", as_name: str | None = None) -> Path:
        dst = self.tmp / (as_name or name)
        if not dst.exists():
            shutil.copytree(self.shared / name, dst)
        return dst

    def run(self, name: str = "r0") -> str:
        return str(self.copy(name))

    def write(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    def yaml(self, name: str, obj) -> str:
        return self.write(name, yaml.safe_dump(obj, sort_keys=False))

    def a_file(self, name: str = "a_file") -> str:
        return self.write(name, "not a folder\n")

    def readonly(self, name: str) -> str:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        self.locked.append(path)
        return str(path)

    def readonly_run(self, name: str = "r0") -> str:
        path = self.copy(name)
        path.chmod(0o555)
        self.locked.append(path)
        return str(path)

    # run-folder damage
    def damaged_run(self, file: str, content: bytes | str | None, name: str = "r0") -> str:
        run = self.copy(name)
        target = run / file
        if content is None:
            target.unlink()
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        return str(run)

    def edited_config(self, edit: Callable[[dict], object], name: str = "r0") -> str:
        run = self.copy(name)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        new = edit(cfg)
        (run / "config.yaml").write_text(yaml.safe_dump(cfg if new is None else new, sort_keys=False))
        return str(run)

    def edited_checkpoint(self, edit: Callable[[dict], object], name: str = "r0") -> str:
        run = self.copy(name)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        new = edit(state)
        torch.save(state if new is None else new, run / "checkpoint.pt")
        return str(run)

    def unfinished_run(self, name: str = "r0") -> str:
        def edit(s):
            s["step"] = 1
        return self.edited_checkpoint(edit, name)

    def profile(self, **changes) -> str:
        return self.yaml("profile.yaml", {**TINY_PROFILE, **changes})

    def grid(self, obj=None, **changes) -> str:
        return self.yaml("grid.yaml", obj if obj is not None else {**TINY_GRID, **changes})


def _truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


# ------------------------------------------------------------------------------ argv builders
def train(e: Env, *extra: str, model: str = "beta_vae", dataset: str = "blobs", out: str | None = None) -> list[str]:
    return ["train", "--model", model, "--dataset", dataset, "--out", out or e.p("out"), *FAST_TRAIN, *extra]


def evaluate(e: Env, run: str, *extra: str) -> list[str]:
    return ["evaluate", run, "--num-points", "50", "--num-test", "50", "--device", "cpu", *extra]


def traverse(e: Env, run: str, *extra: str, out: str | None = None) -> list[str]:
    return ["traverse", run, "--out", out or e.p("t.png"), "--num-values", "3", *extra]


def udr(e: Env, runs: list[str], *extra: str, out: str | None = None) -> list[str]:
    return ["udr", *runs, "--out", out or e.p("udr.json"), "--num-points", "50", "--device", "cpu", *extra]


def manipulate(e: Env, *extra: str, ent: str | None = None, dis: str | None = None,
               out: str | None = None) -> list[str]:
    return ["manipulate", "--entangled", ent or e.run("r0"), "--disentangled", dis or e.run("r1"),
            "--out", out or e.p("m"), "--steps", "2", "--device", "cpu", "--no-progress", *extra]


def reproduce(e: Env, *extra: str, dataset: str = "blobs", profile: str | None = None) -> list[str]:
    return ["reproduce", "--dataset", dataset, "--profile", profile or e.s("profile_tiny.yaml"), "--out",
            e.p("rep"), "--device", "cpu", "--no-progress", "--stop-after", "manipulation", *extra]


def sweep(e: Env, grid: str, *extra: str) -> list[str]:
    return ["sweep", grid, "--out", e.p("sw"), "--no-progress", *extra]


def audit_data(e: Env, dataset: str = "blobs", *extra: str) -> list[str]:
    return ["audit", "data", dataset, "--points", "20", "--pairs", "20", "--no-progress", *extra]


def audit_model(e: Env, *extra: str, dataset: str = "blobs", man: str | None = "default",
                model: str = "beta_vae") -> list[str]:
    where = [] if man is None else ["--manipulation", e.run("m") if man == "default" else man]
    return ["audit", "model", "--model", model, "--dataset", dataset, *where, "--out", e.p("am"),
            "--seeds", "0", "1", "--steps", "2", "--batch-size", "8", "--eval-points", "50", "--metrics", "mig",
            "--device", "cpu", "--no-diagnostics", "--no-progress", *extra]


def report_folder(e: Env, **files: bytes | str) -> str:
    """A results folder holding one evaluated run (a copy of r0 with its metrics.json) plus ``files``."""
    folder = e.tmp / "results"
    e.copy("r0", "results/runs/original/beta_vae_seed0")
    for name, content in files.items():
        e.write(f"results/{name}", content)
    return str(folder)


# ------------------------------------------------------------------------------ the cases
@dataclasses.dataclass
class Case:
    id: str
    build: Callable[[Env], list[str]]
    skip: str | None = None


CASES: list[Case] = []


def case(group: str, name: str, build: Callable[[Env], list[str]], skip: str | None = None) -> None:
    CASES.append(Case(f"{group}-{name}", build, skip))


NOT_YAML = "a: [b, c\n  d: {e\n"
NOT_UTF8 = b"\xff\xfe\x00\x81garbage\x9c\n"
RANDOM = bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8))

# ---- 1. argparse: unknown flags and commands, missing arguments, non-numbers, out-of-domain numbers
P = "parse"
case(P, "no-command", lambda e: [])
case(P, "unknown-command", lambda e: ["trian"])
case(P, "verbose-and-quiet", lambda e: ["-v", "-q", "models"])
case(P, "models-extra-argument", lambda e: ["models", "beta_vae"])
case(P, "train-unknown-flag", lambda e: train(e, "--stepz", "3"))
case(P, "train-missing-model", lambda e: ["train", "--dataset", "blobs", "--out", e.p("out"), *FAST_TRAIN])
case(P, "train-missing-out", lambda e: ["train", "--model", "beta_vae", "--dataset", "blobs", *FAST_TRAIN])
case(P, "train-steps-abc", lambda e: train(e, "--steps", "abc"))
case(P, "train-steps-1.5", lambda e: train(e, "--steps", "1.5"))
case(P, "train-steps-0", lambda e: train(e, "--steps", "0"))
case(P, "train-steps-negative", lambda e: train(e, "--steps", "-3"))
case(P, "train-batch-size-0", lambda e: train(e, "--batch-size", "0"))
case(P, "train-batch-size-1e8", lambda e: train(e, "--batch-size", "1e8"))
case(P, "train-lr-0", lambda e: train(e, "--lr", "0"))
case(P, "train-lr-negative", lambda e: train(e, "--lr=-1e-3"))
case(P, "train-lr-nan", lambda e: train(e, "--lr", "nan"))
case(P, "train-lr-inf", lambda e: train(e, "--lr", "inf"))
case(P, "train-lr-abc", lambda e: train(e, "--lr", "abc"))
case(P, "train-seed-1.5", lambda e: train(e, "--seed", "1.5"))
case(P, "train-seed-abc", lambda e: train(e, "--seed", "abc"))
case(P, "train-adam-betas-one-value", lambda e: train(e, "--adam-betas", "0.9"))
case(P, "train-adam-eps-0", lambda e: train(e, "--adam-eps", "0"))
case(P, "train-checkpoint-every-0", lambda e: train(e, "--checkpoint-every", "0"))
case(P, "train-log-every-negative", lambda e: train(e, "--log-every", "-1"))
case(P, "train-data-parallel-abc", lambda e: train(e, "--data-parallel", "abc"))
case(P, "evaluate-missing-run-dir", lambda e: ["evaluate", "--num-points", "50"])
case(P, "evaluate-num-points-0", lambda e: evaluate(e, e.run(), "--num-points", "0"))
case(P, "evaluate-num-test-negative", lambda e: evaluate(e, e.run(), "--num-test", "-5"))
case(P, "evaluate-score-num-train-0", lambda e: evaluate(e, e.run(), "--score-num-train", "0"))
case(P, "evaluate-dci-backend-unknown", lambda e: evaluate(e, e.run(), "--dci-backend", "xgboost"))
case(P, "evaluate-seed-abc", lambda e: evaluate(e, e.run(), "--seed", "abc"))
case(P, "traverse-missing-out", lambda e: ["traverse", e.run()])
case(P, "traverse-num-values-0", lambda e: traverse(e, e.run(), "--num-values", "0"))
case(P, "traverse-num-values-abc", lambda e: traverse(e, e.run(), "--num-values", "abc"))
case(P, "udr-no-runs", lambda e: ["udr", "--out", e.p("udr.json")])
case(P, "udr-num-points-0", lambda e: udr(e, [e.run("r0"), e.run("r1")], "--num-points", "0"))
case(P, "udr-correlation-unknown", lambda e: udr(e, [e.run("r0"), e.run("r1")], "--correlation", "pearson"))
case(P, "manipulate-missing-entangled",
     lambda e: ["manipulate", "--disentangled", e.run("r1"), "--out", e.p("m"), "--steps", "2"])
case(P, "manipulate-epsilon-0", lambda e: manipulate(e, "--epsilon", "0"))
case(P, "manipulate-epsilon-negative", lambda e: manipulate(e, "--epsilon", "-0.1"))
case(P, "manipulate-epsilon-nan", lambda e: manipulate(e, "--epsilon", "nan"))
case(P, "manipulate-epsilon-inf", lambda e: manipulate(e, "--epsilon", "inf"))
case(P, "manipulate-epsilon-abc", lambda e: manipulate(e, "--epsilon", "abc"))
case(P, "manipulate-steps-0", lambda e: manipulate(e, "--steps", "0"))
case(P, "manipulate-field-width-0", lambda e: manipulate(e, "--field-width", "0"))
case(P, "manipulate-loss-unknown", lambda e: manipulate(e, "--loss", "l1"))
case(P, "reproduce-missing-out", lambda e: ["reproduce", "--dataset", "blobs", "--profile", e.s("profile_tiny.yaml")])
case(P, "reproduce-epsilon-0", lambda e: reproduce(e, "--epsilon", "0"))
case(P, "reproduce-epsilon-negative", lambda e: reproduce(e, "--epsilon", "-1"))
case(P, "reproduce-epsilon-nan", lambda e: reproduce(e, "--epsilon", "nan"))
case(P, "reproduce-epsilon-abc", lambda e: reproduce(e, "--epsilon", "abc"))
case(P, "reproduce-workers-0", lambda e: reproduce(e, "--workers", "0"))
case(P, "reproduce-launcher-unknown", lambda e: reproduce(e, "--launcher", "slurm"))
case(P, "reproduce-stop-after-unknown", lambda e: reproduce(e, "--stop-after", "table"))
case(P, "sweep-missing-grid", lambda e: ["sweep", "--out", e.p("sw")])
case(P, "sweep-workers-0", lambda e: sweep(e, e.grid(), "--workers", "0"))
case(P, "sweep-workers-two", lambda e: sweep(e, e.grid(), "--workers", "two"))
case(P, "audit-no-subcommand", lambda e: ["audit"])
case(P, "audit-data-points-0", lambda e: audit_data(e, "blobs", "--points", "0"))
case(P, "audit-data-pairs-negative", lambda e: audit_data(e, "blobs", "--pairs", "-1"))
case(P, "audit-data-seed-abc", lambda e: audit_data(e, "blobs", "--seed", "abc"))
case(P, "audit-model-missing-dataset",
     lambda e: ["audit", "model", "--model", "beta_vae", "--manipulation", e.run("m"), "--out", e.p("am")])
case(P, "audit-model-seeds-abc", lambda e: audit_model(e, "--seeds", "a", "b"))
case(P, "audit-model-steps-0", lambda e: audit_model(e, "--steps", "0"))
case(P, "audit-model-lr-0", lambda e: audit_model(e, "--lr", "0"))
case(P, "audit-model-batch-size-0", lambda e: audit_model(e, "--batch-size", "0"))
case(P, "audit-model-eval-points-0", lambda e: audit_model(e, "--eval-points", "0"))
case(P, "audit-model-epsilon-0", lambda e: audit_model(e, "--epsilon", "0"))
case(P, "audit-model-workers-0", lambda e: audit_model(e, "--workers", "0"))
case(P, "fig1-steps-0", lambda e: ["fig1", "--out", e.p("f.png"), "--steps", "0", "--seeds", "0"])
case(P, "fig1-layout-unknown", lambda e: ["fig1", "--out", e.p("f.png"), "--layout", "grid", "--steps", "2"])
case(P, "theorem1-num-points-0", lambda e: ["theorem1", "--num-points", "0", "--seeds", "0"])
case(P, "theorem1-variances-negative", lambda e: ["theorem1", "--variances", "4", "-1", "--seeds", "0"])
case(P, "report-missing-folder", lambda e: ["report"])

# ---- 2. numbers out of their domain that parse (checked after argparse)
D = "domain"
case(D, "train-seed-negative", lambda e: train(e, "--seed", "-1"))
case(D, "train-lr-1e300", lambda e: train(e, "--lr", "1e300"))
case(D, "train-adam-betas-out-of-range", lambda e: train(e, "--adam-betas", "1.5", "0.9"))
case(D, "train-adam-betas-nan", lambda e: train(e, "--adam-betas", "nan", "0.9"))
case(D, "train-data-parallel-negative", lambda e: train(e, "--data-parallel", "-1"))
case(D, "train-data-parallel-non-separable-model", lambda e: train(e, "--data-parallel", "4", model="factor_vae"))
case(D, "train-precision-unknown", lambda e: train(e, "--precision", "fp16"))
case(D, "train-device-unknown", lambda e: train(e, "--device", "tpu"))
case(D, "train-device-cuda-absent", lambda e: train(e, "--device", "cuda"), skip=CUDA_SKIP if HAS_CUDA else None)
case(D, "evaluate-seed-negative", lambda e: evaluate(e, e.run(), "--seed", "-1"))
case(D, "evaluate-device-cuda-absent", lambda e: evaluate(e, e.run(), "--device", "cuda"),
     skip=CUDA_SKIP if HAS_CUDA else None)
case(D, "traverse-num-values-1", lambda e: traverse(e, e.run(), "--num-values", "1"))
case(D, "traverse-seed-negative", lambda e: traverse(e, e.run(), "--seed", "-1"))
case(D, "udr-one-run", lambda e: udr(e, [e.run("r0")]))
case(D, "udr-same-run-twice", lambda e: udr(e, [e.run("r0"), e.run("r0")]))
case(D, "traverse-num-values-100000", lambda e: traverse(e, e.run(), "--num-values", "100000"))
case(D, "evaluate-num-points-1", lambda e: evaluate(e, e.run(), "--num-points", "1", "--metrics", "mig"))
case(D, "udr-seed-negative", lambda e: udr(e, [e.run("r0"), e.run("r1")], "--seed", "-1"))
case(D, "manipulate-epsilon-2", lambda e: manipulate(e, "--epsilon", "2"))
case(D, "manipulate-epsilon-1e300", lambda e: manipulate(e, "--epsilon", "1e300"))
case(D, "manipulate-epsilon-below-1-255", lambda e: manipulate(e, "--epsilon", "0.001"))
case(D, "manipulate-seed-negative", lambda e: manipulate(e, "--seed", "-1"))
case(D, "manipulate-unclipped-objective-bernoulli", lambda e: manipulate(e, "--unclipped-objective"))
case(D, "reproduce-epsilon-2", lambda e: reproduce(e, "--epsilon", "2"))
case(D, "reproduce-epsilon-1e300", lambda e: reproduce(e, "--epsilon", "1e300"))
case(D, "reproduce-ray-with-workers", lambda e: reproduce(e, "--launcher", "ray", "--workers", "2"))
case(D, "reproduce-ray-bad-address", lambda e: reproduce(e, "--launcher", "ray", "--address", "nonsense"))
case(D, "reproduce-device-unknown", lambda e: reproduce(e, "--device", "tpu"))
case(D, "sweep-ray-with-workers", lambda e: sweep(e, e.grid(), "--launcher", "ray", "--workers", "2"))
case(D, "sweep-ray-unreachable", lambda e: sweep(e, e.grid(), "--launcher", "ray", "--address", "127.0.0.1:1"))
case(D, "audit-data-seed-negative", lambda e: audit_data(e, "blobs", "--seed", "-1"))
case(D, "audit-model-one-seed", lambda e: audit_model(e, "--seeds", "0"))
case(D, "audit-model-duplicate-seeds", lambda e: audit_model(e, "--seeds", "0", "0"))
case(D, "audit-model-negative-seed", lambda e: audit_model(e, "--seeds", "-1", "0"))
case(D, "audit-model-ray-with-workers", lambda e: audit_model(e, "--launcher", "ray", "--workers", "3"))
case(D, "audit-model-device-unknown", lambda e: audit_model(e, "--device", "tpu"))

# ---- 3. names and --param / --dataset-option / --profile-option values
N = "names"
case(N, "train-model-unknown", lambda e: train(e, model="nosuch_vae"))
case(N, "train-model-import-path-missing", lambda e: train(e, model="nosuch_pkg.models:MyVAE"))
case(N, "train-model-import-path-not-a-model", lambda e: train(e, model="os.path:join"))
case(N, "train-dataset-unknown", lambda e: train(e, dataset="nosuch_data"))
case(N, "train-param-not-a-number", lambda e: train(e, "--param", "beta=abc"))
case(N, "train-param-negative", lambda e: train(e, "--param", "beta=-1"))
case(N, "train-param-unknown", lambda e: train(e, "--param", "gamma=1"))
case(N, "train-param-no-equals", lambda e: train(e, "--param", "beta"))
case(N, "train-param-not-yaml", lambda e: train(e, "--param", "beta=[1"))
case(N, "train-param-list", lambda e: train(e, "--param", "beta=[1, 2]"))
case(N, "train-param-width-0", lambda e: train(e, "--param", "width=0"))
case(N, "evaluate-metric-unknown", lambda e: evaluate(e, e.run(), "--metrics", "nosuch"))
case(N, "evaluate-dataset-unknown", lambda e: evaluate(e, e.run(), "--dataset", "nosuch_data"))
case(N, "manipulate-dataset-unknown", lambda e: manipulate(e, "--dataset", "nosuch_data"))
case(N, "reproduce-dataset-unknown", lambda e: reproduce(e, dataset="nosuch_data"))
case(N, "reproduce-dataset-unknown-builtin-profile", lambda e: reproduce(e, dataset="nosuch_data", profile="quick"))
case(N, "reproduce-profile-unknown", lambda e: reproduce(e, profile="nosuch_profile"))
case(N, "reproduce-profile-option-unknown", lambda e: reproduce(e, "--profile-option", "nosuch=1"))
case(N, "reproduce-profile-option-seeds-abc", lambda e: reproduce(e, "--profile-option", "seeds=abc"))
case(N, "reproduce-profile-option-no-equals", lambda e: reproduce(e, "--profile-option", "seeds"))
case(N, "reproduce-profile-option-steps-0", lambda e: reproduce(e, "--profile-option", "train_steps=0"))
case(N, "reproduce-profile-option-one-restart", lambda e: reproduce(e, "--profile-option", "reference_restarts=1"))
case(N, "reproduce-profile-option-epsilon-2", lambda e: reproduce(e, "--profile-option", "manipulation={epsilon: 2}"))
case(N, "reproduce-profile-option-robustness-scale-0",
     lambda e: reproduce(e, "--profile-option", "robustness={scales: [0]}"))
case(N, "reproduce-dataset-option-not-a-number", lambda e: reproduce(e, "--dataset-option", "sigma=abc"))
case(N, "reproduce-dataset-option-canvas-abc", lambda e: reproduce(e, "--dataset-option", "canvas=abc"))
case(N, "reproduce-dataset-option-positions-2.5", lambda e: reproduce(e, "--dataset-option", "num_positions=2.5"))
case(N, "reproduce-dataset-option-positions-1", lambda e: reproduce(e, "--dataset-option", "num_positions=1"))
case(N, "reproduce-dataset-option-unknown", lambda e: reproduce(e, "--dataset-option", "nosuch=1"))
case(N, "reproduce-dataset-option-name", lambda e: reproduce(e, "--dataset-option", "name=toy"))
case(N, "reproduce-dataset-option-no-equals", lambda e: reproduce(e, "--dataset-option", "sigma"))
case(N, "audit-data-dataset-unknown", lambda e: audit_data(e, "nosuch_data"))
case(N, "audit-data-dataset-option-not-a-number", lambda e: audit_data(e, "blobs", "--dataset-option", "sigma=abc"))
case(N, "audit-data-dataset-option-unknown", lambda e: audit_data(e, "blobs", "--dataset-option", "nosuch=1"))
case(N, "audit-data-dataset-option-positions-1",
     lambda e: audit_data(e, "blobs", "--dataset-option", "num_positions=1"))
case(N, "audit-model-model-unknown", lambda e: audit_model(e, model="nosuch_vae"))
case(N, "audit-model-metric-unknown", lambda e: audit_model(e, "--metrics", "nosuch"))
case(N, "audit-model-param-not-a-number", lambda e: audit_model(e, "--param", "beta=abc"))
case(N, "audit-model-param-unknown", lambda e: audit_model(e, "--param", "gamma=1"))
case(N, "audit-model-dataset-option-not-a-number",
     lambda e: audit_model(e, "--dataset-option", "sigma=abc"))

# ---- 4. damaged files that vaebias reads back: run folders
F = "runfile"
case(F, "evaluate-checkpoint-random-bytes", lambda e: evaluate(e, e.damaged_run("checkpoint.pt", RANDOM)))
case(F, "evaluate-checkpoint-empty", lambda e: evaluate(e, e.damaged_run("checkpoint.pt", b"")))
case(F, "evaluate-checkpoint-truncated",
     lambda e: evaluate(e, e.damaged_run("checkpoint.pt", _truncated(e.shared / "r0" / "checkpoint.pt"))))
case(F, "evaluate-checkpoint-python-objects",
     lambda e: evaluate(e, e.edited_checkpoint(lambda s: {**s, "extra": Path("x")})))
case(F, "evaluate-checkpoint-a-list", lambda e: evaluate(e, e.edited_checkpoint(lambda s: [1, 2, 3])))
case(F, "evaluate-checkpoint-without-model", lambda e: evaluate(e, e.edited_checkpoint(
    lambda s: {k: v for k, v in s.items() if k != "model"})))
case(F, "evaluate-checkpoint-of-another-run", lambda e: evaluate(
    e, e.damaged_run("checkpoint.pt", (e.shared / "rsq" / "checkpoint.pt").read_bytes())))
case(F, "evaluate-config-not-yaml", lambda e: evaluate(e, e.damaged_run("config.yaml", NOT_YAML)))
case(F, "evaluate-config-not-utf8", lambda e: evaluate(e, e.damaged_run("config.yaml", NOT_UTF8)))
case(F, "evaluate-config-empty", lambda e: evaluate(e, e.damaged_run("config.yaml", "")))
case(F, "evaluate-config-a-list", lambda e: evaluate(e, e.damaged_run("config.yaml", "- a\n- b\n")))
case(F, "evaluate-config-missing-model-params",
     lambda e: evaluate(e, e.edited_config(lambda c: c.pop("model_params"))))
case(F, "evaluate-config-missing-dataset", lambda e: evaluate(e, e.edited_config(lambda c: c.pop("dataset"))))
case(F, "evaluate-config-dataset-info-incomplete",
     lambda e: evaluate(e, e.edited_config(lambda c: c.update(dataset_info={"observation_shape": "abc"}))))
case(F, "evaluate-config-model-unknown", lambda e: evaluate(e, e.edited_config(lambda c: c.update(model="nosuch"))))
case(F, "evaluate-config-param-not-a-number",
     lambda e: evaluate(e, e.edited_config(lambda c: c["model_params"].update(beta="abc"))))
case(F, "evaluate-config-wrong-image-shape",
     lambda e: evaluate(e, e.edited_config(lambda c: c["dataset_info"].update(observation_shape=[1, 64, 64]))))
case(F, "evaluate-config-wrong-factor-count",
     lambda e: evaluate(e, e.edited_config(lambda c: c["dataset_info"].update(factor_sizes=[4, 4]))))
case(F, "evaluate-metrics-json-not-json", lambda e: evaluate(e, e.damaged_run("metrics.json", "{not json")))
case(F, "evaluate-metrics-json-a-list", lambda e: evaluate(e, e.damaged_run("metrics.json", "[1, 2]")))
case(F, "evaluate-metrics-json-settings-of-a-list",
     lambda e: evaluate(e, e.damaged_run("metrics.json", '{"settings_of": [1, 2]}')))
case(F, "evaluate-metrics-json-a-folder", lambda e: evaluate(
    e, (lambda r: (Path(r, "metrics.json").unlink(), Path(r, "metrics.json").mkdir(), r)[-1])(e.run())))
case(F, "traverse-checkpoint-random-bytes", lambda e: traverse(e, e.damaged_run("checkpoint.pt", RANDOM)))
case(F, "traverse-config-not-yaml", lambda e: traverse(e, e.damaged_run("config.yaml", NOT_YAML)))
case(F, "traverse-config-dataset-of-other-shape",
     lambda e: traverse(e, e.edited_config(lambda c: c.update(dataset={"name": "toy"}))))
case(F, "udr-checkpoint-empty", lambda e: udr(e, [e.run("r1"), e.damaged_run("checkpoint.pt", b"")]))
case(F, "udr-config-missing-model-params",
     lambda e: udr(e, [e.run("r1"), e.edited_config(lambda c: c.pop("model_params"))]))
case(F, "manipulate-reference-config-not-yaml",
     lambda e: manipulate(e, ent=e.damaged_run("config.yaml", NOT_YAML)))
case(F, "manipulate-reference-checkpoint-random-bytes",
     lambda e: manipulate(e, ent=e.damaged_run("checkpoint.pt", RANDOM)))
case(F, "train-resume-checkpoint-random-bytes", lambda e: [
    "train", "--model", "beta_vae", "--dataset", "blobs", "--out", e.damaged_run("checkpoint.pt", RANDOM),
    "--steps", "3", "--batch-size", "8", "--device", "cpu", "--no-progress", "--log-every", "1"])
case(F, "train-resume-config-not-yaml", lambda e: [
    "train", "--model", "beta_vae", "--dataset", "blobs", "--out", e.damaged_run("config.yaml", NOT_YAML),
    "--steps", "3", "--batch-size", "8", "--device", "cpu", "--no-progress", "--log-every", "1"])
case(F, "train-into-run-of-another-config", lambda e: train(e, out=e.run("r0")))


def _sweep_with_task_log(e: Env, content: bytes | None) -> list[str]:
    from vaebias.experiments.grid import expand

    grid = e.grid()
    run_dir = Path(expand(yaml.safe_load(Path(grid).read_text()), e.p("sw"))[0]["run_dir"])
    run_dir.mkdir(parents=True)
    if content is None:
        (run_dir / "task_log.jsonl").mkdir()
    else:
        (run_dir / "task_log.jsonl").write_bytes(content)
    return sweep(e, grid)


case(F, "sweep-task-log-not-utf8", lambda e: _sweep_with_task_log(e, NOT_UTF8))
case(F, "sweep-task-log-a-folder", lambda e: _sweep_with_task_log(e, None))
case(F, "sweep-out-sweep-yaml-not-yaml", lambda e: (e.write("sw/sweep.yaml", NOT_YAML), sweep(e, e.grid()))[1])

# ---- 5. damaged profile, grid, results-folder files
Y = "yaml"
case(Y, "profile-not-yaml", lambda e: reproduce(e, profile=e.write("p.yaml", NOT_YAML)))
case(Y, "profile-not-utf8", lambda e: reproduce(e, profile=e.write("p.yaml", NOT_UTF8)))
case(Y, "profile-empty", lambda e: reproduce(e, profile=e.write("p.yaml", "")))
case(Y, "profile-a-list", lambda e: reproduce(e, profile=e.write("p.yaml", "- a\n- b\n")))
case(Y, "profile-no-name", lambda e: reproduce(
    e, profile=e.yaml("p.yaml", {k: v for k, v in TINY_PROFILE.items() if k != "name"})))
case(Y, "profile-unknown-key", lambda e: reproduce(e, profile=e.profile(nosuch=1)))
case(Y, "profile-wrong-type", lambda e: reproduce(e, profile=e.profile(reference_restarts="three")))
case(Y, "profile-seeds-not-a-list", lambda e: reproduce(e, profile=e.profile(seeds="abc")))
case(Y, "profile-one-restart", lambda e: reproduce(e, profile=e.profile(reference_restarts=1)))
case(Y, "profile-model-unknown", lambda e: reproduce(e, profile=e.profile(models=["nosuch_vae"])))
case(Y, "profile-lr-negative", lambda e: reproduce(e, profile=e.profile(lr=-1.0)))
case(Y, "profile-train-settings-bad", lambda e: reproduce(e, profile=e.profile(train_settings={"precision": "fp16"})))
case(Y, "profile-manipulation-loss-unknown", lambda e: reproduce(e, profile=e.profile(manipulation={"loss": "l1"})))
case(Y, "profile-is-a-folder", lambda e: reproduce(e, profile=str((e.tmp / "pdir").mkdir() or e.tmp / "pdir")))
case(Y, "reproduce-out-profile-yaml-not-yaml",
     lambda e: (e.write("rep/profile.yaml", NOT_YAML), reproduce(e))[1])
case(Y, "reproduce-out-profile-yaml-without-name",
     lambda e: (e.yaml("rep/profile.yaml", {"dataset": "blobs", "data_dir": None, "profile": {}}), reproduce(e))[1])
case(Y, "reproduce-out-of-another-profile",
     lambda e: (e.yaml("rep/profile.yaml", {"dataset": "dsprites", "data_dir": None, "profile": {"name": "x"}}),
                reproduce(e))[1])
case(Y, "grid-missing", lambda e: sweep(e, e.p("nosuch_grid.yaml")))
case(Y, "grid-is-a-folder", lambda e: sweep(e, str((e.tmp / "gdir").mkdir() or e.tmp / "gdir")))
case(Y, "grid-not-yaml", lambda e: sweep(e, e.write("grid.yaml", NOT_YAML)))
case(Y, "grid-not-utf8", lambda e: sweep(e, e.write("grid.yaml", NOT_UTF8)))
case(Y, "grid-empty", lambda e: sweep(e, e.write("grid.yaml", "")))
case(Y, "grid-a-list", lambda e: sweep(e, e.write("grid.yaml", "- a\n- b\n")))
case(Y, "grid-no-models", lambda e: sweep(e, e.grid({k: v for k, v in TINY_GRID.items() if k != "models"})))
case(Y, "grid-no-datasets", lambda e: sweep(e, e.grid({k: v for k, v in TINY_GRID.items() if k != "datasets"})))
case(Y, "grid-unknown-key", lambda e: sweep(e, e.grid(nosuch=1)))
case(Y, "grid-seeds-wrong-type", lambda e: sweep(e, e.grid(seeds="abc")))
case(Y, "grid-models-empty", lambda e: sweep(e, e.grid(models=[])))
case(Y, "grid-model-unknown", lambda e: sweep(e, e.grid(models=["nosuch_vae"])))
case(Y, "grid-dataset-unknown", lambda e: sweep(e, e.grid(datasets=["nosuch_data"])))
case(Y, "grid-dataset-file-missing", lambda e: sweep(e, e.grid(datasets=[e.p("nosuch.h5")])))
case(Y, "grid-dataset-file-broken", lambda e: sweep(e, e.grid(datasets=[e.write("broken.h5", RANDOM)])))
case(Y, "grid-dataset-option-not-a-number", lambda e: sweep(e, e.grid(datasets=[{"name": "blobs", "sigma": "abc"}])))
case(Y, "grid-dataset-option-unknown", lambda e: sweep(e, e.grid(datasets=[{"name": "blobs", "nosuch": 1}])))
case(Y, "grid-train-steps-0", lambda e: sweep(e, e.grid(train={**TINY_GRID["train"], "steps": 0})))
case(Y, "grid-train-lr-string", lambda e: sweep(e, e.grid(train={**TINY_GRID["train"], "lr": "fast"})))
case(Y, "grid-train-unknown-key", lambda e: sweep(e, e.grid(train={**TINY_GRID["train"], "nosuch": 1})))
case(Y, "grid-train-seed", lambda e: sweep(e, e.grid(train={**TINY_GRID["train"], "seed": 1})))
case(Y, "grid-train-device-cuda-absent", lambda e: sweep(e, e.grid(train={**TINY_GRID["train"], "device": "cuda"})),
     skip=CUDA_SKIP if HAS_CUDA else None)
case(Y, "grid-param-unknown", lambda e: sweep(e, e.grid(model_params={"beta_vae": {"gamma": 1}})))
case(Y, "grid-param-not-a-number", lambda e: sweep(e, e.grid(model_params={"beta_vae": {"beta": "abc"}})))
case(Y, "grid-params-of-model-not-in-grid", lambda e: sweep(e, e.grid(model_params={"ae": {"width": 1}})))
case(Y, "grid-metric-unknown", lambda e: sweep(e, e.grid(evaluate={"metrics": ["nosuch"]})))
case(Y, "grid-eval-num-points-0", lambda e: sweep(e, e.grid(evaluate={"metrics": ["mig"], "num_points": 0})))
case(Y, "grid-resources-cpus-0", lambda e: sweep(e, e.grid(resources={"num_cpus": 0})))
case(Y, "grid-pack-unknown", lambda e: sweep(e, e.grid(pack="sometimes")))
case(Y, "grid-ensemble-size-1", lambda e: sweep(e, e.grid(ensemble_size=1)))
case(Y, "grid-max-retries-negative", lambda e: sweep(e, e.grid(max_retries=-1)))
case(Y, "grid-no-out", lambda e: ["sweep", e.grid(), "--no-progress"])
case(Y, "report-metrics-json-not-json",
     lambda e: ["report", report_folder(e, **{"runs/original/beta_vae_seed0/metrics.json": "{not json"})])
case(Y, "report-metrics-json-a-list",
     lambda e: ["report", report_folder(e, **{"runs/original/beta_vae_seed0/metrics.json": "[1, 2]"})])
case(Y, "report-profile-yaml-not-yaml", lambda e: ["report", report_folder(e, **{"profile.yaml": NOT_YAML})])
case(Y, "report-audit-yaml-a-list", lambda e: ["report", report_folder(e, **{"audit.yaml": "- a\n"})])
case(Y, "robustness-results-json-not-json",
     lambda e: ["robustness", str(Path(e.write("sw/results.json", "{not json")).parent)])
case(Y, "robustness-results-json-a-mapping",
     lambda e: ["robustness", str(Path(e.write("sw/results.json", '{"a": 1}')).parent)])

# ---- 6. dataset files (.h5, .npz)
H = "datafile"
case(H, "h5-not-hdf5", lambda e: train(e, dataset=e.write("d.h5", "just text\n")))
case(H, "h5-empty", lambda e: train(e, dataset=e.write("d.h5", b"")))
case(H, "h5-random-bytes", lambda e: train(e, dataset=e.write("d.h5", RANDOM)))
case(H, "h5-truncated", lambda e: train(e, dataset=e.write("d.h5", _truncated(e.shared / "squares.h5"))))
case(H, "h5-missing-factors", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", drop=("factors",)))))
case(H, "h5-missing-images-with-format", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", drop=("images",)))))
case(H, "h5-negative-factor-size", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5",
                                                                            attrs={"factor_sizes": "[4, -4]"}))))
case(H, "h5-factor-sizes-not-json", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5",
                                                                             attrs={"factor_sizes": "[4, x"}))))
case(H, "h5-factor-sizes-too-small", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5",
                                                                              attrs={"factor_sizes": "[2, 2]"}))))
case(H, "h5-factor-names-wrong-count", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5",
                                                                                attrs={"factor_names": '["a"]'}))))
case(H, "h5-images-float", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", images=_square_grid()[0].astype(np.float32) / 255))))
case(H, "h5-images-3d", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", images=_square_grid()[0][:, 0]))))
case(H, "h5-factors-float", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", factors=_square_grid()[1].astype(np.float32) + 0.5))))
case(H, "h5-mismatched-rows", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", factors=_square_grid()[1][:15]))))
case(H, "h5-duplicate-factor-rows", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", factors=np.zeros((16, 2), np.int64)))))
case(H, "h5-observation-shape-mismatch", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", attrs={"observation_shape": "[1, 64, 64]"}))))
case(H, "h5-incomplete-export", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", attrs={"rows_done": 5}))))
case(H, "h5-epsilon-not-a-number", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", attrs={"epsilon": "abc"}))))
case(H, "h5-format-other", lambda e: train(e, dataset=str(write_h5(e.tmp / "d.h5", attrs={"format": "other"}))))
case(H, "h5-no-rows", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", images=np.zeros((0, 1, 32, 32), np.uint8), factors=np.zeros((0, 2), np.int64),
    drop=("factor_sizes",)))))
case(H, "h5-missing-file", lambda e: train(e, dataset=e.p("nosuch/d.h5")))
case(H, "h5-a-folder", lambda e: train(e, dataset=str((e.tmp / "d.h5").mkdir() or e.tmp / "d.h5")))
case(H, "npz-missing-factors", lambda e: train(e, dataset=str(write_npz(e.tmp / "d.npz", drop=("factors",)))))
case(H, "npz-corrupt-zip", lambda e: train(e, dataset=e.write("d.npz", b"PK\x03\x04" + RANDOM)))
case(H, "npz-truncated", lambda e: train(e, dataset=e.write("d.npz", _truncated(e.shared / "squares.npz"))))
case(H, "npz-factors-not-integers", lambda e: train(e, dataset=str(write_npz(
    e.tmp / "d.npz", factors=_square_grid()[1] + 0.5))))
case(H, "npz-images-out-of-range", lambda e: train(e, dataset=str(write_npz(
    e.tmp / "d.npz", images=np.full((16, 1, 32, 32), 2.0, np.float32)))))
case(H, "npz-images-channels-last", lambda e: train(e, dataset=str(write_npz(
    e.tmp / "d.npz", images=_square_grid()[0].transpose(0, 2, 3, 1)))))
case(H, "npz-images-objects", lambda e: train(e, dataset=str(write_npz(
    e.tmp / "d.npz", images=np.array([None] * 16, dtype=object)))))
case(H, "npz-mismatched-rows", lambda e: train(e, dataset=str(write_npz(e.tmp / "d.npz", factors=_square_grid()[1][:15]))))
case(H, "npz-negative-factor-index", lambda e: train(e, dataset=str(write_npz(
    e.tmp / "d.npz", factors=_square_grid()[1] - 1))))
case(H, "npz-negative-factor-size", lambda e: train(e, dataset=str(write_npz(
    e.tmp / "d.npz", factor_sizes=np.array([4, -4])))))
case(H, "npz-epsilon-2", lambda e: train(e, dataset=str(write_npz(e.tmp / "d.npz", epsilon=np.asarray(2.0)))))
case(H, "npz-name-not-a-string", lambda e: train(e, dataset=str(write_npz(e.tmp / "d.npz", name=np.asarray(3)))))
case(H, "npz-missing-file", lambda e: train(e, dataset=e.p("nosuch.npz")))
case(H, "audit-data-h5-random-bytes", lambda e: audit_data(e, e.write("d.h5", RANDOM)))
case(H, "audit-data-npz-missing-images", lambda e: audit_data(e, str(write_npz(e.tmp / "d.npz", drop=("images",)))))
case(H, "audit-data-one-factor", lambda e: audit_data(e, str(write_npz(
    e.tmp / "d.npz", factors=np.arange(16)[:, None], factor_names=np.array(["a"]), factor_sizes=np.array([16])))))
case(H, "evaluate-dataset-file-broken", lambda e: evaluate(e, e.run(), "--dataset", e.write("d.h5", RANDOM)))
case(H, "audit-model-modified-file-broken",
     lambda e: audit_model(e, "--modified", e.write("d.h5", RANDOM), "--epsilon", "0.1", man=None))

# ---- 7. shapes: a model or a dataset that does not fit the images
S = "shape"
case(S, "train-weak-gan-on-32px-blobs", lambda e: train(e, model="weak_gan"))
case(S, "train-images-20px", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", images=np.zeros((16, 1, 20, 20), np.uint8)))))
case(S, "train-images-not-square", lambda e: train(e, dataset=str(write_h5(
    e.tmp / "d.h5", images=np.zeros((16, 1, 32, 48), np.uint8)))))
case(S, "evaluate-on-toy-64px", lambda e: evaluate(e, e.run(), "--dataset", "toy"))
case(S, "evaluate-on-64px-file", lambda e: evaluate(e, e.run(), "--dataset", e.s("squares64.npz")))
case(S, "udr-runs-of-different-datasets", lambda e: udr(e, [e.run("r0"), e.run("rsq")]))
case(S, "manipulate-references-of-different-datasets", lambda e: manipulate(e, dis=e.run("rsq")))
case(S, "manipulate-dataset-of-other-shape", lambda e: manipulate(e, "--dataset", "toy"))
case(S, "reproduce-weak-gan-on-blobs", lambda e: reproduce(e, profile=e.profile(models=["beta_vae", "weak_gan"])))
case(S, "audit-data-manipulation-of-other-dataset",
     lambda e: audit_data(e, e.s("squares.npz"), "--manipulation", e.run("m")))
case(S, "audit-model-weak-gan-on-blobs", lambda e: audit_model(e, model="weak_gan"))
case(S, "audit-model-manipulation-of-other-dataset", lambda e: audit_model(e, dataset=e.s("squares.npz")))
case(S, "audit-model-modified-of-other-shape",
     lambda e: audit_model(e, "--modified", e.s("squares64.npz"), man=None))

# ---- 8. outputs: existing files, paths under a file, unwritable and read-only places
O = "output"
case(O, "train-out-existing-file", lambda e: train(e, out=e.a_file()))
case(O, "train-out-under-a-file", lambda e: train(e, out=e.a_file() + "/run"))
case(O, "train-out-unwritable", lambda e: train(e, out=UNWRITABLE + "/run"))
case(O, "train-out-readonly", lambda e: train(e, out=e.readonly("ro") + "/run"),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "evaluate-readonly-run", lambda e: evaluate(e, e.readonly_run()), skip=ROOT_SKIP if IS_ROOT else None)
case(O, "traverse-out-a-folder", lambda e: traverse(e, e.run(), out=str((e.tmp / "tdir").mkdir() or e.tmp / "tdir")))
case(O, "traverse-out-not-png", lambda e: traverse(e, e.run(), out=e.p("t.txt")))
case(O, "traverse-out-under-a-file", lambda e: traverse(e, e.run(), out=e.a_file() + "/t.png"))
case(O, "traverse-out-unwritable", lambda e: traverse(e, e.run(), out=UNWRITABLE + "/t.png"))
case(O, "traverse-gif-under-a-file", lambda e: traverse(e, e.run(), "--gif", e.a_file() + "/t.gif"))
case(O, "traverse-out-readonly", lambda e: traverse(e, e.run(), out=e.readonly("ro") + "/t.png"),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "udr-out-under-a-file", lambda e: udr(e, [e.run("r0"), e.run("r1")], out=e.a_file() + "/u.json"))
case(O, "udr-out-a-folder", lambda e: udr(e, [e.run("r0"), e.run("r1")],
                                          out=str((e.tmp / "udir").mkdir() or e.tmp / "udir")))
case(O, "udr-out-unwritable", lambda e: udr(e, [e.run("r0"), e.run("r1")], out=UNWRITABLE + "/u.json"))
case(O, "udr-out-readonly", lambda e: udr(e, [e.run("r0"), e.run("r1")], out=e.readonly("ro") + "/u.json"),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "manipulate-out-existing-file", lambda e: manipulate(e, out=e.a_file()))
case(O, "manipulate-out-under-a-file", lambda e: manipulate(e, out=e.a_file() + "/m"))
case(O, "manipulate-export-dir-under-a-file", lambda e: manipulate(e, "--export-dir", e.a_file() + "/x"))
case(O, "manipulate-export-dir-unwritable", lambda e: manipulate(e, "--export-dir", UNWRITABLE + "/x"))
case(O, "manipulate-export-dir-readonly", lambda e: manipulate(e, "--export-dir", e.readonly("ro")),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "reproduce-out-existing-file", lambda e: reproduce(e, "--out", e.a_file()))
case(O, "reproduce-out-under-a-file", lambda e: reproduce(e, "--out", e.a_file() + "/rep"))
case(O, "reproduce-out-unwritable", lambda e: reproduce(e, "--out", UNWRITABLE + "/rep"))
case(O, "reproduce-out-readonly", lambda e: reproduce(e, "--out", e.readonly("ro") + "/rep"),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "sweep-out-existing-file", lambda e: sweep(e, e.grid(), "--out", e.a_file()))
case(O, "sweep-out-under-a-file", lambda e: sweep(e, e.grid(), "--out", e.a_file() + "/sw"))
case(O, "sweep-out-unwritable", lambda e: sweep(e, e.grid(), "--out", UNWRITABLE + "/sw"))
case(O, "sweep-out-readonly", lambda e: sweep(e, e.grid(), "--out", e.readonly("ro") + "/sw"),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "audit-data-out-existing-file", lambda e: audit_data(e, "blobs", "--out", e.a_file()))
case(O, "audit-data-out-under-a-file", lambda e: audit_data(e, "blobs", "--out", e.a_file() + "/a"))
case(O, "audit-data-out-unwritable", lambda e: audit_data(e, "blobs", "--out", UNWRITABLE + "/a"))
case(O, "audit-data-out-readonly", lambda e: audit_data(e, "blobs", "--out", e.readonly("ro") + "/a"),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "audit-model-out-existing-file", lambda e: audit_model(e, "--out", e.a_file()))
case(O, "audit-model-out-under-a-file", lambda e: audit_model(e, "--out", e.a_file() + "/am"))
case(O, "report-report-html-a-folder", lambda e: (lambda f: ((Path(f) / "report.html").mkdir(), ["report", f])[1])(
    report_folder(e)))
case(O, "report-readonly-folder", lambda e: (lambda f: (Path(f).chmod(0o555), e.locked.append(Path(f)),
                                                        ["report", f])[2])(report_folder(e)),
     skip=ROOT_SKIP if IS_ROOT else None)
case(O, "fig1-out-not-png", lambda e: ["fig1", "--out", e.p("f.txt"), "--steps", "2", "--seeds", "0"])
case(O, "fig1-out-under-a-file", lambda e: ["fig1", "--out", e.a_file() + "/f.png", "--steps", "2", "--seeds", "0"])
case(O, "theorem1-out-not-md", lambda e: ["theorem1", "--out", e.p("t.txt"), "--seeds", "0"])
case(O, "theorem1-out-unwritable", lambda e: ["theorem1", "--out", UNWRITABLE + "/t.md", "--seeds", "0"])

# ---- 9. paths that do not exist; folders that are not (finished) runs
X = "path"
case(X, "evaluate-missing-run", lambda e: evaluate(e, e.p("nosuch_run")))
case(X, "evaluate-empty-folder", lambda e: evaluate(e, str((e.tmp / "empty").mkdir() or e.tmp / "empty")))
case(X, "evaluate-a-file", lambda e: evaluate(e, e.a_file()))
case(X, "evaluate-unfinished-run", lambda e: evaluate(e, e.unfinished_run()))
case(X, "evaluate-missing-checkpoint", lambda e: evaluate(e, e.damaged_run("checkpoint.pt", None)))
case(X, "evaluate-manipulation-run", lambda e: evaluate(e, e.run("m")))
case(X, "traverse-missing-run", lambda e: traverse(e, e.p("nosuch_run")))
case(X, "traverse-unfinished-run", lambda e: traverse(e, e.unfinished_run()))
case(X, "udr-missing-run", lambda e: udr(e, [e.run("r0"), e.p("nosuch_run")]))
case(X, "udr-unfinished-run", lambda e: udr(e, [e.run("r1"), e.unfinished_run()]))
case(X, "manipulate-missing-entangled", lambda e: manipulate(e, ent=e.p("nosuch_run")))
case(X, "manipulate-missing-disentangled", lambda e: manipulate(e, dis=e.p("nosuch_run")))
case(X, "manipulate-unfinished-reference", lambda e: manipulate(e, ent=e.unfinished_run()))
case(X, "manipulate-reference-is-manipulation-run", lambda e: manipulate(e, ent=e.run("m")))
case(X, "reproduce-profile-file-missing", lambda e: reproduce(e, profile=e.p("nosuch_profile.yaml")))
case(X, "reproduce-data-dir-missing", lambda e: reproduce(e, "--data-dir", e.p("nosuch_dir"), dataset="dsprites"))
case(X, "reproduce-dataset-file-missing", lambda e: reproduce(e, dataset=e.p("nosuch.h5")))
case(X, "reproduce-dataset-without-epsilon", lambda e: reproduce(e, dataset=e.s("squares_no_eps.npz")))
case(X, "audit-data-manipulation-missing", lambda e: audit_data(e, "blobs", "--manipulation", e.p("nosuch")))
case(X, "audit-data-manipulation-not-a-manipulation", lambda e: audit_data(e, "blobs", "--manipulation", e.run("r0")))
case(X, "audit-model-no-manipulation-nor-modified", lambda e: audit_model(e, man=None))
case(X, "audit-model-manipulation-and-modified",
     lambda e: audit_model(e, "--modified", str(e.copy("m") / "blobs_modified_eps0.1.h5")))
case(X, "audit-model-manipulation-missing", lambda e: audit_model(e, man=e.p("nosuch")))
case(X, "audit-model-manipulation-not-a-manipulation", lambda e: audit_model(e, man=e.run("r0")))
case(X, "audit-model-modified-missing", lambda e: audit_model(e, "--modified", e.p("nosuch.h5"), man=None))
case(X, "audit-model-modified-epsilon-2",
     lambda e: audit_model(e, "--modified", str(e.copy("m") / "blobs_modified_eps0.1.h5"), "--epsilon", "2", man=None))
def _modified_without_epsilon(e: Env) -> str:
    path = e.copy("m") / "blobs_modified_eps0.1.h5"
    with h5py.File(path, "r+") as f:
        del f.attrs["epsilon"]
    return str(path)


case(X, "audit-model-modified-without-epsilon", lambda e: audit_model(e, "--modified", _modified_without_epsilon(e),
                                                                      man=None))
case(X, "sweep-grid-missing", lambda e: sweep(e, e.p("nosuch.yaml")))
case(X, "report-missing-folder", lambda e: ["report", e.p("nosuch")])
case(X, "report-a-file", lambda e: ["report", e.a_file()])
case(X, "report-empty-folder", lambda e: ["report", str((e.tmp / "empty").mkdir() or e.tmp / "empty")])
case(X, "report-reproduce-folder-without-runs",
     lambda e: ["report", str(Path(e.yaml("res/profile.yaml", {"dataset": "blobs", "profile": {"name": "x"}})).parent)])
case(X, "robustness-missing-folder", lambda e: ["robustness", e.p("nosuch")])


# ------------------------------------------------------------------------------ the check
def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder below ``roots`` (``__pycache__`` aside): folders as ``("dir",)``,
    files as ``("file", size, mtime_ns)``, links as ``("link", target)``."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    out[p] = ("link", os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    out[p] = ("dir",)
                else:
                    out[p] = ("file", st.st_size, st.st_mtime_ns)
    return out


def invoke(argv: list[str]) -> tuple[object, BaseException | None]:
    """(exit status, uncaught exception) of ``vaebias <argv>`` run in this process."""
    try:
        return main(argv), None
    except SystemExit as exc:  # argparse
        return exc.code, None
    except Exception as exc:  # the real command line would print a traceback and exit 1
        return 1, exc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_status_2_and_leaves_nothing(case, shared, tmp_path, capsys, monkeypatch):
    if case.skip:
        pytest.skip(case.skip)
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written relative to the working directory shows up below
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() appends the working directory
    env = Env(work, shared)
    try:
        argv = case.build(env)
        capsys.readouterr()
        before = snapshot(tmp_path, shared)
        rc, exc = invoke(argv)
        out, err = capsys.readouterr()
        after = snapshot(tmp_path, shared)
    finally:
        for p in env.locked:
            p.chmod(0o755)

    lines = err.strip().splitlines()
    problems = []
    if exc is not None:
        problems.append(f"uncaught {type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")
    if rc != 2:
        problems.append(f"exit status {rc!r}, expected 2")
    if len(lines) != 1 or not (lines[0].startswith("vaebias") and "error" in lines[0]):
        shown = " | ".join(line[:300] for line in lines[-3:])
        problems.append(f"{len(lines)} stderr line(s), expected one 'vaebias: error: ...'; last: {shown}")
    # the writer lock of a folder that was there before (its holder's pid) is bookkeeping, not output
    def lock_in_old_folder(p):
        return os.path.basename(p) == ".vaebias.lock" and os.path.dirname(p) in before

    new = sorted(p for p in set(after) - set(before) if not lock_in_old_folder(p))
    gone = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p] and before[p][0] != "dir"
                     and not lock_in_old_folder(p))
    for what, paths in (("left behind", new), ("removed", gone), ("changed", changed)):
        if paths:
            rel = [os.path.relpath(p, tmp_path) if p.startswith(str(tmp_path)) else p for p in paths]
            problems.append(f"{what}: {', '.join(rel[:6])}" + (f" (+{len(rel) - 6})" if len(rel) > 6 else ""))
    assert not problems, f"vaebias {' '.join(argv)}\n  " + "\n  ".join(problems)
