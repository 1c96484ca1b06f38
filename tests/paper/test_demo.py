"""The minutes-long demonstration's parts: the blobs dataset, the standard networks at
32x32, the rotated entangled reference, and the profile options the demo uses.

What is pinned: blob pixels equal the Gaussian formula at hand-picked points; the
networks keep their layers at 32x32 and refuse sizes they cannot take; the DCT matrix
is orthonormal and is the 45° rotation for two units; the rotated reference's codes are
Q times the source's, its posterior variances (so its KL) and its reconstructions
from the posterior mean equal the source's, and its MIG is low where the source's is high (the issue's test); the demo profile's
options are validated; results folders written before the new profile fields resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vaebias._internal.errors import ConfigError
from vaebias.data import load_dataset
from vaebias.data.base import DataError
from vaebias.data.blobs import Blobs
from vaebias.experiments.scoring import representation
from vaebias.manipulation.references import dct_rotation, rotate_reference
from vaebias.metrics import evaluate
from vaebias.models.networks import ConvDecoder, ConvEncoder, image_size_of
from vaebias.paper.reproduce import Profile, load_profile
from vaebias.training import load_run, train


def test_blob_pixels_by_hand():
    # 22 positions over [5, 26]: integer centres 5, 6, ..., 26
    b = Blobs(num_positions=22, num_scales=1, canvas=32, sigma=2.0, aspect=2.0, margin=5.0, y_extent=1.0,
              quantize=False)
    assert b.factor_sizes == (22, 22) and b.factor_names == ("posX", "posY")
    assert b.observation_shape == (1, 32, 32) and len(b) == 484
    img = b.images(np.array([[3, 10]]))[0, 0]  # centre column 8, row 15
    assert img.shape == (32, 32) and img.dtype == torch.float32
    assert img[15, 8] == pytest.approx(1.0)
    assert img[15, 10] == pytest.approx(math.exp(-4 / 8), rel=1e-6)  # 2 px along x, sigma_x 2
    assert img[19, 8] == pytest.approx(math.exp(-16 / 32), rel=1e-6)  # 4 px along y, sigma_y 4
    assert img[17, 11] == pytest.approx(math.exp(-9 / 8 - 4 / 32), rel=1e-6)
    assert float(img.max()) == pytest.approx(1.0) and float(img.min()) >= 0
    # the default: the same pixels rounded to the nearest 1/255 (what a uint8 export stores)
    q = Blobs(num_positions=22, num_scales=1, canvas=32, sigma=2.0, aspect=2.0, margin=5.0, y_extent=1.0).images(
        np.array([[3, 10]]))[0, 0]
    assert q[15, 10] == pytest.approx(round(255 * math.exp(-4 / 8)) / 255, abs=1e-7)  # 155/255
    assert torch.equal(q, torch.round(img * 255) / 255)
    assert float(q[15, 30]) == 0.0 < float(img[15, 30])  # a faint tail (exp(-60.5)) becomes exactly 0


def test_blob_options_and_errors():
    d = Blobs()  # the demo's default: three factors, 4 sizes of 3-6 px
    assert d.factor_names == ("posX", "posY", "scale") and d.factor_sizes == (16, 16, 4)
    assert np.allclose(d.sigmas, [3, 4, 5, 6])
    s = Blobs(num_positions=4, num_scales=3, sigma=1.0, sigma_max=3.0, aspect=1.0)
    assert s.factor_names == ("posX", "posY", "scale") and s.factor_sizes == (4, 4, 3)
    wide, narrow = s.images(np.array([[1, 1, 2], [1, 1, 0]]))
    assert wide.sum() > 8 * narrow.sum()  # area grows with sigma^2: 9x
    y = Blobs(num_positions=3, y_extent=0.5, margin=5.0)
    assert np.allclose(y.centres, [5, 15.5, 26]) and np.allclose(y.centres_y, [10.25, 15.5, 20.75])
    assert isinstance(load_dataset("blobs", num_positions=5), Blobs)
    for kw, match in [({"canvas": 40}, "canvas = 40"), ({"num_positions": 1}, "num_positions = 1"),
                      ({"sigma": 0}, "sigma = 0"), ({"num_scales": 2, "sigma_max": 1.0}, "sigma_max = 1.0"),
                      ({"aspect": -1}, "aspect = -1"), ({"y_extent": 0}, "y_extent = 0")]:
        with pytest.raises(DataError, match=match):
            Blobs(**kw)


def test_networks_at_32_and_bad_sizes():
    enc, dec = ConvEncoder(1, 3, image_size=32), ConvDecoder(3, 1, image_size=32)
    mean, logvar = enc(torch.zeros(5, 1, 32, 32))
    assert mean.shape == logvar.shape == (5, 3)
    assert dec(mean).shape == (5, 1, 32, 32)
    assert len(enc.features) == len(ConvEncoder(1, 3).features)  # the same layers as at 64x64
    assert enc.features[-2].in_features == 64 * 4  # a 2x2 map of 64 channels
    assert image_size_of((3, 64, 64)) == 64
    for shape in [(1, 32, 64), (1, 40, 40), (1, 8, 8)]:
        with pytest.raises(ValueError, match="multiple of 16"):
            image_size_of(shape)


def test_dct_rotation():
    for k in (1, 2, 3, 5):
        q = dct_rotation(k)
        torch.testing.assert_close(q @ q.T, torch.eye(k, dtype=torch.float64))
    q2 = dct_rotation(2)
    torch.testing.assert_close(q2.abs(), torch.full((2, 2), 2 ** -0.5, dtype=torch.float64))
    assert torch.all(dct_rotation(4).abs() > 0.2)  # every axis mixes with every other


@pytest.fixture(scope="module")
def disentangled_blob_vae(tmp_path_factory):
    """A β-VAE that disentangles the two blob factors (MIG about 0.9; ~20 s, one thread)."""
    data = Blobs(num_scales=1, aspect=1.0, y_extent=0.4, quantize=False)
    rd = tmp_path_factory.mktemp("blob") / "ref"
    train({"model": "beta_vae", "dataset": {"name": "blobs", "num_scales": 1, "aspect": 1.0, "y_extent": 0.4,
                                            "quantize": False},
           "model_params": {"beta": 4.0},
           "train": {"steps": 1500, "batch_size": 32, "lr": 5e-4, "seed": 1002, "device": "cpu",
                     "precision": "bf16", "channels_last": True, "fused_adam": True, "checkpoint_every": 1500}},
          rd, data=data, progress=False)
    return data, rd


def _mig(model, data):
    return evaluate(data, representation(model), ["mig"], num_points=3000, seed=0)["mig"]["mig"]


def test_rotated_reference_rotates(disentangled_blob_vae, tmp_path):
    data, src = disentangled_blob_vae
    res = rotate_reference(src, tmp_path / "rot", data)
    assert res["active"] == [0, 1]
    source, _ = load_run(src)
    rotated, record = load_run(tmp_path / "rot")
    assert record["rotated_from"]["active_units"] == [0, 1] and record["model"] == "beta_vae"
    x = data.images(data.sample_factors(200, np.random.default_rng(3)))
    q = torch.tensor(res["rotation"], dtype=torch.float32)
    with torch.no_grad():
        mu, mu_rot = source.encode(x), rotated.encode(x)
        torch.testing.assert_close(mu_rot, mu @ q.T, rtol=1e-4, atol=1e-4)
        # each rotated unit keeps its posterior variance, so the KL term is the source's
        torch.testing.assert_close(rotated.posterior(x)[1], source.posterior(x)[1])
        # reconstruction loss from the posterior mean: the same
        from vaebias.models.base import bernoulli_reconstruction

        r0 = bernoulli_reconstruction(source.decode(mu), x)
        r1 = bernoulli_reconstruction(rotated.decode(mu_rot), x)
    assert float(r1) == pytest.approx(float(r0), rel=1e-4)
    mig0, mig1 = _mig(source, data), _mig(rotated, data)
    assert mig0 > 0.6, "the fixture should disentangle"
    assert mig1 < 0.25 and mig1 < mig0 / 3, (mig0, mig1)
    # rerunning keeps it; a different source is refused
    assert rotate_reference(src, tmp_path / "rot", data)["rotation"] == res["rotation"]


def test_rotation_needs_a_vae_with_two_active_units(tmp_path, toy):
    train({"model": "ae", "dataset": {"name": "toy", "num_positions": 8}, "model_params": {},
           "train": {"steps": 2, "batch_size": 4, "device": "cpu"}}, tmp_path / "ae", data=toy, progress=False)
    from vaebias._internal.errors import RunError

    with pytest.raises(RunError, match="needs a VAE"):
        rotate_reference(tmp_path / "ae", tmp_path / "r", toy)
    train({"model": "beta_vae", "dataset": {"name": "toy", "num_positions": 8}, "model_params": {"beta": 50.0},
           "train": {"steps": 2, "batch_size": 4, "device": "cpu"}}, tmp_path / "vae", data=toy, progress=False)
    with pytest.raises(RunError, match=r"has [01] active unit"):
        rotate_reference(tmp_path / "vae", tmp_path / "r", toy, threshold=1e-6)
    assert not (tmp_path / "r").exists()


def test_demo_profile_and_new_profile_options():
    demo = load_profile("demo")
    assert demo.entangled_reference == "rotated" and demo.models == ("ae", "beta_vae") and len(demo.seeds) >= 5
    assert demo.train_settings["precision"] == "bf16"
    with pytest.raises(ConfigError, match="entangled_reference = 'lowest'"):
        Profile(name="x", entangled_reference="lowest")
    with pytest.raises(ConfigError, match=r"train_settings.steps = 5: expected one of"):
        Profile(name="x", train_settings={"steps": 5})
    with pytest.raises(ConfigError, match="precision = 'fp8'"):
        Profile(name="x", train_settings={"precision": "fp8"})
    with pytest.raises(ConfigError, match="lr = 0"):
        Profile(name="x", lr=0)
    with pytest.raises(ConfigError, match="manipulation.field_width = 2: expected one of clip, clip_in_objective"):
        Profile(name="x", manipulation={"field_width": 2})
    with pytest.raises(ConfigError, match="clip_in_objective = False: expected true with loss 'bernoulli'"):
        Profile(name="x", manipulation={"clip_in_objective": False})
    assert demo.manipulation == {"loss": "l2", "clip_in_objective": False}


def test_reproduce_with_a_rotated_reference_and_an_old_profile_file(tmp_path):
    from tests.paper.test_pipeline import TINY
    from vaebias._internal.io import read_json
    from vaebias.cli.main import main

    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(TINY, models=["beta_vae"], seeds=[0], entangled_reference="rotated",
                                        model_params={"beta_vae": {"beta": 0.05}}, lr=2e-3, reference_steps=150,
                                        batch_size=16, checkpoint_every=150,
                                        manipulation={"loss": "l2", "clip_in_objective": False, "epsilon": 0.05})))
    out = tmp_path / "out"
    # blobs: a weakly regularised VAE has both units active after 150 steps
    assert main(["reproduce", "--dataset", "blobs", "--profile", str(prof), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    sel = read_json(out / "manipulation" / "selection.json")
    assert sel["entangled_reference"] == "rotated" and sel["entangled"].endswith(
        "rotated_" + sel["disentangled"].split("/")[-1])
    assert (out / "references" / f"rotated_{sel['disentangled'].split('/')[-1]}" / "metrics.json").exists()
    mcfg = yaml.safe_load((out / "manipulation" / "config.yaml").read_text())["manipulation"]
    assert (mcfg["loss"], mcfg["clip_in_objective"], mcfg["epsilon"], mcfg["clip"]) == ("l2", False, 0.05, True)
    # a results folder written before train_settings existed (at its default here) resumes ...
    spec = yaml.safe_load((out / "profile.yaml").read_text())
    del spec["profile"]["train_settings"]
    (out / "profile.yaml").write_text(yaml.safe_dump(spec))
    args = ["reproduce", "--dataset", "blobs", "--profile", str(prof), "--out", str(out), "--device", "cpu",
            "--no-progress"]
    assert main(args) == 0
    # ... but a missing field whose default differs from this profile's value is another profile
    del spec["profile"]["lr"]  # default 1e-4, this profile 2e-3
    (out / "profile.yaml").write_text(yaml.safe_dump(spec))
    assert main(args) == 2


def test_reproduce_refuses_a_model_that_cannot_take_the_images_before_writing(tmp_path, capsys):
    from vaebias.cli.main import main

    out = tmp_path / "q"
    assert main(["reproduce", "--dataset", "blobs", "--profile", "quick", "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 2
    assert "model 'weak_gan' cannot train on dataset 'blobs' (1, 32, 32)" in capsys.readouterr().err
    assert not any(out.iterdir()) if out.exists() else True  # nothing written


def test_reproduce_with_dataset_options(tmp_path, capsys):
    """`--dataset-option` reaches every stage (references, table runs, Fig. 4) and is recorded;
    an unknown option is refused before anything is written."""
    from tests.paper.test_pipeline import TINY
    from vaebias._internal.io import read_yaml
    from vaebias.cli.main import main

    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(TINY, models=["ae"], seeds=[0], manipulation={"noise": "sign"})))
    out = tmp_path / "out"
    args = ["reproduce", "--dataset", "blobs", "--profile", str(prof), "--out", str(out), "--device", "cpu",
            "--no-progress", "--dataset-option", "num_scales=2", "--dataset-option", "num_positions=4"]
    assert main(args) == 0
    assert read_yaml(out / "profile.yaml")["dataset_options"] == {"num_scales": 2, "num_positions": 4}
    for run in [out / "references" / "beta_vae_seed1000", out / "runs" / "original" / "ae_seed0"]:
        rec = read_yaml(run / "config.yaml")
        assert rec["dataset"] == {"name": "blobs", "num_scales": 2, "num_positions": 4}
        assert rec["dataset_info"]["factor_sizes"] == [4, 4, 2]
    assert (out / "fig4_blobs.png").exists()
    # the sign-noise control: its own file name, values x ± eps (clipped), and its label in the table
    noise = load_dataset(str(out / "datasets" / "blobs_signnoise_eps0.1_seed0.h5"))
    f = noise.sample_factors(20, np.random.default_rng(0))
    x = load_dataset("blobs", num_scales=2, num_positions=4).images(f)
    d = (noise.images(f) - x).abs()
    inside = (x > 0.1 + 1e-6) & (x < 0.9 - 1e-6)  # away from the clip at 0 and 1
    assert int(inside.sum()) > 100 and bool(((d - 0.1).abs() < 0.6 / 255)[inside].all())  # ±0.1 on the 1/255 grid
    assert "| model | blobs orig. | blobs mod. | blobs sign noise |" in (out / "table.md").read_text()
    # a rerun without the options is another experiment
    assert main(args[:-4]) == 2
    assert "holds results of a different profile or dataset" in capsys.readouterr().err
    bad = tmp_path / "bad"
    assert main(["reproduce", "--dataset", "blobs", "--profile", str(prof), "--out", str(bad), "--device", "cpu",
                 "--no-progress", "--dataset-option", "sigmas=3"]) == 2
    assert "unknown option(s) sigmas for dataset 'blobs'; allowed: num_positions" in capsys.readouterr().err
    assert not bad.exists() or not any(bad.iterdir())
    with pytest.raises(ConfigError, match="unknown option.* in_memory for dataset 'dsprites'; it takes none"):
        load_dataset("dsprites", in_memory=True)


def test_reproduce_profile_options(tmp_path, capsys):
    from tests.paper.test_pipeline import TINY
    from vaebias._internal.io import read_yaml
    from vaebias.cli.main import main

    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(TINY, models=["ae"])))
    base = ["reproduce", "--dataset", "blobs", "--profile", str(prof), "--device", "cpu", "--no-progress",
            "--dataset-option", "num_positions=4"]
    assert main(base + ["--out", str(tmp_path / "a"), "--profile-option", "seeds=[3]",
                        "--profile-option", "manipulation={loss: l2, clip_in_objective: false}"]) == 0
    saved = read_yaml(tmp_path / "a" / "profile.yaml")["profile"]
    assert saved["seeds"] == [3] and saved["manipulation"] == {"loss": "l2", "clip_in_objective": False}
    assert (tmp_path / "a" / "runs" / "original" / "ae_seed3" / "metrics.json").exists()
    assert main(base + ["--out", str(tmp_path / "b"), "--profile-option", "manipulation={noise: pink}"]) == 2
    assert "noise = 'pink': expected 'uniform' or 'sign'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cli_option_errors_name_the_flag(tmp_path, capsys):
    from vaebias.cli.main import main

    assert main(["manipulate", "--entangled", "x", "--disentangled", "y", "--out", str(tmp_path / "m"),
                 "--unclipped-objective"]) == 2
    assert "--unclipped-objective needs --loss l2" in capsys.readouterr().err
    assert main(["reproduce", "--dataset", "blobs", "--profile", "demo", "--out", str(tmp_path / "r"),
                 "--profile-option", "seeds"]) == 2
    assert "--profile-option 'seeds': expected KEY=VALUE" in capsys.readouterr().err
    for flag, item in [("--profile-option", "robustness={seeds: [0, 1]"), ("--dataset-option", "sigma=[3")]:
        assert main(["reproduce", "--dataset", "blobs", "--profile", "demo", "--out", str(tmp_path / "r"),
                     flag, item]) == 2
        assert f"{flag} {item!r}: the value is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_reproduce_runs_the_fig5_line_search_when_the_profile_asks(tmp_path, capsys):
    """`robustness` in a profile adds Fig. 5's line search after the table: the scale-1
    runs of the table's seeds are the table's runs (not retrained), the others are new;
    robustness.json / .md and fig5_<dataset>.png are written, and the report page embeds
    them. A bad plan is refused before anything is written."""
    from tests.paper.test_pipeline import TINY
    from vaebias._internal.io import read_json, read_yaml
    from vaebias.cli.main import main

    prof = tmp_path / "p.yaml"
    base = dict(TINY, models=["ae", "beta_vae"], seeds=[0], model_params={"beta_vae": {"beta": 4.0}})
    prof.write_text(yaml.safe_dump(base))
    out = tmp_path / "out"
    args = ["reproduce", "--dataset", "blobs", "--profile", str(prof), "--out", str(out), "--device", "cpu",
            "--no-progress", "--dataset-option", "num_positions=4"]
    assert main(args) == 0 and not (out / "robustness.json").exists()
    table_run = out / "runs" / "modified" / "beta_vae_seed0" / "metrics.json"
    table_stamp = table_run.stat().st_mtime_ns
    # the same folder takes Fig. 5 later: only the plan may change, and the table is not retrained
    prof.write_text(yaml.safe_dump(dict(base, robustness={"scales": [0.5, 1], "seeds": [0, 1]})))
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().err
    assert table_run.stat().st_mtime_ns == table_stamp and "= 8 runs, 2 of them the table's" in printed
    assert read_yaml(out / "profile.yaml")["profile"]["robustness"] == {"scales": [0.5, 1], "seeds": [0, 1]}
    res = read_json(out / "robustness.json")
    assert res["plan"] == {"models": ["beta_vae"], "scales": [0.5, 1.0], "seeds": [0, 1],
                           "variants": ["original", "modified"]}
    ids = sorted(r["id"] for r in res["runs"])
    assert ids == sorted([f"runs/{v}/beta_vae_seed0" for v in ("original", "modified")]
                         + [f"robustness/{v}/beta_vae_seed1" for v in ("original", "modified")]
                         + [f"robustness/{v}/beta_vae_beta2_seed{s}" for v in ("original", "modified")
                            for s in (0, 1)])
    # the scale-1 seed-0 point is the table's own run, with the table's MIG
    table = read_json(out / "runs" / "original" / "beta_vae_seed0" / "metrics.json")["mig"]["mig"]
    point = next(r for r in res["runs"] if r["id"] == "runs/original/beta_vae_seed0")
    assert point["mig"] == table and point["model_params"] == {"beta": 4.0}
    assert read_yaml(out / "robustness" / "original" / "beta_vae_beta2_seed1" / "config.yaml")[
        "model_params"] == {"beta": 2.0, "width": 1.0}
    rows = {(r["dataset"], r["value"]): r for r in res["rows"]}
    assert set(rows) == {(v, x) for v in ("original", "modified") for x in (2.0, 4.0)}
    assert all(r["runs"] == 2 and r["runs"] == r["kept"] + r["discarded"] for r in rows.values())
    assert "| beta_vae | modified | beta = 2 | 2 |" in (out / "robustness.md").read_text()
    assert (out / "fig5_blobs.png").stat().st_size > 1000 and "Fig. 5 written" in printed
    # a rerun retrains nothing and gives the same file
    before = (out / "robustness.json").read_text()
    done = out / "robustness" / "modified" / "beta_vae_beta2_seed1" / "metrics.json"
    stamp = done.stat().st_mtime_ns
    assert main(args) == 0
    assert done.stat().st_mtime_ns == stamp and (out / "robustness.json").read_text() == before
    from vaebias.report.html import write_html_report

    page = Path(write_html_report(out)).read_text()
    assert "fig5_blobs.png" in page and "beta = 2" in page
    # bad plans: refused before a folder is made
    for bad, match in [({"scales": [0]}, "robustness.scales"), ({"scales": [1, 1.0]}, "distinct finite"), ({"models": ["ae"]}, "robustness.models = 'ae'"),
                       ({"seed": [1]}, "robustness.seed = "), ({"variants": ["noisy"]}, "robustness.variants")]:
        prof.write_text(yaml.safe_dump(dict(TINY, models=["ae", "beta_vae"], robustness=bad)))
        assert main(["reproduce", "--dataset", "blobs", "--profile", str(prof), "--out", str(tmp_path / "bad"),
                     "--device", "cpu", "--no-progress"]) == 2
        assert match in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
