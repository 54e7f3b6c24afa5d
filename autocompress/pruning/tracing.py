"""Helpers that let Torch-Pruning 1.6 trace networks it would otherwise mis-read, or never finish.

- `OneNode` makes a layer one autograd node from its input to its outputs, so the dependency graph sees the
  layer as a unit instead of its internals (recurrent steps, window partitioning and rolls of Swin attention,
  whose shape inference loops for minutes).
- `guarded_index_mapping` stops Torch-Pruning's group propagation at channel shuffles (`ShuffleCut`), whose
  groups are then refused, and works around a ZeroDivisionError in its reshape index mapping (channel
  inference returns 0 for channels it cannot place, which it then divides by).
- `time_limit` turns a graph construction that runs away into a one-line error instead of a hang.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch_pruning.dependency import index_mapping

from autocompress.pruning.errors import PruneError

GRAPH_TIME_LIMIT_S = 30.0
"""Longest a dependency graph may take to build; real networks take well under 5 s."""


class OneNode(torch.autograd.Function):
    """Identity on a layer's outputs, linked in autograd to its input only (tracing aid)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, anchor: torch.Tensor, *outputs: torch.Tensor) -> tuple:
        return tuple(o.clone() for o in outputs)

    @staticmethod
    def backward(ctx: object, *grads: torch.Tensor) -> tuple:
        return (None, None, *(None for _ in grads))


def _opaque_forward(module: nn.Module) -> Callable:
    original = module.forward

    def forward(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        with torch.no_grad():
            out = original(x, *args, **kwargs)
        anchor = torch.zeros((), requires_grad=True)  # gives the node a grad_fn when the input has none
        return OneNode.apply(x, anchor, out)[0]

    return forward


@contextlib.contextmanager
def forwards_replaced(replacements: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """While active, each module runs the given forward (an instance attribute, removed afterwards, even on
    error, so the class's forward is back)."""
    patched = []
    for m, forward in replacements:
        m.forward = forward
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def opaque_modules(model: nn.Module, types: tuple[type, ...]) -> contextlib.AbstractContextManager[None]:
    """While active, each module of `types` (one tensor in, one out) is one autograd node (same values)."""
    chosen = [m for m in model.modules() if isinstance(m, types)] if types else []
    return forwards_replaced((m, _opaque_forward(m)) for m in chosen)


class ShuffleCut:
    """Index mapping that ends Torch-Pruning's group propagation at a channel shuffle and records that it did.

    A channel shuffle (N, C, H, W) -> (N, g, C/g, H, W) -> transpose -> (N, C, H, W) permutes channels in a way
    Torch-Pruning's mappings do not follow: they read it as a flatten and multiply the indices (minutes of work,
    and wrong channels). Its groups are refused instead; `hit` says whether the group just built reached one.
    """

    def __init__(self) -> None:
        self.hit = False

    def __call__(self, idxs: list) -> list:
        if idxs:
            self.hit = True
        return []


def _cut_reshape(node: object, cut: ShuffleCut) -> bool:
    """Put `cut` on every edge of a reshape node that reads a tensor of more than 4 dimensions."""
    if len(getattr(node.grad_fn, "_saved_self_sym_sizes", ())) <= 4:
        return False
    for other in (*node.inputs, *node.outputs):
        for dep in (*node.dependencies, *other.dependencies):
            if {dep.source, dep.target} == {node, other}:
                dep.index_mapping[0] = cut
    return True


@contextlib.contextmanager
def guarded_index_mapping() -> Iterator[ShuffleCut]:
    """While active, Torch-Pruning's reshape index mapping cuts channel shuffles (see ShuffleCut) and skips a
    reshape whose channels it infers as 0 instead of dividing by 0; yields the cut to check groups against."""
    original = index_mapping.update_reshape_index_mapping
    cut = ShuffleCut()

    def guarded(graph: object, node: object) -> None:
        if not _cut_reshape(node, cut):
            with contextlib.suppress(ZeroDivisionError):
                original(graph, node)

    index_mapping.update_reshape_index_mapping = guarded
    try:
        yield cut
    finally:
        index_mapping.update_reshape_index_mapping = original


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise a PruneError if the block runs longer than `seconds` (main thread only, and only when no other
    interval timer is armed: that one is left alone; elsewhere no limit)."""
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer")
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise PruneError(f"{what} did not finish within {seconds:.0f} s (Torch-Pruning's shape inference loops on "
                         "this network's reshapes); this architecture cannot be pruned yet.")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)  # repeats: Torch-Pruning retries a failed forward once
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
