"""Model zoo: CIFAR ResNets, VGG-16-BN, MobileNetV2 for small images, a tiny CNN, a row-sequence LSTM,
torchvision by name.

`get_model(name, num_classes, weights, in_channels)` is the one entry point; `list_models()` the names.
CIFAR ResNets are built in the prunable option-B form, which loads option-A weights unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from torch import nn

from autocompress.models.cifar_resnet import CifarResNet, PadShortcut, ShortcutConv, cifar_resnet
from autocompress.models.errors import ModelError
from autocompress.models.mlp_policy import POLICY_ZOO
from autocompress.models.mobilenetv2 import mobilenetv2_cifar
from autocompress.models.sequence import lstm_seq_fmnist
from autocompress.models.tiny import tiny_cnn
from autocompress.models.torchvision_models import build_torchvision, torchvision_names
from autocompress.models.vgg import vgg16_bn_cifar
from autocompress.models.weights import load_state_dict_checked, load_weights, read_state_dict

__all__ = [
    "CifarResNet",
    "ModelError",
    "PadShortcut",
    "ShortcutConv",
    "cifar_resnet",
    "get_model",
    "list_models",
    "load_state_dict_checked",
    "load_weights",
    "read_state_dict",
]

TV_PREFIX = "tv:"

_ZOO: dict[str, Callable[..., nn.Module]] = {
    **{f"cifar10_resnet{d}": partial(cifar_resnet, d) for d in (20, 32, 44, 56, 110)},
    "vgg16_bn_cifar": vgg16_bn_cifar,
    "mobilenetv2_cifar": mobilenetv2_cifar,
    "tiny_cnn": tiny_cnn,
    "lstm_seq_fmnist": lstm_seq_fmnist,
    **POLICY_ZOO,
}


def list_models(include_torchvision: bool = False) -> list[str]:
    """Zoo names (and `tv:<name>` for torchvision's classification models when asked)."""
    names = list(_ZOO)
    if include_torchvision:
        names += [TV_PREFIX + n for n in torchvision_names()]
    return names


def get_model(
    name: str, num_classes: int = 10, weights: str | Path | None = None, in_channels: int = 3
) -> nn.Module:
    """Build `name` with random init, then load `weights` (a state-dict file) if given."""
    if num_classes < 1 or in_channels < 1:
        raise ModelError(f"num_classes ({num_classes}) and in_channels ({in_channels}) must be >= 1.")
    if name.startswith(TV_PREFIX):
        model = build_torchvision(name[len(TV_PREFIX):], num_classes, in_channels)
    elif name in _ZOO:
        model = _ZOO[name](num_classes=num_classes, in_channels=in_channels)
    else:
        raise ModelError(
            f"unknown model {name!r}; valid names: {', '.join(_ZOO)}, or tv:<torchvision name> "
            "(`autocompress models --torchvision` lists them)."
        )
    if weights is not None:
        load_weights(model, weights)
    return model
