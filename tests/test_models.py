"""Model zoo: shapes, option A == option B, weight loading and its errors, the shared ResNets' accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.config import AutocompressError
from autocompress.models import (
    ModelError,
    PadShortcut,
    ShortcutConv,
    cifar_resnet,
    get_model,
    list_models,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def test_list_models_has_the_zoo() -> None:
    names = list_models()
    for n in ("cifar10_resnet20", "cifar10_resnet56", "cifar10_resnet110", "vgg16_bn_cifar", "mobilenetv2_cifar", "tiny_cnn"):
        assert n in names
    assert "tv:resnet18" in list_models(include_torchvision=True)


@pytest.mark.parametrize("name", ["cifar10_resnet20", "mobilenetv2_cifar", "vgg16_bn_cifar", "tiny_cnn"])
def test_zoo_output_shape(name: str) -> None:
    model = get_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_tiny_cnn_any_channels_small_input() -> None:
    model = get_model("tiny_cnn", num_classes=10, in_channels=1).eval()
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert n_conv >= 3
    assert all(m.out_channels <= 16 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        assert model(torch.randn(3, 1, 16, 16)).shape == (3, 10)
        assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_torchvision_model_by_name_and_channels() -> None:
    model = get_model("tv:resnet18", num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 5)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ModelError, match="cifar10_resnet56") as exc:
        get_model("resnet57")
    assert isinstance(exc.value, AutocompressError)
    with pytest.raises(ModelError, match="resnet18"):
        get_model("tv:not_a_model")


def test_option_b_is_prunable_form_with_frozen_shortcut() -> None:
    model = get_model("cifar10_resnet20")
    convs = [m for m in model.modules() if isinstance(m, ShortcutConv)]
    assert len(convs) == 2
    assert not any(isinstance(m, PadShortcut) for m in model.modules())
    for conv in convs:
        assert not conv.weight.requires_grad
        assert set(conv.weight.unique().tolist()) == {0.0, 1.0}
        assert conv.weight.sum().item() == conv.in_channels  # one 1 per input channel


def test_option_a_equals_option_b_random_weights() -> None:
    a = cifar_resnet(20, shortcut="A").eval()
    b = cifar_resnet(20, shortcut="B").eval()
    b.load_state_dict(a.state_dict(), strict=True)  # the pre-hook supplies the fixed shortcut weights
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)


def test_option_b_state_dict_round_trip() -> None:
    b = cifar_resnet(20, shortcut="B")
    c = cifar_resnet(20, shortcut="B")
    c.load_state_dict(b.state_dict(), strict=True)
    for (k, v), w in zip(b.state_dict().items(), c.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        get_model("tiny_cnn", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="not a readable"):
        get_model("tiny_cnn", weights=bad)
    wrong_classes = tmp_path / "c5.pth"
    torch.save(get_model("tiny_cnn", num_classes=5).state_dict(), wrong_classes)
    with pytest.raises(ModelError, match=r"fc\.weight"):
        get_model("tiny_cnn", num_classes=10, weights=wrong_classes)
    other = tmp_path / "other.pth"
    sd = get_model("tiny_cnn").state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["conv1.weight"]
    torch.save(sd, other)
    with pytest.raises(ModelError, match=r"conv1\.weight.*extra\.weight"):
        get_model("tiny_cnn", weights=other)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_weights_wrapped_or_plain(tmp_path: Path, wrapper: str | None) -> None:
    src = get_model("tiny_cnn", in_channels=1).eval()
    path = tmp_path / "w.pth"
    sd = src.state_dict()
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3}, path)
    dst = get_model("tiny_cnn", in_channels=1, weights=path).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(src(x), dst(x))


def _subset_test(shared: Path) -> tuple[torch.Tensor, torch.Tensor]:
    npz = np.load(shared / "data" / "cifar10-subset" / "cifar10_subset.npz")
    x = torch.from_numpy(npz["test_data"]).float().div(255).view(-1, 3, 32, 32)
    y = torch.from_numpy(npz["test_labels_all"][npz["test_index"]]).long()
    return (x - MEAN) / STD, y


def test_shared_resnet20_option_a_equals_b(shared: Path) -> None:
    path = shared / "models" / "cifar10_resnet20.pth"
    sd = torch.load(path, weights_only=True)
    a = cifar_resnet(20, shortcut="A").eval()
    a.load_state_dict(sd, strict=True)
    b = get_model("cifar10_resnet20", weights=path).eval()
    x, _ = _subset_test(shared)
    with torch.no_grad():
        torch.testing.assert_close(a(x[:200]), b(x[:200]), atol=1e-5, rtol=0)


def test_shared_resnet56_top1(shared: Path) -> None:
    torch.set_num_threads(2)
    model = get_model("cifar10_resnet56", weights=shared / "models" / "cifar10_resnet56.pth").eval()
    x, y = _subset_test(shared)
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    top1 = 100.0 * (pred == y).float().mean().item()
    assert len(y) == 761
    assert top1 >= 92.5, top1
