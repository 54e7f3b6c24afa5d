"""Discover the prunable channel groups of a CNN with Torch-Pruning's dependency graph.

A prune group is a set of channels that must be removed together: a conv's output channels, the BN and
the consumers' input channels that follow it, and -- through residual additions and depthwise convs --
every other layer coupled to them. Torch-Pruning applies only the first member's ratio to a coupled
group, so the group (not the layer) is our unit of action, named by its root layer's qualified name.

`analyze_model` does the expensive work once: it traces the graph, lists the groups in network order,
records for each group a replayable pruning plan (which layer, which pruning function, which indices
per root channel), and records every counted layer's shapes as `LayerSpec`s for the analytic cost model.
Recurrent layers (nn.LSTM / GRU / RNN) are groups of hidden units; `recurrent.py` prunes them. Each
nn.MultiheadAttention is a group of whole heads (`attention.py`). Linear layers on channels-last tensors
(a transformer's tokens, ConvNeXt's pixels), LayerNorm / LayerNorm2d and free per-channel parameters
(ConvNeXt's layer_scale) go with the channels they act on. Groups that Torch-Pruning's graph cannot map
exactly (through a channel shuffle, into an attention layer's embedding width, through grouped convs) are
left whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf
from torch_pruning.utils.op_counter import MODULES_MAPPING

from autocompress.measure.flops import (
    RECURRENT_CELLS,
    CostModel,
    LayerSpec,
    attention_geometry,
    counted,
    is_attention,
    window_attention_types,
)
from autocompress.pruning import attention
from autocompress.pruning.errors import PruneError
from autocompress.pruning.recurrent import (
    CUSTOMIZED_PRUNERS,
    RECURRENT_TYPES,
    check_supported,
    is_recurrent,
    opaque_recurrent,
    prune_recurrent_in,
    prune_recurrent_out,
)
from autocompress.pruning.tracing import (
    GRAPH_TIME_LIMIT_S,
    ShuffleCut,
    guarded_index_mapping,
    opaque_modules,
    time_limit,
)

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_ACT_TYPES = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU)
_POOL_TYPES = (
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool3d,
    nn.AvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool3d,
)
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
_OUT_FNS = {
    tpf.prune_conv_out_channels,
    tpf.prune_linear_out_channels,
    tpf.prune_depthwise_conv_out_channels,
    tpf.prune_batchnorm_out_channels,
    tpf.prune_layernorm_out_channels,
    prune_recurrent_out,
}
_IN_FNS = {
    tpf.prune_conv_in_channels,
    tpf.prune_linear_in_channels,
    tpf.prune_depthwise_conv_in_channels,
    prune_recurrent_in,
}
_BOTH_FNS = {
    tpf.prune_batchnorm_out_channels,
    tpf.prune_depthwise_conv_out_channels,
    tpf.prune_layernorm_out_channels,
}
_PRODUCER_FNS = {tpf.prune_conv_out_channels, tpf.prune_linear_out_channels, prune_recurrent_out}
_ROOT_TYPES = [*_CONV_TYPES, nn.Linear, *RECURRENT_TYPES]
_PRODUCER_TYPES = (*_CONV_TYPES, nn.Linear, *_NORM_TYPES, nn.LayerNorm, *RECURRENT_TYPES)


@dataclass(frozen=True)
class PruneGroup:
    """Channels that are removed together, with the features the search needs."""

    name: str
    """Root layer's qualified module name: the first trainable conv/linear producing these channels."""
    members: tuple[str, ...]
    """Qualified names of every layer whose channels (input or output) go with this group."""
    channels: int
    kind: str
    """conv | depthwise (the group carries a depthwise conv) | linear | mlp (a Linear's outputs at every token or
    pixel: a transformer / ConvNeXt MLP's hidden width) | recurrent (hidden units) | heads (attention heads)."""
    internal: bool
    """Not coupled to any residual addition (AMC prunes only these in ResNets)."""
    macs: int
    """MACs of the layers whose output channels are this group (unpruned)."""
    in_channels: int
    """Input width of the root layer (embedding width for attention heads)."""
    kernel_size: int
    stride: int


