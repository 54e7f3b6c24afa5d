"""The observation: AMC's per-layer features plus latency share and weight statistics, all in [0, 1].

Static features are computed once per network and normalised by constants fixed at construction;
dynamic ones (MACs removed so far, MACs still to decide, previous action, budget still to cut)
are filled in at each step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from autocompress.pruning.attention import head_weights
from autocompress.pruning.recurrent import RECURRENT_TYPES, unit_weights

STATIC_NAMES = (
    "index",
    "kind",
    "in_channels",
    "out_channels",
    "stride",
    "kernel",
    "macs_share",
    "latency_share",
    "internal",
    "weight_l1",
    "weight_l1_cv",
)
DYNAMIC_NAMES = ("macs_removed", "macs_to_decide", "prev_action", "budget_to_cut")
FEATURE_NAMES = STATIC_NAMES + DYNAMIC_NAMES
JOINT_NAMES = ("int8_sensitivity", "prev_precision")
"""Appended when the action also picks a precision: the group's INT8 sensitivity (static, output error of
its layers alone in INT8, normalised by the network's largest) and the previous step's precision."""
_KIND_CODES = {"conv": 0.0, "recurrent": 0.25, "depthwise": 0.5, "heads": 0.75, "mlp": 0.875, "linear": 1.0}
"""Group kind -> feature value: heads (attention heads) and mlp (a transformer / ConvNeXt MLP's hidden width,
a Linear at every token or pixel) sit between the convolutional kinds and the plain Linear."""


def _channel_l1(module: nn.Module, kind: str) -> torch.Tensor:
    """Mean |w| per output channel: per hidden unit of a recurrent layer and per head of an attention layer
    (their weights are not one `.weight` row per channel)."""
    if kind == "heads":
        w = head_weights(module)
    elif isinstance(module, RECURRENT_TYPES):
        w = unit_weights(module)
    else:
        w = module.weight.detach()
    return w.abs().reshape(w.shape[0], -1).mean(dim=1)


def static_features(
    groups: Sequence[object],
    modules: Mapping[str, nn.Module],
    latency_share: Sequence[float] | None = None,
) -> np.ndarray:
    """One row per group (network order): the features that do not change within an episode."""
    n = len(groups)
    rows = np.zeros((n, len(STATIC_NAMES)), dtype=np.float64)
    for i, g in enumerate(groups):
        l1 = _channel_l1(modules[g.name], g.kind)
        mean = float(l1.mean())
        rows[i] = [
            i / max(n - 1, 1),
            _KIND_CODES.get(g.kind, 0.0),
            g.in_channels,
            g.channels,
            g.stride,
            g.kernel_size,
            g.macs,
            latency_share[i] if latency_share is not None else 0.0,
            float(g.internal),
            mean,
            float(l1.std() / mean) if mean > 0 and len(l1) > 1 else 0.0,
        ]
    # Normalise each column by its maximum over the network (constants fixed here, once).
    for col in (2, 3, 4, 5, 6, 7, 9):
        top = rows[:, col].max()
        if top > 0:
            rows[:, col] /= top
    rows[:, 10] = np.clip(rows[:, 10], 0.0, 1.0)
    return rows.astype(np.float32)


def with_int8_sensitivity(static: np.ndarray, sensitivity: Sequence[float]) -> np.ndarray:
    """The static rows with a last column: each group's INT8 sensitivity over the network's largest."""
    sens = np.asarray(sensitivity, dtype=np.float64)
    top = sens.max() if len(sens) else 0.0
    col = sens / top if top > 0 else np.zeros_like(sens)
    return np.concatenate([static, col[:, None]], axis=1).astype(np.float32)


def observation(static_row: np.ndarray, dynamic: Sequence[float], extra: Sequence[float] = ()) -> np.ndarray:
    """The observation vector, AMC's order kept (FEATURE_NAMES): the group's static row and the clipped dynamic
    features; with a joint action the static row carries INT8 sensitivity last, moved behind the dynamic
    features here and followed by `extra` (JOINT_NAMES' order)."""
    n_static = len(STATIC_NAMES)
    dyn = np.clip(np.asarray(list(dynamic) + list(extra), dtype=np.float32), 0.0, 1.0)
    if len(extra):
        return np.concatenate([static_row[:n_static], dyn[: len(dynamic)], static_row[n_static:],
                               dyn[len(dynamic):]]).astype(np.float32)
    return np.concatenate([static_row, dyn]).astype(np.float32)
