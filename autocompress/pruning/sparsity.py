"""Unstructured magnitude sparsity: zero the smallest-magnitude weights of conv and linear layers.

Channel pruning makes a network smaller and faster; zeroing single weights makes only its compressed export
smaller (dense kernels multiply the zeros all the same: 0.65-1.02x measured on these CPUs, ../shared/DESIGN.md),
which is what a user who ships a model over the air pays for. A searched group's sparsity applies to every
trainable conv / linear layer whose output channels the group owns, so each layer takes exactly one group's
sparsity; layers no searched group owns (a classifier, frozen 0/1 shortcut convs) stay dense. Which weights
go is `torch.nn.utils.prune.l1_unstructured`'s choice per layer (smallest |w| first), made permanent with
`prune.remove`; `freeze_zeros` holds the zeros through fine-tuning with the same library's masks. The zeros are
then written as +0.0: `prune.remove` computes w * mask, which leaves -0.0 wherever a negative weight was masked,
and that sign byte breaks deflate's runs of zero bytes (the compressed ResNet-20 at 90% sparsity was 29% larger).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from autocompress.measure.flops import LayerSpec
from autocompress.pruning.errors import PruneError

METHOD = "l1_unstructured"
"""How the zeroed weights are chosen (recorded in schedules): the smallest |w| of each layer."""
SPARSE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def zeroed_count(numel: int, sparsity: float) -> int:
    """Weights a layer of `numel` loses at `sparsity`, counted as torch.nn.utils.prune counts a float amount."""
    return round(sparsity * numel)


def check_sparsity(name: str, value: object) -> float:
    """`value` as a sparsity (share of weights zeroed) in [0, 1), or a PruneError naming `name`."""
    ok_type = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if not ok_type or not 0.0 <= float(value) < 1.0:  # also rejects NaN
        raise PruneError(f"{name}: sparsity {value!r} must be a number in [0, 1) (share of weights zeroed; 0 keeps "
                         "all, 0.9 zeroes nine in ten).")
    return float(value)


class WeightSparsity:
    """Which weights of one network a per-group sparsity zeroes: counted analytically, applied for real.

    `layers` maps each sparsified layer (network order) to the group that owns it. The counts are exact: the
    zeroed weights are each layer's smallest |w|, so a weight that is already zero goes first.
    """

    def __init__(self, model: nn.Module, layer_specs: Iterable[LayerSpec], groups: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        searched = set(groups)
        self.groups = list(groups)
        self.layers: dict[str, str] = {}
        for spec in layer_specs:
            m = modules.get(spec.name)
            if spec.out_group in searched and isinstance(m, SPARSE_TYPES) and m.weight.requires_grad:
                self.layers.setdefault(spec.name, spec.out_group)
        if not self.layers:
            raise PruneError("no searched group owns a trainable conv or linear layer, so unstructured sparsity "
                             "would zero nothing; use env.prune.scope: all or env.sparsity: structured.")
        self._weights = {n: modules[n].weight.detach().clone() for n in self.layers}
        self.numel = {n: w.numel() for n, w in self._weights.items()}
        self._nonzero = {n: int(torch.count_nonzero(w)) for n, w in self._weights.items()}
        self.base_nonzero = nonzero_params(model)

    def layer_sparsity(self, group_sparsity: Mapping[str, float]) -> dict[str, float]:
        """Sparsity of every sparsified layer under per-group sparsity (groups not named: 0)."""
        for name, value in group_sparsity.items():
            if name not in self.groups:
                shown = ", ".join(self.groups[:8]) + (", ..." if len(self.groups) > 8 else "")
                raise PruneError(f"group {name!r} is not searched here; the searched groups are: {shown}.")
            check_sparsity(f"group {name!r}", value)
        return {layer: float(group_sparsity.get(group, 0.0)) for layer, group in self.layers.items()}

    def kept_weights(self, group_sparsity: Mapping[str, float]) -> dict[str, int]:
        """Nonzero weights of each sparsified layer after zeroing."""
        return {layer: min(self._nonzero[layer], self.numel[layer] - zeroed_count(self.numel[layer], s))
                for layer, s in self.layer_sparsity(group_sparsity).items()}

    def nonzero_params(self, group_sparsity: Mapping[str, float]) -> int:
        """Nonzero parameters of the whole network after zeroing (what a sparse format would store)."""
        kept = self.kept_weights(group_sparsity)
        return self.base_nonzero - sum(self._nonzero[layer] - k for layer, k in kept.items())

    def sparse_weight(self, layer: str, sparsity: float) -> torch.Tensor:
        """`layer`'s weight as `sparsify` leaves it at `sparsity` (without touching any model)."""
        weight = self._weights[layer]
        mask = prune.L1Unstructured(amount=float(sparsity)).compute_mask(weight, torch.ones_like(weight))
        return _plus_zeros(weight * mask)


def sparsify(model: nn.Module, layer_sparsity: Mapping[str, float]) -> nn.Module:
    """Zero the smallest-magnitude weights of each named layer of `model` in place; returns `model`."""
    modules = dict(model.named_modules())
    for layer, value in layer_sparsity.items():
        m = modules.get(layer)
        if not isinstance(m, SPARSE_TYPES):
            raise PruneError(f"layer {layer!r} is not a conv or linear layer of {type(model).__name__}; "
                             "unstructured sparsity zeroes conv / linear weights only.")
        amount = check_sparsity(f"layer {layer!r}", value)
        if amount > 0:
            prune.l1_unstructured(m, "weight", amount=amount)
            prune.remove(m, "weight")
            _plus_zeros(m.weight.data)
    return model


def freeze_zeros(model: nn.Module, layers: Iterable[str]) -> nn.Module:
    """Keep the zero weights of `layers` at zero through training (a fixed prune mask per layer), in place."""
    modules = dict(model.named_modules())
    for layer in layers:
        m = modules[layer]
        prune.custom_from_mask(m, "weight", mask=(m.weight != 0).to(m.weight.dtype))
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Make every prune mask of `model` permanent (plain weight tensors with the zeros in them), in place."""
    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_mask"):
            prune.remove(m, "weight")
            _plus_zeros(m.weight.data)
    return model


def _plus_zeros(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` with every -0.0 made +0.0, in place (the same numbers; all-zero bytes for deflate)."""
    return tensor.masked_fill_(tensor == 0, 0.0)


def nonzero_params(model: nn.Module) -> int:
    """Nonzero entries of all of `model`'s parameters, counted on the tensors."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())
