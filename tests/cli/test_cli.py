"""The command line's own contract: ``python -m vaebias``, the version, flags generated from
TrainConfig, and results on stdout with log lines on stderr."""

import dataclasses
import subprocess
import sys

import yaml

from vaebias import __version__
from vaebias._internal.config import TrainConfig
from vaebias.cli import build_parser
from vaebias.cli.commands import COMMANDS
from vaebias.cli.main import main
from vaebias.training import train

from ..conftest import tiny_train


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "vaebias", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"vaebias {__version__}"


def test_train_flags_come_from_every_trainconfig_field():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {s for a in train._actions for s in a.option_strings}
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    args = build_parser().parse_args(["train", "--model", "ae", "--out", "x", "--steps", "7", "--channels-last"])
    assert args.steps == 7 and args.channels_last is True and args.lr is None  # unset: TrainConfig's default


def test_every_command_has_a_parser_and_a_run_function():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert names == set(COMMANDS) and {"reproduce", "train", "evaluate", "report", "sweep"} <= names
    assert all(callable(c.run) and callable(c.arguments) for c in COMMANDS.values())


def test_listing_goes_to_stdout_alone(capsys):
    from vaebias.cli import main

    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    assert "beta_vae" in out.split() and err == ""


def test_manipulate_takes_the_references_dataset(tmp_path, capsys):
    for seed in (0, 1):
        train({"model": "beta_vae", "dataset": {"name": "toy", "num_positions": 4},
               "train": tiny_train(steps=10, seed=seed)}, tmp_path / f"r{seed}", progress=False)
    out = tmp_path / "m"
    rc = main(["manipulate", "--entangled", str(tmp_path / "r0"), "--disentangled", str(tmp_path / "r1"),
               "--out", str(out), "--steps", "4", "--device", "cpu", "--no-progress"])
    assert rc == 0
    info = yaml.safe_load((out / "config.yaml").read_text())["dataset_info"]
    assert info["factor_sizes"] == [4, 4]            # the references' toy, not the dSprites default
    assert (out / "health.json").exists()
    assert "modified:" in capsys.readouterr().out
