"""A recurrent zoo model: an image read as a sequence of rows (Fashion-MNIST as 28 steps of 28 pixels).

It gives the recurrent pruning path a real benchmark with no download: two stacked single-layer LSTMs (two
prune groups of hidden units, so the search has one decision per layer) and a Linear head on the last step.
"""

from __future__ import annotations

import torch
from torch import nn


class RowLSTM(nn.Module):
    """(N, C, H, W) -> H steps of C*W features -> LSTM(hidden) -> LSTM(hidden) -> last step -> Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 28, hidden: int = 128) -> None:
        super().__init__()
        self.lstm1 = nn.LSTM(in_channels * width, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)
        for lstm in (self.lstm1, self.lstm2):  # forget-gate bias 1: trains from scratch faster and more reliably
            with torch.no_grad():
                lstm.bias_ih_l0[hidden : 2 * hidden].fill_(1.0)
                lstm.bias_hh_l0[hidden : 2 * hidden].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.permute(0, 2, 1, 3).flatten(2)  # (N, H, C * W): one row of every channel per step
        out, _ = self.lstm1(rows)
        out, _ = self.lstm2(out)
        return self.fc(out[:, -1])


def lstm_seq_fmnist(num_classes: int = 10, in_channels: int = 1) -> RowLSTM:
    """Sized for 28-pixel-wide images (Fashion-MNIST, MNIST); hidden size 128."""
    return RowLSTM(num_classes, in_channels)