@dataclass(frozen=True)
class PlanItem:
    """One layer's share of a group's pruning: remove `idxs[root_idxs in removed_roots]` with `fn`."""

    module: str
    fn: Callable
    idxs: np.ndarray
    root_idxs: np.ndarray


@dataclass(frozen=True)
class ParamSlice:
    """Pruning function of the free parameter `attr` of a module (ConvNeXt's layer_scale), along `dim`."""

    attr: str
    dim: int

    def __call__(self, module: nn.Module, idxs: Sequence[int]) -> nn.Module:
        p = getattr(module, self.attr)
        keep = torch.tensor(sorted(set(range(p.shape[self.dim])) - {int(i) for i in idxs}), dtype=torch.long)
        new = nn.Parameter(p.detach().index_select(self.dim, keep).clone(), requires_grad=p.requires_grad)
        setattr(module, self.attr, new)
        return module


@dataclass
class GroupAnalysis:
    """Everything derived once from the dependency graph."""

    groups: list[PruneGroup]
    plans: dict[str, list[PlanItem]]
    tp_groups: dict[str, tp.Group]
    layer_specs: list[LayerSpec]
    fixed_params: int
    order: list[str] = field(default_factory=list)
    """Qualified names of counted modules in forward order (first call)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Root layer -> why its channels are left whole although Torch-Pruning found a group."""

    def cost_model(self) -> CostModel:
        return CostModel(self.layer_specs, fixed_params=self.fixed_params)


@dataclass
class _Call:
    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_fn: object
    out_fn: object
    arg_shapes: tuple[tuple[int, ...], ...] = ()
    """Shapes of every tensor argument (attention: query, key, value)."""


def _first_tensor(x: object) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return _first_tensor(x[0])
    return None


def _hooked(name: str, m: nn.Module) -> bool:
    """Layers whose calls the cost model records."""
    return (isinstance(m, (*_CONV_TYPES, nn.Linear, *_NORM_TYPES, nn.LayerNorm)) or is_attention(m)
            or (bool(name) and counted(m)))


def _record_calls(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], torch.Tensor]:
    """Run one forward with hooks on every layer we model; keep shapes and autograd nodes."""
    calls: list[_Call] = []
    hooks = []

    def hook(name: str) -> Callable:
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            inputs = (*args, *kwargs.values())
            t_in, t_out = _first_tensor(inputs), _first_tensor(output)
            if t_in is None or t_out is None:
                return
            shapes = tuple(tuple(a.shape) for a in inputs if isinstance(a, torch.Tensor))
            calls.append(_Call(name, module, tuple(t_in.shape), tuple(t_out.shape), t_in.grad_fn, t_out.grad_fn,
                               shapes))

        return fn

    for name, m in model.named_modules():
        if _hooked(name, m):
            hooks.append(m.register_forward_hook(hook(name), with_kwargs=True))
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    out_t = _first_tensor(out)
    if out_t is None:
        raise PruneError("the model's forward returned no tensor; pruning needs a tensor output.")
    return calls, out_t


def _walk_to_producer(grad_fn: object, producers: dict) -> str | None:
    """Nearest conv/linear/BN whose output feeds `grad_fn` through channel-preserving ops (None: input)."""
    stack, seen = [grad_fn], set()
    while stack:
        g = stack.pop(0)
        if g is None or g in seen:
            continue
        seen.add(g)
        if g in producers:
            return producers[g]
        if "Cat" in g.name():  # channels from several groups: no single owner
            return None
        stack.extend(nf for nf, _ in g.next_functions)
    return None


