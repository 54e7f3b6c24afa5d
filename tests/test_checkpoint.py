"""Checkpoints load without running code, refuse damaged files, and still read the old format safely."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle

import numpy as np
import pytest
import torch

from autocompress import checkpoint
from autocompress.checkpoint import CheckpointError
from autocompress.envs.rewards import Outcome


class _Planted:
    """What an attacker would put in a shared run folder: unpickling it runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tensors() -> dict:
    return {"agent": {"w": torch.arange(6.0).reshape(2, 3), "episode": 7, "rng": {"state": 2**100 + 3}}}


def test_round_trip_keeps_tensors_and_json(tmp_path):
    meta = {"episode": 7, "best": {"schedule": {"a": np.float32(0.25)}, "reward": float("-inf")}, "n": np.int64(3)}
    checkpoint.save(tmp_path / "c.pt", _tensors(), meta)
    version, tensors, back = checkpoint.load(tmp_path / "c.pt")
    assert version == checkpoint.VERSION
    assert torch.equal(tensors["agent"]["w"], _tensors()["agent"]["w"])
    assert tensors["agent"]["rng"]["state"] == 2**100 + 3
    assert back == {"episode": 7, "best": {"schedule": {"a": 0.25}, "reward": float("-inf")}, "n": 3}


@pytest.mark.parametrize("form", ["torch_zip", "raw_pickle", "v2_container"])
def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path, form):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    evil = {"format": "autocompress.checkpoint", "agent": _Planted(str(marker))}
    if form == "torch_zip":
        torch.save(evil, path)
    elif form == "raw_pickle":
        path.write_bytes(pickle.dumps(evil))
    else:  # a well-formed container with a valid checksum around the planted object
        checkpoint.save(path, {"agent": {}}, {})
        buf = io.BytesIO()
        torch.save({"tensors": evil, "meta": "{}"}, buf)
        payload = buf.getvalue()
        header = {"version": checkpoint.VERSION, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        path.write_bytes(checkpoint.MAGIC + json.dumps(header).encode() + b"\n" + payload)
    with pytest.raises(CheckpointError, match="not loaded|not an autocompress"):
        checkpoint.load(path, legacy_classes=[Outcome])
    assert not marker.exists(), "loading the checkpoint ran the planted command"


def test_every_single_bit_flip_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, _tensors(), {"episode": 7, "cache": [[1, 2], {"x": 0.5}]})
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    for bit in rng.choice(len(good) * 8, size=50, replace=False):
        damaged = bytearray(good)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError):
            checkpoint.load(path)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(path)


def test_version_1_files_still_load_without_unsafe_unpickling(tmp_path):
    outcome = Outcome(top1=0.5, macs=10, macs_ratio=0.5, params_ratio=0.4, latency_ratio=None, budget=0.5)
    torch.save({"format": "autocompress.checkpoint", "env_cache": {(3, 4): (outcome, {"top1": 50.0})}},
               tmp_path / "old.pt")
    version, state, meta = checkpoint.load(tmp_path / "old.pt", legacy_classes=[Outcome])
    assert (version, meta) == (1, None)
    assert state["env_cache"][(3, 4)][0] == outcome
    with pytest.raises(CheckpointError, match="not loaded"):  # without the allowance the class is refused
        checkpoint.load(tmp_path / "old.pt")
