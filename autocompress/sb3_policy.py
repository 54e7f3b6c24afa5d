"""Stable-Baselines3 agents as prunable networks: train one on a Gymnasium task, and take out its policy.

What acts in an SB3 agent is a plain MLP behind a flattening feature extractor: for PPO / A2C the policy
branch of `mlp_extractor` followed by `action_net` (action logits, or the Gaussian mean for continuous
actions); for DQN the Q-network. `extract_policy` joins them into one `nn.Sequential` (observation -> outputs)
whose state dict loads into the zoo's `mlp_policy_tanh` / `mlp_policy_relu` (2 x 256; `_64` for 2 x 64, `_4x64`
for 4 x 64), and whose deterministic action (argmax, or the mean clipped to the bounds) is SB3's
`predict(obs, deterministic=True)`.
Needs the `dev` extra (`pip install stable-baselines3`).
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.atomic import atomic_torch_save
from autocompress.config import AutocompressError
from autocompress.models.mlp_policy import ACTIVATIONS, DEPTHS, WIDTHS, policy_zoo_name

ZOO_HIDDEN = [256, 256]
"""The default net_arch (the RL Zoo's); `train_agent(hidden=...)` takes any d x w with d in DEPTHS, w in WIDTHS."""
ZOO_SHAPES = f"d x w (d in {list(DEPTHS)}, w in {list(WIDTHS)})"


def in_zoo(hidden: list[int]) -> bool:
    """Whether hidden widths `hidden` are one of the zoo's MLP shapes (d layers of one width w)."""
    return len(hidden) in DEPTHS and len(set(hidden)) == 1 and hidden[0] in WIDTHS


PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    # RL Baselines3 Zoo's tuned hyper-parameters (without observation normalisation, which the extracted
    # network would not carry), net_arch [256, 256] as the zoo models have.
    ("ppo", "CartPole-v1"): {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
                             "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2, "n_envs": 8},
    ("dqn", "CartPole-v1"): {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000,
                             "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10,
                             "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
                             "exploration_final_eps": 0.04},
    ("dqn", "Acrobot-v1"): {"learning_rate": 6.3e-4, "batch_size": 128, "buffer_size": 50_000,
                            "learning_starts": 0, "gamma": 0.99, "target_update_interval": 250, "train_freq": 4,
                            "gradient_steps": -1, "exploration_fraction": 0.12, "exploration_final_eps": 0.1},
}
ALGOS = ("ppo", "dqn")


class SB3Error(AutocompressError):
    """Stable-Baselines3 is missing, or an agent's policy is not the MLP this module can take out."""


def _sb3() -> Any:
    try:
        return importlib.import_module("stable_baselines3")
    except ImportError:
        raise SB3Error("training or reading an RL agent needs Stable-Baselines3: pip install stable-baselines3 "
                       '(or pip install -e ".[dev]").') from None


def train_agent(algo: str, env_id: str, timesteps: int, seed: int = 0, path: str | Path | None = None,
                hidden: list[int] | None = None) -> Any:
    """An SB3 `algo` agent (ppo, dqn) with net_arch `hidden` (default [256, 256]), trained on `env_id` for
    `timesteps` steps with PRESETS' hyper-parameters (SB3's defaults otherwise); saved to `path` (.zip) when given."""
    if algo not in ALGOS:
        raise SB3Error(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}.")
    hidden = list(hidden or ZOO_HIDDEN)
    if not in_zoo(hidden):
        raise SB3Error(f"net_arch {hidden}: the zoo's policy MLPs are {ZOO_SHAPES}; pick one.")
    sb3 = _sb3()
    kwargs = dict(PRESETS.get((algo, env_id), {}))
    n_envs = kwargs.pop("n_envs", 1)
    env = sb3.common.env_util.make_vec_env(env_id, n_envs=n_envs, seed=seed)
    cls = sb3.PPO if algo == "ppo" else sb3.DQN
    agent = cls("MlpPolicy", env, seed=seed, policy_kwargs={"net_arch": hidden}, verbose=0,
                device="cpu", **kwargs)
    agent.learn(total_timesteps=timesteps)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        agent.save(str(path))
    return agent


def load_agent(algo: str, path: str | Path) -> Any:
    """A saved SB3 agent (no env attached: only its policy is used)."""
    sb3 = _sb3()
    cls = {"ppo": sb3.PPO, "dqn": sb3.DQN}.get(algo)
    if cls is None:
        raise SB3Error(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}.")
    return cls.load(str(path), device="cpu")


def _check_flat(policy: Any) -> None:
    extractor = getattr(policy, "features_extractor", None)
    if type(extractor).__name__ != "FlattenExtractor":
        raise SB3Error(f"the policy reads observations through {type(extractor).__name__}; only MLP policies "
                       "(FlattenExtractor) can be taken out as one network.")


def extract_policy(agent: Any) -> nn.Sequential:
    """The agent's acting network as one nn.Sequential (a copy): obs -> action logits / mean / Q-values."""
    policy = agent.policy
    if hasattr(policy, "q_net"):  # DQN
        _check_flat(policy.q_net)
        layers = list(copy.deepcopy(policy.q_net.q_net))
    elif hasattr(policy, "mlp_extractor") and hasattr(policy, "action_net"):  # PPO / A2C
        _check_flat(policy)
        layers = [*copy.deepcopy(policy.mlp_extractor.policy_net), copy.deepcopy(policy.action_net)]
    else:
        raise SB3Error(f"{type(policy).__name__}: not a PPO / A2C / DQN MLP policy.")
    return nn.Sequential(*layers).eval()


def zoo_name(net: nn.Sequential) -> str:
    """The zoo model whose state dict `net` has (d x w hidden, one activation kind), or an SB3Error."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    acts = {type(m) for m in net if not isinstance(m, nn.Linear)}
    hidden = [m.out_features for m in linears[:-1]]
    by_class = {cls: name for name, cls in ACTIVATIONS.items()}
    if not in_zoo(hidden) or len(acts) != 1 or next(iter(acts)) not in by_class:
        raise SB3Error(f"the policy has hidden widths {hidden} and activations {sorted(a.__name__ for a in acts)}; "
                       f"the zoo's policy MLPs are {ZOO_SHAPES} with Tanh or ReLU (train with "
                       f"net_arch {ZOO_HIDDEN}, [64, 64] or e.g. [64, 64, 64, 64]).")
    return policy_zoo_name(by_class[next(iter(acts))], hidden[0], len(hidden))


def save_policy(agent: Any, path: str | Path) -> tuple[str, Path]:
    """Write the agent's acting network as a state dict for `model.weights`; (zoo model name, path)."""
    net = extract_policy(agent)
    name = zoo_name(net)
    atomic_torch_save(Path(path), net.state_dict())
    return name, Path(path)
