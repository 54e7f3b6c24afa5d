"""Analytic MACs / parameter counts of a network under per-group channel counts.

The search evaluates thousands of candidate channel configurations; counting operations on a real pruned
model takes 16-36 ms on ResNet-56, while summing a few hundred precomputed per-layer formulas takes well
under a millisecond. The formulas reproduce `torch_pruning.utils.count_ops_and_params` exactly (same
module types counted, same per-type formulas), which the tests check on physically pruned models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

LAYER_KINDS = ("conv", "linear", "bn", "act", "pool", "upsample", "recurrent", "other")

RECURRENT_CELLS: dict[type[nn.Module], tuple[int, int]] = {nn.LSTM: (4, 10), nn.GRU: (3, 7), nn.RNN: (1, 1)}
"""Recurrent layer type -> (gates, element-wise MACs per hidden unit and time step). The element-wise counts
are Torch-Pruning's (LSTM: 4 gate additions + 3 for the cell state + 3 for the output; GRU: 7; RNN: 1)."""


@dataclass(frozen=True)
class LayerSpec:
    """One executed layer (one call of a module) and the prune groups owning its channels.

    `in_group` / `out_group` name the prune group whose kept count replaces `in_channels` /
    `out_channels`; None means the channels are fixed (the image input, the classifier output, or a group
    that cannot be pruned). For "bn", "act", "pool" and "upsample" only `out_group` / `out_channels` matter
    (they act per channel). `fixed_macs` is used for kind "other" (a counted op with no channel model).
    A "recurrent" layer (nn.LSTM / GRU / RNN) has `in_channels` = input size, `out_channels` = hidden size of
    every one of its `num_layers` layers, and runs once per position of `output_hw` = (1, batch x time steps).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    in_group: str | None
    out_group: str | None
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    conv_groups: int = 1
    input_hw: tuple[int, int] = (1, 1)
    output_hw: tuple[int, int] = (1, 1)
    has_bias: bool = False
    in_expand: int = 1
    affine: bool = False
    """BatchNorm with learnable scale and shift (2 MACs and 2 params per channel)."""
    count_macs: bool = True
    """Whether Torch-Pruning's op counter counts this module type (it matches exact types only)."""
    count_params: bool = True
    """False for the second and later calls of a reused module (its parameters are counted once)."""
    fixed_macs: int = 0
    gates: int = 0
    """Recurrent layers: gate blocks stacked in each weight matrix (LSTM 4, GRU 3, RNN 1)."""
    cell_macs: int = 0
    """Recurrent layers: element-wise MACs per hidden unit and time step (see RECURRENT_CELLS)."""
    num_layers: int = 1
    """Recurrent layers: stacked layers inside the module (all share one hidden size)."""

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.conv_groups > 1 and self.conv_groups == self.in_channels == self.out_channels


