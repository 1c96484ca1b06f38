"""Own datasets: from_arrays, the plain npz and the vaebias HDF5 file, full grids in any
order and labelled samples."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vaebias.data import DataError, from_arrays, load_dataset, require_full_grid, save_dataset
from vaebias.data.pairs import LaplaceTransitionSampler


def _grid(shuffle_seed=None):
    """A 4x3 grid; image (a, b) has one lit pixel at row a, column b."""
    f = np.stack(np.meshgrid(np.arange(4), np.arange(3), indexing="ij"), -1).reshape(-1, 2)
    if shuffle_seed is not None:
        f = f[np.random.default_rng(shuffle_seed).permutation(len(f))]
    imgs = np.zeros((len(f), 1, 16, 16), np.uint8)
    imgs[np.arange(len(f)), 0, f[:, 0], f[:, 1]] = 255
    return imgs, f


def _lit(x):
    """(row, col) of the lit pixel of each image float (n, 1, 16, 16)."""
    flat = x.flatten(1).argmax(1)
    return torch.stack([flat // 16, flat % 16], 1).numpy()


def test_shuffled_full_grid_is_reordered():
    imgs, f = _grid(shuffle_seed=0)
    d = from_arrays(imgs, f, factor_names=["row", "col"])
    assert d.is_full_grid and len(d) == 12 and d.factor_sizes == (4, 3)
    q = np.array([[2, 1], [0, 0], [3, 2]])
    assert np.array_equal(_lit(d.images(q)), q)             # each image found by its factors
    # flat index i is the grid's row-major order, whatever the stored order
    assert np.array_equal(d.factors_of(np.arange(12)), np.array([[a, b] for a in range(4) for b in range(3)]))
    image, factors = d[5]
    assert factors.tolist() == [1, 2] and image[0, 1, 2] == 1.0 and image.sum() == 1.0


def test_labelled_sample():
    imgs, f = _grid(shuffle_seed=1)
    d = from_arrays(imgs[:7], f[:7])
    assert not d.is_full_grid and len(d) == 7
    assert np.array_equal(d.factors_of(np.arange(7)), f[:7])       # flat index = stored row
    drawn = d.sample_factors(200, np.random.default_rng(0))
    held = {tuple(r) for r in f[:7]}
    assert {tuple(r) for r in drawn} == held                        # only stored rows, all of them
    assert np.array_equal(_lit(d.images(drawn)), drawn)
    missing = f[7]
    with pytest.raises(DataError, match=rf"factors \[{missing[0]}, {missing[1]}\] are not in dataset"):
        d.images(missing[None])
    with pytest.raises(DataError, match="a labelled sample of 7 points.*Laplace transition pairs requires neighbouring factor values"):
        LaplaceTransitionSampler(d)
    with pytest.raises(DataError, match="the dataset audit"):
        require_full_grid(d, "the dataset audit")
    images, factors = next(iter(DataLoader(d, batch_size=7, shuffle=True)))
    assert np.array_equal(_lit(images), factors.numpy())


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("sample", [False, True])
def test_save_and_load_round_trip(tmp_path, suffix, sample):
    imgs, f = _grid(shuffle_seed=2)
    n = 7 if sample else 12
    d = from_arrays(imgs[:n], f[:n], factor_names=["row", "col"], categorical=[1], name="mine", epsilon=0.2)
    path = save_dataset(d, tmp_path / f"mine{suffix}", progress=False)
    back = load_dataset(str(path))
    assert back.factor_names == ("row", "col") and back.factor_sizes == (4, 3)
    assert back.categorical_factors == (1,) and back.name == "mine" and back.epsilon == pytest.approx(0.2)
    assert back.is_full_grid == (not sample) and len(back) == n
    assert torch.equal(back.images(f[:n]), d.images(f[:n]))


def test_format_from_content_not_suffix(tmp_path):
    imgs, f = _grid()
    npz_named_h5 = tmp_path / "really_npz.h5"
    with open(npz_named_h5, "wb") as fh:
        np.savez(fh, images=imgs, factors=f)
    assert type(load_dataset(str(npz_named_h5))).__name__ == "ArrayDataset"
    h5_named_npz = tmp_path / "really_h5.npz"
    with h5py.File(h5_named_npz, "w") as h:     # the minimal file: two keys, no attributes
        h["images"], h["factors"] = imgs, f
    d = load_dataset(str(h5_named_npz))
    assert type(d).__name__ == "ExportedDataset" and d.factor_names == ("factor0", "factor1")
    assert d.factor_sizes == (4, 3) and d.name == "really_h5"


def test_attributes_native_or_json(tmp_path):
    imgs, f = _grid()
    for i, (names, sizes) in enumerate([('["r", "c"]', "[4, 3]"), (np.array([b"r", b"c"]), np.array([4, 3]))]):
        p = tmp_path / f"a{i}.h5"
        with h5py.File(p, "w") as h:
            h["images"], h["factors"] = imgs, f
            h.attrs["factor_names"], h.attrs["factor_sizes"] = names, sizes
        assert load_dataset(str(p)).factor_names == ("r", "c")


@pytest.mark.parametrize("attr, value, message", [
    ("factor_sizes", "[4, x]", "attribute 'factor_sizes' = '\\[4, x\\]' is not a JSON list"),
    ("factor_sizes", "[4]", "attribute 'factor_sizes' = \\[4\\]; expected 2 integers >= 0"),
    ("factor_sizes", "[2, 3]", "factor 0 \\('factor0'\\) has class index 2 at row 6; expected 0 <= index < 2"),
    ("factor_names", '["a"]', "attribute 'factor_names' has 1 names; expected 2"),
    ("observation_shape", "[3, 16, 16]", "attribute 'observation_shape' = \\[3, 16, 16\\] but images are"),
    ("format", "something", "attribute 'format' = 'something'; expected 'vaebias-dataset'"),
    ("categorical_factors", "[5]", "attribute 'categorical_factors' = \\[5\\]; expected factor indices in"),
    ("epsilon", "abc", "attribute 'epsilon' = 'abc'; expected a number"),
])
def test_bad_attributes_are_named(tmp_path, attr, value, message):
    imgs, f = _grid()
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as h:
        h["images"], h["factors"] = imgs, f
        h.attrs[attr] = value
    with pytest.raises(DataError, match=message):
        load_dataset(str(p))


@pytest.mark.parametrize("arrays, message", [
    (lambda i, f: dict(images=i, factors=f[:5]), "12 images but 5 factor rows"),
    (lambda i, f: dict(images=i.transpose(0, 2, 3, 1), factors=f), "channels last"),
    (lambda i, f: dict(images=i.astype(np.float32), factors=f), "values in \\[0, 255\\]"),
    (lambda i, f: dict(images=i, factors=f + 0.5), "expected integer class indices"),
    (lambda i, f: dict(images=i, factors=f - 1), "has class index -1 at row 0; expected indices >= 0"),
    (lambda i, f: dict(images=i, factors=np.zeros_like(f)), "rows 0 and 1 have the same factors \\[0, 0\\]"),
])
def test_bad_arrays_are_named(arrays, message):
    imgs, f = _grid()
    with pytest.raises(DataError, match=message):
        from_arrays(**arrays(imgs, f))


def test_npz_missing_key(tmp_path):
    imgs, f = _grid()
    p = tmp_path / "x.npz"
    np.savez(p, images=imgs, labels=f)
    with pytest.raises(DataError, match="npz with keys \\['images', 'labels'\\]; expected a vaebias dataset"):
        load_dataset(str(p))
