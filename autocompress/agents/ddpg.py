"""DDPG as in AMC (He et al. 2018): continuous prune ratios, truncated-normal noise, final-reward credit."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from autocompress.agents.base import AgentError, EpisodeCredit, mlp, rng_state, set_rng_state, soft_update
from autocompress.agents.noise import TruncatedNormalNoise
from autocompress.agents.replay import ReplayBuffer
from autocompress.config import DDPGConfig


class DDPGAgent:
    """Actor obs -> [0, 1]^k (sigmoid) mapped onto the Box bounds; critic (obs, action) -> Q.

    Internally actions live in [0, 1]^k; `act` returns them in the Box's own units and `observe`
    maps them back, so the agent fits any bounded Box.
    """

    def __init__(self, obs_dim: int, action_space: spaces.Box, cfg: DDPGConfig, seed: int = 0):
        if not isinstance(action_space, spaces.Box) or not action_space.is_bounded():
            raise AgentError(f"DDPGAgent needs a bounded Box action space, got {action_space}")
        self.cfg = cfg
        self.action_space = action_space
        self.low = action_space.low.astype(np.float64)
        self.span = (action_space.high - action_space.low).astype(np.float64)
        act_dim = int(np.prod(action_space.shape))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = torch.nn.Sequential(mlp(obs_dim, cfg.hidden, act_dim), torch.nn.Sigmoid())
            self.critic = mlp(obs_dim + act_dim, cfg.hidden, 1)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_critic)
        self.replay = ReplayBuffer(cfg.replay_size, obs_dim, (act_dim,))
        self.noise = TruncatedNormalNoise(cfg.noise_sigma, cfg.noise_decay, cfg.warmup_episodes)
        self.credit = EpisodeCredit(cfg.baseline_decay)
        self.rng = np.random.default_rng(seed)
        self._episode = 0
        self._last_steps = 0

    @property
    def episode(self) -> int:
        return self._episode

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        if explore and self._episode < self.cfg.warmup_episodes:
            unit = self.rng.random(self.span.shape)
        else:
            with torch.no_grad():
                mu = self.actor(torch.as_tensor(obs, dtype=torch.float32)[None])[0].double().numpy()
            unit = self.noise(mu, self._episode, self.rng) if explore else mu
        unit = unit.reshape(self.action_space.shape)
        return (self.low + unit * self.span).astype(self.action_space.dtype)

    def observe(
        self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        unit = (np.asarray(action, np.float64).reshape(self.span.shape) - self.low) / self.span
        self.credit.add(obs, np.clip(unit, 0, 1).ravel(), reward, next_obs)
        if terminated:
            transitions, final = self.credit.finish()
            for i, (o, a, o2) in enumerate(transitions):
                self.replay.push(o, a, final, o2, i == len(transitions) - 1)
            self._episode += 1
            self._last_steps = len(transitions)

    def update(self) -> dict[str, float]:
        """One gradient step per transition of the last episode (x updates_per_step), after warm-up."""
        metrics = {
            "agent/noise_sigma": self.noise.sigma_at(self._episode),
            "agent/reward_baseline": self.baseline,
        }
        n = self._last_steps * self.cfg.updates_per_step
        self._last_steps = 0
        if n == 0 or self._episode < self.cfg.warmup_episodes or len(self.replay) < self.cfg.batch_size:
            return metrics
        sums = np.zeros(3)
        for _ in range(n):
            sums += self._gradient_step()
        metrics.update(
            zip(
                ("agent/critic_loss", "agent/actor_loss", "agent/q_mean"),
                (sums / n).tolist(),
                strict=True,
            )
        )
        return metrics

    def _gradient_step(self) -> tuple[float, float, float]:
        b = self.replay.sample(self.cfg.batch_size, self.rng)
        with torch.no_grad():
            next_q = self.critic_target(torch.cat([b.next_obs, self.actor_target(b.next_obs)], 1)).squeeze(1)
            target = (b.reward - self.credit.baseline) + self.cfg.discount * (1 - b.done) * next_q
        q = self.critic(torch.cat([b.obs, b.action], 1)).squeeze(1)
        critic_loss = F.mse_loss(q, target)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        actor_loss = -self.critic(torch.cat([b.obs, self.actor(b.obs)], 1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        soft_update(self.actor_target, self.actor, self.cfg.tau)
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        return critic_loss.item(), actor_loss.item(), q.mean().item()

    @property
    def baseline(self) -> float:
        return float("nan") if self.credit.baseline is None else self.credit.baseline

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "ddpg",
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "replay": self.replay.state_dict(),
            "credit": self.credit.state_dict(),
            "rng": rng_state(self.rng),
            "episode": self._episode,
            "last_steps": self._last_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "ddpg":
            raise AgentError(f"not a DDPG agent checkpoint (kind={state.get('kind')!r})")
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.replay.load_state_dict(state["replay"])
        self.credit.load_state_dict(state["credit"])
        set_rng_state(self.rng, state["rng"])
        self._episode = int(state["episode"])
        self._last_steps = int(state["last_steps"])