def _is_residual_add(dep_target: object) -> bool:
    module = dep_target.module
    if not isinstance(module, tp.ops._ElementWiseOp):
        return False
    op = str(module._grad_fn)  # "AddBackward0"; not "AddmmBackward0" (a Linear on tokens, decomposed)
    return op.startswith(("AddBackward", "SubBackward")) and len(dep_target.inputs) >= 2


def _weight_trainable(m: nn.Module) -> bool:
    w = m.weight_hh_l0 if type(m) in RECURRENT_CELLS else getattr(m, "weight", None)
    return isinstance(w, torch.Tensor) and w.requires_grad


def _check_layers(model: nn.Module) -> None:
    """One-line errors for layers we cannot model, before any tracing."""
    for name, m in model.named_modules():
        if is_recurrent(m):
            check_supported(name, m)
        attention.check_attention(name, m)


@contextlib.contextmanager
def _tracing(model: nn.Module) -> Iterator[ShuffleCut]:
    """Recurrent and window-attention layers as single autograd nodes; channel shuffles cut (see tracing.py)."""
    windows = opaque_modules(model, window_attention_types())
    with opaque_recurrent(model), windows, guarded_index_mapping() as cut:
        yield cut


def analyze_model(model: nn.Module, example_inputs: torch.Tensor) -> GroupAnalysis:
    """Trace `model` once and return its prune groups, pruning plans and layer specs.

    `model` is put in eval mode for tracing and its training flags restored; its weights are not touched.
    """
    if not isinstance(example_inputs, torch.Tensor):
        raise PruneError("example_inputs must be one image batch tensor (N, C, H, W).")
    x = example_inputs[:1]
    _check_layers(model)
    grouped = [m for m in model.modules()
               if isinstance(m, _CONV_TYPES) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels)]
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        limit = time_limit(GRAPH_TIME_LIMIT_S, f"the dependency graph of {type(model).__name__}")
        with _tracing(model) as cut, limit:
            calls, out_t = _record_calls(model, x)
            with torch.enable_grad():  # Torch-Pruning traces autograd nodes; callers may be under no_grad
                pruners = {**CUSTOMIZED_PRUNERS, **attention.customized_pruners(model)}
                dg = tp.DependencyGraph().build_dependency(model, x, verbose=False, customized_pruners=pruners)
                tp_groups, failed = _tp_groups(dg, grouped, cut)
    except PruneError:
        raise
    except Exception as exc:  # tracing failures surface deep in torch; name the model instead
        raise PruneError(
            f"could not trace {type(model).__name__} with an input of shape {tuple(x.shape)} ({exc}); "
            "check that the input shape matches the model."
        ) from exc
    finally:
        for m, t in flags:
            m.training = t
    analysis = _assemble(model, calls, out_t, tp_groups, grouped)
    analysis.skipped.update(failed)
    return analysis


def _tp_groups(
    dg: tp.DependencyGraph, ignored: list[nn.Module], cut: ShuffleCut
) -> tuple[list[tp.Group], dict[str, str]]:
    """`DependencyGraph.get_all_groups`, except that a root whose group reaches a channel shuffle, or that
    Torch-Pruning fails to map (its split / concat mappings can raise), is left whole and named, not fatal."""
    groups, failed, visited = [], {}, set()
    ignored = [*ignored, *dg.IGNORED_LAYERS_IN_TRACING]
    for m in list(dg.module2node):
        if not isinstance(m, tuple(_ROOT_TYPES)) or any(m is i for i in ignored) or id(m) in visited:
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        name = dg._module2name.get(m, type(m).__name__)
        cut.hit = False
        try:
            g = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except PruneError:
            raise
        except (IndexError, KeyError, ValueError, ZeroDivisionError) as exc:
            failed[name] = f"Torch-Pruning could not map its channels through the graph ({type(exc).__name__})"
            continue
        outs = [dep.target.module for dep, _ in g if dg.is_out_channel_pruning_fn(dep.handler)]
        visited.update(id(o) for o in outs)
        if cut.hit:
            failed[name] = "its channels pass through a channel shuffle, which permutes them"
        elif not any(o is i for o in outs for i in ignored):
            groups.append(g)
    return groups, failed


