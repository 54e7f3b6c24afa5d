"""Agents on the toy compression env (known optimum): they learn, they are deterministic, they resume exactly."""

from __future__ import annotations

import io
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from scipy.optimize import minimize
from toy_env import ToyCompressEnv

from autocompress.agents import Agent, AgentError, DDPGAgent, DQNAgent, RandomAgent, UniformAgent
from autocompress.config import DDPGConfig, DQNConfig
from autocompress.envs.wrappers import DiscreteActions

# Settings for a modest CPU budget (~100 episodes); AMC's defaults assume 400+ episodes.
DDPG_FAST = replace(DDPGConfig(), warmup_episodes=20, lr_actor=1e-3, updates_per_step=4, noise_decay=0.97)
DQN_FAST = replace(DQNConfig(), warmup_episodes=20, epsilon_decay_episodes=80, hidden=128)
OBS_DIM = 7


def run_episode(env: gym.Env, agent, explore: bool = True, learn: bool = True) -> tuple[float, list, dict]:
    """One episode; returns the final reward, the actions taken and the update() metrics."""
    obs, _ = env.reset(seed=0)
    actions = []
    while True:
        action = agent.act(obs, explore)
        actions.append(np.array(action).tolist())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        if learn:
            agent.observe(obs, action, float(reward), next_obs, terminated)
        obs = next_obs
        if terminated or truncated:
            return float(reward), actions, (agent.update() if learn else {})


def train(env: gym.Env, agent, episodes: int) -> list[float]:
    return [run_episode(env, agent)[0] for _ in range(episodes)]


def random_search_best(env: gym.Env, episodes: int, seeds=range(5)) -> float:
    """Median over seeds of random search's best reward in `episodes` episodes."""
    return float(np.median([max(train(env, RandomAgent(env.action_space, s), episodes)) for s in seeds]))


# --- the toy env itself -------------------------------------------------------------------------------


def test_toy_env_passes_check_env_and_meets_budget_for_random_actions() -> None:
    env = ToyCompressEnv()
    check_env(env, skip_render_check=True)
    rng = np.random.default_rng(0)
    for _ in range(50):
        env.reset()
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(rng.random(1).astype(np.float32))
        assert env.kept_cost(info["prune_ratios"]) <= env.budget + 1e-9


def test_toy_env_optimum_matches_numerical_optimiser() -> None:
    env = ToyCompressEnv()
    ratios, acc = env.optimum()
    res = minimize(
        lambda r: -env.accuracy(r),
        x0=np.full(env.n, 0.5),
        bounds=[(0, env.max_ratio)] * env.n,
        constraints=[{"type": "ineq", "fun": lambda r: env.budget - env.kept_cost(r)}],
        method="SLSQP",
    )
    assert res.success
    assert acc >= -res.fun - 1e-6
    np.testing.assert_allclose(ratios, res.x, atol=1e-3)
    # the problem is non-trivial: insensitive layers go to the maximum, uniform pruning is far worse
    assert ratios[np.argmin(env.sensitivity)] == pytest.approx(env.max_ratio)
    assert env.accuracy(np.full(env.n, 1 - env.budget)) < acc - 0.5


# --- learning ----------------------------------------------------------------------------------------


def test_ddpg_beats_random_search_on_toy_env() -> None:
    env = ToyCompressEnv()
    episodes = 100
    agent = DDPGAgent(OBS_DIM, env.action_space, DDPG_FAST, seed=0)
    rewards = train(env, agent, episodes)
    greedy = run_episode(env, agent, explore=False, learn=False)[0]
    random_best = random_search_best(env, episodes)
    _, optimum = env.optimum()
    print(
        f"ddpg: best {max(rewards):.3f} greedy {greedy:.3f} random best {random_best:.3f} optimum {optimum:.3f}"
    )
    assert max(rewards) > random_best
    assert greedy > random_best, (greedy, random_best, optimum)
    assert greedy > optimum - 0.1


