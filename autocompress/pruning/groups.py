"""Discover the prunable channel groups of a CNN with Torch-Pruning's dependency graph.

A prune group is a set of channels that must be removed together: a conv's output channels, the BN and
the consumers' input channels that follow it, and -- through residual additions and depthwise convs --
every other layer coupled to them. Torch-Pruning applies only the first member's ratio to a coupled
group, so the group (not the layer) is our unit of action, named by its root layer's qualified name.

`analyze_model` does the expensive work once: it traces the graph, lists the groups in network order,
records for each group a replayable pruning plan (which layer, which pruning function, which indices
per root channel), and records every counted layer's shapes as `LayerSpec`s for the analytic cost model.
Recurrent layers (nn.LSTM / GRU / RNN) are groups of hidden units; `recurrent.py` prunes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf
from torch_pruning.utils.op_counter import MODULES_MAPPING

from autocompress.measure.flops import RECURRENT_CELLS, CostModel, LayerSpec
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
    prune_recurrent_out,
}
_IN_FNS = {
    tpf.prune_conv_in_channels,
    tpf.prune_linear_in_channels,
    tpf.prune_depthwise_conv_in_channels,
    prune_recurrent_in,
}
_BOTH_FNS = {tpf.prune_batchnorm_out_channels, tpf.prune_depthwise_conv_out_channels}
_PRODUCER_FNS = {tpf.prune_conv_out_channels, tpf.prune_linear_out_channels, prune_recurrent_out}
_ROOT_TYPES = [*_CONV_TYPES, nn.Linear, *RECURRENT_TYPES]
_PRODUCER_TYPES = (*_CONV_TYPES, nn.Linear, *_NORM_TYPES, *RECURRENT_TYPES)


@dataclass(frozen=True)
class PruneGroup:
    """Channels that are removed together, with the features the search needs."""

    name: str
    """Root layer's qualified module name: the first trainable conv/linear producing these channels."""
    members: tuple[str, ...]
    """Qualified names of every layer whose channels (input or output) go with this group."""
    channels: int
    kind: str
    """conv | depthwise (the group carries a depthwise conv) | linear | recurrent (hidden units)."""
    internal: bool
    """Not coupled to any residual addition (AMC prunes only these in ResNets)."""
    macs: int
    """MACs of the layers whose output channels are this group (unpruned)."""
    in_channels: int
    kernel_size: int
    stride: int


@dataclass(frozen=True)
class PlanItem:
    """One layer's share of a group's pruning: remove `idxs[root_idxs in removed_roots]` with `fn`."""

    module: str
    fn: Callable
    idxs: np.ndarray
    root_idxs: np.ndarray


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


def _first_tensor(x: object) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return _first_tensor(x[0])
    return None


def _is_counted_type(m: nn.Module) -> bool:
    return type(m) in MODULES_MAPPING


def _record_calls(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], torch.Tensor]:
    """Run one forward with hooks on every layer we model; keep shapes and autograd nodes."""
    calls: list[_Call] = []
    hooks = []

    def hook(name: str) -> Callable:
        def fn(module: nn.Module, inputs: tuple, output: object) -> None:
            t_in, t_out = _first_tensor(inputs), _first_tensor(output)
            if t_in is None or t_out is None:
                return
            calls.append(
                _Call(name, module, tuple(t_in.shape), tuple(t_out.shape), t_in.grad_fn, t_out.grad_fn)
            )

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (*_CONV_TYPES, nn.Linear, *_NORM_TYPES)) or (_is_counted_type(m) and name):
            hooks.append(m.register_forward_hook(hook(name)))
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
    op = str(module._grad_fn)
    return (op.startswith("Add") or op.startswith("Sub")) and len(dep_target.inputs) >= 2


def _weight_trainable(m: nn.Module) -> bool:
    w = m.weight_hh_l0 if type(m) in RECURRENT_CELLS else getattr(m, "weight", None)
    return isinstance(w, torch.Tensor) and w.requires_grad


def analyze_model(model: nn.Module, example_inputs: torch.Tensor) -> GroupAnalysis:
    """Trace `model` once and return its prune groups, pruning plans and layer specs.

    `model` is put in eval mode for tracing and its training flags restored; its weights are not touched.
    """
    if not isinstance(example_inputs, torch.Tensor):
        raise PruneError("example_inputs must be one image batch tensor (N, C, H, W).")
    x = example_inputs[:1]
    for name, m in model.named_modules():
        if is_recurrent(m):
            check_supported(name, m)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with opaque_recurrent(model):
            calls, out_t = _record_calls(model, x)
            with torch.enable_grad():  # Torch-Pruning traces autograd nodes; callers may be under no_grad
                dg = tp.DependencyGraph().build_dependency(
                    model, x, verbose=False, customized_pruners=CUSTOMIZED_PRUNERS
                )
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
    return _assemble(model, calls, out_t, dg)