def _fixed_macs(m: nn.Module, c: _Call) -> int:
    """MACs of a layer that pruning does not resize, from Torch-Pruning's counter for its type."""
    m.__flops__ = 0
    try:
        MODULES_MAPPING[type(m)](m, (torch.zeros(c.in_shape),), torch.zeros(c.out_shape))
    except Exception as exc:  # the counter expects another call signature
        raise PruneError(
            f"layer {c.name!r} ({type(m).__name__}) is not supported: its cost cannot be counted "
            f"[{type(exc).__name__}: {exc}]; autocompress prunes CNNs, MLPs, transformers and LSTM/GRU/RNN layers."
        ) from None
    finally:
        fixed = int(getattr(m, "__flops__", 0))
        m.__dict__.pop("__flops__", None)
    return fixed


@dataclass
class _Context:
    """What the group builders look up: modules by name and back, call order, the output's producer."""

    modules: dict[str, nn.Module]
    name_of: dict[nn.Module, str]
    param_names: dict[int, str]
    rank: dict[str, int]
    output_owner: str | None
    grouped: list[nn.Module]
    positions: dict[str, int]

    def rank_of(self, name: str) -> int:
        return self.rank.get(name, 1 << 30)

    def member_rank(self, name: str) -> int:
        """A layer's call rank; a free parameter ranks with the module that holds it."""
        return self.rank_of(name if name in self.rank else name.rpartition(".")[0])


