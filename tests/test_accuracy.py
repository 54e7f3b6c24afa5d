"""Accuracy measurement against hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autocompress.measure.accuracy import EvalResult, evaluate, evaluate_tensors
from autocompress.models import get_model


class FixedLogits(nn.Module):
    """Returns the logits stored for each input index (x holds the index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.long().view(-1)]


def test_top1_top5_loss_by_hand() -> None:
    # 6 classes, 4 images: image 0 correct at rank 1, image 1 at rank 3, image 2 at rank 6, image 3 at rank 1.
    logits = torch.tensor(
        [
            [9.0, 1, 2, 3, 4, 5],
            [0.0, 5, 4, 3, 2, 1],
            [0.0, 5, 4, 3, 2, 1],
            [1.0, 0, 0, 0, 0, 8],
        ]
    )
    y = torch.tensor([0, 3, 0, 5])
    res = evaluate_tensors(FixedLogits(logits), torch.arange(4).float(), y, batch_size=3)
    assert isinstance(res, EvalResult) and res.n == 4
    assert res.top1 == pytest.approx(50.0)
    assert res.top5 == pytest.approx(75.0)
    expected = nn.functional.cross_entropy(logits, y).item()
    assert res.loss == pytest.approx(expected, rel=1e-6)
    assert res.images_per_s > 0


def test_loader_and_tensors_agree_and_mode_restored() -> None:
    model = get_model("tiny_cnn", in_channels=1)
    model.train()
    x = torch.randn(70, 1, 16, 16)
    y = torch.randint(0, 10, (70,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    a = evaluate(model, loader)
    b = evaluate_tensors(model, x, y, batch_size=25)
    assert model.training  # restored
    assert a.n == b.n == 70
    assert a.top1 == pytest.approx(b.top1) and a.top5 == pytest.approx(b.top5)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    capped = evaluate(model, loader, max_batches=2)
    assert capped.n == 32


def test_empty_and_mismatch() -> None:
    model = get_model("tiny_cnn", in_channels=1)
    res = evaluate_tensors(model, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    assert res.n == 0 and math.isnan(res.top1)
    with pytest.raises(ValueError, match="labels"):
        evaluate_tensors(model, torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))
