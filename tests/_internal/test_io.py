"""Checkpoints load with ``weights_only=True``; anything else is refused with one message."""

import pickle

import pytest
import torch

from vaebias._internal.errors import RunError
from vaebias._internal.io import atomic_torch_save, canonical_json, load_checkpoint


class _NotPlainData:
    pass


def test_checkpoint_round_trip_and_refusal(tmp_path):
    good = {"step": 3, "model": {"w": torch.arange(4.0)}, "numpy_rng": {"state": {"key": [1, 2]}}}
    atomic_torch_save(good, tmp_path / "ok.pt")
    back = load_checkpoint(tmp_path / "ok.pt")
    assert back["step"] == 3 and torch.equal(back["model"]["w"], torch.arange(4.0))

    torch.save({"step": 1, "obj": _NotPlainData()}, tmp_path / "evil.pt")
    with pytest.raises(RunError, match="not a vaebias checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")

    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:20])
    with pytest.raises(RunError, match="corrupt checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    assert not issubclass(RunError, pickle.UnpicklingError)


def test_canonical_json_is_key_order_free():
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1}) == '{"a":[1,2],"b":1}'
