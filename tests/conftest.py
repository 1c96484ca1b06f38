import numpy as np
import pytest
import torch

from vaebias.data.toy import ToySquares


@pytest.fixture
def toy():
    return ToySquares(num_positions=8, side=12)


def tiny_train(steps=12, seed=0, **kw):
    d = {"steps": steps, "batch_size": 8, "seed": seed, "checkpoint_every": 5, "log_every": 2,
         "device": "cpu"}
    d.update(kw)
    return d


def pytest_configure(config):
    # One torch thread: the tests' tiny batches gain nothing from more, and on a shared
    # machine two threads per process oversubscribe the cores (10-100x slowdowns seen).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
