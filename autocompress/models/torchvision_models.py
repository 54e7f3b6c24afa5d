"""torchvision classification models by name (`tv:<name>`), random init; weights only from a user's file."""

from __future__ import annotations

from torch import nn

from autocompress.models.errors import ModelError


def torchvision_names() -> list[str]:
    """torchvision's classification model names (no detection / segmentation / video)."""
    import torchvision  # lazy: importing it costs ~1 s and most runs use the zoo

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(name: str, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """`torchvision.models.get_model(name, weights=None)`; a non-RGB input swaps the first conv."""
    import torchvision

    names = torchvision_names()
    if name not in names:
        raise ModelError(f"unknown torchvision model {name!r}; valid: {', '.join(names)} (prefix them with 'tv:').")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, name, in_channels)
    return model


def _replace_first_conv(model: nn.Module, name: str, in_channels: int) -> None:
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    1,
                    child.bias is not None,
                )
                setattr(module, child_name, new)
                return
    raise ModelError(f"cannot adapt {name!r} to {in_channels} input channels: no 3-channel first conv found.")
