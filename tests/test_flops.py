"""The analytic cost model equals Torch-Pruning's count on physically pruned models, and is fast."""

from __future__ import annotations

import random
import time

import pytest
import torch
import torchvision.models as tvm
from prune_models import TinyChain, TinyDepthwise, TinyResNet

from autocompress.config import PruneConfig
from autocompress.measure.flops import CostModel, count_macs_params
from autocompress.pruning import Pruner

X32 = torch.randn(1, 3, 32, 32)


def _random_ratios(pruner: Pruner, rng: random.Random) -> dict[str, float]:
    return {g.name: rng.uniform(0.0, 0.9) for g in pruner.groups}


@pytest.mark.parametrize("build", [lambda: TinyResNet(n=2), TinyChain, TinyDepthwise])
def test_analytic_equals_torch_pruning_on_tiny_models(build):
    model = build()
    pruner = Pruner(model, X32)
    assert (pruner.cost_model.base_macs, pruner.cost_model.base_params) == count_macs_params(model, X32)
    rng = random.Random(0)
    for _ in range(4):
        ratios = _random_ratios(pruner, rng)
        kept = pruner.kept_channels(ratios)
        pruned = pruner.prune(ratios)
        assert (pruner.cost_model.macs(kept), pruner.cost_model.params(kept)) == count_macs_params(pruned, X32)


@pytest.mark.parametrize("name", ["cifar10_resnet56", "mobilenetv2_cifar"])
def test_analytic_equals_torch_pruning_on_zoo(name):
    from autocompress.models import get_model

    model = get_model(name)
    pruner = Pruner(model, X32, PruneConfig(round_to=2))
    rng = random.Random(1)
    for _ in range(3):
        ratios = _random_ratios(pruner, rng)
        kept = pruner.kept_channels(ratios)
        assert (pruner.cost_model.macs(kept), pruner.cost_model.params(kept)) == count_macs_params(
            pruner.prune(ratios), X32
        )


def test_torchvision_mobilenet_v2_analytic_equals_count():
    model = tvm.mobilenet_v2(weights=None)
    x = torch.randn(1, 3, 64, 64)
    pruner = Pruner(model, x)
    ratios = _random_ratios(pruner, random.Random(2))
    assert (
        pruner.cost_model.macs(pruner.kept_channels(ratios)),
        pruner.cost_model.params(pruner.kept_channels(ratios)),
    ) == count_macs_params(pruner.prune(ratios), x)


def test_macs_fall_monotonically_as_ratios_rise():
    pruner = Pruner(TinyResNet(n=2), X32)
    last_macs, last_params = None, None
    for r in [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9]:
        kept = pruner.kept_channels({g.name: r for g in pruner.groups})
        macs, params = pruner.cost_model.macs(kept), pruner.cost_model.params(kept)
        if last_macs is not None:
            assert macs <= last_macs and params <= last_params
        last_macs, last_params = macs, params
    assert last_macs < 0.2 * pruner.cost_model.base_macs


def test_layer_macs_sum_to_total_and_unknown_groups_stay_whole():
    pruner = Pruner(TinyChain(), X32)
    cm = pruner.cost_model
    assert sum(cm.layer_macs({}).values()) == cm.base_macs
    assert cm.macs({"not-a-group": 1}) == cm.base_macs
    assert isinstance(cm, CostModel)


def test_cost_model_call_under_1ms_on_resnet56():
    from autocompress.models import get_model

    pruner = Pruner(get_model("cifar10_resnet56"), X32)
    kept = pruner.kept_channels({g.name: 0.5 for g in pruner.groups})
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        pruner.cost_model.macs(kept)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 1e-3, f"{per_call * 1e3:.3f} ms per call"
