"""The weakly supervised GAN (Shu et al. 2020) and its match-pair sampler."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import tiny_train
from vaebias.data.base import GroundTruthData
from vaebias.data.match_pairs import MatchPairSampler
from vaebias.data.toy import ToySquares
from vaebias.models import build_model, model_config
from vaebias.models.weak_gan import ProjectionDiscriminator, WeakGAN
from vaebias.training import load_run, train

SMALL = {"disc_width": 0.25, "gen_width": 0.25, "enc_width": 0.25}


class _Grid(GroundTruthData):
    """Four factors (one of size 1); each 1x2x2 image holds its flat index."""

    name = "grid"
    factor_names = ("a", "b", "c", "const")
    factor_sizes = (3, 4, 5, 1)
    observation_shape = (1, 2, 2)

    def _images_at(self, factors, device):
        idx = torch.as_tensor(factors @ self.factor_bases, device=device, dtype=torch.float32)
        return idx[:, None, None, None].expand(-1, 1, 2, 2).clone()


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these small nets gain nothing from more, and on a shared
    machine extra threads can slow them down many times over."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _small(pairing="share", num_factors=2, **kw):
    return build_model("weak_gan", (1, 64, 64), num_factors, {**SMALL, "pairing": pairing, **kw})


# --------------------------------------------------------------------------- sampler
def test_share_pairs_share_the_labelled_factor_and_others_vary():
    data = _Grid()
    n = 6000
    b = MatchPairSampler(data, mode="share").sample(n, np.random.default_rng(0), "cpu")
    f1, f2, y = b["factors"].numpy(), b["factors2"].numpy(), b["label"].numpy()
    assert b["label"].dtype == torch.int64 and y.shape == (n,)
    rows = np.arange(n)
    assert (f1[rows, y] == f2[rows, y]).all()
    # every factor (even the constant one) is a label, uniformly
    assert np.abs(np.bincount(y, minlength=4) / n - 0.25).max() < 0.03
    # the other factors are independent draws: equal only by chance, with prob. 1/size
    for k, size in enumerate(data.factor_sizes[:3]):
        other = y != k
        same = (f1[other, k] == f2[other, k]).mean()
        assert abs(same - 1 / size) < 0.04, (k, same)
    # images are those of the factors
    assert torch.equal(b["images"], data.images(f1)) and torch.equal(b["images2"], data.images(f2))


def test_change_pairs_differ_in_exactly_the_labelled_factor():
    data = _Grid()
    n = 6000
    b = MatchPairSampler(data, mode="change").sample(n, np.random.default_rng(1), "cpu")
    f1, f2, y = b["factors"].numpy(), b["factors2"].numpy(), b["label"].numpy()
    differs = f1 != f2
    assert (differs.sum(1) == 1).all()
    assert (differs.argmax(1) == y).all()
    # the size-1 factor cannot change: labels uniform over the other three
    counts = np.bincount(y, minlength=4)
    assert counts[3] == 0
    assert np.abs(counts[:3] / n - 1 / 3).max() < 0.03
    # the new value is uniform over the size - 1 other values
    rows = np.flatnonzero(y == 2)
    step = (f2[rows, 2] - f1[rows, 2]) % 5
    assert set(step.tolist()) == {1, 2, 3, 4}
    assert torch.equal(b["images2"], data.images(f2))


def test_sampler_is_deterministic_for_a_seed():
    data = _Grid()
    for mode in ("share", "change"):
        s = MatchPairSampler(data, mode=mode)
        a, b = s.sample(50, np.random.default_rng(7), "cpu"), s.sample(50, np.random.default_rng(7), "cpu")
        c = s.sample(50, np.random.default_rng(8), "cpu")
        assert a.keys() == {"images", "images2", "factors", "factors2", "label"}
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a["factors2"], c["factors2"])


def test_sampler_rejects_bad_arguments():
    data = _Grid()
    with pytest.raises(ValueError, match="mode"):
        MatchPairSampler(data, mode="rank")
    with pytest.raises(ValueError, match="single value"):
        MatchPairSampler(data, mode="change", factor_indices=[0, 3])
    with pytest.raises(ValueError, match="factor_indices"):
        MatchPairSampler(data, factor_indices=[0, 4])
    # a restricted label set is honoured
    y = MatchPairSampler(data, factor_indices=[1, 2]).sample(500, np.random.default_rng(0), "cpu")["label"]
    assert set(y.tolist()) == {1, 2}


# ----------------------------------------------------------------- configuration
def test_defaults_are_full_sharing_with_shu_et_al_settings():
    for dataset in ("dsprites", "shapes3d", None):
        cfg = model_config("weak_gan", dataset=dataset)
        assert cfg.pairing == "share"
        assert cfg.lr == 1e-3 and list(cfg.adam_betas) == [0.5, 0.999]
    model = build_model("weak_gan", (1, 64, 64), 5, SMALL)
    opts = model.configure_optimizers(None)
    assert set(opts) == {"dis", "gen_enc"}
    for opt in opts.values():
        assert opt.defaults["lr"] == 1e-3 and opt.defaults["betas"] == (0.5, 0.999)
    d_params = {id(p) for g in opts["dis"].param_groups for p in g["params"]}
    ge_params = {id(p) for g in opts["gen_enc"].param_groups for p in g["params"]}
    assert d_params == {id(p) for p in model.discriminator.parameters()}
    assert ge_params == {id(p) for p in [*model.generator.parameters(), *model.encoder.parameters()]}
    assert isinstance(model.batch_sampler(ToySquares(4)), MatchPairSampler)
    assert model.batch_sampler(ToySquares(4)).mode == "share"
    assert _small("change").batch_sampler(ToySquares(4)).mode == "change"
    assert not WeakGAN.stochastic


def test_model_shapes():
    model = _small(num_factors=3)
    z = torch.randn(4, 3)
    x = model.generate(z)
    assert x.shape == (4, 1, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert model.encode(x).shape == (4, 3)
    logits = model.discriminator(x, x, torch.tensor([0, 1, 2, 0]))
    assert logits.shape == (4,)


# ------------------------------------------------------------ generated latents
@pytest.mark.parametrize("pairing", ["share", "change"])
def test_generated_latent_pairs_follow_the_pairing(pairing):
    d, n = 4, 4000
    model = _small(pairing, num_factors=d)
    y = torch.randint(0, d, (n,))
    z1, z2 = model.sample_latent_pairs(y)
    rows = torch.arange(n)
    same = z1 == z2
    if pairing == "share":
        assert same[rows, y].all()
        assert same.sum(1).eq(1).all()  # every other coordinate drawn afresh
    else:
        assert not same[rows, y].any()
        assert same.sum(1).eq(d - 1).all()  # only the labelled coordinate changes
    for z in (z1, z2):
        assert z.mean().abs() < 0.05 and (z.std() - 1).abs() < 0.05


# ---------------------------------------------------------- gradient isolation
def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_discriminator_step_leaves_generator_and_encoder_parameters_alone():
    model = _small()
    opts = model.configure_optimizers(None)
    batch = model.batch_sampler(ToySquares(8)).sample(8, np.random.default_rng(0), "cpu")
    g, e, d = _params(model.generator), _params(model.encoder), _params(model.discriminator)
    model.discriminator_step(batch, opts["dis"])
    assert _equal(g, _params(model.generator))
    assert _equal(e, _params(model.encoder))
    assert not _equal(d, _params(model.discriminator))
    assert all(p.grad is None for p in [*model.generator.parameters(), *model.encoder.parameters()])


def test_generator_step_leaves_the_discriminator_untouched():
    model = _small()
    opts = model.configure_optimizers(None)
    batch = model.batch_sampler(ToySquares(8)).sample(8, np.random.default_rng(0), "cpu")
    model.discriminator_step(batch, opts["dis"])
    model.discriminator.zero_grad(set_to_none=True)
    d_state = _state(model.discriminator)  # parameters and spectral-norm buffers
    g, e = _params(model.generator), _params(model.encoder)
    model.generator_encoder_step(batch, opts["gen_enc"])
    assert _equal(d_state, _state(model.discriminator))
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())
    assert model.discriminator.training
    assert not _equal(g, _params(model.generator))
    assert not _equal(e, _params(model.encoder))


def test_encoder_loss_does_not_train_the_generator():
    model = _small()
    batch = model.batch_sampler(ToySquares(8)).sample(8, np.random.default_rng(0), "cpu")
    terms = model._generator_encoder_loss(batch)
    terms["enc"].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())


# ------------------------------------------------------- projection discriminator
def test_projection_discriminator_matches_a_hand_computation():
    # body: the two pixels of each image; neck: identity, so h = [x1 pixels, x2 pixels]
    disc = ProjectionDiscriminator(nn.Flatten(), nn.Identity(), feature_dim=4, num_labels=2)
    with torch.no_grad():
        disc.unconditional.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
        disc.embedding.weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    x1 = torch.tensor([[[[1.0, 2.0]]], [[[1.0, 2.0]]]])
    x2 = torch.tensor([[[[3.0, 4.0]]], [[[3.0, 4.0]]]])
    out = disc(x1, x2, torch.tensor([0, 1]))
    # h = (1, 2, 3, 4); w.h = 1 - 4 + 1.5 + 12 = 10.5
    # e_0 = (3, 0, 4, 0) / sqrt(25 + 1e-3): e_0.h = (3 + 12) / sqrt(25.001)
    # e_1 = (0, 1, 0, 0) / sqrt(1 + 1e-3):  e_1.h = 2 / sqrt(1.001)
    expected = torch.tensor([10.5 + 15 / math.sqrt(25.001), 10.5 + 2 / math.sqrt(1.001)])
    assert torch.allclose(out, expected, atol=1e-5), (out, expected)


def test_model_discriminator_is_unconditional_plus_projection():
    model = _small(num_factors=3).eval()
    disc = model.discriminator
    x1, x2 = torch.rand(5, 1, 64, 64), torch.rand(5, 1, 64, 64)
    y = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        h = disc.pair_features(x1, x2)
        w = disc.unconditional.weight  # spectrally normalised
        v = disc.embedding.weight[y]
        e = v / torch.sqrt((v ** 2).sum(1, keepdim=True) + 1e-3)
        expected = h @ w[0] + (e * h).sum(1)
        assert torch.allclose(disc(x1, x2, y), expected, atol=1e-5)
        assert disc.unconditional.bias is None
        # the label changes the output
        assert not torch.allclose(disc(x1, x2, y), disc(x1, x2, (y + 1) % 3))


# --------------------------------------------------------------- spectral norm
def _top_singular_values(module):
    out = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            out.append(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item())
    return out


def test_spectral_norm_is_applied_on_the_encoder_and_discriminator():
    model = _small()
    opts = model.configure_optimizers(None)
    sampler = model.batch_sampler(ToySquares(8))
    rng = np.random.default_rng(0)
    for _ in range(3):  # move the weights away from their initialisation
        model.training_step(sampler.sample(8, rng, "cpu"), opts)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        for _ in range(60):  # one power iteration per training-mode forward
            model.encoder(x)
            model.discriminator(x, x, torch.zeros(1, dtype=torch.long))
    model.eval()
    enc = _top_singular_values(model.encoder)
    assert len(enc) == 6  # 4 convs, 2 dense
    assert all(abs(s - 1) < 1e-2 for s in enc), enc
    disc_layers = [model.discriminator.body, model.discriminator.neck, model.discriminator.unconditional]
    dis = [s for m in disc_layers for s in _top_singular_values(m)]
    assert len(dis) == 8 and all(abs(s - 1) < 1e-2 for s in dis), dis
    # the raw weights are not normalised: the check above is not vacuous
    raw = [m.parametrizations.weight.original for m in model.encoder.modules()
           if isinstance(m, (nn.Conv2d, nn.Linear))]
    raw_sv = [torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1), ord=2).item() for w in raw]
    assert any(abs(s - 1) > 0.1 for s in raw_sv), raw_sv


def test_encode_does_not_move_training_state():
    model = _small().train()
    before = _state(model)
    model.encode(torch.rand(4, 1, 64, 64))
    assert _equal(before, _state(model))
    assert model.encoder.training


# ----------------------------------------------------------------------- resume
def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Crash(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path):
    data = ToySquares(num_positions=8)
    cfg = {"model": "weak_gan", "dataset": {"name": "toy", "num_positions": 8},
           "model_params": dict(SMALL), "train": tiny_train()}
    full = train(cfg, tmp_path / "full", data=data, progress=False)

    def crash(step, terms):
        if step == 8:  # after the checkpoint at step 5, before the one at 10
            raise _Crash

    with pytest.raises(_Crash):
        train(cfg, tmp_path / "cut", data=data, progress=False, callback=crash)
    resumed = train(cfg, tmp_path / "cut", data=data, progress=False)
    assert _same_weights(full, resumed)
    loaded, record = load_run(tmp_path / "cut")
    assert record["model_params"]["pairing"] == "share" and _same_weights(full, loaded)
    other = train({**cfg, "train": tiny_train(seed=1)}, tmp_path / "other", data=data, progress=False)
    assert not _same_weights(full, other)


# --------------------------------------------------------------------- learning
# Squares of side 20 (not the toy's default 12): denser images give the GAN a much
# stronger signal, so that a few hundred CPU steps are enough to see it learn.
LEARN = {"disc_width": 1.0, "gen_width": 1.0, "enc_width": 0.5}


def _learn(tmp_path, steps, batch_size, seed=0):
    from vaebias.metrics import evaluate

    data = ToySquares(num_positions=16, side=20)
    cfg = {"model": "weak_gan", "dataset": {"name": "toy"}, "model_params": LEARN,
           "train": tiny_train(steps=steps, batch_size=batch_size, seed=seed,
                               checkpoint_every=steps, log_every=50)}
    torch.manual_seed(seed)  # as train() does: the very initialisation of the trained run
    untrained = build_model("weak_gan", data.observation_shape, data.num_factors, LEARN)

    def mig(model):
        return evaluate(data, represent=model.encode, metrics=("mig",), num_points=2000)["mig"]["mig"]

    enc = []
    model = train(cfg, tmp_path / "run", data=data, progress=False,
                  callback=lambda step, terms: enc.append(terms["enc"]))
    return mig(untrained), mig(model), np.asarray(enc)


def test_learns_on_toy_squares(tmp_path):
    # ~18 s on one core. Seen here (torch 2.13 CPU): MIG 0.03 -> 0.11, NLL 2.70 -> 1.56;
    # seeds 1-5 reach MIG 0.14-0.45 after these 300 steps.
    mig0, mig1, enc = _learn(tmp_path, steps=300, batch_size=8)
    # the encoder recovers z on generated images: Gaussian NLL (nats, 2 latents) falls
    # from about 3 (an uninformed encoder) by a wide margin
    first, last = enc[:20].mean(), enc[-50:].mean()
    assert first > 2.3 and last < first - 0.8, (first, last)
    # and its mean on real images is clearly more disentangled than at initialisation
    assert mig1 > max(mig0 + 0.05, 2 * mig0), (mig0, mig1)


@pytest.mark.slow
def test_learns_on_toy_squares_longer(tmp_path):
    # ~2 min on one core. Seen here: MIG 0.30-0.34 (from 0.02-0.07) over seeds 0-2.
    mig0, mig1, enc = _learn(tmp_path, steps=1200, batch_size=16)
    assert enc[-100:].mean() < 1.0, enc[-100:].mean()
    assert mig1 > 0.2 and mig1 > mig0 + 0.15, (mig0, mig1)
