"""CIFAR ResNets (He et al. 2016, the 6n+2 variant) with option-A or option-B shortcuts.

Option A (parameter-free: subsample and zero-pad channels) is what the shared pretrained weights were
trained with. Option B here is its exact equivalent as a fixed 0/1 1x1 convolution with stride 2, which
pruning engines can trace and slice like any other conv. Both load the same state dicts with strict=True.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Shortcut = Literal["A", "B"]


class PadShortcut(nn.Module):
    """Option A: `x[:, :, ::2, ::2]`, zero-padded by `pad` channels on each side (no parameters)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class ShortcutConv(nn.Conv2d):
    """Option B: a fixed 0/1 1x1 stride-2 conv exactly equal to `PadShortcut`.

    The weight is a frozen Parameter (requires_grad=False) so that pruning can slice it. A state-dict
    pre-hook fills the weight when it is absent, so option-A checkpoints load with strict=True.
    """

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__(in_planes, planes, kernel_size=1, stride=2, bias=False)
        pad = (planes - in_planes) // 2
        with torch.no_grad():
            self.weight.zero_()
            idx = torch.arange(in_planes)
            self.weight[idx + pad, idx, 0, 0] = 1.0
        self.weight.requires_grad_(False)
        self.register_load_state_dict_pre_hook(_fill_fixed_weight)


def _fill_fixed_weight(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Option-A state dicts have no shortcut weight: supply the fixed one."""
    key = prefix + "weight"
    if key not in state_dict:
        state_dict[key] = module.weight.detach().clone()


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes != 2 * in_planes:
                raise ValueError("option A/B shortcuts need stride 2 and doubled channels")
            self.shortcut = PadShortcut(planes // 4) if shortcut == "A" else ShortcutConv(in_planes, planes)

    @property
    def droppable_inner(self) -> str | None:
        """The layer whose output channels are the branch's inner width, when the whole block may be removed
        (identity shortcut: without the branch it is relu(x) = x on its non-negative input); else None."""
        return "conv1" if isinstance(self.shortcut, nn.Identity) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """conv1 (16) -> layer1/2/3 (16/32/64 channels, n blocks each) -> global pool -> linear."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "B") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._layer(16, 16, n, 1, shortcut)
        self.layer2 = self._layer(16, 32, n, 2, shortcut)
        self.layer3 = self._layer(32, 64, n, 2, shortcut)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not isinstance(m, ShortcutConv):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _layer(in_planes: int, planes: int, n: int, stride: int, shortcut: Shortcut) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride, shortcut)]
        blocks += [BasicBlock(planes, planes, 1, shortcut) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: Shortcut = "B") -> CifarResNet:
    """A CIFAR ResNet of `depth` (6n+2); shortcut "B" (default) is the prunable exact form of "A"."""
    return CifarResNet(depth, num_classes, in_channels, shortcut)
