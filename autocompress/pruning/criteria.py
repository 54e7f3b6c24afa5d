"""Which channels of a group go: Torch-Pruning importance objects chosen by name.

Scores are group-level: Torch-Pruning sums each channel's norm over every coupled layer of the group
(producer filters, BN scales, consumer input slices), so a channel is kept or removed as a whole.
Torch-Pruning's criteria skip recurrent layers; their hidden units' weight norms are added here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch_pruning as tp

from autocompress.pruning.errors import PruneError
from autocompress.pruning.recurrent import recurrent_scores

_FACTORIES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "fpgm": lambda: tp.importance.FPGMImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}

CRITERIA = tuple(_FACTORIES)
"""Valid criterion names."""


def get_importance(name: str) -> tp.importance.Importance:
    """The Torch-Pruning importance object for a criterion name."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise PruneError(f"unknown pruning criterion {name!r}; valid ones are {', '.join(CRITERIA)}.") from None


def group_scores(name: str, group: tp.Group) -> torch.Tensor:
    """One score per root channel of `group` (higher = more important).

    A criterion that finds nothing to score in a group (bn_scale on a group without BatchNorm) falls back
    to the group L1 norm, so every group stays prunable with every criterion.
    """
    scores = get_importance(name)(group)
    if name != "random":
        scores = _with_recurrent(scores, recurrent_scores(group, p=2 if name == "l2" else 1))
    if scores is None:
        scores = get_importance("l1")(group)
    if scores is None:
        raise PruneError(f"group rooted at {group[0].dep.target.name} has no weights to score.")
    return scores.detach().float().cpu()


def unit_scores(name: str, weights: torch.Tensor) -> torch.Tensor:
    """One score per row of `weights`: a unit Torch-Pruning does not score, kept or removed whole (an attention
    head: its q/k/v rows and output columns). bn_scale finds no BatchNorm there and falls back to L1."""
    get_importance(name)  # an unknown name fails here as everywhere
    w = weights.detach().float().cpu()
    if name == "random":
        return torch.rand(len(w))
    if name == "l2":
        return w.pow(2).sum(dim=1)
    if name == "fpgm":  # far from the geometric median = least redundant
        return torch.cdist(w, w).sum(dim=1)
    return w.abs().sum(dim=1)


def _with_recurrent(scores: torch.Tensor | None, own: torch.Tensor | None) -> torch.Tensor | None:
    """Torch-Pruning's score plus the recurrent layers' unit norms, each over its mean so neither dominates."""
    if own is None:
        return scores
    own = own / own.mean().clamp_min(1e-12)
    if scores is None:
        return own
    scores = scores.detach().float().cpu()
    return scores / scores.mean().clamp_min(1e-12) + own
