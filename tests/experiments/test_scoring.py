import json

import numpy as np
import pytest

from tests.conftest import tiny_train
from vaebias._internal.errors import RunError
from vaebias.data.toy import ToySquares
from vaebias.experiments.scoring import evaluate_run
from vaebias.metrics import mig
from vaebias.training import load_run, train


def test_evaluate_run_writes_metrics_and_matches_array_level(tmp_path, toy):
    cfg = {"model": "beta_vae", "dataset": {"name": "toy", "num_positions": 8},
           "model_params": {"beta": 4.0}, "train": tiny_train(steps=6)}
    train(cfg, tmp_path / "r", data=toy, progress=False)
    res = evaluate_run(tmp_path / "r", data=toy, num_points=500, device="cpu")
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk["mig"]["mig"] == res["mig"]["mig"]
    assert {"python", "torch", "numpy", "sklearn"} <= set(on_disk["versions"])
    assert on_disk["settings"]["num_points"] == 500 and on_disk["settings"]["seed"] == 0
    assert 0 <= res["active_units"]["active_units"] <= 2
    # the same number from the array-level function on the same 500 points (seed 0)
    model, _ = load_run(tmp_path / "r")
    f = toy.sample_factors(500, np.random.default_rng(0))
    import torch

    with torch.no_grad():
        codes = model.encode(toy.images(f)).numpy()
    assert res["mig"]["mig"] == pytest.approx(mig(codes, f)["mig"], abs=1e-12)
    # cached: the same settings are not recomputed
    mtime = (tmp_path / "r" / "metrics.json").stat().st_mtime_ns
    evaluate_run(tmp_path / "r", data=toy, num_points=500, device="cpu")
    assert (tmp_path / "r" / "metrics.json").stat().st_mtime_ns == mtime
    # another dataset goes to its own file
    other = ToySquares(num_positions=8, side=10)
    other.name = "toy10"
    evaluate_run(tmp_path / "r", data=other, num_points=300, device="cpu")
    assert (tmp_path / "r" / "metrics_on_toy10.json").exists()
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["settings"]["num_points"] == 500


def test_evaluate_unfinished_run_is_an_error(tmp_path, toy):
    class Stop(Exception):
        pass

    def stop(step, terms):
        if step == 6:
            raise Stop

    cfg = {"model": "ae", "dataset": {"name": "toy", "num_positions": 8}, "train": tiny_train(steps=10)}
    with pytest.raises(Stop):
        train(cfg, tmp_path / "r", data=toy, progress=False, callback=stop)
    with pytest.raises(RunError, match="not a finished training run"):
        evaluate_run(tmp_path / "r", data=toy)


def test_evaluate_run_accumulates_metric_subsets(tmp_path, toy):
    cfg = {"model": "ae", "dataset": {"name": "toy", "num_positions": 8}, "train": tiny_train(steps=6)}
    train(cfg, tmp_path / "r", data=toy, progress=False)
    first = evaluate_run(tmp_path / "r", ["mig"], data=toy, num_points=400, device="cpu")
    both = evaluate_run(tmp_path / "r", ["mig", "sap"], data=toy, num_points=400, num_test=200,
                        device="cpu")
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(on_disk["settings_of"]) == {"mig", "sap"}
    assert on_disk["settings_of"]["sap"]["num_test"] == 200
    assert both["mig"] == first["mig"]  # reused, not recomputed
    assert "active_units" not in on_disk  # deterministic model: skipped
    # a changed option recomputes only what depends on it
    again = evaluate_run(tmp_path / "r", ["mig", "sap"], data=toy, num_points=400, num_test=200,
                         num_bins=5, device="cpu")
    assert again["settings_of"]["mig"]["num_bins"] == 5
    model, _ = load_run(tmp_path / "r")
    f = toy.sample_factors(400, np.random.default_rng(0))
    import torch

    with torch.no_grad():
        codes = model.encode(toy.images(f)).numpy()
    assert again["mig"]["mig"] == pytest.approx(mig(codes, f, num_bins=5)["mig"], abs=1e-12)
    with pytest.raises(ValueError, match="unknown evaluation option"):
        evaluate_run(tmp_path / "r", ["mig"], data=toy, bins=3)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run(tmp_path / "r", ["migg"], data=toy)


