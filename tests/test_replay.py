"""ReplayBuffer: shapes, dtypes, ring wraparound, seeded sampling, checkpoint round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from autocompress.agents.replay import Batch, ReplayBuffer


def _fill(buf: ReplayBuffer, n: int, obs_dim: int = 3) -> None:
    for i in range(n):
        buf.push(
            np.full(obs_dim, i, np.float32),
            np.full(buf.action.shape[1:], i),
            float(i),
            np.full(obs_dim, i + 1),
            i % 2 == 1,
        )


def test_sample_shapes_and_dtypes() -> None:
    buf = ReplayBuffer(100, obs_dim=3, action_shape=(2,))
    _fill(buf, 10)
    b = buf.sample(4, np.random.default_rng(0))
    assert isinstance(b, Batch)
    assert b.obs.shape == (4, 3) and b.next_obs.shape == (4, 3)
    assert b.action.shape == (4, 2) and b.reward.shape == (4,) and b.done.shape == (4,)
    assert all(t.dtype == torch.float32 for t in b)
    # transitions stay aligned: next_obs = obs + 1, reward = obs, done = odd index
    assert torch.equal(b.next_obs, b.obs + 1)
    assert torch.equal(b.reward, b.obs[:, 0])
    assert torch.equal(b.done, (b.obs[:, 0] % 2 == 1).float())


def test_discrete_actions_are_int64() -> None:
    buf = ReplayBuffer(10, obs_dim=3, action_shape=(), action_dtype=np.int64)
    _fill(buf, 5)
    b = buf.sample(3, np.random.default_rng(0))
    assert b.action.dtype == torch.int64 and b.action.shape == (3,)
    assert torch.equal(b.action.float(), b.obs[:, 0])


def test_wraparound_overwrites_oldest() -> None:
    buf = ReplayBuffer(5, obs_dim=3)
    _fill(buf, 7)
    assert len(buf) == 5 and buf.pos == 2
    assert sorted(buf.obs[:, 0].tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 were overwritten
    b = buf.sample(5, np.random.default_rng(1))
    assert sorted(b.obs[:, 0].tolist()) == [2, 3, 4, 5, 6]  # without replacement when enough are stored


def test_sampling_is_seeded_and_allows_small_buffers() -> None:
    buf = ReplayBuffer(50, obs_dim=3)
    _fill(buf, 30)
    a, b = (buf.sample(8, np.random.default_rng(7)) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    small = ReplayBuffer(50, obs_dim=3)
    _fill(small, 3)
    assert small.sample(8, np.random.default_rng(0)).obs.shape == (8, 3)  # with replacement
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(5, obs_dim=3).sample(1, np.random.default_rng(0))


def test_state_dict_round_trip_through_torch_save() -> None:
    buf = ReplayBuffer(5, obs_dim=3)
    _fill(buf, 7)
    f = io.BytesIO()
    torch.save(buf.state_dict(), f)
    f.seek(0)
    other = ReplayBuffer(5, obs_dim=3)
    other.load_state_dict(torch.load(f, weights_only=True))
    assert (other.pos, len(other)) == (buf.pos, len(buf))
    x, y = (r.sample(4, np.random.default_rng(3)) for r in (buf, other))
    assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True))
    with pytest.raises(ValueError, match="shape"):
        ReplayBuffer(6, obs_dim=3).load_state_dict(buf.state_dict())
