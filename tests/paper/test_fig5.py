"""Fig. 5's line search (vaebias.paper.fig5): grid, over-pruning filter, summary, figure."""

import json

import pytest

from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import write_json
from vaebias.paper.fig5 import robustness_grid, summarise_robustness, write_robustness


def test_grid_scales_the_literature_values():
    g = robustness_grid(["beta_vae", "factor_vae"], [{"name": "dsprites"}], defaults_of="dsprites",
                        seeds=[0, 1], evaluate={"metrics": ["mig"]})
    assert g["model_params"] == {"beta_vae": {"beta": [2.0, 4.0, 8.0, 16.0, 32.0]},
                                 "factor_vae": {"gamma": [8.75, 17.5, 35.0, 70.0, 140.0]}}
    assert g["evaluate"]["metrics"] == ["mig", "active_units"] and g["seeds"] == [0, 1]
    assert robustness_grid(["beta_vae"], [{"name": "shapes3d"}], defaults_of="shapes3d",
                           scales=(1,))["model_params"]["beta_vae"]["beta"] == [32.0]
    with pytest.raises(ConfigError, match=r"\['pcl'\] have no primary hyperparameter"):
        robustness_grid(["pcl"], [{"name": "dsprites"}], defaults_of="dsprites")


def _row(value, seed, mig, au, k=5, model="beta_vae", dataset="dsprites"):
    return {"id": f"r{value}-{seed}", "model": model, "dataset": dataset, "seed": seed,
            "model_params": json.dumps({"beta": value}), "steps": 10, "mig": mig,
            "active_units": au, "active_units.num_factors": k}


def test_over_pruned_runs_are_discarded_and_counted(tmp_path):
    rows = [_row(4.0, 0, 0.2, 5), _row(4.0, 1, 0.4, 6), _row(4.0, 2, 0.9, 4),  # the last: a collapsed unit
            _row(32.0, 0, 0.7, 3), _row(32.0, 1, 0.8, 2)]                      # all over-pruned
    write_json(tmp_path / "results.json", rows)
    got = summarise_robustness(tmp_path)
    assert [(r["value"], r["runs"], r["discarded"], r["kept"]) for r in got] == [(4.0, 3, 1, 2), (32.0, 2, 2, 0)]
    assert got[0]["mig_mean"] == pytest.approx(0.3) and got[0]["mig_std"] == pytest.approx(0.1)
    assert got[1]["mig_mean"] is None
    res = write_robustness(tmp_path)
    assert (tmp_path / "fig5.png").stat().st_size > 1000 and json.loads((tmp_path / "robustness.json").read_text())
    assert res["rows"] == got
    with pytest.raises(RunError, match="results.json' not found"):
        summarise_robustness(tmp_path / "nothing")


def test_figure_shows_every_discarded_count(tmp_path):
    """Each discarded count is drawn inside the axes, also for a value whose runs were all
    discarded (no MIG to plot: an x at 0); a dataset file is labelled by its name."""
    from vaebias.paper.fig5 import dataset_label, draw_robustness

    mod = "results/x/datasets/blobs_modified_eps0.1.h5"
    rows = [_row(4.0, 0, 0.2, 5, dataset=mod), _row(4.0, 1, 0.4, 4, dataset=mod),
            _row(32.0, 0, 0.7, 3, dataset=mod), _row(32.0, 1, 0.8, 2, dataset=mod)]
    write_json(tmp_path / "results.json", rows)
    fig = draw_robustness(summarise_robustness(tmp_path))
    ax = fig.axes[0]
    notes = {t.get_text(): t.xy for t in ax.texts}
    assert notes == {"-1": (4.0, pytest.approx(0.2)), "-2": (32.0, 0.0)}
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert all(x0 < x < x1 and y0 <= y <= y1 for x, y in notes.values())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["blobs_modified_eps0.1"]
    assert dataset_label(mod) == "blobs_modified_eps0.1" and dataset_label("dsprites") == "dsprites"


def test_line_search_end_to_end_on_toy(tmp_path, capsys):
    from vaebias.cli.main import main
    from vaebias.experiments.sweep import sweep

    g = robustness_grid(["beta_vae"], [{"name": "toy", "num_positions": 8}], defaults_of="dsprites",
                        scales=(0.5, 2.0), seeds=[0, 1],
                        train={"steps": 8, "batch_size": 8, "device": "cpu", "checkpoint_every": 8},
                        evaluate={"metrics": ["mig"], "num_points": 200}, out=str(tmp_path / "ls"))
    res = sweep(g, progress=False)
    assert res["finished"] == 4 and not res["failed"]
    assert main(["robustness", str(tmp_path / "ls")]) == 0
    out = capsys.readouterr().out
    assert "| beta_vae | toy | beta = 4 | 2 |" in out and "| beta_vae | toy | beta = 16 | 2 |" in out
    assert (tmp_path / "ls" / "fig5.png").exists()
