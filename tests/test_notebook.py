"""vaebias called as from a notebook leaves the caller's process as it was: matplotlib's
backend and pyplot's figures, the working directory, stdout."""

import os
import sys

import matplotlib
import numpy as np
import pytest
import yaml

from tests.paper.test_pipeline import TINY


@pytest.mark.slow
def test_library_calls_change_nothing_in_the_callers_process(tmp_path, capsys):
    import matplotlib.pyplot as plt

    matplotlib.use("svg")  # a backend vaebias would not choose itself
    plt.figure()  # the notebook's own open figure
    figures_before = plt.get_fignums()
    cwd_before = os.getcwd()

    from vaebias.data import load_dataset
    from vaebias.metrics import evaluate
    from vaebias.paper import reproduce
    from vaebias.report import write_html_report, write_report

    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(dict(TINY, models=["ae"])))
    out = tmp_path / "res"
    result = reproduce("toy", str(profile), out, device="cpu", progress=False)
    data = load_dataset("toy")
    scores = evaluate(data, lambda x: x.flatten(1)[:, :4], metrics=["mig"], num_points=200, seed=0)
    report = write_report(out)
    html = write_html_report(out)

    assert result["markdown"] and 0.0 <= scores["mig"]["mig"] <= 1.0 and report["markdown"] and html.exists()
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == figures_before
    assert os.getcwd() == cwd_before
    captured = capsys.readouterr()
    assert captured.out == "", captured.out[:500]
    assert np.isfinite(scores["mig"]["mig"]) and sys.stdout is not None
    plt.close("all")
