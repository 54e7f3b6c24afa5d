"""Hidden-unit pruning of nn.LSTM / nn.GRU / nn.RNN, plugged into Torch-Pruning as a customized pruner.

Torch-Pruning 1.6's own `LSTMPruner` cannot be used: it slices weight_ih's input columns with gate-expanded
indices (an IndexError on any LSTM), asserts num_layers == 1, and there is nothing for GRU or RNN.

Hidden unit j of a recurrent module owns, in every layer l, row j of each gate block of weight_ih_l{l},
weight_hh_l{l}, bias_ih_l{l} and bias_hh_l{l}, column j of weight_hh_l{l} and, for l > 0, column j of
weight_ih_l{l}. PyTorch gives every layer of one module the same hidden size, so a module is one prune group:
unit j goes from every layer at once (units are paired across layers by index). The layer that reads the
output (the next recurrent layer's weight_ih, a Linear head) loses the matching input columns through the
dependency graph.

Tracing: on the CPU autograd decomposes an LSTM into per-step matmuls and gates, which Torch-Pruning would
read as element-wise ops coupling the input to the hidden units. `opaque_recurrent` makes each recurrent layer
one autograd node while a graph is traced, whose outputs (sequence, h_n, c_n) all map back to the layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

from autocompress.measure.flops import RECURRENT_CELLS
from autocompress.pruning.errors import PruneError
from autocompress.pruning.tracing import OneNode, forwards_replaced

RECURRENT_TYPES = tuple(RECURRENT_CELLS)
"""Layer types whose hidden units can be pruned (exact types: a subclass may change the cell)."""


def is_recurrent(module: nn.Module) -> bool:
    """Any recurrent layer or cell, supported or not."""
    return isinstance(module, (nn.RNNBase, nn.RNNCellBase))


def check_supported(name: str, module: nn.Module) -> None:
    """Raise a one-line PruneError naming `name` when its hidden units cannot be pruned."""
    kind = type(module).__name__
    why = None
    if isinstance(module, nn.RNNCellBase):
        why = "recurrent cells step in a Python loop the pruner cannot follow; use nn.LSTM / nn.GRU / nn.RNN"
    elif type(module) not in RECURRENT_CELLS:
        why = f"subclasses of {', '.join(t.__name__ for t in RECURRENT_TYPES)} are not supported"
    elif module.bidirectional:
        why = "bidirectional layers cannot be pruned yet (the two directions' outputs are concatenated)"
    elif getattr(module, "proj_size", 0) > 0:
        why = "LSTMs with proj_size > 0 cannot be pruned yet"
    if why is not None:
        raise PruneError(f"layer {name!r} ({kind}) is not supported: {why}.")


def _kept(size: int, idxs: Sequence[int]) -> torch.Tensor:
    return torch.tensor(sorted(set(range(size)) - {int(i) for i in idxs}), dtype=torch.long)


def _gate_rows(keep: torch.Tensor, hidden: int, gates: int) -> torch.Tensor:
    """Row indices of the kept units in every gate block of a (gates * hidden, ...) weight."""
    return torch.cat([keep + g * hidden for g in range(gates)])


class RecurrentPruner(tpf.BasePruningFunc):
    """Torch-Pruning handler of a recurrent layer: out channels = hidden units, in channels = input size."""

    TARGET_MODULES = RECURRENT_TYPES

    def _slice(self, layer: nn.Module, name: str, keep: torch.Tensor, dim: int) -> None:
        setattr(layer, name, self._prune_parameter_and_grad(getattr(layer, name), keep.tolist(), dim))

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        hidden, gates = layer.hidden_size, RECURRENT_CELLS[type(layer)][0]
        keep = _kept(hidden, idxs)
        rows = _gate_rows(keep, hidden, gates)
        for layer_idx in range(layer.num_layers):
            sfx = f"_l{layer_idx}"
            self._slice(layer, "weight_ih" + sfx, rows, 0)
            if layer_idx > 0:  # reads the hidden units of the layer below
                self._slice(layer, "weight_ih" + sfx, keep, 1)
            self._slice(layer, "weight_hh" + sfx, rows, 0)
            self._slice(layer, "weight_hh" + sfx, keep, 1)
            if layer.bias:
                self._slice(layer, "bias_ih" + sfx, rows, 0)
                self._slice(layer, "bias_hh" + sfx, rows, 0)
        layer.hidden_size = len(keep)
        layer._init_flat_weights()  # the fused-kernel weight list must point at the new tensors
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _kept(layer.input_size, idxs)
        self._slice(layer, "weight_ih_l0", keep, 1)
        layer.input_size = len(keep)
        layer._init_flat_weights()
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.hidden_size

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.input_size


RECURRENT_PRUNER = RecurrentPruner()
CUSTOMIZED_PRUNERS: dict[type, tpf.BasePruningFunc] = dict.fromkeys(RECURRENT_TYPES, RECURRENT_PRUNER)
"""Passed to Torch-Pruning's DependencyGraph so recurrent layers are nodes with our handler."""
prune_recurrent_out = RECURRENT_PRUNER.prune_out_channels
prune_recurrent_in = RECURRENT_PRUNER.prune_in_channels


