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
        """The Box action of bin `action`; a float, bool or out-of-range index is an agent bug, not a bin."""
        n = len(self.levels)
        index = action.item() if isinstance(action, np.ndarray) and action.size == 1 else action
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise ConfigError(
                f"DiscreteActions.step: action {action!r} is not a bin index; the action space is Discrete({n}): "
                f"pass an integer in [0, {n - 1}]."
            )
        return np.array([self.levels[int(index)]], dtype=np.float32)
