"""Action wrappers: discrete prune-ratio bins for value-based agents (DQN)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from autocompress.config import ConfigError


class DiscreteActions(gym.ActionWrapper):
    """Turns the env's Box(0, 1, (1,)) action into Discrete(bins): bin i is the action i / (bins - 1)."""

    def __init__(self, env: gym.Env, bins: int = 11):
        super().__init__(env)
        if bins < 2:
            raise ConfigError(f"DiscreteActions: bins must be >= 2, got {bins}.")
        box = env.action_space
        if not isinstance(box, gym.spaces.Box) or box.shape != (1,):
            raise ConfigError(f"DiscreteActions wraps a Box action of shape (1,), got {box}.")
        self.levels = np.linspace(box.low[0], box.high[0], bins, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(bins)

    def action(self, action: int) -> np.ndarray:
        return np.array([self.levels[int(action)]], dtype=np.float32)
