"""Turn per-group prune ratios into a new, physically smaller network.

`Pruner` does the expensive work once (snapshot of the model, dependency graph, groups, channel scores,
layer specs); each `prune` call then only deep-copies the snapshot and replays the recorded pruning plan
with Torch-Pruning's per-layer pruning functions -- no graph is rebuilt or traversed per call.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from autocompress.config import PruneConfig
from autocompress.measure.flops import CostModel, LayerSpec
from autocompress.pruning.attention import head_weights
from autocompress.pruning.criteria import get_importance, group_scores, unit_scores
from autocompress.pruning.depth import drop_blocks, droppable_blocks, dropped
from autocompress.pruning.errors import PruneError
from autocompress.pruning.fingerprint import structure_hash
from autocompress.pruning.groups import PlanItem, PruneGroup, analyze_model
from autocompress.pruning.schedule import Schedule, check_fits
from autocompress.pruning.sparsity import sparsify


def kept_count(channels: int, prune_ratio: float, round_to: int, min_channels: int) -> int:
    """Channels kept when `prune_ratio` of `channels` are removed, rounded to a multiple of `round_to`."""
    keep = int(math.floor(channels * (1.0 - prune_ratio) + 0.5))
    if keep >= channels:
        return channels  # nothing removed: no rounding of an untouched group
    if round_to > 1:
        keep = max(round_to, int(math.floor(keep / round_to + 0.5)) * round_to)
    return int(min(channels, max(min_channels, keep)))


class Pruner:
    """Physically prune copies of one model to per-group ratios; the given model is never modified.

    Attributes: `groups` (prunable groups in network order, filtered by `cfg.scope`), `all_groups`,
    `layer_specs`, `cost_model` (analytic MACs/params of any channel configuration, fixed parameters
    included), `structure_hash` (of the unpruned model), `plans`.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, cfg: PruneConfig | None = None) -> None:
        self.cfg = cfg or PruneConfig()
        get_importance(self.cfg.criterion)  # fail early on a bad name
        self._snapshot = copy.deepcopy(model)
        self.structure_hash = structure_hash(self._snapshot)
        self._requires_grad = {n: p.requires_grad for n, p in self._snapshot.named_parameters()}
        self.example_inputs = example_inputs[:1].detach().clone()
        self._analysis = analyze_model(self._snapshot, self.example_inputs)
        self.all_groups: list[PruneGroup] = list(self._analysis.groups)
        self.groups: list[PruneGroup] = [g for g in self.all_groups if self.cfg.scope == "all" or g.internal]
        if not self.groups:
            raise PruneError(_nothing_to_prune(model, bool(self.all_groups)))
        self.layer_specs: list[LayerSpec] = list(self._analysis.layer_specs)
        self.cost_model: CostModel = self._analysis.cost_model()
        self._by_name = {g.name: g for g in self.all_groups}
        self.droppable: dict[str, str] = droppable_blocks(self._snapshot, self.all_groups)
        """Group -> residual block it is the inner width of; prune ratio 1.0 (0 channels) removes that block."""
        self._order: dict[str, np.ndarray] = {}
        self._scores: dict[str, np.ndarray] = {}
        if self.cfg.criterion != "random":
            for name in self._analysis.plans:
                scores = self._group_scores(name, self.cfg.criterion)
                self._scores[name] = scores.numpy()
                self._order[name] = self._ascending(scores)
        self._reconstructor = None

    def _group_scores(self, name: str, criterion: str) -> torch.Tensor:
        """Per root channel of a group: Torch-Pruning's group importance; per head for attention heads."""
        if self._by_name[name].kind == "heads":
            return unit_scores(criterion, head_weights(self._snapshot.get_submodule(name)))
        return group_scores(criterion, self._analysis.tp_groups[name])

    @staticmethod
    def _ascending(scores: torch.Tensor) -> np.ndarray:
        return torch.argsort(scores, stable=True).numpy()

    @property
    def plans(self) -> dict[str, list[PlanItem]]:
        """Per group, the member layers' pruning functions and indices per root channel (read-only use)."""
        return self._analysis.plans

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    def channel_scores(self, name: str) -> np.ndarray:
        """The criterion's score of each root channel of group `name` (higher = more important)."""
        self.group(name)
        if name not in self._scores:
            raise PruneError(f"criterion {self.cfg.criterion!r} gives no fixed channel scores; use l1, l2, "
                             "bn_scale or fpgm for a ranking across groups.")
        return self._scores[name].copy()

    def group(self, name: str) -> PruneGroup:
        try:
            return self._by_name[name]
        except KeyError:
            raise PruneError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        names = list(self._by_name)
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"unknown prune group {name!r}; this model's groups are: {shown} ({len(names)} in all)."

    def kept_channels(self, prune_ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept channels of every group (all groups; those not named in `prune_ratios` stay whole)."""
        kept = {g.name: g.channels for g in self.all_groups}
        for name, ratio in prune_ratios.items():
            g = self.group(name)
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)):
                raise PruneError(f"group {name!r}: prune ratio {ratio!r} is not a number; give a value in [0, 1).")
            r = float(ratio)
            if r == 1.0 and name in self.droppable:
                kept[name] = 0  # the whole residual block goes
                continue
            if not (0.0 <= r < 1.0):  # also rejects NaN
                raise PruneError(
                    f"group {name!r}: prune ratio {r} is outside [0, 1) (share of channels removed; "
                    "0 keeps all, 0.5 removes half; 1.0 only removes a residual block, and this group is not "
                    "the inner width of one with an identity shortcut)."
                )
            kept[name] = kept_count(g.channels, r, self.cfg.round_to, self.cfg.min_channels)
        return kept

    def check_kept(self, kept: Mapping[str, int]) -> dict[str, int]:
        """Validate explicit kept channel counts (e.g. from a schedule); returns them for every group."""
        full = {g.name: g.channels for g in self.all_groups}
        for name, k in kept.items():
            g = self.group(name)
            low = 0 if name in self.droppable else 1
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (low <= int(k) <= g.channels):
                why = "" if low == 0 else " (0, removing the block, only for a residual block's inner width)"
                raise PruneError(f"group {name!r}: kept channels {k!r} must be an integer in [{low}, {g.channels}]"
                                 f"{why}.")
            full[name] = int(k)
        return full

    def removed_channels(self, kept: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Root channel indices each group loses under `kept`, chosen by the criterion (lowest scores)."""
        out = {}
        for name, k in kept.items():
            g = self._by_name[name]
            n_remove = g.channels - int(k)
            if n_remove <= 0:
                continue
            order = self._order.get(name)
            if order is None:  # random criterion: fresh scores from torch's global RNG each call
                order = self._ascending(self._group_scores(name, "random"))
            out[name] = np.sort(order[:n_remove])
        return out

    def prune(self, prune_ratios: Mapping[str, float], calib_images: torch.Tensor | None = None) -> nn.Module:
        """A new model with each named group pruned by its ratio (share of channels removed)."""
        return self.prune_kept(self.kept_channels(prune_ratios), calib_images)

    def prune_kept(self, kept: Mapping[str, int], calib_images: torch.Tensor | None = None) -> nn.Module:
        """A new model with each named group cut to exactly `kept[name]` channels.

        With `cfg.reconstruct`, supported groups choose channels by their contribution to the next conv's
        output on `calib_images` and that conv is refit by least squares (see `reconstruct.py`).
        """
        kept = self.check_kept(kept)
        gone = dropped(kept)
        kept = {**kept, **{name: self._by_name[name].channels for name in gone}}  # their blocks go whole, below
        removed = self.removed_channels(kept)
        refits: dict[str, torch.Tensor] = {}
        if self.cfg.reconstruct:
            if calib_images is None:
                raise PruneError(
                    "cfg.reconstruct is on but no calib_images were given; pass a batch of training images "
                    "(cfg.reconstruct_samples of them are used) or turn reconstruct off."
                )
            removed, refits = self._reconstruct(kept, removed, calib_images)
        model = copy.deepcopy(self._snapshot)
        if refits:  # full-size refit weights, written before the plan slices them
            modules = dict(model.named_modules())
            with torch.no_grad():
                for name, weight in refits.items():
                    modules[name].weight.copy_(weight)
        self._apply(model, removed)
        return drop_blocks(model, [self.droppable[name] for name in gone])

    def _reconstruct(
        self, kept: Mapping[str, int], removed: dict[str, np.ndarray], images: torch.Tensor
    ) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        from autocompress.pruning.reconstruct import Reconstructor

        if self._reconstructor is None or not self._reconstructor.matches(images):
            self._reconstructor = Reconstructor(self._snapshot, self._analysis, images, self.cfg)
        return self._reconstructor.apply(kept, removed)

    @torch.no_grad()
    def _apply(self, model: nn.Module, removed: Mapping[str, np.ndarray]) -> None:
        """Replay the recorded plans: remove each group's channels from every member layer."""
        per_call: dict[tuple[str, object], list[int]] = {}
        for name, roots in removed.items():
            for item in self._analysis.plans[name]:
                idxs = item.idxs[np.isin(item.root_idxs, roots)]
                if idxs.size:
                    per_call.setdefault((item.module, item.fn), []).extend(idxs.tolist())
        modules = dict(model.named_modules())
        for (mname, fn), idxs in per_call.items():
            fn(modules[mname], sorted(set(idxs)))
        for pname, p in model.named_parameters():  # pruning rebuilds Parameters with requires_grad=True
            p.requires_grad_(self._requires_grad.get(pname, True))


def _nothing_to_prune(model: nn.Module, only_outside_scope: bool) -> str:
    """Why a network has no channel group to prune: a search on it would compress nothing."""
    if only_outside_scope:
        return (f"{type(model).__name__} has no internal channel group (every group feeds the output); "
                "use prune scope 'all' (env.prune.scope: all, --scope all).")
    why = ("no Conv, Linear, LSTM, GRU or RNN layer whose output channels can be removed and no attention layer "
           "with heads to remove; the layer that makes the network's output keeps its channels")
    return f"{type(model).__name__} has no prunable channel groups ({why}); nothing would be compressed."


def apply_schedule(
    model: nn.Module,
    schedule: Schedule,
    example_inputs: torch.Tensor,
    cfg: PruneConfig | None = None,
    calib_images: torch.Tensor | None = None,
) -> nn.Module:
    """A new model pruned to the schedule's kept channel counts, with the weights its sparsity block zeroes
    set to zero (validated against `model` first)."""
    pruner = Pruner(model, example_inputs, cfg or PruneConfig())
    check_fits(schedule, pruner)
    return sparsify(pruner.prune_kept(schedule.kept_channels(), calib_images), schedule.layer_sparsity())

