"""Action wrappers: discrete prune-ratio bins (and precisions) for value-based agents (DQN)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from autocompress.config import ConfigError


class DiscreteActions(gym.ActionWrapper):
    """Turns the env's Box(0, 1, (1,)) action into Discrete(bins): bin i is the action i / (bins - 1).

    A joint action Box(0, 1, (2,)) (prune ratio, precision) becomes Discrete(bins * precisions): index
    i is ratio bin i // precisions with precision i % precisions (the env's `precision_choices`), so one
    Q-value per (ratio, precision) pair.
    """

    def __init__(self, env: gym.Env, bins: int = 11):
        super().__init__(env)
        if bins < 2:
            raise ConfigError(f"DiscreteActions: bins must be >= 2, got {bins}.")
        box = env.action_space
        if not isinstance(box, gym.spaces.Box) or box.shape not in ((1,), (2,)):
            raise ConfigError(f"DiscreteActions wraps a Box action of shape (1,) or (2,), got {box}.")
        self.levels = np.linspace(box.low[0], box.high[0], bins, dtype=np.float32)
        self.precisions = len(getattr(env.unwrapped, "precision_choices", ("fp32", "int8"))) if box.shape == (2,) else 1
        # the middle of each precision's share of [0, 1], as the env maps its second number
        self.precision_levels = (np.arange(self.precisions, dtype=np.float32) + 0.5) / self.precisions
        self.action_space = gym.spaces.Discrete(bins * self.precisions)

    def action(self, action: int) -> np.ndarray:
        """The Box action of bin `action`; a float, bool or out-of-range index is an agent bug, not a bin."""
        n = len(self.levels) * self.precisions
        index = action.item() if isinstance(action, np.ndarray) and action.size == 1 else action
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise ConfigError(
                f"DiscreteActions.step: action {action!r} is not a bin index; the action space is Discrete({n}): "
                f"pass an integer in [0, {n - 1}]."
            )
        if self.precisions == 1:
            return np.array([self.levels[int(index)]], dtype=np.float32)
        ratio_bin, precision = divmod(int(index), self.precisions)
        return np.array([self.levels[ratio_bin], self.precision_levels[precision]], dtype=np.float32)
