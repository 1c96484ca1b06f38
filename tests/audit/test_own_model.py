"""The docs' own-model example end to end: a VAE class outside vaebias, trained in a plain
loop on a DataLoader, scored with metrics="all", audited with `vaebias audit model`, and its
runs read by evaluate, traverse and report; and the audit's bad inputs."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from examples.my_vae import MyVAE
from vaebias.cli.main import main
from vaebias.data import load_dataset
from vaebias.manipulation import ManipulationConfig, export_variants, train_manipulation
from vaebias.metrics import evaluate
from vaebias.training import TrainConfig, train

from ..conftest import tiny_train


def test_own_loop_and_metrics_all():
    data = load_dataset("blobs")
    torch.manual_seed(0)
    model = MyVAE(data.observation_shape, data.num_factors)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i, (images, _factors) in enumerate(DataLoader(data, batch_size=64, shuffle=True)):
        loss = model.loss({"images": images})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert i == len(data) // 64 - 1   # one epoch of whole batches
    scores = evaluate(data, model.eval().posterior, metrics="all", num_points=500, num_test=200,
                      score_num_train=40, score_num_eval=20)
    assert set(scores) - {"settings"} == {"mig", "active_units", "sap", "dci", "modularity_explicitness",
                                          "beta_vae_score", "factor_vae_score"}
    assert 0.0 <= scores["mig"]["mig"] <= 1.0
    # a deterministic representation: active units do not apply and are left out
    codes_only = evaluate(data, model.encode, metrics="all", num_points=300, num_test=100,
                          score_num_train=20, score_num_eval=10)
    assert "active_units" not in codes_only and "mig" in codes_only


@pytest.fixture(scope="module")
def mpsi(tmp_path_factory):
    """A (tiny) trained m_psi on the toy squares."""
    root = tmp_path_factory.mktemp("mpsi")
    data = load_dataset("toy")
    for seed in (0, 1):
        train({"model": "beta_vae", "dataset": {"name": "toy"}, "train": tiny_train(steps=20, seed=seed)},
              root / f"ref{seed}", data=data, progress=False)
    train_manipulation(data, root / "ref0", root / "ref1", root / "m", ManipulationConfig(epsilon=0.1),
                       TrainConfig(steps=10, batch_size=8, log_every=2), progress=False)
    return root / "m"


def test_audit_model_by_import_path_end_to_end(tmp_path, mpsi, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "audit"
    args = ["audit", "model", "--model", "examples.my_vae:MyVAE", "--dataset", "toy", "--manipulation", str(mpsi),
            "--seeds", "0", "1", "--sign-noise", "--steps", "15", "--batch-size", "8", "--eval-points", "300", "--lr", "1e-3",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "**Verdict.**" in text and "| modified |" in text and "| noise |" in text
    res = json.loads((out / "audit_model.json").read_text())
    assert len(res["mig"]["original"]) == 2 and set(res["drops"]) == {"modified", "noise", "sign_noise"}
    assert res["diagnostics"]["original"]["column_overlap"] >= 0.0
    run = out / "runs" / "original" / "examples_my_vae_MyVAE_seed0"
    assert main(["evaluate", str(run), "--metrics", "mig", "sap", "--num-points", "300", "--num-test", "100"]) == 0
    assert "sap" in json.loads((run / "metrics.json").read_text())
    assert main(["traverse", str(run), "--out", str(tmp_path / "t.png")]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "table.md").exists() and (out / "report.html").exists()
    # a rerun trains nothing and gives the same file
    before = (out / "audit_model.json").read_text()
    mtime = (run / "checkpoint.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert (run / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert json.loads((out / "audit_model.json").read_text())["mig"] == json.loads(before)["mig"]


@pytest.mark.parametrize("model, message", [
    ("examples.nope:MyVAE", "cannot import module 'examples.nope'"),
    ("examples.my_vae:Nope", "module 'examples.my_vae' has no attribute 'Nope'"),
    ("examples.my_vae:dataclasses", "dataclasses is a module, not a subclass of vaebias.models.base.Model"),
    ("examples.my_vae:", "expected a registered name"),
    ("no_such_model", "unknown model 'no_such_model'"),
])
def test_audit_model_bad_model_is_one_line(tmp_path, mpsi, monkeypatch, capsys, model, message):
    monkeypatch.chdir(tmp_path)
    rc = main(["audit", "model", "--model", model, "--dataset", "toy", "--manipulation", str(mpsi),
               "--out", "out", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and message in err[-1] and err[-1].startswith("vaebias: error:")
    assert not (tmp_path / "out").exists()


def test_audit_bad_inputs_leave_nothing(tmp_path, mpsi, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["audit", "model", "--model", "beta_vae", "--dataset", "toy", "--manipulation", str(tmp_path),
          "--out", "out"], "holds no manipulation run"),
        (["audit", "model", "--model", "beta_vae", "--dataset", "blobs", "--manipulation", str(mpsi),
          "--out", "out"], "was trained on 'toy'"),
        (["audit", "model", "--model", "beta_vae", "--dataset", "toy", "--manipulation", str(mpsi),
          "--seeds", "3", "--out", "out"], "seeds"),
        (["audit", "data", "toy", "--manipulation", str(tmp_path), "--out", "out"], "holds no manipulation run"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
        assert not (tmp_path / "out").exists()


def test_audit_data_on_a_sample_and_bad_inputs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = (np.random.default_rng(0).random((5, 1, 16, 16)) * 255).astype(np.uint8)
    np.savez(tmp_path / "sample.npz", images=images, factors=np.array([[0, 0], [1, 2], [2, 1], [3, 3], [0, 3]]))
    np.savez(tmp_path / "wrong.npz", images=images, labels=np.zeros((5, 2), np.int64))
    # a labelled sample: the rank correlation only, S is n/a
    assert main(["audit", "data", "sample.npz", "--pairs", "40", "--out", "s"]) == 0
    cap = capsys.readouterr()
    assert "n/a (a labelled sample, not the full grid)" in cap.out and "only the rank correlation" in cap.err
    assert json.loads((tmp_path / "s" / "audit.json").read_text())["original"]["local_alignment"] is None
    assert main(["audit", "data", "wrong.npz", "--out", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "npz with keys ['images', 'labels']; expected a vaebias dataset (keys images, factors)" \
        " or the dSprites npz" in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_import_path_is_named_as_such(tmp_path, mpsi, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "model", "--model", "examples.nope:X", "--dataset", "toy", "--manipulation", str(mpsi),
                 "--out", "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vaebias: error: model 'examples.nope:X': cannot import module") and "cannot train" not in err


def test_audit_model_with_a_modified_file(tmp_path, mpsi, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    paths = export_variants(load_dataset("toy"), mpsi, tmp_path / "datasets", device="cpu", progress=False)
    out = tmp_path / "a"
    argv = ["audit", "model", "--model", "ae", "--dataset", "toy", "--modified", str(paths["modified"]),
            "--seeds", "0", "1", "--steps", "10", "--batch-size", "8", "--eval-points", "200", "--out", str(out),
            "--no-progress", "--no-diagnostics"]
    assert main(argv) == 0
    res = json.loads((out / "audit_model.json").read_text())
    assert set(res["mig"]) == {"original", "modified", "noise"} and res["health"] is None
    spec = (out / "runs" / "noise" / "ae_seed0" / "config.yaml").read_text()
    assert "noise_epsilon: 0.1" in spec
    assert main(["audit", "model", "--model", "ae", "--dataset", "blobs", "--modified", str(paths["modified"]),
                 "--out", "b"]) == 2
    assert "expected those of 'blobs'" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_an_audit_folder_reruns_after_moving(tmp_path, mpsi, monkeypatch):
    """The audit records its inputs (m_psi, the dataset) by full path and its runs by the
    folder's own layout: rerun from elsewhere, or after moving the folder, it retrains nothing."""
    import shutil

    monkeypatch.chdir(tmp_path)
    args = ["audit", "model", "--model", "ae", "--dataset", "toy", "--manipulation", str(mpsi), "--seeds", "0", "1",
            "--steps", "6", "--batch-size", "8", "--eval-points", "200", "--no-progress", "--no-diagnostics"]
    assert main([*args, "--out", "a"]) == 0

    def checkpoints(root):
        return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("checkpoint.pt")}

    before = checkpoints(tmp_path / "a")
    assert len(before) == 6  # original, modified, noise x 2 seeds
    shutil.move(str(tmp_path / "a"), str(tmp_path / "moved"))
    monkeypatch.chdir(tmp_path / "moved")
    assert main([*args, "--out", "."]) == 0
    assert checkpoints(tmp_path / "moved") == before
