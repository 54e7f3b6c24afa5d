"""Replay buffer on preallocated numpy arrays; batches come back as a NamedTuple of torch tensors."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """One sampled minibatch (float32 tensors; `action` is int64 for discrete buffers)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor


class ReplayBuffer:
    """Fixed-capacity ring buffer: the oldest transitions are overwritten once it is full.

    Arrays are allocated once so that memory use is known up front and a checkpoint is a plain copy.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        action_shape: tuple[int, ...] = (1,),
        action_dtype: type | np.dtype = np.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.action = np.zeros((capacity, *action_shape), dtype=action_dtype)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.done = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def push(self, obs: Any, action: Any, reward: float, next_obs: Any, done: bool) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.pos
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.done[i] = float(done)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Uniform minibatch drawn with `rng` (without replacement while the buffer holds enough)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.choice(self.size, size=batch_size, replace=self.size < batch_size)
        return Batch(
            obs=torch.from_numpy(self.obs[idx]),
            action=torch.from_numpy(self.action[idx]),
            reward=torch.from_numpy(self.reward[idx]),
            next_obs=torch.from_numpy(self.next_obs[idx]),
            done=torch.from_numpy(self.done[idx]),
        )

    def state_dict(self) -> dict[str, Any]:
        """Contents as tensors (loadable with torch.load(weights_only=True))."""
        arrays = {k: torch.from_numpy(getattr(self, k).copy()) for k in _ARRAYS}
        return {**arrays, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in _ARRAYS:
            src = state[k].numpy() if isinstance(state[k], torch.Tensor) else np.asarray(state[k])
            dst = getattr(self, k)
            if src.shape != dst.shape:
                raise ValueError(f"replay buffer '{k}' has shape {src.shape}, expected {dst.shape}")
            dst[...] = src
        self.pos, self.size = int(state["pos"]), int(state["size"])


_ARRAYS = ("obs", "action", "reward", "next_obs", "done")