def test_dqn_beats_random_search_on_toy_env() -> None:
    env = DiscreteActions(ToyCompressEnv(), bins=DQN_FAST.bins)
    episodes = 150
    agent = DQNAgent(OBS_DIM, env.action_space.n, DQN_FAST, seed=0)
    rewards = train(env, agent, episodes)
    greedy = run_episode(env, agent, explore=False, learn=False)[0]
    random_best = random_search_best(env, episodes)
    print(f"dqn: best {max(rewards):.3f} greedy {greedy:.3f} random best {random_best:.3f}")
    assert max(rewards) > random_best
    assert greedy > random_best - 0.05, (greedy, random_best)  # the greedy policy is close to the best found
    assert agent.epsilon == pytest.approx(DQN_FAST.epsilon_end, abs=0.2)


# --- protocol, metrics, credit ---------------------------------------------------------------------


def _agents(env_box: gym.Env, warmup: int = 3):
    return {
        "ddpg": (
            env_box,
            lambda seed: DDPGAgent(
                OBS_DIM,
                env_box.action_space,
                replace(DDPG_FAST, warmup_episodes=warmup, hidden=32, batch_size=8),
                seed,
            ),
        ),
        "dqn": (
            DiscreteActions(env_box, bins=5),
            lambda seed: DQNAgent(
                OBS_DIM,
                5,
                replace(DQN_FAST, warmup_episodes=warmup, hidden=32, batch_size=8, target_update_steps=7),
                seed,
            ),
        ),
        "dqn_episodic": (
            DiscreteActions(env_box, bins=5),
            lambda seed: DQNAgent(
                OBS_DIM,
                5,
                replace(DQN_FAST, warmup_episodes=warmup, hidden=32, batch_size=8, exploration="episodic"),
                seed,
            ),
        ),
        "random": (env_box, lambda seed: RandomAgent(env_box.action_space, seed)),
    }


@pytest.mark.parametrize("kind", ["ddpg", "dqn", "dqn_episodic", "random"])
def test_agents_follow_protocol(kind: str) -> None:
    env, make = _agents(ToyCompressEnv())[kind]
    agent = make(0)
    assert isinstance(agent, Agent)
    for _ in range(5):
        _, actions, metrics = run_episode(env, agent)
        assert all(
            env.action_space.contains(a if kind.startswith("dqn") else np.array(a, dtype=np.float32)) for a in actions
        )
    assert agent.episode == 5
    expected = {
        "ddpg": {
            "agent/actor_loss",
            "agent/critic_loss",
            "agent/q_mean",
            "agent/noise_sigma",
            "agent/reward_baseline",
        },
        "dqn": {"agent/critic_loss", "agent/q_mean", "agent/epsilon", "agent/reward_baseline"},
        "dqn_episodic": {"agent/critic_loss", "agent/q_mean", "agent/epsilon", "agent/reward_baseline"},
        "random": set(),
    }[kind]
    assert set(metrics) == expected
    assert all(np.isfinite(v) for v in metrics.values())
    assert "agent/critic_loss" not in agent.update()  # no new episode, no gradient steps


def test_final_reward_goes_to_every_transition_and_baseline_is_a_moving_average() -> None:
    env = ToyCompressEnv()
    agent = DDPGAgent(
        OBS_DIM, env.action_space, replace(DDPG_FAST, warmup_episodes=100, baseline_decay=0.9), seed=0
    )
    finals = [run_episode(env, agent)[0] for _ in range(3)]
    n = env.n
    for k, final in enumerate(finals):
        np.testing.assert_allclose(agent.replay.reward[k * n : (k + 1) * n], final, rtol=1e-6)
        np.testing.assert_array_equal(agent.replay.done[k * n : (k + 1) * n], [0] * (n - 1) + [1])
    expected = finals[0]
    for final in finals[1:]:
        expected = 0.9 * expected + 0.1 * final
    assert agent.baseline == pytest.approx(expected)