def _fixed_macs(m: nn.Module, c: _Call) -> int:
    """MACs of a layer that pruning does not resize, from Torch-Pruning's counter for its type."""
    m.__flops__ = 0
    try:
        MODULES_MAPPING[type(m)](m, (torch.zeros(c.in_shape),), torch.zeros(c.out_shape))
    except Exception as exc:  # the counter expects another call signature (e.g. attention's q, k, v)
        hint = " (attention layers are not supported yet)" if isinstance(m, nn.MultiheadAttention) else ""
        raise PruneError(
            f"layer {c.name!r} ({type(m).__name__}) is not supported: its cost cannot be counted{hint} "
            f"[{type(exc).__name__}: {exc}]; autocompress prunes CNNs, MLPs and LSTM/GRU/RNN layers today."
        ) from None
    finally:
        fixed = int(getattr(m, "__flops__", 0))
        m.__dict__.pop("__flops__", None)
    return fixed


def _assemble(model: nn.Module, calls: list[_Call], out_t: torch.Tensor, dg: tp.DependencyGraph) -> GroupAnalysis:
    modules = dict(model.named_modules())
    name_of = {m: n for n, m in modules.items()}
    order: list[str] = []
    for c in calls:
        if c.name not in order:
            order.append(c.name)
    rank = {n: i for i, n in enumerate(order)}

    producers = {}
    for c in calls:
        if isinstance(c.module, _PRODUCER_TYPES) and c.out_fn is not None:
            producers[c.out_fn] = c.name
    output_owner = _walk_to_producer(out_t.grad_fn, producers)

    unsupported = [
        m
        for m in model.modules()
        if isinstance(m, _CONV_TYPES) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels)
    ]

    groups: list[PruneGroup] = []
    plans: dict[str, list[PlanItem]] = {}
    tp_groups: dict[str, tp.Group] = {}
    out_group: dict[str, str] = {}
    in_group: dict[str, str] = {}
    in_expand: dict[str, int] = {}
    for g in dg.get_all_groups(ignored_layers=unsupported, root_module_types=_ROOT_TYPES):
        items = []
        members: list[str] = []
        producer_names: list[str] = []
        out_members: list[str] = []
        has_dw, has_residual = False, False
        for it in g:
            dep = it.dep
            if _is_residual_add(dep.target):
                has_residual = True
            module = dep.target.module
            if not isinstance(module, nn.Module) or module not in name_of:
                continue
            mname = name_of[module]
            if module in unsupported:
                break  # grouped (non-depthwise) convs: Torch-Pruning cannot prune them consistently
            items.append((mname, dep.handler, it.idxs, it.root_idxs))
            if mname not in members:
                members.append(mname)
            if dep.handler in _PRODUCER_FNS:
                producer_names.append(mname)
            if dep.handler in _OUT_FNS:
                out_members.append(mname)
            if dep.handler == tpf.prune_depthwise_conv_out_channels:
                has_dw = True
        else:
            roots = sorted(
                (p for p in producer_names if _weight_trainable(modules[p])),
                key=lambda n: rank.get(n, 1 << 30),
            )
            if not roots or output_owner in out_members:
                continue  # fixed channels: the classifier output, or only fixed (0/1 shortcut) producers
            root = roots[0]
            root_mod = modules[root]
            channels = len(g[0].idxs)
            plan = [
                PlanItem(n, fn, np.asarray(idxs, dtype=np.int64), np.asarray(ridx, dtype=np.int64))
                for n, fn, idxs, ridx in items
            ]
            plans[root] = plan
            tp_groups[root] = g
            for p in plan:
                if p.fn in _OUT_FNS:
                    out_group[p.module] = root
                if p.fn in _IN_FNS or p.fn in _BOTH_FNS:
                    in_group[p.module] = root
                if p.fn == tpf.prune_linear_in_channels:
                    in_expand[p.module] = max(1, len(p.idxs) // channels)
            _check_recurrent_plan(root, root_mod, plan, channels)
            ks = getattr(root_mod, "kernel_size", (1,))
            st = getattr(root_mod, "stride", (1,))
            groups.append(
                PruneGroup(
                    name=root,
                    members=tuple(sorted(members, key=lambda n: rank.get(n, 1 << 30))),
                    channels=channels,
                    kind=_group_kind(root_mod, has_dw),
                    internal=not has_residual,
                    macs=0,
                    in_channels=_in_size(root_mod),
                    kernel_size=int(ks[0]),
                    stride=int(st[0]),
                )
            )

    specs = _layer_specs(calls, producers, out_group, in_group, in_expand)
    modeled = _modeled_params_full(specs)
    fixed_params = sum(p.numel() for p in model.parameters()) - modeled
    cost = CostModel(specs, fixed_params=fixed_params)
    groups = _with_macs(groups, specs, cost)
    groups.sort(key=lambda gr: rank.get(gr.name, 1 << 30))
    return GroupAnalysis(groups, plans, tp_groups, specs, fixed_params, order)


def _group_kind(root: nn.Module, has_dw: bool) -> str:
    if has_dw:
        return "depthwise"
    if type(root) in RECURRENT_CELLS:
        return "recurrent"
    return "linear" if isinstance(root, nn.Linear) else "conv"


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


def _layer_specs(
    calls: list[_Call],
    producers: dict,
    out_group: dict[str, str],
    in_group: dict[str, str],
    in_expand: dict[str, int],
) -> list[LayerSpec]:
    seen: dict[str, int] = {}
    specs: list[LayerSpec] = []
    hidden = {c.name: int(c.out_shape[-1]) for c in calls if type(c.module) in RECURRENT_CELLS}
    for c in calls:
        k = seen.get(c.name, 0)
        seen[c.name] = k + 1
        name = c.name if k == 0 else f"{c.name}#{k + 1}"
        m = c.module
        common = dict(
            name=name,
            input_hw=_hw(c.in_shape),
            output_hw=_hw(c.out_shape),
            count_macs=_is_counted_type(m),
            count_params=k == 0,
        )
        if isinstance(m, _CONV_TYPES):
            ks = tuple(int(v) for v in m.kernel_size)
            st = tuple(int(v) for v in m.stride)
            specs.append(
                LayerSpec(
                    kind="conv",
                    in_channels=m.in_channels,
                    out_channels=m.out_channels,
                    in_group=in_group.get(c.name),
                    out_group=out_group.get(c.name),
                    kernel_size=(ks + (1, 1))[:2] if len(ks) < 2 else (ks[0], int(np.prod(ks[1:]))),
                    stride=(st + (1, 1))[:2] if len(st) < 2 else (st[0], st[1]),
                    conv_groups=m.groups,
                    has_bias=m.bias is not None,
                    **common,
                )
            )
        elif isinstance(m, nn.Linear):
            if len(c.in_shape) != 2:
                raise PruneError(
                    f"layer {c.name!r}: nn.Linear on a {len(c.in_shape)}-D input is not supported for channel "
                    "pruning of CNNs; flatten before the classifier."
                )
            specs.append(
                LayerSpec(
                    kind="linear",
                    in_channels=m.in_features // in_expand.get(c.name, 1),
                    out_channels=m.out_features,
                    in_group=in_group.get(c.name),
                    out_group=out_group.get(c.name),
                    has_bias=m.bias is not None,
                    in_expand=in_expand.get(c.name, 1),
                    **common,
                )
            )
        elif type(m) in RECURRENT_CELLS:
            specs.append(_recurrent_spec(m, c, in_group.get(c.name), out_group.get(c.name), common))
        elif isinstance(m, _NORM_TYPES):
            specs.append(
                LayerSpec(
                    kind="bn",
                    in_channels=m.num_features,
                    out_channels=m.num_features,
                    in_group=out_group.get(c.name),
                    out_group=out_group.get(c.name),
                    affine=m.affine,
                    **common,
                )
            )
        else:
            channels = int(c.out_shape[1]) if len(c.out_shape) > 1 else 1
            owner = _walk_to_producer(c.in_fn, producers)
            group = out_group.get(owner) if owner is not None else None
            if owner in hidden and c.out_shape[-1] == hidden[owner]:  # (batch, time, hidden): channels last
                channels = hidden[owner]
                steps = (1, int(np.prod(c.out_shape[:-1])))
                common.update(input_hw=steps, output_hw=steps)
            if isinstance(m, _ACT_TYPES):
                kind = "act"
            elif isinstance(m, _POOL_TYPES):
                kind = "pool"
            elif isinstance(m, nn.Upsample):
                kind = "upsample"
            else:
                kind, group = "other", None
            fixed = 0
            if kind == "other":
                fixed = _fixed_macs(m, c)
            if kind == "pool" and len(c.in_shape) < 3:
                group = None
            specs.append(
                LayerSpec(
                    kind=kind,
                    in_channels=channels,
                    out_channels=channels,
                    in_group=group,
                    out_group=group,
                    fixed_macs=fixed,
                    **common,
                )
            )
    return specs
