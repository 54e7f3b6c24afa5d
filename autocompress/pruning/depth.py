"""Depth pruning: remove whole residual blocks.

Why: on small inputs an INT8 network sits at its kernels' per-call floor, so cutting channels saves little
measured time (ResNet-56 in ONNX Runtime: INT8 alone 1.97x, INT8 at 22% of the MACs 2.02x), while every block
removed saves its calls outright (12 of 27 blocks gone: 3.45x). A block can go when its shortcut is the identity:
it computes relu(x + f(x)) on an input that is already >= 0, so without its branch f it is x. That is also the
limit of pruning every channel of the branch's inner width, which is how a schedule says it: the inner group's
prune ratio 1.0 (0 channels kept) removes the block.

Which modules are such blocks is answered by detectors (`register_detector`): the zoo's blocks say it
themselves (a `droppable_inner` attribute naming the inner layer, None when the shortcut is not the identity),
torchvision's ResNet blocks are recognised by their `downsample` being None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import nn

from autocompress.pruning.groups import PruneGroup

Detector = Callable[[nn.Module], "str | None"]
"""A module -> the name (relative to it) of the layer whose output channels are its residual branch's inner
width when the module is a droppable residual block, else None."""

_DETECTORS: list[Detector] = []


def register_detector(detector: Detector) -> Detector:
    """Add a way to recognise droppable residual blocks (usable as a decorator)."""
    _DETECTORS.append(detector)
    return detector


@register_detector
def _declared(module: nn.Module) -> str | None:
    """Blocks that declare their inner layer (the zoo's CIFAR ResNet BasicBlock)."""
    inner = getattr(module, "droppable_inner", None)
    return inner if isinstance(inner, str) else None


@register_detector
def _torchvision_resnet(module: nn.Module) -> str | None:
    """torchvision's BasicBlock / Bottleneck without a downsample: out = relu(x + branch(x))."""
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:  # torchvision is optional for the core
        return None
    if isinstance(module, (BasicBlock, Bottleneck)) and module.downsample is None:
        return "conv1"
    return None


def droppable_blocks(model: nn.Module, groups: Iterable[PruneGroup]) -> dict[str, str]:
    """Group name -> block path, for every group that is the inner width of a droppable residual block.

    `groups` are the pruner's groups (name = the root layer, `internal` = not tied to a residual addition);
    only an internal group rooted at the block's inner layer qualifies, so a schedule can name the block by it.
    """
    internal = {g.name for g in groups if g.internal}
    out: dict[str, str] = {}
    for path, module in model.named_modules():
        inner = _inner_of(module)
        if inner is None:
            continue
        root = f"{path}.{inner}" if path else inner
        if root in internal:
            out[root] = path
    return out


def _inner_of(module: nn.Module) -> str | None:
    for detect in _DETECTORS:
        inner = detect(module)
        if inner is not None:
            return inner
    return None


def drop_blocks(model: nn.Module, paths: Iterable[str]) -> nn.Module:
    """`model` (modified in place) with each block at `paths` replaced by nn.Identity."""
    for path in paths:
        model.set_submodule(path, nn.Identity())
    return model


def dropped(kept: Mapping[str, int]) -> list[str]:
    """The groups `kept` removes entirely (0 channels): their blocks go."""
    return [name for name, k in kept.items() if int(k) == 0]
