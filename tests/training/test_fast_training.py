"""The fast training step (TrainConfig precision / channels_last / fused_adam / compile).

What is pinned: bf16 autocast really runs the networks in bfloat16 while the losses,
parameters and optimiser states stay float32; the bf16 loss curve follows the fp32
curve of the same seed (windowed means within 1%; measured <= 0.2% over 300 steps);
channels-last and fused Adam are applied; run directories written before these
settings existed still resume; bad values are refused with the key named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vaebias.training.loop as tr
from tests.conftest import tiny_train
from vaebias._internal.config import TrainConfig
from vaebias._internal.errors import ConfigError
from vaebias._internal.io import read_yaml, write_yaml
from vaebias.training import is_finished, train


def _cfg(model="beta_vae", **train_kw):
    return {"model": model, "dataset": {"name": "toy", "num_positions": 8},
            "model_params": {"beta": 4.0} if model == "beta_vae" else {},
            "train": tiny_train(**train_kw)}


def test_fast_preset():
    f = TrainConfig.fast(steps=10)
    assert (f.precision, f.channels_last, f.fused_adam, f.compile, f.data_parallel, f.steps) == (
        "bf16", True, True, False, 0, 10)
    assert TrainConfig().precision == "fp32" and not TrainConfig().channels_last


@pytest.mark.parametrize("key,value,match", [
    ("precision", "fp16", r"precision = 'fp16'.*'fp32' or 'bf16'"),
    ("channels_last", "yes", "channels_last"),
    ("fused_adam", 1, "fused_adam"),
])
def test_bad_speed_settings(tmp_path, toy, key, value, match):
    cfg = _cfg()
    cfg["train"][key] = value
    with pytest.raises(ConfigError, match=match):
        train(cfg, tmp_path / "r", data=toy, progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model", ["beta_vae", "factor_vae"])
def test_bf16_runs_the_networks_in_bf16_and_keeps_float32_state(tmp_path, toy, model):
    seen = {}

    def hook(module, inputs, output):
        seen.setdefault(type(module).__name__, set()).add(output.dtype)

    losses = []
    cfg = _cfg(model, steps=4, precision="bf16", channels_last=True, fused_adam=True)
    real_speed = tr._apply_speed_settings

    def speed_and_hooks(model_, cfg_, device):  # the model exists here: watch its layers
        for mod in model_.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                mod.register_forward_hook(hook)
        return real_speed(model_, cfg_, device)

    tr._apply_speed_settings = speed_and_hooks
    try:
        m = train(cfg, tmp_path / "r", data=toy, progress=False,
                  callback=lambda s, t: losses.append(t["loss"]))
    finally:
        tr._apply_speed_settings = real_speed
    assert seen["Conv2d"] == {torch.bfloat16} and seen["Linear"] == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in m.parameters())
    conv = next(x for x in m.modules() if isinstance(x, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert state["optimizers"]["main"]["param_groups"][0]["fused"] is True
    assert all(v["exp_avg"].dtype == torch.float32 for v in state["optimizers"]["main"]["state"].values())
    assert all(np.isfinite(losses)) and len(losses) == 4
    # the representation is float32 whatever the training precision
    x = toy.images(toy.sample_factors(3, np.random.default_rng(0)))
    assert m.encode(x).dtype == torch.float32


def test_bf16_loss_curve_follows_fp32(tmp_path, toy):
    curves = {}
    for prec in ("fp32", "bf16"):
        losses = []
        train(_cfg(steps=150, batch_size=16, precision=prec, channels_last=prec == "bf16",
                   fused_adam=prec == "bf16", checkpoint_every=1000, log_every=50),
              tmp_path / prec, data=toy, progress=False, callback=lambda s, t: losses.append(t["loss"]))
        curves[prec] = np.array(losses).reshape(3, 50).mean(1)
    rel = np.abs(curves["bf16"] - curves["fp32"]) / curves["fp32"]
    assert curves["fp32"][-1] < 0.5 * curves["fp32"][0]  # it trains: the comparison means something
    assert rel.max() < 0.01, (curves, rel)


def test_runs_written_before_the_speed_settings_resume(tmp_path, toy):
    cfg = _cfg(steps=10)
    train(cfg, tmp_path / "r", data=toy, progress=False, callback=lambda s, t: None)
    # an older vaebias wrote config.yaml without the new TrainConfig fields
    rec = read_yaml(tmp_path / "r" / "config.yaml")
    for k in ("precision", "channels_last", "fused_adam", "compile", "data_parallel"):
        del rec["train"][k]
    write_yaml(tmp_path / "r" / "config.yaml", rec)
    assert is_finished(tmp_path / "r")
    train(cfg, tmp_path / "r", data=toy, progress=False)  # no RunError: same run
    from vaebias._internal.errors import RunError

    with pytest.raises(RunError, match="different configuration"):
        train(_cfg(steps=10, precision="bf16"), tmp_path / "r", data=toy, progress=False)


def test_cli_train_fast(tmp_path):
    from vaebias.cli.main import main

    assert main(["train", "--model", "ae", "--dataset", "toy", "--steps", "3", "--batch-size", "4",
                 "--device", "cpu", "--fast", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    train_cfg = read_yaml(tmp_path / "r" / "config.yaml")["train"]
    assert (train_cfg["precision"], train_cfg["channels_last"], train_cfg["fused_adam"]) == ("bf16", True, True)
    assert main(["train", "--model", "ae", "--dataset", "toy", "--steps", "3", "--batch-size", "4",
                 "--device", "cpu", "--fast", "--precision", "fp32", "--no-progress",
                 "--out", str(tmp_path / "s")]) == 0
    assert read_yaml(tmp_path / "s" / "config.yaml")["train"]["precision"] == "fp32"  # explicit wins
