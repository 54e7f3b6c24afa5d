"""MLP policies of deep-RL agents (observation -> action logits, Q-values or continuous action), as plain
`nn.Sequential`s that Torch-Pruning prunes like any network.

The layout (Linear, activation, Linear, activation, Linear; state-dict keys 0, 2, 4) is that of a
Stable-Baselines3 policy with net_arch [256, 256] once its policy MLP and action head are joined
(`autocompress.sb3_policy.extract_policy`): Tanh for PPO / A2C, ReLU for DQN's Q-network. For a policy,
`in_channels` is the observation size and `num_classes` the number of outputs.
"""

from __future__ import annotations

from torch import nn

HIDDEN = (256, 256)
"""Hidden widths of the zoo's policy MLPs (Stable-Baselines3's net_arch)."""


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


def mlp_policy_tanh(num_classes: int = 2, in_channels: int = 4) -> nn.Sequential:
    """A 2 x 256 Tanh MLP: SB3 PPO / A2C's policy network with its action head."""
    return mlp_policy(num_classes, in_channels, nn.Tanh)


def mlp_policy_relu(num_classes: int = 2, in_channels: int = 4) -> nn.Sequential:
    """A 2 x 256 ReLU MLP: SB3 DQN's Q-network."""
    return mlp_policy(num_classes, in_channels, nn.ReLU)
