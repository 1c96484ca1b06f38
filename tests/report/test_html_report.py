"""`vaebias report` HTML page (vaebias.report.html), checked in headless Chromium.

The Chromium fixture installs the browser with apt-get when it is missing and the tests
run as root (the CI machine); elsewhere, without a browser, the browser test skips."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vaebias._internal.errors import RunError
from vaebias._internal.io import write_json, write_yaml
from vaebias.report.html import write_html_report


@pytest.fixture(scope="session")
def chromium():
    def find():
        return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)

    exe = find()
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(cmd, capture_output=True, env=env, timeout=900, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=900, check=False)
            subprocess.run(cmd, capture_output=True, env=env, timeout=900, check=False)
        exe = find()
    if exe is None:
        pytest.skip("no headless Chromium here and it cannot be installed (needs root and apt-get)")
    return exe


_CHECK = ("<script>window.addEventListener('load',()=>{const b=[...document.images].filter("
          "i=>!(i.complete&&i.naturalWidth>0));document.body.setAttribute('data-images',"
          "document.images.length+'/'+b.length)});</script>")


def _images_in_browser(exe, page, tmp_path):
    """(images, broken) as the browser sees them after load."""
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", _CHECK + "</body>"))
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120, check=False).stdout
    m = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert m, dom[:500]
    return int(m.group(1)), int(m.group(2))


def _folder(tmp_path):
    out = tmp_path / "res"
    (out / "runs" / "original" / "ae_seed0").mkdir(parents=True)
    (out / "datasets").mkdir()
    write_yaml(out / "profile.yaml", {"dataset": "toy", "profile": {"name": "tiny", "reduced": True}})
    (out / "table.md").write_text("| model | MIG |\n|---|---|\n| AE | 0.01 ± 0.00 (2) |\n")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(out / "fig4_toy.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out / "runs" / "original" / "ae_seed0" / "t.gif")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out / "datasets" / "skip.png")
    write_json(out / "runs" / "original" / "ae_seed0" / "metrics.json", {
        "mig": {"mig": 0.0123, "gaps": [0.1]}, "model": "ae",
        "settings_of": {"mig": {"num_points": 300, "seed": 0, "num_bins": 20}},
        "versions": {"torch": "2.13.0", "numpy": "2.0"}})
    return out


def test_page_holds_tables_figures_settings_and_profile(tmp_path):
    out = _folder(tmp_path)
    page = write_html_report(out).read_text()
    assert "<table>" in page and "<td>0.01 ± 0.00 (2)</td>" in page
    assert "Profile <code>tiny</code> on <code>toy</code>" in page and "REDUCED protocol" in page
    assert page.count("data:image/png;base64,") == 1 and page.count("data:image/gif;base64,") == 1
    assert "skip.png" not in page  # exported datasets are left out
    assert "mig 0.0123" in page and '"num_points": 300' in page and '"torch": "2.13.0"' in page
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="holds no table, figure or evaluated run"):
        write_html_report(tmp_path / "empty")
    with pytest.raises(RunError, match="is not a folder"):
        write_html_report(tmp_path / "nope")


def test_every_image_loads_in_headless_chromium(tmp_path, chromium):
    out = _folder(tmp_path)
    assert _images_in_browser(chromium, write_html_report(out), tmp_path) == (2, 0)
    broken = tmp_path / "broken.html"  # the check can fail: a page with a missing image
    broken.write_text("<html><body><img src='missing.png'></body></html>")
    assert _images_in_browser(chromium, broken, tmp_path) == (1, 1)


def test_cli_report_on_a_sweep_folder_writes_the_page(tmp_path, capsys):
    from vaebias.cli.main import main

    out = tmp_path / "sweep"
    (out / "runs" / "a").mkdir(parents=True)
    (out / "sweep.yaml").write_text("models: [ae]\n")
    write_json(out / "runs" / "a" / "metrics.json", {"mig": {"mig": 0.5}, "settings": {"seed": 0}})
    assert main(["report", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "Sweep grid" in page and "mig 0.5" in page and '"all": {' in page and '"seed": 0' in page
