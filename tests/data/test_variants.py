import sys

import h5py
import numpy as np
import pytest
import torch

from vaebias.data import DataError, ExportedDataset, Modified, Noisy, export_dataset, load_dataset
from vaebias.data.toy import ToySquares
from vaebias.data.variants import quantize_within


def _field(factors):
    """A fixed map in [-1, 1] depending on the factors (stands in for m_psi)."""
    f = factors.float()
    g = torch.linspace(-1, 1, 64)
    img = torch.sin(3 * g[None, :, None] * (1 + f[:, 0, None, None])) * torch.cos(2 * g[None, None, :] + f[:, 1, None, None])
    return img.unsqueeze(1)


def test_base_grid_round_trip(toy):
    idx = np.arange(len(toy))
    f = toy.factors_of(idx)
    assert f.shape == (64, 2) and f[1].tolist() == [0, 1] and f[8].tolist() == [1, 0]
    assert np.array_equal(toy.index_of(f), idx)
    with pytest.raises(DataError, match="index 64 out of range"):
        toy.factors_of([64])
    with pytest.raises(DataError, match="factor 1 has class index 8"):
        toy.images(np.array([[0, 8]]))
    with pytest.raises(DataError, match=r"shape \(n, 2\)"):
        toy.images(np.zeros((3, 3), int))


def test_quantize_within_bound():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=10_000) / 255.0
    x_new = x + rng.uniform(-0.3, 0.3, size=x.shape)
    for eps in (0.1, 0.175, 2 / 255):
        q = quantize_within(x_new, x, eps) / 255.0
        assert np.all(np.abs(q - x) <= eps + 1e-12)
        assert q.min() >= 0 and q.max() <= 1
        # the nearest step to x_new where the bound is not binding; within one step otherwise
        target = np.clip(np.clip(x_new, x - eps, x + eps), 0, 1)
        assert np.all(np.abs(q - target) <= 1 / 255 + 1e-9)
        free = (np.abs(x_new - x) <= eps - 1 / 255) & (x_new >= 0) & (x_new <= 1)
        assert free.sum() > 1000 or eps < 0.05
        assert np.all(np.abs(q - x_new)[free] <= 0.5 / 255 + 1e-9)


def test_modified_and_noisy_bounds(toy):
    mod = Modified(toy, _field, 0.1)
    noisy = Noisy(toy, 0.1, seed=3)
    f = toy.sample_factors(32, np.random.default_rng(0))
    x = toy.images(f)
    for d in (mod, noisy):
        xa = d.images(f)
        assert xa.shape == x.shape and xa.dtype == torch.float32
        assert float((xa - x).abs().max()) <= 0.1 + 1e-6
        assert float(xa.min()) >= 0 and float(xa.max()) <= 1
        assert float((xa - x).abs().max()) > 0.05  # it really changes the images


def test_noise_fixed_per_image_regardless_of_batch(toy):
    noisy = Noisy(toy, 0.1, seed=3)
    f = toy.factors_of(np.arange(20))
    all_at_once = noisy.images(f)
    one_by_one = torch.cat([noisy.images(f[i:i + 1]) for i in range(20)])
    reversed_ = noisy.images(f[::-1].copy()).flip(0)
    assert torch.equal(all_at_once, one_by_one) and torch.equal(all_at_once, reversed_)
    assert not torch.equal(all_at_once, Noisy(toy, 0.1, seed=4).images(f))
    u = noisy.noise(np.arange(200))
    assert abs(float(u.mean())) < 0.002 and abs(float(u.std()) - 0.1 / np.sqrt(3)) < 0.002


def test_export_and_load_round_trip(tmp_path, toy):
    mod = Modified(toy, _field, 0.1, name="toy_modified")
    path = export_dataset(mod, tmp_path / "toy_modified.h5", kind="modified", base=toy, epsilon=0.1,
                          chunk=10, progress=False)
    ds = load_dataset(str(path))
    assert isinstance(ds, ExportedDataset)
    assert ds.factor_sizes == toy.factor_sizes and ds.factor_names == toy.factor_names
    assert ds.kind == "modified" and ds.epsilon == pytest.approx(0.1)
    # factors unchanged and in the original order
    assert np.array_equal(ds.stored_factors(), toy.factors_of(np.arange(len(toy))))
    idx = np.arange(len(toy))
    x = toy.images(index=idx)
    xa = ds.images(index=idx)
    assert float((xa - x).abs().max()) <= 0.1 + 1e-6
    # equal to the on-demand variant up to the 1/255 quantisation
    assert float((xa - mod.images(index=idx)).abs().max()) <= 0.5 / 255 + 1e-6
    # duplicated and unsorted indices
    sel = np.array([5, 3, 5, 0])
    assert torch.equal(ds.images(index=sel), xa[sel])
    on_disk = ExportedDataset(path, in_memory=False)
    assert on_disk._images is None and ds._images is not None
    assert torch.equal(on_disk.images(index=sel), xa[sel])
    assert torch.equal(on_disk.images(index=idx), xa)
    assert not list(tmp_path.glob("*.partial"))


