"""Data parallelism inside a step on CPU threads (TrainConfig.data_parallel).

What is pinned: a sharded step is the unsharded step -- the same data and the same
reparameterisation noise rows, the gradient of the row-weighted shard losses -- so the
per-step losses of a sharded run match the unsharded run of the same seed to a relative
1e-5 in float32 (measured ~1e-7, summation order only; AE, beta-VAE and Slow-VAE), and
its final weights likewise;
the noise each shard gets is its rows of the whole batch's draw, in draw order; uneven
shards are weighted by their rows; auto resolves per device and model; bad uses are
refused; a run resumes with a different shard count and ends where the unsharded run
does; torch's thread count is restored after training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_train
from vaebias._internal.config import TrainConfig
from vaebias._internal.errors import ConfigError
from vaebias.models import build_model
from vaebias.models.base import NOISE_FEED
from vaebias.training import data_parallel_shards, load_run, train
from vaebias.training.sharded import SharedNoise, sharded_backward, split_batch


def _cfg(model="beta_vae", **train_kw):
    return {"model": model, "dataset": {"name": "toy", "num_positions": 8},
            "model_params": {"beta": 4.0} if model == "beta_vae" else {},
            "train": tiny_train(**train_kw)}


def _run(tmp_path, toy, name, model="beta_vae", **kw):
    losses = []
    m = train(_cfg(model, **kw), tmp_path / name, data=toy, progress=False,
              callback=lambda s, t: losses.append([t[k] for k in sorted(t)]))
    return m, np.array(losses)


@pytest.mark.parametrize("model,k", [("beta_vae", 2), ("beta_vae", 3), ("ae", 2), ("slow_vae", 3)])
def test_sharded_run_matches_unsharded_run(tmp_path, toy, model, k):
    # batch 8 in 3 shards: rows 3/3/2, so uneven weights are exercised
    m1, l1 = _run(tmp_path, toy, "one", model, steps=20, data_parallel=1)
    mk, lk = _run(tmp_path, toy, "k", model, steps=20, data_parallel=k)
    assert l1.shape == lk.shape and len(l1) == 20
    np.testing.assert_allclose(lk, l1, rtol=1e-5, atol=1e-6)  # atol: the collapsed KL (~1e-3)
    for (name, a), b in zip(m1.state_dict().items(), mk.state_dict().values()):
        moved = (a - build_model(model, toy.observation_shape, toy.num_factors).state_dict()[name]).abs().max()
        assert (a - b).abs().max() <= 1e-3 * max(float(moved), 1e-6), name
    assert torch.get_num_threads() == 1  # the suite's setting, restored after training


def test_shared_noise_hands_each_shard_its_rows_of_the_full_draw():
    torch.manual_seed(5)
    full = [torch.randn(7, 3), torch.randn(7, 3)]  # what an unsharded step draws, in order
    torch.manual_seed(5)
    shared = SharedNoise([3, 2, 2])
    feeds = [shared.feed(i) for i in range(3)]
    like = [torch.zeros(r, 3) for r in (3, 2, 2)]
    # shards ask in any interleaving; draw j is the batch's j-th draw all the same
    got = {(2, 0): feeds[2].draw(like[2]), (0, 0): feeds[0].draw(like[0]), (2, 1): feeds[2].draw(like[2]),
           (1, 0): feeds[1].draw(like[1]), (0, 1): feeds[0].draw(like[0]), (1, 1): feeds[1].draw(like[1])}
    rows = {0: slice(0, 3), 1: slice(3, 5), 2: slice(5, 7)}
    for (shard, j), noise in got.items():
        assert torch.equal(noise, full[j][rows[shard]]), (shard, j)
    with pytest.raises(RuntimeError, match="not batch_separable"):
        feeds[0].draw(torch.zeros(4, 3))  # not a whole number of copies of the shard's 3 rows


def test_shared_noise_for_stacked_copies_of_the_batch():
    """Slow-VAE draws noise for (x_{t-1}; x_t) stacked: 2 copies of the batch's rows.
    A shard gets its rows of each copy, in the full draw's order."""
    torch.manual_seed(2)
    full = torch.randn(6, 2)  # unsharded: pairs 0, 1, 2 -> rows 0-2 (x_{t-1}) and 3-5 (x_t)
    torch.manual_seed(2)
    shared = SharedNoise([2, 1])
    a = shared.feed(1).draw(torch.zeros(2, 2))  # shard 1: pair 2
    b = shared.feed(0).draw(torch.zeros(4, 2))  # shard 0: pairs 0, 1
    assert torch.equal(a, full[[2, 5]]) and torch.equal(b, full[[0, 1, 3, 4]])