def test_ddpg_maps_actions_to_box_bounds_and_noise_decays() -> None:
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32))
    cfg = replace(DDPG_FAST, warmup_episodes=2, hidden=16, batch_size=4, noise_sigma=0.4, noise_decay=0.5)
    agent = DDPGAgent(3, space, cfg, seed=0)
    obs = np.zeros(3, np.float32)
    for _ in range(4):
        for t in range(3):
            a = agent.act(obs)
            assert a.shape == (2,) and space.contains(a)
            agent.observe(obs, a, 1.0, obs, t == 2)
        agent.update()
    assert agent.replay.action[: len(agent.replay)].min() >= 0 and agent.replay.action.max() <= 1
    assert agent.update()["agent/noise_sigma"] == pytest.approx(0.4 * 0.5**2)  # 4 episodes, 2 past warm-up
    greedy = agent.act(obs, explore=False)
    np.testing.assert_array_equal(greedy, agent.act(obs, explore=False))


def test_bad_spaces_raise_agent_error() -> None:
    with pytest.raises(AgentError, match="bounded Box"):
        DDPGAgent(3, gym.spaces.Discrete(4), DDPG_FAST)
    with pytest.raises(AgentError, match="at least 2"):
        DQNAgent(3, 1, DQN_FAST)
    with pytest.raises(AgentError, match="Box and Discrete"):
        RandomAgent(gym.spaces.MultiBinary(3))
    agent = DQNAgent(3, 4, DQN_FAST)
    with pytest.raises(AgentError, match="not a DDPG"):
        DDPGAgent(3, gym.spaces.Box(0, 1, (1,)), DDPG_FAST).load_state_dict(agent.state_dict())


def test_baselines() -> None:
    rnd = RandomAgent(gym.spaces.Discrete(7), seed=3)
    draws = [rnd.act(np.zeros(2)) for _ in range(200)]
    assert all(isinstance(d, int) and 0 <= d < 7 for d in draws) and len(set(draws)) == 7
    assert (
        draws[:20] == [RandomAgent(gym.spaces.Discrete(7), seed=3).act(None) for _ in range(1)] + draws[1:20]
    )
    uni = UniformAgent(np.array([0.25], np.float32))
    env = ToyCompressEnv()
    reward, actions, metrics = run_episode(env, uni)
    assert actions == [[0.25]] * env.n and metrics == {} and uni.episode == 1
    assert UniformAgent(3).act(np.zeros(2)) == 3


# --- determinism and exact resume --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ddpg", "dqn", "dqn_episodic", "random"])
def test_same_seed_same_actions(kind: str) -> None:
    runs = []
    for _ in range(2):
        env, make = _agents(ToyCompressEnv())[kind]
        agent = make(11)
        runs.append([run_episode(env, agent)[1:] for _ in range(8)])
    assert runs[0] == runs[1]
    env, make = _agents(ToyCompressEnv())[kind]
    other = make(12)
    assert [run_episode(env, other)[1] for _ in range(8)] != [r[0] for r in runs[0]]


def _round_trip(state: dict) -> dict:
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=True)


