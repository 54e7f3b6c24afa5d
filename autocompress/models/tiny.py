"""A tiny CNN for unit tests and quick runs: 8-16 channels, one residual addition, any input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyCNN(nn.Module):
    """conv(8) -> conv(16, stride 2) -> [conv(16) -> conv(16)] + skip -> global pool -> linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        y = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(x + self.bn4(self.conv4(y)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_cnn(num_classes: int = 10, in_channels: int = 3) -> TinyCNN:
    return TinyCNN(num_classes, in_channels)
