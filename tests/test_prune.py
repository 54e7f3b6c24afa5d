"""Pruner: physical pruning equals zero-masking, never touches the input model, validates ratios."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pytest
import torch
from prune_models import TinyChain, TinyDepthwise, TinyResNet, randomize_bn
from torch import nn

from autocompress.config import PruneConfig
from autocompress.pruning import CRITERIA, PruneError, Pruner, get_importance, kept_count, recalibrate_bn
from autocompress.pruning.groups import _OUT_FNS

X = torch.randn(4, 3, 32, 32)


def zero_masked(model: nn.Module, pruner: Pruner, kept: dict[str, int]) -> nn.Module:
    """The unpruned model with the removed channels' producers zeroed: weight, bias AND BN scale/shift.

    A zeroed conv filter alone is not enough: BN turns 0 into beta - gamma * mean / std, so the BN's
    gamma and beta must be zeroed too for the channel to be exactly 0 (what physical removal means).
    """
    masked = copy.deepcopy(model)
    modules = dict(masked.named_modules())
    with torch.no_grad():
        for name, roots in pruner.removed_channels(kept).items():
            for item in pruner.plans[name]:
                if item.fn not in _OUT_FNS:
                    continue
                idxs = torch.as_tensor(item.idxs[np.isin(item.root_idxs, roots)])
                m = modules[item.module]
                m.weight[idxs] = 0
                if m.bias is not None:
                    m.bias[idxs] = 0
    return masked


@pytest.mark.parametrize("build", [lambda: TinyResNet(n=2), TinyChain, TinyDepthwise])
@pytest.mark.parametrize("scope", ["all", "internal"])
def test_pruning_equals_zero_masking(build, scope):
    model = randomize_bn(build())
    pruner = Pruner(model, X, PruneConfig(scope=scope))
    ratios = {g.name: 0.5 for g in pruner.groups}
    kept = pruner.kept_channels(ratios)
    pruned = pruner.prune(ratios).eval()
    with torch.no_grad():
        ref = zero_masked(model, pruner, kept)(X)
        out = pruned(X)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_torchvision_mobilenet_v2_equals_zero_masking():
    import torchvision.models as tvm

    model = randomize_bn(tvm.mobilenet_v2(weights=None, num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    pruner = Pruner(model, x)
    ratios = {g.name: 0.3 for g in pruner.groups}
    with torch.no_grad():
        ref = zero_masked(model, pruner, pruner.kept_channels(ratios))(x)
        out = pruner.prune(ratios).eval()(x)
    assert torch.allclose(out, ref, atol=1e-4)


def test_input_model_is_never_modified():
    model = randomize_bn(TinyResNet()).train()
    before = copy.deepcopy(model.state_dict())
    pruner = Pruner(model, X)
    pruner.prune({g.name: 0.5 for g in pruner.groups})
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.layer1[0].conv1.out_channels == 8


def test_kept_channels_rounding_and_limits():
    assert kept_count(64, 0.5, 1, 1) == 32
    assert kept_count(64, 0.3, 8, 1) == 48  # 44.8 -> 45 -> nearest multiple of 8
    assert kept_count(16, 0.95, 8, 1) == 8  # never below one multiple
    assert kept_count(16, 0.99, 1, 4) == 4  # min_channels
    assert kept_count(10, 0.0, 8, 1) == 10  # capped at the group size
    pruner = Pruner(TinyResNet(), X, PruneConfig(round_to=4))
    kept = pruner.kept_channels({"layer3.0.conv1": 0.4})
    assert kept["layer3.0.conv1"] == 20 and kept["layer1.0.conv1"] == 8  # unnamed groups stay whole


@pytest.mark.parametrize("bad", [1.0, -0.1, math.nan, 1.5, "half", None, True])
def test_bad_ratio_names_the_group(bad):
    pruner = Pruner(TinyChain(), X)
    with pytest.raises(PruneError, match="features.3"):
        pruner.kept_channels({"features.3": bad})


def test_unknown_group_and_criterion():
    pruner = Pruner(TinyChain(), X)
    with pytest.raises(PruneError, match="unknown prune group 'nope'.*features.0"):
        pruner.prune({"nope": 0.5})
    with pytest.raises(PruneError, match="l1, l2, bn_scale, fpgm, random"):
        get_importance("magic")
    with pytest.raises(PruneError, match="kept channels"):
        pruner.prune_kept({"features.0": 0})


def test_l1_removes_the_weakest_channels_of_the_group():
    """Channel j of the group is made j+1 times as strong in every member; L1 must drop the first half."""
    model = TinyChain().eval()
    with torch.no_grad():
        conv, bn, nxt = model.features[3], model.features[4], model.features[7]
        scale = torch.arange(1, 17, dtype=torch.float32)
        conv.weight.copy_(scale.view(-1, 1, 1, 1) * torch.ones_like(conv.weight) * 0.01)
        bn.weight.copy_(scale * 0.1)
        nxt.weight.copy_(scale.view(1, -1, 1, 1) * torch.ones_like(nxt.weight) * 0.01)
    original = conv.weight.detach().clone()
    pruned = Pruner(model, X).prune({"features.3": 0.5})
    assert torch.equal(pruned.features[3].weight, original[8:])
    assert pruned.features[7].in_channels == 8


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_prunes(criterion):
    model = randomize_bn(TinyDepthwise())
    pruner = Pruner(model, X, PruneConfig(criterion=criterion))
    pruned = pruner.prune({g.name: 0.5 for g in pruner.groups})
    assert pruned(X).shape == (4, 10)
    assert pruned.expand[0].out_channels == 8 and pruned.dw[0].groups == 8


def test_fixed_shortcut_weights_stay_frozen_and_zero_ratio_is_identity():
    model = randomize_bn(TinyResNet())
    pruner = Pruner(model, X)
    pruned = pruner.prune({g.name: 0.5 for g in pruner.groups})
    assert not pruned.layer2[0].shortcut.weight.requires_grad
    assert pruned.layer2[0].conv1.weight.requires_grad
    same = pruner.prune({})
    with torch.no_grad():
        assert torch.equal(same(X), model(X))


def test_recalibrate_bn_restores_statistics_and_eval_mode():
    model = randomize_bn(TinyResNet())
    images = torch.randn(64, 3, 32, 32)
    recalibrate_bn(model, images, batch_size=16)
    assert not model.training
    bn = model.bn1
    with torch.no_grad():
        feats = model.conv1(images)
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 4


def test_copy_and_prune_resnet56_under_200ms():
    from autocompress.models import get_model

    pruner = Pruner(get_model("cifar10_resnet56"), X)
    ratios = {g.name: 0.5 for g in pruner.groups}
    times = []
    for _ in range(10):  # the best of 10: other processes on a busy machine only ever add time
        t0 = time.perf_counter()
        pruner.prune(ratios)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.2, times


def _consumer_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.features[7].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_reconstruction_reduces_the_next_layers_error():
    torch.manual_seed(0)
    model = randomize_bn(TinyChain())
    calib, held_out = torch.randn(64, 3, 32, 32), torch.randn(16, 3, 32, 32)
    ref = _consumer_output(model, held_out)
    errors = {}
    for rec in (False, True):
        pruner = Pruner(model, calib, PruneConfig(reconstruct=rec, reconstruct_samples=64))
        pruned = pruner.prune({"features.3": 0.5}, calib if rec else None)
        assert pruned.features[7].in_channels == 8
        errors[rec] = (_consumer_output(pruned, held_out) - ref).pow(2).mean().item()
    assert errors[True] < 0.5 * errors[False], errors


def test_reconstruction_needs_calibration_images():
    pruner = Pruner(TinyChain(), X, PruneConfig(reconstruct=True))
    with pytest.raises(PruneError, match="calib_images"):
        pruner.prune({"features.3": 0.5})


def test_reconstruction_raises_resnet20_accuracy_at_half_internal(shared):
    from autocompress.config import DataConfig
    from autocompress.data import load_data, take_tensors
    from autocompress.measure.accuracy import evaluate_tensors
    from autocompress.models import get_model

    bundle = load_data(DataConfig(name="cifar10_subset", root=str(shared / "data"), val_size=500))
    calib, _ = take_tensors(bundle.train, 400, seed=0)
    x, y = take_tensors(bundle.test, None)
    model = get_model("cifar10_resnet20", weights=shared / "models" / "cifar10_resnet20.pth").eval()
    top1 = {}
    for rec in (False, True):
        pruner = Pruner(model, x[:1], PruneConfig(scope="internal", reconstruct=rec))
        pruned = pruner.prune({g.name: 0.5 for g in pruner.groups}, calib if rec else None)
        top1[rec] = evaluate_tensors(pruned, x, y).top1
    # measured on the 761 test images: plain L1 27.1%, reconstructed 75.3% (unpruned 91.7%)
    assert top1[True] > top1[False] + 30, top1
