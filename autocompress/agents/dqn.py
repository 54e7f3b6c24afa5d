"""DQN over discrete prune-ratio bins: target network, replay, epsilon schedule, double-DQN targets."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autocompress.agents.base import AgentError, EpisodeCredit, mlp, rng_state, set_rng_state
from autocompress.agents.exploration import EXPLORERS
from autocompress.agents.replay import ReplayBuffer
from autocompress.config import DQNConfig


class DQNAgent:
    """Q-network obs -> n_actions values; credit as in AMC (final reward minus a moving baseline).

    `precisions` > 1 says the actions are (ratio bin, precision) pairs, index = bin * precisions +
    precision, which the `episodic` explorer needs to vary the two separately.
    """

    def __init__(self, obs_dim: int, n_actions: int, cfg: DQNConfig, seed: int = 0, precisions: int = 1):
        if n_actions < 2:
            raise AgentError(f"DQNAgent needs at least 2 actions, got {n_actions}")
        if precisions < 1 or n_actions % precisions:
            raise AgentError(f"DQNAgent: {n_actions} actions do not split into {precisions} precisions")
        self.cfg = cfg
        self.n_actions = int(n_actions)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.q = mlp(obs_dim, cfg.hidden, n_actions)
        self.q_target = copy.deepcopy(self.q)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.replay = ReplayBuffer(cfg.replay_size, obs_dim, (), np.int64)
        self.credit = EpisodeCredit(cfg.baseline_decay)
        self.rng = np.random.default_rng(seed)
        self._episode = 0
        self._last_steps = 0
        self._grad_steps = 0
        self.explorer = EXPLORERS[cfg.exploration](n_actions // precisions, precisions)
        self._episode_open = False

    @property
    def episode(self) -> int:
        return self._episode

    @property
    def epsilon(self) -> float:
        """1 during warm-up, then linear from epsilon_start to epsilon_end over epsilon_decay_episodes."""
        cfg = self.cfg
        past = self._episode - cfg.warmup_episodes
        if past < 0:
            return 1.0
        frac = min(1.0, past / max(cfg.epsilon_decay_episodes, 1))
        return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)

    def act(self, obs: np.ndarray, explore: bool = True) -> int:
        if explore and not self._episode_open:
            self.explorer.new_episode(self.rng)
            self._episode_open = True
        if explore and self.rng.random() < self.epsilon:
            return self.explorer.sample(self.rng)
        with torch.no_grad():
            return int(self.q(torch.as_tensor(obs, dtype=torch.float32)[None]).argmax(1).item())

    def observe(
        self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        self.credit.add(obs, np.asarray(int(action)), reward, next_obs)
        if terminated:
            transitions, final = self.credit.finish()
            for i, (o, a, o2) in enumerate(transitions):
                self.replay.push(o, a, final, o2, i == len(transitions) - 1)
            self._episode += 1
            self._last_steps = len(transitions)
            self._episode_open = False

    def update(self) -> dict[str, float]:
        """One gradient step per transition of the last episode (x updates_per_step), after warm-up."""
        metrics = {"agent/epsilon": self.epsilon, "agent/reward_baseline": self.baseline}
        n = self._last_steps * self.cfg.updates_per_step
        self._last_steps = 0
        if n == 0 or self._episode < self.cfg.warmup_episodes or len(self.replay) < self.cfg.batch_size:
            return metrics
        sums = np.zeros(2)
        for _ in range(n):
            sums += self._gradient_step()
        metrics.update(zip(("agent/critic_loss", "agent/q_mean"), (sums / n).tolist(), strict=True))
        return metrics

    def _gradient_step(self) -> tuple[float, float]:
        b = self.replay.sample(self.cfg.batch_size, self.rng)
        with torch.no_grad():
            if self.cfg.double:
                best = self.q(b.next_obs).argmax(1, keepdim=True)
                next_q = self.q_target(b.next_obs).gather(1, best).squeeze(1)
            else:
                next_q = self.q_target(b.next_obs).max(1).values
            # Rewards are stored raw; subtracting today's baseline keeps old and new targets consistent.
            target = (b.reward - self.credit.baseline) + self.cfg.discount * (1 - b.done) * next_q
        q = self.q(b.obs).gather(1, b.action[:, None]).squeeze(1)
        loss = F.smooth_l1_loss(q, target)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self._grad_steps += 1
        if self._grad_steps % self.cfg.target_update_steps == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        return loss.item(), q.mean().item()

    @property
    def baseline(self) -> float:
        return float("nan") if self.credit.baseline is None else self.credit.baseline

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "dqn",
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "opt": self.opt.state_dict(),
            "replay": self.replay.state_dict(),
            "credit": self.credit.state_dict(),
            "rng": rng_state(self.rng),
            "episode": self._episode,
            "last_steps": self._last_steps,
            "grad_steps": self._grad_steps,
            "explorer": [float(self._episode_open), *self.explorer.state()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "dqn":
            raise AgentError(f"not a DQN agent checkpoint (kind={state.get('kind')!r})")
        for name in ("q", "q_target", "opt"):
            getattr(self, name).load_state_dict(state[name])
        self.replay.load_state_dict(state["replay"])
        self.credit.load_state_dict(state["credit"])
        set_rng_state(self.rng, state["rng"])
        self._episode = int(state["episode"])
        self._last_steps = int(state["last_steps"])
        self._grad_steps = int(state["grad_steps"])
        explorer = list(state.get("explorer", [0.0]))  # checkpoints from before explorers have none
        self._episode_open = bool(explorer[0])
        self.explorer.load_state(explorer[1:])
