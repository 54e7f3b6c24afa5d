"""A synthetic compression environment with a known optimum, for testing agents quickly.

Description:
    Six "layers" with a cost share `costs[i]` (sums to 1, like a share of FLOPs) and a hidden
    sensitivity `sensitivity[i]`. One step per layer; the action is a normalised prune ratio mapped
    to [0, max_ratio]. A budget wall (as AMC's) raises each ratio just enough that the remaining
    layers, pruned at max_ratio, can still bring the kept cost down to `budget`.
Action Space:
    Box(0, 1, (1,), float32): prune_ratio = action * max_ratio.
Observation Space:
    Box(0, 1, (7,), float32): [step / N, cost share / max cost share, cost share of later layers,
    previous prune ratio, cost already removed / needed, cost still to remove / needed, bias 1].
    Sensitivities are not observed: the agent must learn them from the reward, as in the real env.
Rewards:
    0 until the last step, then accuracy = 1 - sum_i sensitivity[i] * prune_ratio[i] ** 2, which is
    concave; its maximum under the budget is found exactly by `optimum()` (KKT + bisection).
Version History:
    v0: first version.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

COSTS = np.array([0.10, 0.25, 0.15, 0.20, 0.10, 0.20])
SENSITIVITY = np.array([1.2, 0.15, 0.8, 0.1, 1.0, 0.35])


class ToyCompressEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, budget: float = 0.5, max_ratio: float = 0.8, costs=COSTS, sensitivity=SENSITIVITY):
        self.costs = np.asarray(costs, dtype=np.float64)
        self.sensitivity = np.asarray(sensitivity, dtype=np.float64)
        self.n = len(self.costs)
        self.budget = budget
        self.max_ratio = max_ratio
        self.need = 1.0 - budget  # cost share that must be removed
        if self.need > max_ratio * self.costs.sum() + 1e-12:
            raise ValueError("budget unreachable at max_ratio")
        self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (7,), np.float32)
        self._t = 0
        self._ratios = np.zeros(self.n)

    def _obs(self) -> np.ndarray:
        t = self._t
        removed = float(self.costs[:t] @ self._ratios[:t])
        prev = self._ratios[t - 1] if t > 0 else 0.0
        feats = [
            t / self.n,
            self.costs[t] / self.costs.max() if t < self.n else 0.0,
            self.costs[t + 1 :].sum(),
            prev,
            min(removed / self.need, 1.0),
            max(self.need - removed, 0.0) / self.need,
            1.0,
        ]
        return np.clip(np.array(feats, dtype=np.float32), 0.0, 1.0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._ratios = np.zeros(self.n)
        return self._obs(), {}

    def wall(self, prune_ratio: float) -> float:
        """Raise `prune_ratio` so that the budget stays reachable with later layers at max_ratio."""
        t = self._t
        removed = float(self.costs[:t] @ self._ratios[:t])
        rest = self.max_ratio * self.costs[t + 1 :].sum()
        lowest = (self.need - removed - rest) / self.costs[t]
        return float(np.clip(prune_ratio, max(lowest, 0.0), self.max_ratio))

    def step(self, action):
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        self._ratios[self._t] = self.wall(a * self.max_ratio)
        self._t += 1
        terminated = self._t == self.n
        reward = self.accuracy(self._ratios) if terminated else 0.0
        info = {"prune_ratios": self._ratios.copy()} if terminated else {}
        obs = self._obs() if not terminated else np.zeros(7, np.float32)
        return obs, reward, terminated, False, info

    def accuracy(self, prune_ratios: np.ndarray) -> float:
        return float(1.0 - self.sensitivity @ np.asarray(prune_ratios) ** 2)

    def kept_cost(self, prune_ratios: np.ndarray) -> float:
        return float(self.costs @ (1.0 - np.asarray(prune_ratios)))

    def optimum(self) -> tuple[np.ndarray, float]:
        """Best prune ratios under the budget: r_i = min(max_ratio, lam * c_i / (2 s_i)), lam by bisection."""
        lo, hi = 0.0, 1e6
        for _ in range(200):
            lam = 0.5 * (lo + hi)
            r = np.minimum(self.max_ratio, lam * self.costs / (2 * self.sensitivity))
            lo, hi = (lam, hi) if self.costs @ r < self.need else (lo, lam)
        r = np.minimum(self.max_ratio, hi * self.costs / (2 * self.sensitivity))
        return r, self.accuracy(r)
