"""Analytic MACs / parameter counts of a network under per-group channel counts.

The search evaluates thousands of candidate channel configurations; counting operations on a real pruned
model takes 16-36 ms on ResNet-56, while summing a few hundred precomputed per-layer formulas takes well
under a millisecond. The formulas reproduce `count_macs_params` exactly (Torch-Pruning's op counter with our
counters for recurrent and attention layers, LayerNorm subclasses and Linear layers on tokens), which the tests
check on physically pruned models. Their matmul part (`CostModel.matmul_macs`: convs, linears, recurrent
weights, QK^T and AV) equals PyTorch's own operator counter (`flop_counter_macs`), which shares no code with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

LAYER_KINDS = ("conv", "linear", "bn", "ln", "act", "pool", "upsample", "recurrent", "attention", "param", "other")

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
    head_dim: int = 0
    """Attention: width of one head (query/key/value rows per head)."""
    tokens: int = 0
    """Attention: tokens per sequence (a window's tokens for window attention)."""
    sequences: int = 1
    """Attention: sequences per image (windows for window attention, else 1)."""
    head_params: int = 0
    """Attention: parameters each head owns besides its projections (Swin's relative position biases)."""

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.conv_groups > 1 and self.conv_groups == self.in_channels == self.out_channels


def _hw(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _conv_cost(cin: int, cout: int, kk: int, groups: int, dw: bool, out_hw: int, bias: bool) -> tuple[int, int, int]:
    if dw:
        cin = groups = cout
    w = cout * (cin // groups) * kk
    return w * out_hw + (cout * out_hw if bias else 0), w + (cout if bias else 0), w * out_hw


def _linear_cost(cin: int, cout: int, expand: int, positions: int, bias: bool) -> tuple[int, int, int]:
    w = cin * expand * cout
    return (w + (cout if bias else 0)) * positions, w + (cout if bias else 0), w * positions


def _bn_cost(cin: int, cout: int, positions: int, affine: bool, bias: bool) -> tuple[int, int, int]:
    return cout * positions * (2 if affine else 1), 2 * cout if affine else 0, 0


def _ln_cost(cin: int, cout: int, positions: int, affine: bool, bias: bool) -> tuple[int, int, int]:
    """LayerNorm: Torch-Pruning counts 2 MACs per element with a learnable scale; weight and bias are optional."""
    return cout * positions * (2 if affine else 1), cout * (int(affine) + int(bias)), 0


def _recurrent_layer_cost(
    cin: int, cout: int, gates: int, cell_macs: int, num_layers: int, steps: int, bias: bool
) -> tuple[int, int, int]:
    macs, params = recurrent_cost(cin, cout, gates, cell_macs, num_layers, bias)
    weights = params - (2 * gates * cout * num_layers if bias else 0)
    return macs * steps, params, weights * steps


def _attention_layer_cost(
    cin: int, cout: int, head_dim: int, tokens: int, sequences: int, bias: bool, head_params: int
) -> tuple[int, int, int]:
    macs, params, matmul = attention_cost(cin, cout, head_dim, tokens, sequences, bias)
    return macs, params + head_params * cout, matmul


_KIND_COSTS: dict[str, Callable[..., tuple[int, int, int]]] = {
    "conv": _conv_cost,
    "linear": _linear_cost,
    "bn": _bn_cost,
    "ln": _ln_cost,
    "act": lambda cin, cout, out_hw: (cout * out_hw, 0, 0),
    "upsample": lambda cin, cout, out_hw: (cout * out_hw, 0, 0),
    "pool": lambda cin, cout, in_hw: (cout * in_hw, 0, 0),
    "recurrent": _recurrent_layer_cost,
    "attention": _attention_layer_cost,
    "param": lambda cin, cout, expand: (0, cout * expand, 0),
    "other": lambda cin, cout, fixed: (fixed, 0, 0),
}
"""Layer kind -> (in channels, out channels, *the kind's fixed arguments) -> (MACs, params, matmul MACs)."""


def _kind_args(s: LayerSpec) -> tuple:
    """The fixed arguments of a spec's cost function (see _KIND_COSTS), computed once."""
    out_hw = _hw(s.output_hw)
    if s.kind == "conv":
        return (s.kernel_size[0] * s.kernel_size[1], s.conv_groups, s.depthwise, out_hw, s.has_bias)
    if s.kind == "linear":
        return (s.in_expand, out_hw, s.has_bias)
    if s.kind in ("bn", "ln"):
        return (out_hw, s.affine, s.has_bias)
    if s.kind in ("act", "upsample"):
        return (out_hw,)
    if s.kind == "pool":
        return (_hw(s.input_hw),)
    if s.kind == "recurrent":
        return (s.gates, s.cell_macs, s.num_layers, out_hw, s.has_bias)
    if s.kind == "attention":
        return (s.head_dim, s.tokens, s.sequences, s.has_bias, s.head_params)
    if s.kind == "param":
        return (s.in_expand,)
    return (s.fixed_macs,)


class CostModel:
    """MACs and parameters of a network as a function of the kept channels of each prune group.

    `kept` maps group name -> kept output channels; groups not named keep all their channels.
    `fixed_macs` / `fixed_params` are added unchanged (ops and parameters outside the layer specs).
    """

    def __init__(self, layer_specs: Sequence[LayerSpec], fixed_macs: int = 0, fixed_params: int = 0) -> None:
        self.layer_specs = tuple(layer_specs)
        self.fixed_macs = int(fixed_macs)
        self.fixed_params = int(fixed_params)
        # Precompile each spec to (cost function, groups, channels, flags, args) so a call is a tight loop.
        self._compiled = [self._compile(s) for s in self.layer_specs]
        self.base_macs = self.macs({})
        self.base_params = self.params({})

    @staticmethod
    def _compile(s: LayerSpec) -> tuple:
        if s.kind not in _KIND_COSTS:
            raise ValueError(f"layer {s.name!r}: unknown layer kind {s.kind!r}; known: {', '.join(_KIND_COSTS)}.")
        return (_KIND_COSTS[s.kind], s.in_group, s.out_group, s.in_channels, s.out_channels, s.count_macs,
                s.count_params, _kind_args(s))

    @staticmethod
    def _one(c: tuple, kept: Mapping[str, int]) -> tuple[int, int, int]:
        """(macs, params, matmul macs) of one compiled spec."""
        fn, gi, go, cin, cout, cm, cp, args = c
        if go is not None:
            cout = kept.get(go, cout)
        if gi is not None:
            cin = kept.get(gi, cin)
        macs, params, matmul = fn(cin, cout, *args)
        return (macs if cm else 0), (params if cp else 0), (matmul if cm else 0)

    def macs(self, kept: Mapping[str, int]) -> int:
        """Multiply-accumulates of one image (Torch-Pruning's count, activations/BN/pooling included)."""
        total = self.fixed_macs
        one = self._one
        for c in self._compiled:
            total += one(c, kept)[0]
        return total

    def matmul_macs(self, kept: Mapping[str, int]) -> int:
        """MACs of the weight and attention products only (conv, linear, recurrent weights, QK^T and AV): what an
        operator-level counter such as torch.utils.flop_counter.FlopCounterMode reports (as FLOPs / 2); `macs`
        adds biases, normalisation, activations, pooling and softmax."""
        one = self._one
        return sum(one(c, kept)[2] for c in self._compiled)

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


def attention_cost(
    embed: int, heads: int, head_dim: int, tokens: int, sequences: int = 1, bias: bool = True
) -> tuple[int, int, int]:
    """(MACs, params, matmul MACs) of multi-head self-attention over `sequences` sequences of `tokens` tokens.

    Matmuls: the q/k/v projections (embed -> 3 x heads x head_dim), QK^T and AV (heads x tokens^2 x head_dim
    each) and the output projection (heads x head_dim -> embed). Element-wise, in Torch-Pruning's convention:
    the query scaling, one op per softmax score, and the projection biases.
    """
    inner, t = heads * head_dim, tokens
    matmul = sequences * (4 * t * embed * inner + 2 * heads * t * t * head_dim)
    elementwise = sequences * (t * inner + heads * t * t + ((3 * inner + embed) * t if bias else 0))
    params = 4 * embed * inner + (3 * inner + embed if bias else 0)
    return matmul + elementwise, params, matmul


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


def window_attention_types() -> tuple[type[nn.Module], ...]:
    """torchvision's Swin window attention (its qkv / proj weights are applied functionally, per window). Read
    from the loaded modules, not imported: a model holding one has loaded it, and importing torchvision costs
    a second."""
    swin = sys.modules.get("torchvision.models.swin_transformer")
    return (swin.ShiftedWindowAttention,) if swin is not None else ()


def is_attention(m: nn.Module) -> bool:
    """A self-attention layer the cost model counts as a whole (nn.MultiheadAttention, Swin window attention)."""
    return isinstance(m, (nn.MultiheadAttention, *window_attention_types()))


def attention_geometry(m: nn.Module, out_shape: Sequence[int]) -> tuple[int, int, int, int, int, bool]:
    """(embed, heads, head_dim, tokens, sequences per sample, bias) of one call of an attention layer that
    returned `out_shape`, read from the layer's real weights (a pruned layer has fewer heads)."""
    if isinstance(m, nn.MultiheadAttention):
        tokens = out_shape[1] if m.batch_first and len(out_shape) == 3 else out_shape[0]
        inner = m.in_proj_weight.shape[0] // 3
        return m.embed_dim, m.num_heads, inner // m.num_heads, int(tokens), 1, m.in_proj_bias is not None
    _, h, w, c = out_shape  # window attention: (batch, height, width, channels), windows padded to full size
    wh, ww = m.window_size
    windows = -(-int(h) // wh) * -(-int(w) // ww)
    inner = m.qkv.weight.shape[0] // 3
    return int(c), m.num_heads, inner // m.num_heads, wh * ww, windows, m.qkv.bias is not None


def _attention_macs_hook(module: nn.Module, inputs: tuple, output: object) -> None:
    shape = tuple((output[0] if isinstance(output, (tuple, list)) else output).shape)
    if not isinstance(module, nn.MultiheadAttention):
        batch = shape[0]
    else:
        batch = 1 if len(shape) == 2 else shape[0] if module.batch_first else shape[1]
    module.__flops__ += attention_cost(*attention_geometry(module, shape))[0] * int(batch)


def _linear_macs_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Torch-Pruning counts a Linear's bias once per call; on tokens or pixels it is added at every position."""
    positions = output.numel() // output.shape[-1]
    module.__flops__ += positions * (module.in_features * module.out_features + (module.out_features if
                                                                                  module.bias is not None else 0))


def _norm_macs_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    module.__flops__ += inputs[0].numel() * (2 if module.elementwise_affine else 1)


def _custom_hooks(model: nn.Module) -> dict[type, Callable]:
    """Our counters where Torch-Pruning's are wrong or missing (it matches exact types only)."""
    hooks: dict[type, Callable] = dict.fromkeys(RECURRENT_CELLS, _recurrent_macs_hook)
    hooks[nn.Linear] = _linear_macs_hook
    for m in model.modules():
        if is_attention(m):
            hooks[type(m)] = _attention_macs_hook
        elif isinstance(m, nn.LayerNorm):  # also LayerNorm2d (ConvNeXt)
            hooks[type(m)] = _norm_macs_hook
    return hooks


def counted(m: nn.Module) -> bool:
    """Whether `count_macs_params` counts this module's own MACs (Torch-Pruning's types, plus ours)."""
    from torch_pruning.utils.op_counter import MODULES_MAPPING

    return type(m) in MODULES_MAPPING or is_attention(m) or isinstance(m, nn.LayerNorm)


@torch.no_grad()
def count_macs_params(model: nn.Module, example_inputs: torch.Tensor) -> tuple[int, int]:
    """MACs and params measured on a real model by Torch-Pruning's op counter (for tests and reports), with
    our counters for recurrent and attention layers, LayerNorm subclasses and Linear layers on tokens."""
    from torch_pruning.utils import count_ops_and_params, op_counter

    # Torch-Pruning resets its custom hooks after each count
    op_counter.CUSTOM_MODULES_MAPPING = _custom_hooks(model)
    macs, params = count_ops_and_params(model, example_inputs[:1])  # counts on its own deep copy
    return int(round(float(macs))), int(params)


def flop_counter_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Matmul MACs of one image by PyTorch's operator-level counter (torch.utils.flop_counter.FlopCounterMode,
    FLOPs / 2): an independent check of `CostModel.matmul_macs`, sharing no code with it. It runs with autograd
    on, SDPA's math kernel and oneDNN off, so that nn.MultiheadAttention's fused fast path, the fused CPU
    attention kernel and oneDNN's fused LSTM/GRU kernel, which the counter does not know (it saw only an LSTM
    network's head), decompose into the matmuls it counts."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was_training, mkldnn = model.training, torch.backends.mkldnn.enabled
    model.eval()
    torch.backends.mkldnn.enabled = False
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(example_inputs[:1])
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