def test_udr_runs_and_cli(tmp_path, toy, capsys):
    from vaebias.cli.main import main
    from vaebias.experiments.scoring import udr_runs

    for seed in (0, 1):
        cfg = {"model": "ae", "dataset": {"name": "toy", "num_positions": 8},
               "train": tiny_train(steps=6, seed=seed)}
        train(cfg, tmp_path / f"r{seed}", data=toy, progress=False)
    res = udr_runs([tmp_path / "r0", tmp_path / "r1"], tmp_path / "udr.json", num_points=200,
                   correlation="spearman", device="cpu")
    assert len(res["udr"]) == 2 and all(0 <= u <= 1 for u in res["udr"])
    assert json.loads((tmp_path / "udr.json").read_text())["udr"] == res["udr"]
    with pytest.raises(RunError, match="at least two runs"):
        udr_runs([tmp_path / "r0"], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    assert main(["evaluate", str(tmp_path / "r0"), "--metrics", "mig", "modularity_explicitness",
                 "--num-points", "300", "--num-test", "100", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "modularity_explicitness: modularity" in out and "mig: mig" in out
    assert main(["metrics"]) == 0
    assert "dci" in capsys.readouterr().out.split()
    assert main(["evaluate", str(tmp_path / "r0"), "--metrics", "nope", "--device", "cpu"]) == 2
    assert "vaebias: error: unknown metric(s) ['nope']" in capsys.readouterr().err


def test_cli_fast_mode_records_its_settings(tmp_path, toy):
    from vaebias.cli.main import main
    from vaebias.metrics.sampling import FAST_MODE

    cfg = {"model": "ae", "dataset": {"name": "toy", "num_positions": 8}, "train": tiny_train(steps=6)}
    train(cfg, tmp_path / "r", data=toy, progress=False)
    assert main(["evaluate", str(tmp_path / "r"), "--fast", "--metrics", "dci", "factor_vae_score",
                 "--num-points", "800", "--num-test", "400", "--score-num-eval", "100",
                 "--device", "cpu"]) == 0
    got = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert got["settings_of"]["dci"]["dci_backend"] == "hist"
    assert got["settings_of"]["factor_vae_score"]["score_sampling"] == FAST_MODE["score_sampling"] == "pool"
    assert got["factor_vae_score"]["settings"]["pool_size"] == 1200  # shared + test samples
    assert got["settings_of"]["factor_vae_score"]["score_num_eval"] == 100  # explicit option wins
    assert got["factor_vae_score"]["settings"]["num_eval"] == 100
    assert main(["evaluate", str(tmp_path / "r"), "--fast", "--score-sampling", "fresh", "--metrics",
                 "factor_vae_score", "--num-points", "800", "--num-test", "400", "--score-num-train", "50",
                 "--score-num-eval", "20", "--device", "cpu"]) == 0
    got = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "pool_size" not in got["factor_vae_score"]["settings"]
    assert got["settings_of"]["factor_vae_score"]["score_sampling"] == "fresh"
    assert 0 <= got["dci"]["disentanglement"] <= 1


def test_bf16_encoding_stays_close_to_fp32(tmp_path, toy):
    """The opt-in bfloat16 encoding keeps codes within 1% of their magnitude (bf16 keeps 8
    significant bits) and is recorded in the settings."""
    import torch

    from vaebias.experiments.scoring import representation
    from vaebias.metrics import evaluate
    from vaebias.metrics.sampling import _bf16_represent

    cfg = {"model": "beta_vae", "dataset": {"name": "toy", "num_positions": 8},
           "model_params": {"beta": 1.0}, "train": tiny_train(steps=60)}
    train(cfg, tmp_path / "r", data=toy, progress=False)
    model, _ = load_run(tmp_path / "r")
    rep = representation(model)
    f = toy.sample_factors(500, np.random.default_rng(0))
    with torch.no_grad():
        mu32, var32 = rep(toy.images(f))
        mu16, var16 = _bf16_represent(rep)(toy.images(f))
    assert var16.dtype == torch.float32 and var16.shape == var32.shape
    assert mu16.dtype == torch.float32 and mu16.shape == mu32.shape
    assert ((mu16 - mu32).abs() / mu32.abs().max()).max() < 0.01
    a = evaluate(toy, rep, ["mig"], num_points=2000)
    b = evaluate(toy, rep, ["mig"], num_points=2000, encode_precision="bf16")
    assert b["settings"]["encode_precision"] == "bf16" and a["settings"]["encode_precision"] == "fp32"
    with pytest.raises(ValueError, match="encode_precision"):
        evaluate(toy, rep, ["mig"], num_points=10, encode_precision="fp8")


def test_own_dataset_recognised_after_yaml_round_trip(tmp_path):
    """describe() with tuples (Shapes3D's has them) still counts as the training dataset,
    for resuming the run and for scoring it."""

    class Tupled(ToySquares):
        def describe(self):
            return {**super().describe(), "grid": ((0.0, 0.5), (1.0,))}

    data = Tupled(num_positions=8, side=12)
    cfg = {"model": "ae", "dataset": {"name": "toy", "num_positions": 8}, "train": tiny_train(steps=4)}
    train(cfg, tmp_path / "r", data=data, progress=False)
    train(cfg, tmp_path / "r", data=data, progress=False)  # a rerun is the same configuration
    evaluate_run(tmp_path / "r", ["mig"], data=data, num_points=200, device="cpu")
    assert (tmp_path / "r" / "metrics.json").exists()
    assert not list((tmp_path / "r").glob("metrics_on_*.json"))
