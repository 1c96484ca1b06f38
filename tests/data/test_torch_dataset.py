"""Every dataset is a torch map-style Dataset: ``data[i]`` and ``data.__getitems__`` give
(image, factors) pairs, so that ``DataLoader(data, batch_size=..., shuffle=True)`` works."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vaebias.data import load_dataset


@pytest.fixture(scope="module", params=[("toy", {"num_positions": 8}), ("blobs", {}), ("dsprites", {})])
def data(request):
    name, options = request.param
    return load_dataset(name, **options)


def test_item_is_the_image_and_factors_of_the_flat_index(data):
    n = len(data)
    for i in (0, 1, n // 2 + 3, n - 1):
        image, factors = data[i]
        # the flat index is row-major over the factor grid (numpy's unravel_index, C order)
        expected = np.array(np.unravel_index(i, data.factor_sizes), dtype=np.int64)
        assert factors.dtype == torch.int64 and factors.tolist() == expected.tolist()
        assert image.dtype == torch.float32 and tuple(image.shape) == tuple(data.observation_shape)
        assert torch.equal(image, data.images(expected[None])[0])
    assert torch.equal(data[-1][1], data[n - 1][1])


def test_out_of_range_and_non_integer_indices(data):
    n = len(data)
    with pytest.raises(IndexError, match=f"index {n} out of range; expected -{n} <= index < {n}"):
        data[n]
    with pytest.raises(IndexError):
        data[-n - 1]
    with pytest.raises(TypeError):
        data[1.5]


def test_dataloader_batches_match_the_dataset(data):
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    images, factors = next(iter(loader))
    assert images.shape == (16, *data.observation_shape) and factors.shape == (16, data.num_factors)
    assert torch.equal(images, data.images(factors.numpy()))
    assert len(set(map(tuple, factors.tolist()))) > 1  # shuffled, not one point repeated


def test_getitems_is_one_batch_of_pairs(data):
    pairs = data.__getitems__([3, 0, -1])
    assert [p[1].tolist() for p in pairs] == [data[3][1].tolist(), data[0][1].tolist(), data[-1][1].tolist()]
    assert all(torch.equal(p[0], data[i][0]) for p, i in zip(pairs, (3, 0, -1)))
