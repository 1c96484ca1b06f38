"""Batched ensembles (vaebias.ensemble): each member is its seed's solo run.

Tolerance: a member's per-step losses agree with the solo run's to a relative 1e-5
(measured: <= 2e-7 over 30 steps on CPU; batched and single kernels round
differently, nothing else differs), and the distance between its final weights and
the solo run's is under 1% of how far the solo run moved from their common
initialisation (L2 over all parameters; measured 0.2% for the AE, ~1e-6 for the beta-VAE
and Slow-VAE over 24 steps; Adam turns rounding noise on near-zero
gradients into steps of up to lr, so a per-weight absolute bound would say little)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_train
from vaebias.config import from_dict
from vaebias.ensemble import can_ensemble, train_ensemble
from vaebias.errors import ConfigError
from vaebias.io import read_yaml
from vaebias.training import RunConfig, build_run, is_finished, train

STEPS = 24


def _cfg(model, seed, steps=STEPS, **params):
    if model == "beta_vae":
        params.setdefault("beta", 4.0)
    return {"model": model, "dataset": {"name": "toy", "num_positions": 8}, "model_params": params,
            "train": tiny_train(steps=steps, seed=seed, batch_size=16, checkpoint_every=8, log_every=4)}


def _flat(model):
    return torch.cat([v.detach().float().flatten() for v in model.state_dict().values()])


def _drift(member, solo, cfg, data):
    """||member - solo|| / ||solo - init||: the member's distance from its solo run as a
    fraction of the solo run's distance from their common initialisation."""
    init = build_run(from_dict(RunConfig, cfg), data)[0]
    return float((_flat(member) - _flat(solo)).norm() / (_flat(solo) - _flat(init)).norm())


@pytest.mark.parametrize("model", ["ae", "beta_vae", "slow_vae"])
def test_members_follow_their_solo_runs(tmp_path, toy, model):
    seeds = (0, 1)
    solo, solo_models = {}, {}
    for s in seeds:
        solo[s] = []
        solo_models[s] = train(_cfg(model, s), tmp_path / f"solo{s}", data=toy, progress=False,
                               callback=lambda st, t, s=s: solo[s].append(t["loss"]))
    ens = []
    members = train_ensemble([_cfg(model, s) for s in seeds], [tmp_path / f"ens{s}" for s in seeds],
                             data=toy, progress=False,
                             callback=lambda st, terms: ens.append([t["loss"] for t in terms]))
    ens = np.array(ens)
    assert ens.shape == (STEPS, len(seeds))
    for j, s in enumerate(seeds):
        a = np.array(solo[s])
        assert np.max(np.abs(ens[:, j] - a) / np.abs(a)) < 1e-5
        assert _drift(members[j], solo_models[s], _cfg(model, s), toy) < 0.01
        # the member's run directory is the solo run's: same config, same files
        assert read_yaml(tmp_path / f"ens{s}" / "config.yaml") == read_yaml(tmp_path / f"solo{s}" / "config.yaml")
        assert is_finished(tmp_path / f"ens{s}")
        log = (tmp_path / f"ens{s}" / "train_log.csv").read_text().splitlines()
        assert len(log) == 1 + STEPS // 4
    assert not np.allclose(ens[:, 0], ens[:, 1])  # the seeds really differ


class _Stop(Exception):
    pass


def test_interrupted_ensemble_resumes_alone_or_together(tmp_path, toy):
    seeds = (3, 4)
    ref = {s: train(_cfg("beta_vae", s), tmp_path / f"ref{s}", data=toy, progress=False) for s in seeds}

    def stop(step, terms):
        if step == 12:
            raise _Stop

    for name in ("a", "b"):
        with pytest.raises(_Stop):
            train_ensemble([_cfg("beta_vae", s) for s in seeds], [tmp_path / f"{name}{s}" for s in seeds],
                           data=toy, progress=False, callback=stop)
        state = torch.load(tmp_path / f"{name}3" / "checkpoint.pt", weights_only=False)
        assert state["step"] == 8 and state["ensemble"] == {"members": 2, "index": 0}
    # a: each member continued alone by the solo training loop
    for s in seeds:
        m = train(_cfg("beta_vae", s), tmp_path / f"a{s}", data=toy, progress=False)
        assert _drift(m, ref[s], _cfg("beta_vae", s), toy) < 0.01
    # b: the ensemble continued
    members = train_ensemble([_cfg("beta_vae", s) for s in seeds], [tmp_path / f"b{s}" for s in seeds],
                             data=toy, progress=False)
    for m, s in zip(members, seeds):
        assert _drift(m, ref[s], _cfg("beta_vae", s), toy) < 0.01


def test_finished_members_are_not_retrained(tmp_path, toy):
    train(_cfg("beta_vae", 0), tmp_path / "r0", data=toy, progress=False)
    before = (tmp_path / "r0" / "checkpoint.pt").stat().st_mtime_ns
    seen = []
    train_ensemble([_cfg("beta_vae", s) for s in (0, 1)], [tmp_path / "r0", tmp_path / "r1"], data=toy,
                   progress=False, callback=lambda st, terms: seen.append(len(terms)))
    assert (tmp_path / "r0" / "checkpoint.pt").stat().st_mtime_ns == before
    assert set(seen) == {1} and is_finished(tmp_path / "r1")


def test_bad_ensembles_are_refused(tmp_path, toy):
    with pytest.raises(ConfigError, match=r"differ only in train.seed.*\['model_params'\]"):
        train_ensemble([_cfg("beta_vae", 0), _cfg("beta_vae", 1, beta=2.0)],
                       [tmp_path / "a", tmp_path / "b"], data=toy)
    with pytest.raises(ConfigError, match=r"distinct seeds; got \[0, 0\]"):
        train_ensemble([_cfg("beta_vae", 0), _cfg("beta_vae", 0)], [tmp_path / "a", tmp_path / "b"], data=toy)
    with pytest.raises(ConfigError, match="'factor_vae' cannot train as a batched ensemble"):
        train_ensemble([_cfg("factor_vae", 0)], [tmp_path / "a"], data=toy)
    with pytest.raises(ConfigError, match="as many run directories as configs"):
        train_ensemble([_cfg("beta_vae", 0)], [tmp_path / "a", tmp_path / "b"], data=toy)
    assert not (tmp_path / "a").exists()
    assert can_ensemble("beta_vae") and not can_ensemble("weak_gan") and not can_ensemble("pcl")
