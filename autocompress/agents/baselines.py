"""Baselines in the same protocol as the learning agents: random search and one fixed (uniform) action."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from autocompress.agents.base import AgentError, rng_state, set_rng_state


class RandomAgent:
    """Random search: every action drawn uniformly from the action space with its own seeded Generator."""

    def __init__(self, action_space: spaces.Space, seed: int = 0):
        if isinstance(action_space, spaces.Box) and not action_space.is_bounded():
            raise AgentError(f"RandomAgent needs a bounded Box or a Discrete space, got {action_space}")
        if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
            raise AgentError(f"RandomAgent supports Box and Discrete action spaces, got {action_space}")
        self.action_space = action_space
        self.rng = np.random.default_rng(seed)
        self._episode = 0

    @property
    def episode(self) -> int:
        return self._episode

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray | int:
        space = self.action_space
        if isinstance(space, spaces.Discrete):
            return int(space.start + self.rng.integers(space.n))
        unit = self.rng.random(space.shape)
        return (space.low + unit * (space.high - space.low)).astype(space.dtype)

    def observe(
        self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        self._episode += int(terminated)

    def update(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "random", "rng": rng_state(self.rng), "episode": self._episode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])
        self._episode = int(state["episode"])


class UniformAgent:
    """The same action at every step (e.g. the uniform ratio that meets the budget, found by bisection)."""

    def __init__(self, action: np.ndarray | int | float):
        self.action = (
            action if isinstance(action, (int, np.integer)) else np.asarray(action, dtype=np.float32)
        )
        self._episode = 0

    @property
    def episode(self) -> int:
        return self._episode

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray | int:
        return self.action if isinstance(self.action, (int, np.integer)) else self.action.copy()

    def observe(
        self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        self._episode += int(terminated)

    def update(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "episode": self._episode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._episode = int(state["episode"])


class ScheduleAgent:
    """Plays a fixed per-step action list, one action per step of each episode (an allocation computed
    outside the agent, e.g. global ranking or sensitivity analysis, replayed through the env)."""

    def __init__(self, actions: list[float]):
        if not actions:
            raise AgentError("ScheduleAgent needs at least one action.")
        self.actions = [np.asarray([a], dtype=np.float32) for a in actions]
        self._step = 0
        self._episode = 0

    @property
    def episode(self) -> int:
        return self._episode

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        return self.actions[min(self._step, len(self.actions) - 1)].copy()

    def observe(
        self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        self._step = 0 if terminated else self._step + 1
        self._episode += int(terminated)

    def update(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "schedule", "episode": self._episode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._episode = int(state["episode"])
        self._step = 0