def test_noise_dataset_identical_when_loaded_twice(tmp_path, toy):
    noisy = Noisy(toy, 0.1, seed=0)
    p = export_dataset(noisy, tmp_path / "toy_noise.h5", kind="noise", base=toy, epsilon=0.1, progress=False)
    a = load_dataset(str(p)).images(index=np.arange(len(toy)))
    b = load_dataset(str(p)).images(index=np.arange(len(toy)))
    assert torch.equal(a, b)
    p2 = export_dataset(Noisy(toy, 0.1, seed=0), tmp_path / "again.h5", kind="noise", base=toy,
                        epsilon=0.1, progress=False)
    assert torch.equal(a, load_dataset(str(p2)).images(index=np.arange(len(toy))))


def _stopping_noise(calls: dict, at: int):
    """Noisy data whose ``at``-th chunk (counted in ``calls["n"]``) raises KeyboardInterrupt."""

    class Stopping(Noisy):
        def with_base(self, factors, device):
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt
            return super().with_base(factors, device)

    return Stopping


def test_interrupted_export_resumes(tmp_path, toy):
    calls = {"n": 0}
    Flaky = _stopping_noise(calls, at=3)

    target = tmp_path / "toy_noise.h5"
    with pytest.raises(KeyboardInterrupt):
        export_dataset(Flaky(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    assert not target.exists()
    with h5py.File(str(target) + ".partial") as f:  # two chunks written; rows_done only when complete
        assert f.attrs["rows_done"] == 0 and [bool(d) for d in f["chunk_crc32"][...]] == [True, True, False, False]
    export_dataset(Flaky(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    assert calls["n"] == 3 + 2  # only the two missing chunks were computed
    full = export_dataset(Noisy(toy, 0.1), tmp_path / "ref.h5", kind="noise", base=toy, epsilon=0.1,
                          progress=False)
    idx = np.arange(len(toy))
    assert torch.equal(load_dataset(str(target)).images(index=idx), load_dataset(str(full)).images(index=idx))


def test_exported_file_errors(tmp_path, toy):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "missing.h5"))
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not a dataset at all")
    with pytest.raises(DataError, match="garbage.h5"):
        load_dataset(str(bad))
    p = export_dataset(Noisy(toy, 0.1), tmp_path / "n.h5", kind="noise", base=toy, epsilon=0.1, progress=False)
    with h5py.File(p, "r+") as f:
        f["factors"][0] = [1, 1]
    with pytest.raises(DataError, match=r"rows 0 and \d+ have the same factors \[1, 1\]"):
        load_dataset(str(p))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match=r"keys \['x'\]; expected a vaebias dataset \(keys images, factors\)"):
        load_dataset(str(other))


def test_epsilon_must_be_positive(toy):
    for eps in (0, -0.1):
        with pytest.raises(DataError, match="epsilon"):
            Noisy(toy, eps)


def test_toy_squares_geometry():
    ds = ToySquares(num_positions=4, side=10)
    img = ds.images(np.array([[0, 3]]))[0, 0]
    assert float(img.sum()) == 100
    rows, cols = torch.nonzero(img, as_tuple=True)
    assert int(cols.min()) == 0 and int(rows.max()) == 63


def test_sign_noise_is_plus_or_minus_epsilon_from_the_same_draw():
    from vaebias.data.variants import Noisy

    base = load_dataset("toy", num_positions=4)
    idx = np.arange(5)
    uni = Noisy(base, 0.1, seed=3).noise(idx)
    sign = Noisy(base, 0.1, seed=3, distribution="sign").noise(idx)
    assert set(np.unique(sign).tolist()) == {np.float32(-0.1), np.float32(0.1)}
    np.testing.assert_array_equal(sign, np.where(uni >= 0, np.float32(0.1), np.float32(-0.1)))
    assert abs(float((sign ** 2).mean()) - 0.01) < 1e-7  # mean square eps^2, 3x the uniform's eps^2/3
    assert abs(float((uni ** 2).mean()) - 0.01 / 3) < 3e-4
    with pytest.raises(DataError, match="distribution = 'gauss'"):
        Noisy(base, 0.1, distribution="gauss")


def test_dataset_registry_loads_a_registered_class_and_checks_its_options():
    import pytest

    from vaebias._internal.errors import ConfigError
    from vaebias.data import available, load_dataset
    from vaebias.data.registry import _REGISTRY, register
    from vaebias.data.toy import ToySquares

    @register("toy_for_registry_test")
    class Tiny(ToySquares):
        epsilon = 0.05

    try:
        assert "toy_for_registry_test" in available()
        d = load_dataset("toy_for_registry_test", num_positions=4)
        assert isinstance(d, Tiny) and type(d).epsilon == 0.05
        with pytest.raises(ConfigError, match="unknown option"):
            load_dataset("toy_for_registry_test", colour="red")
    finally:
        _REGISTRY.pop("toy_for_registry_test")
    assert type(load_dataset("toy")).epsilon == 0.1 and type(load_dataset("shapes3d")).epsilon == 0.175


def _same_export(a, b) -> None:
    """Two export files hold the same images, factors, digests and attributes."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb) == ["chunk_crc32", "chunk_max_abs_change", "factors", "images"]
        for key in fa:
            assert np.array_equal(fa[key][...], fb[key][...]), key
        assert dict(fa.attrs) == pytest.approx(dict(fb.attrs), nan_ok=True)


_FULL_DISK = """
import resource, signal, sys
from vaebias._internal.errors import RunError
from vaebias.data import Noisy, export_dataset
from vaebias.data.toy import ToySquares
toy = ToySquares(num_positions=8, side=12)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    export_dataset(Noisy(toy, 0.1), sys.argv[1], kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
except RunError as e:
    print(e)
    sys.exit(3)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_export_on_a_full_disk_is_an_error_and_the_rerun_is_identical(tmp_path, toy):
    # a real write error from the kernel: the file may not grow past 100 kB (the export is ~270 kB)
    import subprocess
    import sys

    target = tmp_path / "toy_noise.h5"
    res = subprocess.run([sys.executable, "-c", _FULL_DISK, str(target)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 3, res.stderr
    assert "write failed" in res.stdout and "nothing was renamed" in res.stdout
    assert not target.exists()  # never renamed to the final name
    ref = export_dataset(Noisy(toy, 0.1), tmp_path / "ref.h5", kind="noise", base=toy, epsilon=0.1, chunk=16,
                         progress=False)
    export_dataset(Noisy(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    _same_export(target, ref)


@pytest.mark.parametrize("damage", ["pixel", "zero_factors", "rows_done"])
def test_an_export_that_disagrees_with_itself_is_rebuilt(tmp_path, toy, damage, caplog):
    ref = export_dataset(Noisy(toy, 0.1), tmp_path / "ref.h5", kind="noise", base=toy, epsilon=0.1, chunk=16,
                         progress=False)
    p = export_dataset(Noisy(toy, 0.1), tmp_path / "n.h5", kind="noise", base=toy, epsilon=0.1, chunk=16,
                       progress=False)
    with h5py.File(p, "r+") as f:
        if damage == "pixel":  # a silently lost write: one pixel differs from what was written
            f["images"][40, 0, 5, 5] ^= 1
        elif damage == "zero_factors":  # the full-disk file: complete counter, factors zeros
            f["factors"][32:] = 0
        else:
            f.attrs["rows_done"] = 16
    export_dataset(Noisy(toy, 0.1), p, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    assert "rebuilding it" in caplog.text
    _same_export(p, ref)


def test_a_partial_with_a_bad_chunk_resumes_from_the_last_intact_one(tmp_path, toy):
    calls = {"n": 0}
    Counting = _stopping_noise(calls, at=4)

    target = tmp_path / "n.h5"
    with pytest.raises(KeyboardInterrupt):
        export_dataset(Counting(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    with h5py.File(str(target) + ".partial", "r+") as f:
        assert [bool(d) for d in f["chunk_crc32"][...]] == [True, True, True, False]
        f["images"][20, 0, 0, 0] ^= 1  # chunk 1 (rows 16-31) no longer matches its digest
    calls["n"] = 10
    export_dataset(Counting(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    assert calls["n"] == 10 + 3  # chunks 1, 2, 3 rewritten; chunk 0 kept
    ref = export_dataset(Noisy(toy, 0.1), tmp_path / "ref.h5", kind="noise", base=toy, epsilon=0.1, chunk=16,
                         progress=False)
    _same_export(target, ref)


@pytest.mark.parametrize("code", ["ENOSPC", "EIO"])
def test_a_write_error_midway_is_an_error_and_the_rerun_is_identical(tmp_path, toy, monkeypatch, code):
    import errno
    import os

    from vaebias._internal.errors import RunError

    real, calls = os.pwrite, {"n": 0}

    def failing(fd, data, offset):
        calls["n"] += 1
        if calls["n"] == 9:  # chunk 2's images (4 writes per chunk)
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
        return real(fd, data, offset)

    target = tmp_path / "n.h5"
    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(RunError, match=f"write failed \\({os.strerror(getattr(errno, code))}\\).*rerun"):
        export_dataset(Noisy(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    monkeypatch.setattr(os, "pwrite", real)
    assert not target.exists() and target.with_name("n.h5.partial").exists()
    export_dataset(Noisy(toy, 0.1), target, kind="noise", base=toy, epsilon=0.1, chunk=16, progress=False)
    ref = export_dataset(Noisy(toy, 0.1), tmp_path / "ref.h5", kind="noise", base=toy, epsilon=0.1, chunk=16,
                         progress=False)
    _same_export(target, ref)