@dataclass
class _Maps:
    """Which group owns each layer's output / input channels and each free parameter."""

    out_group: dict[str, str] = field(default_factory=dict)
    in_group: dict[str, str] = field(default_factory=dict)
    in_expand: dict[str, int] = field(default_factory=dict)
    param_group: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Qualified parameter name -> (group, pruning dim)."""

    def add(self, root: str, plan: list[PlanItem], channels: int, kind: str) -> None:
        for p in plan:
            if kind == "heads":  # the attention layer's heads are its "output channels"
                self.out_group[p.module] = root
                continue
            if isinstance(p.fn, ParamSlice):
                self.param_group[f"{p.module}.{p.fn.attr}"] = (root, p.fn.dim)
                continue
            if p.fn in _OUT_FNS:
                self.out_group[p.module] = root
            if p.fn in _IN_FNS or p.fn in _BOTH_FNS:
                self.in_group[p.module] = root
            if p.fn == tpf.prune_linear_in_channels:
                self.in_expand[p.module] = max(1, len(p.idxs) // channels)


def _context(model: nn.Module, calls: list[_Call], out_t: torch.Tensor, grouped: list[nn.Module]) -> _Context:
    modules = dict(model.named_modules())
    order = list(dict.fromkeys(c.name for c in calls))
    producers = _producers(calls)
    positions = {c.name: max(1, int(np.prod(c.out_shape)) // int(c.out_shape[-1]))
                 for c in calls if isinstance(c.module, nn.Linear)}
    return _Context(
        modules=modules,
        name_of={m: n for n, m in modules.items()},
        param_names={id(p): n for n, p in model.named_parameters()},
        rank={n: i for i, n in enumerate(order)},
        output_owner=_walk_to_producer(out_t.grad_fn, producers),
        grouped=grouped,
        positions=positions,
    )


def _producers(calls: list[_Call]) -> dict:
    return {c.out_fn: c.name for c in calls if isinstance(c.module, _PRODUCER_TYPES) and c.out_fn is not None}


def _assemble(
    model: nn.Module, calls: list[_Call], out_t: torch.Tensor, tp_groups: list[tp.Group], grouped: list[nn.Module]
) -> GroupAnalysis:
    ctx = _context(model, calls, out_t, grouped)
    groups: list[PruneGroup] = []
    plans: dict[str, list[PlanItem]] = {}
    by_root: dict[str, tp.Group] = {}
    skipped: dict[str, str] = {}
    maps = _Maps()
    for g in tp_groups:
        built = _tp_group(g, ctx)
        if isinstance(built, str):
            skipped[ctx.name_of.get(g[0].dep.target.module, str(g[0].dep.target.name))] = built
            continue
        if built is not None:
            groups.append(built[0])
            plans[built[0].name], by_root[built[0].name] = built[1], g
    for g, plan in _head_groups(calls, ctx):
        groups.append(g)
        plans[g.name] = plan
    for gr in groups:
        maps.add(gr.name, plans[gr.name], gr.channels, gr.kind)
    specs = _layer_specs(calls, _producers(calls), maps) + _param_specs(model, maps)
    fixed_params = sum(p.numel() for p in model.parameters()) - _modeled_params_full(specs)
    groups = _with_macs(groups, specs, CostModel(specs, fixed_params=fixed_params))
    groups.sort(key=lambda gr: ctx.rank_of(gr.name))
    return GroupAnalysis(groups, plans, by_root, specs, fixed_params, list(ctx.rank), skipped)


def _unsupported_reason(dep: object, idxs: Sequence[int], ctx: _Context) -> str | None:
    """Why a group member cannot be pruned exactly (the whole group is then left whole), or None."""
    module = dep.target.module
    name = ctx.name_of.get(module, "") if isinstance(module, nn.Module) else ""
    if isinstance(module, nn.Module) and module in ctx.grouped:
        return f"{name!r} is a grouped convolution"
    if attention.is_embed_fixed(dep):
        return f"it is the embedding width of attention layer {name!r}, which stays whole"
    if isinstance(module, tp.ops._ReshapeOp) and len(getattr(dep.target.grad_fn, "_saved_self_sym_sizes", ())) > 4:
        return "its channels pass through a reshape of a tensor of more than 4 dimensions (a channel shuffle)"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return f"LayerNorm {name!r} normalises over more than the channels"
    if isinstance(module, nn.Parameter):
        dim = getattr(dep.target, "pruning_dim", None)
        if id(module) not in ctx.param_names or dim is None or module.shape[dim] != len(idxs):
            return "it reaches a free parameter whose channel dimension is unknown"
    return None


def _plan_target(dep: object, ctx: _Context) -> tuple[str, str, Callable] | None:
    """(module to call, member name, pruning function) of a group item; None for graph ops (add, reshape)."""
    module = dep.target.module
    if isinstance(module, nn.Parameter):
        qual = ctx.param_names[id(module)]
        owner, _, attr = qual.rpartition(".")
        return owner, qual, ParamSlice(attr, int(dep.target.pruning_dim))
    if isinstance(module, nn.Module) and module in ctx.name_of:
        return ctx.name_of[module], ctx.name_of[module], dep.handler
    return None


def _tp_group(g: tp.Group, ctx: _Context) -> tuple[PruneGroup, list[PlanItem]] | str | None:
    """A Torch-Pruning group as our group and plan; a reason when it cannot be pruned exactly; None when its
    channels are fixed (the classifier output, or only fixed producers such as 0/1 shortcut convs)."""
    plan: list[PlanItem] = []
    members, producers, outs = [], [], []
    has_dw = has_residual = False
    for it in g:
        reason = _unsupported_reason(it.dep, it.idxs, ctx)
        if reason is not None:
            return reason
        has_residual |= _is_residual_add(it.dep.target)
        target = _plan_target(it.dep, ctx)
        if target is None:
            continue
        module, member, fn = target
        plan.append(PlanItem(module, fn, np.asarray(it.idxs, dtype=np.int64), np.asarray(it.root_idxs, dtype=np.int64)))
        members.append(member)
        producers += [module] if fn in _PRODUCER_FNS else []
        outs += [module] if fn in _OUT_FNS else []
        has_dw |= fn == tpf.prune_depthwise_conv_out_channels
    roots = sorted((p for p in producers if _weight_trainable(ctx.modules[p])), key=ctx.rank_of)
    if not roots or ctx.output_owner in outs:
        return None
    root, channels = roots[0], len(g[0].idxs)
    root_mod = ctx.modules[root]
    _check_recurrent_plan(root, root_mod, plan, channels)
    ks, st = getattr(root_mod, "kernel_size", (1,)), getattr(root_mod, "stride", (1,))
    group = PruneGroup(
        name=root,
        members=tuple(sorted(dict.fromkeys(members), key=ctx.member_rank)),
        channels=channels,
        kind=_group_kind(root_mod, has_dw, ctx.positions.get(root, 1)),
        internal=not has_residual,
        macs=0,
        in_channels=_in_size(root_mod),
        kernel_size=int(ks[0]),
        stride=int(st[0]),
    )
    return group, plan


def _head_groups(calls: list[_Call], ctx: _Context) -> list[tuple[PruneGroup, list[PlanItem]]]:
    """One group of whole heads per trainable attention layer with heads to remove (in call order)."""
    out = []
    for name in dict.fromkeys(c.name for c in calls if attention.prunable_heads(c.module)):
        m = ctx.modules[name]
        if not all(p.requires_grad for p in m.parameters()):
            continue
        heads = np.arange(m.num_heads, dtype=np.int64)
        group = PruneGroup(name=name, members=(name,), channels=m.num_heads, kind="heads", internal=True, macs=0,
                           in_channels=attention.embed_width(m), kernel_size=1, stride=1)
        out.append((group, [PlanItem(name, attention.head_pruner(m), heads, heads)]))
    return out


def _group_kind(root: nn.Module, has_dw: bool, positions: int) -> str:
    if has_dw:
        return "depthwise"
    if type(root) in RECURRENT_CELLS:
        return "recurrent"
    if isinstance(root, nn.Linear):
        return "mlp" if positions > 1 else "linear"
    return "conv"


def _in_size(m: nn.Module) -> int:
    for attr in ("in_channels", "in_features", "input_size"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    return 0


def _check_recurrent_plan(root: str, root_mod: nn.Module, plan: list[PlanItem], channels: int) -> None:
    """A group touching a recurrent layer must map its channels one to one (no flattened time steps)."""
    recurrent_root = type(root_mod) in RECURRENT_CELLS
    for p in plan:
        mapped = len(p.idxs) == len(p.root_idxs) == channels
        if p.fn == prune_recurrent_in and not mapped:
            raise PruneError(f"layer {p.module!r}: its input features are not one per channel of group "
                             f"{root!r} (a reshape in between); recurrent layers must read channels unchanged.")
        if recurrent_root and p.fn in _IN_FNS and not mapped:
            raise PruneError(f"layer {p.module!r} reads the hidden units of {root!r} through a reshape (e.g. "
                             "the whole sequence flattened); read one step (out[:, -1]) or h_n instead.")


def _with_macs(groups: list[PruneGroup], specs: list[LayerSpec], cost: CostModel) -> list[PruneGroup]:
    per_group: dict[str, int] = {}
    for s, c in zip(specs, cost._compiled, strict=True):
        if s.out_group is not None:
            per_group[s.out_group] = per_group.get(s.out_group, 0) + cost._one(c, {})[0]
    return [
        PruneGroup(**{**g.__dict__, "macs": per_group.get(g.name, 0)})  # frozen: rebuild with the figure
        for g in groups
    ]


def _modeled_params_full(specs: list[LayerSpec]) -> int:
    return CostModel(specs).params({})


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    spatial = shape[2:]
    if len(spatial) == 0:
        return (1, 1)
    if len(spatial) == 1:
        return (1, int(spatial[0]))
    n = 1
    for s in spatial[:-1]:
        n *= int(s)
    return (n, int(spatial[-1]))


def _positions(shape: tuple[int, ...], channels: int) -> tuple[int, int]:
    """(1, positions) at which `channels` channels are computed in a batch-1 tensor (tokens, pixels, steps)."""
    return (1, max(1, int(np.prod(shape)) // max(1, channels)))
def _recurrent_spec(
    m: nn.Module, c: _Call, in_group: str | None, out_group: str | None, common: dict
) -> LayerSpec:
    """A recurrent layer runs once per (batch, time step) position of its input sequence."""
    gates, cell_macs = RECURRENT_CELLS[type(m)]
    steps = (1, int(np.prod(c.in_shape[:-1])))
    return LayerSpec(
        kind="recurrent",
        in_channels=m.input_size,
        out_channels=m.hidden_size,
        in_group=in_group,
        out_group=out_group,
        has_bias=bool(m.bias),
        gates=gates,
        cell_macs=cell_macs,
        num_layers=m.num_layers,
        **{**common, "input_hw": steps, "output_hw": steps},
    )


def _out_width(m: nn.Module) -> int | None:
    """Channels a producer layer outputs (None for layers that produce no channels of their own)."""
    if isinstance(m, _CONV_TYPES):
        return int(m.out_channels)
    if isinstance(m, nn.Linear):
        return int(m.out_features)
    if isinstance(m, _NORM_TYPES):
        return int(m.num_features)
    if isinstance(m, nn.LayerNorm):
        return int(np.prod(m.normalized_shape))
    if type(m) in RECURRENT_CELLS:
        return int(m.hidden_size)
    return None


def _layer_specs(calls: list[_Call], producers: dict, maps: _Maps) -> list[LayerSpec]:
    seen: dict[str, int] = {}
    specs: list[LayerSpec] = []
    widths = {c.name: w for c in calls if (w := _out_width(c.module)) is not None}
    for c in calls:
        k = seen.get(c.name, 0)
        seen[c.name] = k + 1
        common = dict(
            name=c.name if k == 0 else f"{c.name}#{k + 1}",
            input_hw=_hw(c.in_shape),
            output_hw=_hw(c.out_shape),
            count_macs=counted(c.module),
            count_params=k == 0,
        )
        specs.append(_spec(c, common, maps, producers, widths))
    return specs


def _spec(c: _Call, common: dict, maps: _Maps, producers: dict, widths: dict[str, int]) -> LayerSpec:
    """The cost-model spec of one call, by layer type."""
    m = c.module
    gi, go = maps.in_group.get(c.name), maps.out_group.get(c.name)
    if isinstance(m, _CONV_TYPES):
        return _conv_spec(m, gi, go, common)
    if isinstance(m, nn.Linear):
        expand = maps.in_expand.get(c.name, 1)
        pos = _positions(c.out_shape, m.out_features)
        return LayerSpec(kind="linear", in_channels=m.in_features // expand, out_channels=m.out_features,
                         in_group=gi, out_group=go, has_bias=m.bias is not None, in_expand=expand,
                         **{**common, "input_hw": pos, "output_hw": pos})
    if type(m) in RECURRENT_CELLS:
        return _recurrent_spec(m, c, gi, go, common)
    if isinstance(m, _NORM_TYPES):
        return LayerSpec(kind="bn", in_channels=m.num_features, out_channels=m.num_features, in_group=go,
                         out_group=go, affine=m.affine, **common)
    if isinstance(m, nn.LayerNorm):
        return _ln_spec(m, c, go, common)
    if is_attention(m):
        return _attention_spec(m, c, go, common)
    return _elementwise_spec(m, c, common, maps.out_group, producers, widths)


def _conv_spec(m: nn.Module, gi: str | None, go: str | None, common: dict) -> LayerSpec:
    ks = tuple(int(v) for v in m.kernel_size)
    st = tuple(int(v) for v in m.stride)
    return LayerSpec(
        kind="conv",
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        in_group=gi,
        out_group=go,
        kernel_size=(ks + (1, 1))[:2] if len(ks) < 2 else (ks[0], int(np.prod(ks[1:]))),
        stride=(st + (1, 1))[:2] if len(st) < 2 else (st[0], st[1]),
        conv_groups=m.groups,
        has_bias=m.bias is not None,
        **common,
    )


def _ln_spec(m: nn.LayerNorm, c: _Call, go: str | None, common: dict) -> LayerSpec:
    """LayerNorm over the channels (last dim, or dim 1 for LayerNorm2d): per channel and position, like BN."""
    width = int(np.prod(m.normalized_shape))
    group = go if len(m.normalized_shape) == 1 else None
    pos = _positions(c.out_shape, width)
    return LayerSpec(kind="ln", in_channels=width, out_channels=width, in_group=group, out_group=group,
                     affine=m.elementwise_affine, has_bias=getattr(m, "bias", None) is not None,
                     **{**common, "input_hw": pos, "output_hw": pos})


def _attention_spec(m: nn.Module, c: _Call, go: str | None, common: dict) -> LayerSpec:
    """Self-attention: heads are the channels (`go`: the head group); the embedding width stays fixed."""
    embed, heads, head_dim, tokens, sequences, bias = attention_geometry(m, c.out_shape)
    if isinstance(m, nn.MultiheadAttention) and len(c.arg_shapes) >= 2:
        key = c.arg_shapes[1]
        key_tokens = key[1] if m.batch_first and len(key) == 3 else key[0]
        if key_tokens != tokens:
            raise PruneError(f"layer {c.name!r} ({type(m).__name__}) is not supported: keys of another length than "
                             "the queries (cross-attention) are not supported yet; autocompress prunes self-attention.")
    pos = (1, tokens * sequences)
    table = getattr(m, "relative_position_bias_table", None)  # Swin: one column of position biases per head
    return LayerSpec(kind="attention", in_channels=embed, out_channels=heads, in_group=None, out_group=go,
                     head_dim=head_dim, tokens=tokens, sequences=sequences, has_bias=bias,
                     head_params=int(table.shape[0]) if isinstance(table, torch.Tensor) else 0,
                     **{**common, "input_hw": pos, "output_hw": pos})


def _elementwise_spec(
    m: nn.Module, c: _Call, common: dict, out_group: dict[str, str], producers: dict, widths: dict[str, int]
) -> LayerSpec:
    """Activations, pooling, upsampling (per channel of the producer feeding them) and fixed-cost layers."""
    channels = int(c.out_shape[1]) if len(c.out_shape) > 1 else 1
    owner = _walk_to_producer(c.in_fn, producers)
    group = out_group.get(owner) if owner is not None else None
    width = widths.get(owner)
    if width and channels != width and int(np.prod(c.out_shape)) % width == 0:  # channels last, or flattened
        channels = width
        common.update(input_hw=_positions(c.in_shape, width), output_hw=_positions(c.out_shape, width))
    if isinstance(m, _ACT_TYPES):
        kind = "act"
    elif isinstance(m, _POOL_TYPES):
        kind = "pool"
    elif isinstance(m, nn.Upsample):
        kind = "upsample"
    else:
        kind, group = "other", None
    if kind == "pool" and len(c.in_shape) < 3:
        group = None
    fixed = _fixed_macs(m, c) if kind == "other" else 0
    return LayerSpec(kind=kind, in_channels=channels, out_channels=channels, in_group=group, out_group=group,
                     fixed_macs=fixed, **common)


def _param_specs(model: nn.Module, maps: _Maps) -> list[LayerSpec]:
    """Free parameters pruned with a group (ConvNeXt's layer_scale): parameters only, no MACs."""
    params = dict(model.named_parameters())
    specs = []
    for qual, (group, dim) in maps.param_group.items():
        p = params[qual]
        width = int(p.shape[dim])
        specs.append(LayerSpec(name=qual, kind="param", in_channels=width, out_channels=width, in_group=None,
                               out_group=group, in_expand=p.numel() // width, count_macs=False))
    return specs