@pytest.mark.parametrize("kind", ["ddpg", "dqn", "dqn_episodic", "random"])
def test_state_dict_resume_is_exact(kind: str) -> None:
    env_a, make = _agents(ToyCompressEnv())[kind]
    env_b, _ = _agents(ToyCompressEnv())[kind]
    agent = make(5)
    for _ in range(6):  # past warm-up, with updates done
        run_episode(env_a, agent)
    # checkpoint in the middle of an episode, so pending transitions must survive too
    obs, _ = env_a.reset(seed=0)
    env_b.reset(seed=0)
    for _ in range(2):
        a = agent.act(obs)
        next_obs, r, term, _, _ = env_a.step(a)
        env_b.step(a)
        agent.observe(obs, a, r, next_obs, term)
        obs = next_obs
    resumed = make(999)  # a different seed: everything must come from the checkpoint
    resumed.load_state_dict(_round_trip(agent.state_dict()))
    assert resumed.episode == agent.episode

    def finish(ag, env, obs):
        while True:
            a = ag.act(obs)
            next_obs, r, term, _, _ = env.step(a)
            ag.observe(obs, a, r, next_obs, term)
            obs = next_obs
            if term:
                return ag.update()

    assert finish(agent, env_a, obs) == finish(resumed, env_b, obs)
    assert [run_episode(env_a, agent)[1:] for _ in range(4)] == [
        run_episode(env_b, resumed)[1:] for _ in range(4)
    ]
    a_state, b_state = agent.state_dict(), resumed.state_dict()
    for name in ("actor", "critic_target", "q", "q_target"):
        if name in a_state:
            for k, v in a_state[name].items():
                assert torch.equal(v, b_state[name][k]), (name, k)


def test_truncated_normal_noise_matches_scipy_and_stays_in_bounds() -> None:
    from scipy.stats import truncnorm

    from autocompress.agents.noise import TruncatedNormalNoise, truncated_normal

    rng = np.random.default_rng(0)
    x = truncated_normal(np.full(20000, 0.9), 0.3, rng)
    a, b = (0 - 0.9) / 0.3, (1 - 0.9) / 0.3
    assert x.min() >= 0 and x.max() <= 1
    assert x.mean() == pytest.approx(truncnorm.mean(a, b, loc=0.9, scale=0.3), abs=0.01)
    assert x.std() == pytest.approx(truncnorm.std(a, b, loc=0.9, scale=0.3), abs=0.01)
    noise = TruncatedNormalNoise(0.5, 0.9, warmup_episodes=10)
    assert noise.sigma_at(0) == noise.sigma_at(10) == 0.5
    assert noise.sigma_at(12) == pytest.approx(0.5 * 0.81)


# --- exploration over a joint (ratio bin x precision) action ------------------------------------------


def _warmup_episodes(exploration: str, groups: int = 28, episodes: int = 300) -> list[list[tuple[int, int]]]:
    """(ratio bin, precision) per group for `episodes` all-random episodes of a 11 x 2 joint action."""
    cfg = replace(DQN_FAST, warmup_episodes=episodes, hidden=8, exploration=exploration)
    agent = DQNAgent(OBS_DIM, 22, cfg, seed=3, precisions=2)
    obs = np.zeros(OBS_DIM, dtype=np.float32)
    out = []
    for _ in range(episodes):
        actions = []
        for step in range(groups):
            a = agent.act(obs)
            actions.append(divmod(a, 2))
            agent.observe(obs, a, 0.0, obs, step == groups - 1)
        out.append(actions)
    return out


def _light_and_one_precision(episode: list[tuple[int, int]]) -> bool:
    """At most 3 groups pruned, and all but one group in the same precision."""
    pruned = sum(b > 0 for b, _ in episode)
    int8 = sum(p for _, p in episode)
    return pruned <= 3 and (int8 <= 1 or int8 >= len(episode) - 1)


def test_episodic_exploration_tries_light_single_precision_episodes_that_uniform_never_does() -> None:
    uniform = _warmup_episodes("uniform")
    episodic = _warmup_episodes("episodic")
    assert sum(map(_light_and_one_precision, uniform)) == 0
    assert sum(map(_light_and_one_precision, episodic)) >= 15  # ~10% expected
    # and it still covers heavy compression: some episodes prune most groups
    assert any(sum(b > 0 for b, _ in ep) >= 20 for ep in episodic)
    every = {a for ep in episodic for a in ep}
    assert every == {(b, p) for b in range(11) for p in range(2)}


def test_dqn_refuses_actions_that_do_not_split_into_precisions() -> None:
    with pytest.raises(AgentError, match="do not split into 2 precisions"):
        DQNAgent(OBS_DIM, 21, DQN_FAST, precisions=2)
