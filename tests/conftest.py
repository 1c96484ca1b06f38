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


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)
