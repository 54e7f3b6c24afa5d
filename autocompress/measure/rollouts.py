"""A torch network as a policy in a Gymnasium task: seeded episodes, returns, and the states it visits.

Episodes run side by side, one Gymnasium env each, stepped in lockstep so that every step is one batched
forward pass (20 CartPole episodes of 500 steps: 500 calls of batch <= 20 instead of 10,000 of batch 1).
Actions are deterministic: the argmax of the outputs (discrete) or the outputs clipped to the action space
(continuous). Episode i starts from `reset(seed=first_seed + i)`, so a seed gives the same episodes, and a
deterministic policy the same returns. Episodes run with one intra-op thread: batches of a few observations
gain nothing from more, and on a loaded 2-core machine two threads made them ~100x slower (spin-waiting
threads; building a CartPole env took 26 s instead of 0.19 s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from autocompress.config import MAX_TASK_EPISODES, AutocompressError, RLTaskConfig
from autocompress.measure.latency import torch_threads

Policy = Callable[[torch.Tensor], np.ndarray]
"""A batch of observations (float32, (n, *obs_shape)) -> a batch of actions the env accepts."""


class TaskError(AutocompressError):
    """A Gymnasium task cannot be made or does not fit the policy; the message says which and why."""


@dataclass(frozen=True)
class TaskSpec:
    """What a policy network for a task must take and give."""

    obs_shape: tuple[int, ...]
    n_outputs: int
    """Discrete: one logit / Q-value per action; continuous: one number per action dimension."""
    low: np.ndarray | None = None
    """Continuous action bounds (None for discrete)."""
    high: np.ndarray | None = None


def make_env(task: RLTaskConfig) -> gym.Env:
    """The task's Gymnasium env, cut at `max_steps` when set; unknown ids are one-line TaskErrors."""
    kwargs = {} if task.max_steps is None else {"max_episode_steps": task.max_steps}
    try:
        return gym.make(task.env_id, **kwargs)
    except gym.error.Error as exc:
        raise TaskError(f"env.task.env_id {task.env_id!r}: {str(exc).splitlines()[0]}") from None
    except ImportError as exc:  # e.g. Box2D or MuJoCo tasks without their extra
        raise TaskError(f"env.task.env_id {task.env_id!r} needs a package that is not installed ({exc}).") from None


def task_spec(task: RLTaskConfig) -> TaskSpec:
    """Observation shape and output count of `task`, checked against `task.action`."""
    env = make_env(task)
    try:
        obs, act = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs, gym.spaces.Box):
        raise TaskError(f"{task.env_id}: observations are {type(obs).__name__}; only Box observations are supported.")
    if isinstance(act, gym.spaces.Discrete) and task.action == "discrete":
        return TaskSpec(tuple(obs.shape), int(act.n))
    if isinstance(act, gym.spaces.Box) and task.action == "continuous":
        return TaskSpec(tuple(obs.shape), int(np.prod(act.shape)), act.low.astype(np.float32),
                        act.high.astype(np.float32))
    raise TaskError(f"{task.env_id} has a {type(act).__name__} action space; env.task.action "
                    f"{task.action!r} does not fit it (use {'discrete' if task.action == 'continuous' else 'continuous'}).")


def network_policy(model: nn.Module, spec: TaskSpec) -> Policy:
    """`model` (eval mode, no grad) as a deterministic policy for `spec`'s task."""
    model.eval()

    def act(obs: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = model(obs).float()
        if spec.low is None:
            return out.argmax(dim=1).numpy()
        return np.clip(out.reshape(len(obs), -1).numpy(), spec.low.reshape(-1), spec.high.reshape(-1))

    return act


def random_policy(spec: TaskSpec, seed: int) -> Policy:
    """Uniformly random actions from a seeded generator: the floor a return is normalised against."""
    rng = np.random.default_rng(seed)

    def act(obs: torch.Tensor) -> np.ndarray:
        if spec.low is None:
            return rng.integers(0, spec.n_outputs, size=len(obs))
        return rng.uniform(spec.low.reshape(-1), spec.high.reshape(-1), size=(len(obs), spec.n_outputs))

    return act


@dataclass
class Rollouts:
    """Seeded episodes of one policy: their returns and, when asked, every observation the policy acted on."""

    returns: list[float]
    lengths: list[int]
    observations: torch.Tensor | None = None


def _step_all(envs: list[gym.Env], active: list[int], actions: np.ndarray, obs: list[np.ndarray],
              returns: list[float], lengths: list[int]) -> list[int]:
    """Step each active episode with its action, in place; the episodes still running."""
    still = []
    for i, action in zip(active, actions, strict=True):
        obs[i], reward, terminated, truncated, _ = envs[i].step(action)
        returns[i] += float(reward)
        lengths[i] += 1
        if not (terminated or truncated):
            still.append(i)
    return still


def run_episodes(policy: Policy, task: RLTaskConfig, first_seed: int, episodes: int,
                 keep_observations: bool = False) -> Rollouts:
    """Play episodes first_seed .. first_seed + episodes - 1 side by side (one batched call per step)."""
    if not 1 <= episodes <= MAX_TASK_EPISODES:
        raise TaskError(f"episodes must be in [1, {MAX_TASK_EPISODES}], got {episodes}.")
    envs = [make_env(task) for _ in range(episodes)]
    obs = [env.reset(seed=first_seed + i)[0] for i, env in enumerate(envs)]
    returns, lengths = [0.0] * episodes, [0] * episodes
    active, seen = list(range(episodes)), []
    try:
        with torch_threads(1):
            while active:
                batch = torch.as_tensor(np.stack([obs[i] for i in active]), dtype=torch.float32)
                if keep_observations:
                    seen.append(batch)
                active = _step_all(envs, active, policy(batch), obs, returns, lengths)
    finally:
        for env in envs:
            env.close()
    return Rollouts(returns, lengths, torch.cat(seen) if keep_observations else None)


def collect_observations(policy: Policy, task: RLTaskConfig, count: int, first_seed: int,
                         batch_episodes: int = 8) -> torch.Tensor:
    """`count` observations the policy acts on in seeded episodes first_seed, first_seed + 1, ..., played
    `batch_episodes` at a time until enough states were visited (the same seed gives the same states)."""
    chunks, have, seed = [], 0, first_seed
    while have < count:
        if seed - first_seed >= MAX_TASK_EPISODES:
            raise TaskError(f"{task.env_id}: {MAX_TASK_EPISODES} episodes gave only {have} of {count} observations.")
        obs = run_episodes(policy, task, seed, batch_episodes, keep_observations=True).observations
        chunks.append(obs)
        have += len(obs)
        seed += batch_episodes
    return torch.cat(chunks)[:count]


@dataclass
class PolicyBundle:
    """What a policy experiment has in place of a dataset: the task, its spaces, and the observations the
    unpruned policy visited from `task.train_seed` (behaviour cloning's data)."""

    task: RLTaskConfig
    spec: TaskSpec
    observations: torch.Tensor

    @property
    def name(self) -> str:
        return self.task.env_id

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One observation's shape (what the network takes, and what latency is timed on)."""
        return self.spec.obs_shape

    @property
    def num_classes(self) -> int:
        """The network's outputs (actions, or action dimensions)."""
        return self.spec.n_outputs
