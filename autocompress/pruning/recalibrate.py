"""Re-estimate BatchNorm statistics after pruning (cheap recovery without training)."""

from __future__ import annotations

import torch
from torch import nn

from autocompress.pruning.errors import PruneError


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on `images`.

    Pruning removes channels whose contribution the remaining BN statistics were computed with; a plain
    cumulative average (momentum=None) over a few thousand training images fixes most of the damage.
    Forward passes run in train mode without gradients; the model is left in eval mode, weights untouched.
    """
    if batch_size < 1:
        raise PruneError(f"batch_size must be >= 1 for BN recalibration, got {batch_size}.")
    if images.ndim < 2 or images.shape[0] == 0:
        raise PruneError("BN recalibration needs a non-empty image batch (N, C, H, W).")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        model.eval()
        return
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs equally
    model.train()
    try:
        device = next(model.parameters()).device
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            if batch.shape[0] == 1 and start > 0:
                break  # a lone trailing image adds nothing and breaks BatchNorm1d in train mode
            model(batch.to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()
