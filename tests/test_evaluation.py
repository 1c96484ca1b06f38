import json

import numpy as np
import pytest

from tests.conftest import tiny_train
from vaebias.data.toy import ToySquares
from vaebias.errors import RunError
from vaebias.evaluation import evaluate_run
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
