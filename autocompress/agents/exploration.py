"""How DQN draws its random (epsilon) actions over a factored (ratio bin x precision) action set.

`uniform` draws every step's random action independently and uniformly, the textbook choice. Over a
network of G groups and a joint action that is a poor explorer: the chance that an episode keeps
every group in one precision is 2^-G, and nearly every episode prunes most groups, so light
compressions (quantize everything, remove one block) are never tried. `episodic` correlates the
random actions within an episode instead (in the spirit of parameter-space noise): each episode
draws its own intensity `q` (the share of groups given a random ratio bin; the rest keep bin 0, no
pruning) and its own precision mix from a sparse Dirichlet, so episodes range from "touch one group"
to "prune everything", and from all-FP32 through mixed to all-INT8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class Explorer(Protocol):
    """Draws random action indices; `new_episode` is called before each episode's first step."""

    def new_episode(self, rng: np.random.Generator) -> None: ...

    def sample(self, rng: np.random.Generator) -> int: ...

    def state(self) -> list[float]: ...

    def load_state(self, state: list[float]) -> None: ...


class UniformExplorer:
    """Every random action uniform over all bins x precisions, independently per step."""

    def __init__(self, bins: int, precisions: int) -> None:
        self.n = bins * precisions

    def new_episode(self, rng: np.random.Generator) -> None:
        return None

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n))

    def state(self) -> list[float]:
        return []

    def load_state(self, state: list[float]) -> None:
        return None


class EpisodicExplorer:
    """Random actions that share one intensity and one precision mix per episode.

    Index i means ratio bin i // precisions and precision i % precisions, as `DiscreteActions` maps them.
    The intensity is u^2 for u ~ U(0, 1) (median 0.25: light episodes are common), the precision mix
    Dirichlet(0.2, ...) (most episodes lean hard towards one precision).
    """

    CONCENTRATION = 0.2

    def __init__(self, bins: int, precisions: int) -> None:
        self.bins = int(bins)
        self.precisions = int(precisions)
        self.intensity = 1.0
        self.mix = np.full(self.precisions, 1.0 / self.precisions)

    def new_episode(self, rng: np.random.Generator) -> None:
        self.intensity = float(rng.random() ** 2)
        self.mix = rng.dirichlet(np.full(self.precisions, self.CONCENTRATION))

    def sample(self, rng: np.random.Generator) -> int:
        ratio_bin = int(rng.integers(self.bins)) if rng.random() < self.intensity else 0
        precision = int(rng.choice(self.precisions, p=self.mix)) if self.precisions > 1 else 0
        return ratio_bin * self.precisions + precision

    def state(self) -> list[float]:
        return [self.intensity, *self.mix.tolist()]

    def load_state(self, state: list[float]) -> None:
        if state:
            self.intensity = float(state[0])
            self.mix = np.asarray(state[1:], dtype=np.float64)


EXPLORERS: dict[str, Callable[[int, int], Explorer]] = {
    "uniform": UniformExplorer,
    "episodic": EpisodicExplorer,
}
"""`dqn.exploration` names -> explorer classes (bins, precisions)."""
