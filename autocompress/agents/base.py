"""The agent protocol, and the episode bookkeeping that every learning agent shares.

AMC's credit assignment: the environment pays a reward only at the end of an episode; every
transition of the episode gets that final reward, minus a moving-average baseline of final rewards.
As in AMC's code, the raw final reward is what goes to replay and the baseline is subtracted when a
batch is sampled: a baseline frozen in at insertion time would make an old mediocre episode look
better than a new good one once the baseline has risen, and the critic would learn contradictory targets.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from autocompress.config import AutocompressError


class AgentError(AutocompressError, ValueError):
    """An agent was given a space, config or checkpoint it cannot work with."""


@runtime_checkable
class Agent(Protocol):
    """What the search loop drives. Agents see only arrays and Gymnasium spaces."""

    @property
    def episode(self) -> int:
        """Episodes completed so far."""
        ...

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray | int:
        """Action for `obs`; `explore=False` gives the greedy policy."""
        ...

    def observe(
        self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        """Record one transition; at `terminated` the episode's credit is assigned and stored."""
        ...

    def update(self) -> dict[str, float]:
        """Learn from the episode just finished; metrics with `agent/...` keys."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (loadable with torch.load(weights_only=True))."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EpisodeCredit:
    """Buffers an episode's transitions until it ends; keeps the moving-average baseline.

    The baseline is an exponential moving average of final rewards, started at the first one.
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)
        self.baseline: float | None = None
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending_reward = 0.0

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray) -> None:
        self.pending.append(
            (np.asarray(obs, np.float32), np.asarray(action), np.asarray(next_obs, np.float32))
        )
        self.pending_reward += float(reward)

    def finish(self) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
        """Close the episode: its transitions and its final reward; updates the baseline."""
        final = self.pending_reward
        prev = final if self.baseline is None else self.baseline
        self.baseline = self.decay * prev + (1 - self.decay) * final
        episode, self.pending, self.pending_reward = self.pending, [], 0.0
        return episode, final

    def state_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "pending_reward": self.pending_reward,
            "pending": [tuple(torch.from_numpy(np.array(x)) for x in t) for t in self.pending],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = state["baseline"]
        self.pending_reward = float(state["pending_reward"])
        self.pending = [tuple(x.numpy().copy() for x in t) for t in state["pending"]]


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's state as plain Python data (safe for torch.load(weights_only=True))."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


def soft_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.mul_(1 - tau).add_(s, alpha=tau)


def mlp(in_dim: int, hidden: int, out_dim: int) -> torch.nn.Sequential:
    """Two hidden ReLU layers, as in AMC's actor and critic."""
    return torch.nn.Sequential(
        torch.nn.Linear(in_dim, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, out_dim),
    )