def _hw(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class CostModel:
    """MACs and parameters of a network as a function of the kept channels of each prune group.

    `kept` maps group name -> kept output channels; groups not named keep all their channels.
    `fixed_macs` / `fixed_params` are added unchanged (ops and parameters outside the layer specs).
    """

    def __init__(self, layer_specs: Sequence[LayerSpec], fixed_macs: int = 0, fixed_params: int = 0) -> None:
        self.layer_specs = tuple(layer_specs)
        self.fixed_macs = int(fixed_macs)
        self.fixed_params = int(fixed_params)
        # Precompile each spec to a tuple of plain ints so a call is a tight loop over tuples.
        self._compiled = [self._compile(s) for s in self.layer_specs]
        self.base_macs = self.macs({})
        self.base_params = self.params({})

    @staticmethod
    def _compile(s: LayerSpec) -> tuple:
        kh, kw = s.kernel_size
        return (
            s.kind,
            s.in_group,
            s.out_group,
            s.in_channels,
            s.out_channels,
            kh * kw,
            s.conv_groups,
            s.depthwise,
            _hw(s.input_hw),
            _hw(s.output_hw),
            s.has_bias,
            s.in_expand,
            s.affine,
            s.count_macs,
            s.count_params,
            s.fixed_macs,
            (s.gates, s.cell_macs, s.num_layers),
        )

    @staticmethod
    def _one(c: tuple, kept: Mapping[str, int]) -> tuple[int, int]:
        """(macs, params) of one compiled spec."""
        (kind, gi, go, cin, cout, kk, groups, dw, in_hw, out_hw, bias, expand, affine, cm, cp, fixed, rnn) = c
        if go is not None:
            cout = kept.get(go, cout)
        if gi is not None:
            cin = kept.get(gi, cin)
        if kind == "conv":
            if dw:
                cin = groups = cout
            w = cout * (cin // groups) * kk
            macs = w * out_hw + (cout * out_hw if bias else 0)
            params = w + (cout if bias else 0)
        elif kind == "linear":
            w = cin * expand * cout
            macs = w + (cout if bias else 0)
            params = w + (cout if bias else 0)
        elif kind == "bn":
            macs = cout * out_hw * (2 if affine else 1)
            params = 2 * cout if affine else 0
        elif kind in ("act", "upsample"):
            macs, params = cout * out_hw, 0
        elif kind == "pool":
            macs, params = cout * in_hw, 0
        elif kind == "recurrent":
            macs, params = recurrent_cost(cin, cout, *rnn, bias)
            macs *= out_hw
        else:
            macs, params = fixed, 0
        return (macs if cm else 0), (params if cp else 0)

    def macs(self, kept: Mapping[str, int]) -> int:
        """Multiply-accumulates of one image (Torch-Pruning's count, activations/BN/pooling included)."""
        total = self.fixed_macs
        one = self._one
        for c in self._compiled:
            total += one(c, kept)[0]
        return total

    def params(self, kept: Mapping[str, int]) -> int:
        """Number of parameters (learnable and fixed nn.Parameters, buffers excluded)."""
        total = self.fixed_params
        one = self._one
        for c in self._compiled:
            total += one(c, kept)[1]
        return total

    def layer_macs(self, kept: Mapping[str, int]) -> dict[str, int]:
        """MACs per layer name (calls of a reused module are summed under its name)."""
        out: dict[str, int] = {}
        for s, c in zip(self.layer_specs, self._compiled, strict=True):
            name = s.name.split("#")[0]
            out[name] = out.get(name, 0) + self._one(c, kept)[0]
        return out


def recurrent_cost(
    input_size: int, hidden: int, gates: int, cell_macs: int, num_layers: int, bias: bool, directions: int = 1
) -> tuple[int, int]:
    """(MACs of one time step, params) of a recurrent layer: per layer and direction the input and recurrent
    matmuls (gates x hidden rows), both bias vectors and the gates' element-wise ops."""
    inputs = input_size + (num_layers - 1) * hidden * directions  # layer 0 reads the input, others layer l-1
    weights = gates * hidden * (inputs + num_layers * hidden) * directions
    biases = 2 * gates * hidden * num_layers * directions if bias else 0
    return weights + biases + cell_macs * hidden * num_layers * directions, weights + biases


def _recurrent_macs_hook(module: nn.Module, inputs: tuple, output: object) -> None:
    """Torch-Pruning's RNN counter multiplies by the first sample's two sizes instead of batch x time steps;
    this one counts, at every (batch, step) position, one MAC per weight and bias element (from the module's
    real tensors, so it also checks `recurrent_cost`) plus the gates' element-wise ops."""
    x = inputs[0]
    data = x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x
    steps = int(data.numel() // data.shape[-1])
    directions = 2 if module.bidirectional else 1
    cell = RECURRENT_CELLS[type(module)][1] * module.hidden_size * module.num_layers * directions
    module.__flops__ += (sum(p.numel() for p in module.parameters()) + cell) * steps


@torch.no_grad()
def count_macs_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """MACs and params measured on a real model by Torch-Pruning's op counter (for tests and reports)."""
    from torch_pruning.utils import count_ops_and_params, op_counter

    # Torch-Pruning resets its custom hooks after each count
    op_counter.CUSTOM_MODULES_MAPPING = dict.fromkeys(RECURRENT_CELLS, _recurrent_macs_hook)
    macs, params = count_ops_and_params(model, example_inputs[:1])  # counts on its own deep copy
    return int(round(float(macs))), int(params)