def _opaque_forward(name: str, module: nn.Module) -> Callable:
    original = module.forward
    kind = type(module).__name__

    def forward(input: object, hx: object = None) -> tuple:
        if hx is not None:
            raise PruneError(f"layer {name!r} ({kind}) is given an initial state: pruning its hidden units "
                             "would leave that state at the old size; let the layer start from zeros.")
        if not isinstance(input, torch.Tensor):
            raise PruneError(f"layer {name!r} ({kind}) is not supported: it reads a {type(input).__name__} "
                             "(packed sequences cannot be pruned yet); pass a padded tensor.")
        with torch.no_grad():
            out, state = original(input)
        states = state if isinstance(state, tuple) else (state,)
        anchor = torch.zeros((), requires_grad=True)  # gives the node a grad_fn when the input has none
        out, *new = OneNode.apply(input, anchor, out, *states)
        return out, (tuple(new) if isinstance(state, tuple) else new[0])

    return forward


def opaque_recurrent(model: nn.Module) -> contextlib.AbstractContextManager[None]:
    """While active, each recurrent layer of `model` is one autograd node (same values, no gradients)."""
    return forwards_replaced((m, _opaque_forward(name, m)) for name, m in model.named_modules()
                             if type(m) in RECURRENT_CELLS)


def _unit_magnitude(layer: nn.Module, p: int) -> torch.Tensor:
    """Per hidden unit, the sum of |w|^p over every weight and bias element it owns (all layers)."""
    hidden, gates = layer.hidden_size, RECURRENT_CELLS[type(layer)][0]
    total = torch.zeros(hidden)
    for layer_idx in range(layer.num_layers):
        sfx = f"_l{layer_idx}"
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if layer.bias else [])
        for n in (n + sfx for n in names):
            w = getattr(layer, n).detach().abs().pow(p).float().cpu()
            total += w.reshape(gates, hidden, -1).sum(dim=(0, 2))
        total += getattr(layer, "weight_hh" + sfx).detach().abs().pow(p).float().cpu().sum(dim=0)
        if layer_idx > 0:
            total += getattr(layer, "weight_ih" + sfx).detach().abs().pow(p).float().cpu().sum(dim=0)
    return total


def _input_magnitude(layer: nn.Module, p: int) -> torch.Tensor:
    return layer.weight_ih_l0.detach().abs().pow(p).float().cpu().sum(dim=0)


def recurrent_scores(group: tp.Group, p: int) -> torch.Tensor | None:
    """Per root channel of `group`, the magnitude its recurrent members own (None: no recurrent member).

    Torch-Pruning's importance criteria skip layers they do not know, so this adds what they miss.
    """
    n_roots = len(group[0].idxs)
    scores, found = torch.zeros(n_roots), False
    for it in group:
        fn, layer = it.dep.handler, it.dep.target.module
        if fn == prune_recurrent_out:
            per = _unit_magnitude(layer, p)
        elif fn == prune_recurrent_in:
            per = _input_magnitude(layer, p)
        else:
            continue
        found = True
        scores.index_add_(0, torch.as_tensor(it.root_idxs, dtype=torch.long), per[torch.as_tensor(it.idxs)])
    return scores if found else None


def unit_weights(layer: nn.Module) -> torch.Tensor:
    """(hidden, -1): each hidden unit's input and recurrent weights in layer 0, one row per unit."""
    hidden = layer.hidden_size
    w = torch.cat([layer.weight_ih_l0, layer.weight_hh_l0], dim=1).detach()
    return w.reshape(-1, hidden, w.shape[1]).transpose(0, 1).reshape(hidden, -1)
