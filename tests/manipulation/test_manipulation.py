import numpy as np
import pytest
import torch

from tests.conftest import tiny_train
from vaebias._internal.config import TrainConfig
from vaebias._internal.errors import ConfigError, RunError
from vaebias.data import load_dataset
from vaebias.manipulation.export import export_variants
from vaebias.manipulation.field import (
    ManipulationConfig,
    ManipulationField,
    Manipulator,
    load_field,
    train_manipulation,
)
from vaebias.manipulation.references import select_references
from vaebias.models import build_model
from vaebias.training import train


class _NoStep:
    def step(self):
        pass


def _refs(seed_a=1, seed_b=2):
    torch.manual_seed(seed_a)
    a = build_model("beta_vae", (1, 64, 64), 2, {"beta": 4.0})
    torch.manual_seed(seed_b)
    b = build_model("beta_vae", (1, 64, 64), 2, {"beta": 4.0})
    return a, b


def test_field_is_bounded_and_encodes_categorical():
    field = ManipulationField((3, 6, 40), categorical_factors=(0,), out_channels=1, width=0.25)
    w = torch.tensor([[0, 0, 0], [2, 5, 39], [1, 3, 7]])
    enc = field.encode_factors(w)
    assert enc.shape == (3, 3 + 3)
    assert torch.allclose(enc[1, :3], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(enc[0, :3], torch.tensor([-1.0, -1.0, -1.0]))
    assert enc[2, 3:].tolist() == [0.0, 1.0, 0.0]
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(50)  # saturate: the bound must still hold
        m = field(w)
    assert m.shape == (3, 1, 64, 64) and float(m.abs().max()) <= 1.0


def test_training_step_gradients_have_the_papers_roles(toy):
    ent, dis = _refs()
    cfg = ManipulationConfig(epsilon=0.1, field_width=0.25)
    manip = Manipulator(ent, dis, toy.factor_sizes, (), cfg).train()
    f = toy.sample_factors(8, np.random.default_rng(0))
    batch = {"images": toy.images(f), "factors": torch.as_tensor(f)}
    torch.manual_seed(5)
    manip.training_step(batch, {"field": _NoStep(), "decoders": _NoStep()})
    got_field = [p.grad.clone() for p in manip.field.parameters()]
    got_dec = [p.grad.clone() for p in manip.ent.decoder.parameters()]
    # independent computation with the same sampling noise
    torch.manual_seed(5)
    terms = manip.losses(batch)
    want_field = torch.autograd.grad(terms["l_ent"] - terms["l_dis"], list(manip.field.parameters()),
                                     retain_graph=True)
    want_dec = torch.autograd.grad(terms["l_ent"], list(manip.ent.decoder.parameters()))
    for g, w in zip(got_field, want_field):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    for g, w in zip(got_dec, want_dec):  # L_dis does not touch the entangled decoder
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    # frozen encoders get no gradient
    assert all(p.grad is None for p in manip.ent.encoder.parameters())
    assert all(p.grad is None for p in manip.dis.encoder.parameters())


def test_manipulation_run_encoders_frozen_and_objective_falls(tmp_path):
    from vaebias.data.toy import ToySquares

    class CatToy(ToySquares):  # posX declared categorical: m_psi gets its one-hot code
        categorical_factors = (0,)

    toy = CatToy(num_positions=8)
    runs = {}
    for s in (1, 2):
        cfg = {"model": "beta_vae", "dataset": {"name": "toy", "num_positions": 8},
               "model_params": {"beta": 4.0}, "train": tiny_train(steps=15, seed=s)}
        train(cfg, tmp_path / f"ref{s}", data=toy, progress=False)
        runs[s] = tmp_path / f"ref{s}"
    # decoders nearly fixed here, so the change of L_ent - L_dis is m_psi's doing
    cfg = ManipulationConfig(epsilon=0.1, field_width=0.25, decoder_lr=1e-12)
    tcfg = TrainConfig(steps=40, batch_size=16, lr=1e-3, device="cpu", log_every=10, checkpoint_every=20)
    manip = train_manipulation(toy, runs[1], runs[2], tmp_path / "man", cfg, tcfg, progress=False)
    from vaebias.training import load_run

    ref_ent, _ = load_run(runs[1])
    for a, b in zip(ref_ent.encoder.parameters(), manip.ent.encoder.parameters()):
        assert torch.equal(a, b)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "man" / "train_log.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0]  # m_psi lowers L_ent - L_dis
    field, loaded_cfg = load_field(tmp_path / "man")
    assert loaded_cfg == cfg
    w = torch.as_tensor(toy.factors_of(np.arange(5)))
    with torch.no_grad():
        assert torch.allclose(field(w), manip.field(w))
    paths = export_variants(toy, tmp_path / "man", tmp_path / "data", device="cpu", progress=False)
    assert paths["modified"].name == "toy_modified_eps0.1.h5"
    assert paths["noise"].name == "toy_noise_eps0.1_seed0.h5"
    idx = np.arange(len(toy))
    x = toy.images(index=idx)
    for p in paths.values():
        ds = load_dataset(str(p))
        xa = ds.images(index=idx)
        assert float((xa - x).abs().max()) <= 0.1 + 1e-6
        assert np.array_equal(ds.stored_factors(), toy.factors_of(idx))


def test_select_references():
    sel = select_references({"a": 0.3, "b": 0.05, "c": 0.6})
    assert sel["entangled"] == "b" and sel["disentangled"] == "c"
    with pytest.raises(RunError, match="at least 2"):
        select_references({"a": 0.1})


@pytest.mark.parametrize("kw,match", [({"epsilon": 0.0}, "epsilon = 0.0"), ({"epsilon": -1.0}, "epsilon"),
                                      ({"loss": "l1"}, "loss"), ({"field_width": 0}, "field_width"),
                                      ({"clip_in_objective": False}, "clip_in_objective = False: expected true "
                                                                     "with loss 'bernoulli'")])
def test_bad_manipulation_config(kw, match):
    from vaebias._internal.config import from_dict

    with pytest.raises(ConfigError, match=match):
        from_dict(ManipulationConfig, kw)


def test_unclipped_objective_reaches_the_field_where_clipping_cuts_it(toy):
    """On a black pixel (x = 0) where m_psi < 0, the clipped x' is 0 whatever m_psi is:
    no gradient reaches m_psi there. The unclipped objective sees x + eps*m < 0 and
    passes d(L2)/dx' = 2 (x' - x_tilde) on, times eps."""
    ent, dis = _refs()
    f = toy.sample_factors(4, np.random.default_rng(1))
    x = toy.images(f)
    w = torch.as_tensor(f)
    m0 = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1  # both signs
    grads = {}
    for clip_obj in (True, False):
        cfg = ManipulationConfig(epsilon=0.1, field_width=0.25, loss="l2", clip_in_objective=clip_obj)
        manip = Manipulator(ent, dis, toy.factor_sizes, (), cfg)
        m = m0.clone().requires_grad_()
        manip.field.forward = lambda _w, _m=m: _m  # a given m_psi(w)
        x_alt = manip.altered(x, w)
        ((x_alt - 0.5) ** 2).flatten(1).sum(1).mean().backward()
        grads[clip_obj] = m.grad
        if not clip_obj:
            assert float(x_alt.detach().min()) < 0  # unclipped: below 0 where x = 0 and m < 0
            torch.testing.assert_close(m.grad, 2 * (x + 0.1 * m0 - 0.5) * 0.1 / len(x))
    m = m0
    cut = (x == 0) & (m < 0)
    assert int(cut.sum()) > 100
    assert float(grads[True][cut].abs().max()) == 0.0
    assert float(grads[False][cut].abs().min()) > 0.0


def test_old_manipulation_config_without_clip_in_objective_resumes(tmp_path):
    """A config.yaml written before ManipulationConfig had clip_in_objective resumes (the
    field takes its default), while a different value is refused."""
    from vaebias._internal.config import to_dict
    from vaebias._internal.errors import RunError
    from vaebias._internal.io import write_yaml
    from vaebias.training import open_run_dir

    new = {"stage": "manipulation", "manipulation": to_dict(ManipulationConfig()), "train": to_dict(TrainConfig())}
    old = {**new, "manipulation": {k: v for k, v in new["manipulation"].items() if k != "clip_in_objective"}}
    write_yaml(tmp_path / "config.yaml", old)
    (tmp_path / "train_log.csv").write_text("step\n1\n")  # it trained: its config is kept, not replaced
    classes = {"manipulation": ManipulationConfig}
    assert open_run_dir(tmp_path, new, classes) == tmp_path
    other = {**new, "manipulation": to_dict(ManipulationConfig(loss="l2", clip_in_objective=False))}
    with pytest.raises(RunError, match="different configuration"):
        open_run_dir(tmp_path, other, classes)
    with pytest.raises(RunError, match="different configuration"):  # without the class, the old file differs
        open_run_dir(tmp_path, new)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_m_psi_interrupted_inside_a_step_resumes_bit_identical(tmp_path, toy, sig, monkeypatch):
    """Ctrl-C (or kill) inside m_psi's training step: the step finishes, is checkpointed, and
    the resumed m_psi ends with the uninterrupted one's weights and loss log."""
    import csv
    import os
    import signal

    from vaebias.manipulation.field import Manipulator

    for s in (1, 2):
        cfg = {"model": "beta_vae", "dataset": {"name": "toy", "num_positions": 8},
               "model_params": {"beta": 4.0}, "train": tiny_train(steps=6, seed=s)}
        train(cfg, tmp_path / f"ref{s}", data=toy, progress=False)
    cfg = ManipulationConfig(epsilon=0.1, field_width=0.25)
    tcfg = TrainConfig(steps=9, batch_size=16, lr=1e-3, device="cpu", log_every=3, checkpoint_every=4)
    full = train_manipulation(toy, tmp_path / "ref1", tmp_path / "ref2", tmp_path / "full", cfg, tcfg,
                              progress=False)
    calls, original = {"n": 0}, Manipulator.training_step

    def training_step(self, batch, optimizers):
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), getattr(signal, sig))
        return original(self, batch, optimizers)

    monkeypatch.setattr(Manipulator, "training_step", training_step)
    with pytest.raises(KeyboardInterrupt):
        train_manipulation(toy, tmp_path / "ref1", tmp_path / "ref2", tmp_path / "cut", cfg, tcfg, progress=False)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 6
    monkeypatch.undo()
    resumed = train_manipulation(toy, tmp_path / "ref1", tmp_path / "ref2", tmp_path / "cut", cfg, tcfg,
                                 progress=False)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)

    def losses(d):
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")}
                for r in csv.DictReader(open(d / "train_log.csv"))]

    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
