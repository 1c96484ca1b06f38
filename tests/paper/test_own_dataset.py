"""reproduce on an own dataset file: epsilon from --epsilon, refusals before any work."""

import numpy as np
import pytest

from vaebias.cli.main import main
from vaebias.data import from_arrays, load_dataset, save_dataset
from vaebias.models import build_model, describe_hyperparameters


@pytest.fixture
def own_file(tmp_path):
    toy = load_dataset("toy", num_positions=4)
    f = toy.factors_of(np.arange(len(toy)))
    images = (toy.images(f).numpy() * 255).astype(np.uint8)
    return save_dataset(from_arrays(images, f, name="mine"), tmp_path / "mine.npz", progress=False)


def test_own_file_without_epsilon_is_refused_before_work(tmp_path, own_file, capsys):
    out = tmp_path / "r"
    assert main(["reproduce", "--dataset", str(own_file), "--profile", "quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "has no default epsilon" in err and "--epsilon" in err
    assert not out.exists()
    assert main(["reproduce", "--dataset", str(own_file), "--profile", "quick", "--epsilon", "1.5",
                 "--out", str(out)]) == 2
    assert "epsilon = 1.5; expected a number in (0, 1]" in capsys.readouterr().err
    assert not out.exists()


def test_own_file_through_reproduce_to_the_manipulation(tmp_path, own_file, caplog):
    out = tmp_path / "r"
    opts = ["--profile-option", "reference_steps=20", "--profile-option", "manipulation_steps=5",
            "--profile-option", "batch_size=8", "--profile-option", "eval_points=200"]
    with caplog.at_level("INFO", logger="vaebias"):
        rc = main(["reproduce", "--dataset", str(own_file), "--profile", "quick", "--epsilon", "0.2", *opts,
                   "--stop-after", "manipulation", "--no-progress", "--out", str(out)])
    assert rc == 0
    assert (out / "manipulation" / "checkpoint.pt").exists() and not (out / "runs").exists()
    text = caplog.text
    assert "epsilon = 0.2 (given)" in text
    # beta is given by the quick profile; the model's width is its class default
    assert "beta_vae on 'mine': beta=" in text and "width=1 (class default)" in text
    assert "stopped after the manipulation" in text


def test_a_model_without_defaults_for_the_dataset_warns():
    model = build_model("beta_vae", (1, 64, 64), 2, {}, dataset="mine")
    used, warning = describe_hyperparameters("beta_vae", model.config, {}, "mine")
    assert "beta=1 (class default)" in used
    assert warning.startswith("beta_vae has no defaults for dataset 'mine' (it has them for blobs, dsprites, shapes3d)")
    assert "the class defaults apply: beta=1.0;" in warning
    used, warning = describe_hyperparameters("beta_vae", build_model("beta_vae", (1, 64, 64), 2, {}, dataset="dsprites").config,
                                             {}, "dsprites")
    assert "beta=8 (dsprites default)" in used and warning is None
    _, warning = describe_hyperparameters("beta_vae", model.config, {"beta": 2.0}, "mine")
    assert warning is None   # given explicitly
