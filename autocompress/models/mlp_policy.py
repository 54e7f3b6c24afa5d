"""MLP policies of deep-RL agents (observation -> action logits, Q-values or continuous action), as plain
`nn.Sequential`s that Torch-Pruning prunes like any network.

The layout (Linear, activation, ..., Linear; state-dict keys 0, 2, 4, ...) is that of a Stable-Baselines3
policy with net_arch [256, 256] (the RL Zoo's width), [64, 64] (SB3's default for PPO) or a deeper d x w (d in
DEPTHS: more layers give a search more allocations to choose between) once its policy MLP and action head are
joined (`autocompress.sb3_policy.extract_policy`): Tanh for PPO / A2C, ReLU for DQN's Q-network. For a policy,
`in_channels` is the observation size and `num_classes` the number of outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

HIDDEN = (256, 256)
"""Hidden widths of the default zoo policy MLPs (Stable-Baselines3's net_arch)."""
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
WIDTHS = (256, 64)
"""Each width w gives d x w zoo MLPs; 2 x 256 keeps the plain names, 2 x w gets a `_<w>` suffix, d x w `_<d>x<w>`."""
DEPTHS = (2, 3, 4)
"""Hidden layers of the zoo MLPs (all of one width)."""


def mlp_policy(num_classes: int = 2, in_channels: int = 4, activation: type[nn.Module] = nn.Tanh,
               hidden: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    """in_channels -> hidden... -> num_classes, `activation` after every hidden layer."""
    layers: list[nn.Module] = []
    width = in_channels
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def policy_zoo_name(activation: str, width: int, depth: int = 2) -> str:
    """`mlp_policy_<activation>` for 2 x 256, `..._<width>` for the other 2 x w, `..._<depth>x<width>` deeper."""
    if depth != len(HIDDEN):
        return f"mlp_policy_{activation}_{depth}x{width}"
    return f"mlp_policy_{activation}" + ("" if width == HIDDEN[0] else f"_{width}")


POLICY_ZOO: dict[str, Callable[..., nn.Sequential]] = {
    policy_zoo_name(act, w, d): partial(mlp_policy, activation=cls, hidden=(w,) * d)
    for act, cls in ACTIVATIONS.items() for w in WIDTHS for d in DEPTHS
}
"""Zoo entries: d x w MLPs per activation (Tanh: SB3 PPO / A2C's policy with its action head; ReLU: DQN's
Q-network)."""