def test_sharded_step_uses_the_outer_noise_feed(toy):
    """Under an active NOISE_FEED (e.g. a caller's fixed noise), the shards get their rows
    of the feed's draw for the whole batch, not torch's generator."""
    class Fixed:
        def draw(self, like):
            return torch.linspace(-2, 2, like.numel(), dtype=like.dtype).reshape(like.shape)

    torch.manual_seed(0)
    model = build_model("beta_vae", toy.observation_shape, toy.num_factors)
    x = toy.images(toy.sample_factors(6, np.random.default_rng(2)))
    token = NOISE_FEED.set(Fixed())
    try:
        terms = sharded_backward(model, {"images": x}, 3)
        full = model.loss({"images": x})
    finally:
        NOISE_FEED.reset(token)
    torch.testing.assert_close(terms["recon"], full["recon"].detach(), rtol=1e-5, atol=0)
    torch.manual_seed(1)
    other = sharded_backward(model, {"images": x}, 3)  # torch's noise: another reconstruction
    assert abs(float(other["recon"] - full["recon"].detach())) > 1e-3


def test_sharded_gradient_by_hand(toy):
    """The sharded gradient equals the whole batch's gradient (autograd on the full
    batch with the same noise)."""
    torch.manual_seed(0)
    model = build_model("beta_vae", toy.observation_shape, toy.num_factors, {"beta": 2.0})
    x = toy.images(toy.sample_factors(5, np.random.default_rng(1)))
    torch.manual_seed(9)
    terms = sharded_backward(model, {"images": x}, 2)
    sharded = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(9)
    full = model.loss({"images": x})
    full["loss"].backward()
    for p, g in zip(model.parameters(), sharded):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)
    for k in full:
        torch.testing.assert_close(terms[k], full[k].detach(), rtol=1e-5, atol=1e-6)


def test_split_batch():
    batch = {"images": torch.arange(10.0).reshape(5, 2), "factors": torch.arange(5), "beta": torch.tensor(3.0),
             "tag": "x"}
    parts, rows = split_batch(batch, 2)
    assert rows == [3, 2]
    assert torch.equal(parts[1]["images"], batch["images"][3:]) and torch.equal(parts[0]["factors"],
                                                                                 torch.arange(3))
    assert parts[1]["beta"] is batch["beta"] and parts[0]["tag"] == "x"
    with pytest.raises(ValueError, match=r"data_parallel = 6: expected 1 \.\. 5"):
        split_batch(batch, 6)


def test_auto_and_refusals(toy):
    vae = build_model("beta_vae", toy.observation_shape, toy.num_factors)
    dip = build_model("dip_vae_i", toy.observation_shape, toy.num_factors)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert data_parallel_shards(vae, TrainConfig(data_parallel=0), cpu) == 2
        assert data_parallel_shards(vae, TrainConfig(data_parallel=0, batch_size=8), cpu) == 1  # >= 8 rows each
        assert data_parallel_shards(dip, TrainConfig(data_parallel=0), cpu) == 1  # not separable
        assert data_parallel_shards(vae, TrainConfig(data_parallel=0), cuda) == 1
        assert data_parallel_shards(vae, TrainConfig(data_parallel=1), cpu) == 1
        assert data_parallel_shards(vae, TrainConfig(data_parallel=100, batch_size=8), cpu) == 8
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match=r"data_parallel = 2: model 'dip_vae_i' is not batch-separable"):
        data_parallel_shards(dip, TrainConfig(data_parallel=2), cpu)
    with pytest.raises(ConfigError, match=r"data_parallel = 2: .*for CPU training"):
        data_parallel_shards(vae, TrainConfig(data_parallel=2), cuda)
    with pytest.raises(ConfigError, match=r"data_parallel = -1: expected an integer >= 0"):
        TrainConfig(data_parallel=-1)


def test_resume_with_another_shard_count_ends_like_the_unsharded_run(tmp_path, toy):
    """Auto (0) resolves to the threads of the machine that resumes; the run's RNG and
    data stream are those of the unsharded run, so it ends where that run ends."""
    class Stop(Exception):
        pass

    def stop_at_7(step, terms):
        if step == 7:
            raise Stop

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # auto -> 2 shards of the batch of 16
        with pytest.raises(Stop):
            train(_cfg(steps=12, batch_size=16, data_parallel=0), tmp_path / "r", data=toy, progress=False,
                  callback=stop_at_7)
        assert torch.get_num_threads() == 2  # restored after an interrupted run too
    finally:
        torch.set_num_threads(before)
    train(_cfg(steps=12, batch_size=16, data_parallel=0), tmp_path / "r", data=toy, progress=False)  # 1 thread
    solo = train(_cfg(steps=12, batch_size=16, data_parallel=1), tmp_path / "solo", data=toy, progress=False)
    resumed, _ = load_run(tmp_path / "r")
    for (name, a), b in zip(solo.state_dict().items(), resumed.state_dict().values()):
        assert (a - b).abs().max() < 1e-5, name


def test_cli_data_parallel(tmp_path):
    from vaebias._internal.io import read_yaml
    from vaebias.cli.main import main

    assert main(["train", "--model", "beta_vae", "--dataset", "toy", "--steps", "3", "--batch-size", "4",
                 "--device", "cpu", "--data-parallel", "2", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert read_yaml(tmp_path / "r" / "config.yaml")["train"]["data_parallel"] == 2
    assert main(["train", "--model", "dip_vae_i", "--dataset", "toy", "--steps", "3", "--batch-size", "4",
                 "--device", "cpu", "--data-parallel", "2", "--no-progress", "--out", str(tmp_path / "d")]) != 0
    assert not (tmp_path / "d").exists()
