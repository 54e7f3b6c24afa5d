"""Prune-group discovery on tiny models, the zoo and torchvision models."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from prune_models import TinyChain, TinyDepthwise, TinyResNet
from torch import nn

from autocompress.pruning.groups import analyze_model

X32 = torch.randn(1, 3, 32, 32)


def test_tiny_resnet_groups_names_internal_and_members():
    a = analyze_model(TinyResNet(n=2), X32)
    names = [g.name for g in a.groups]
    # 3 residual-stream groups + 2 internal per stage, in network order, named by their root layer
    assert len(names) == 9
    assert names[0] == "conv1" and names[1] == "layer1.0.conv1"
    internal = [g.name for g in a.groups if g.internal]
    assert len(internal) == 6 and all(n.endswith(".conv1") for n in internal)
    stream = [g.name for g in a.groups if not g.internal]
    assert stream == ["conv1", "layer2.0.conv2", "layer3.0.conv2"]  # never the fixed shortcut conv
    g = a.groups[names.index("layer2.0.conv2")]
    assert "layer2.0.shortcut" in g.members and "layer2.1.conv2" in g.members and "layer3.0.conv1" in g.members
    assert g.channels == 16 and g.kind == "conv" and g.kernel_size == 3 and g.stride == 1
    inner = a.groups[names.index("layer2.0.conv1")]
    assert inner.members == ("layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2")
    assert inner.stride == 2 and inner.in_channels == 8 and inner.macs > 0


def test_classifier_output_and_input_are_fixed():
    a = analyze_model(TinyChain(), X32)
    assert [g.name for g in a.groups] == ["features.0", "features.3", "features.7", "classifier.0"]
    specs = {s.name: s for s in a.layer_specs}
    assert specs["features.0"].in_group is None  # the image
    assert specs["classifier.2"].out_group is None  # the logits
    assert specs["classifier.0"].in_group == "features.7" and specs["classifier.0"].in_expand == 4
    assert specs["features.6"].kind == "pool" and specs["features.6"].out_group == "features.3"


def test_depthwise_conv_is_coupled_to_its_input_group():
    a = analyze_model(TinyDepthwise(), X32)
    names = [g.name for g in a.groups]
    assert "dw.0" not in names  # a depthwise conv is never a root
    g = a.groups[names.index("expand.0")]
    assert g.kind == "depthwise" and "dw.0" in g.members and "project.0" in g.members
    stem = a.groups[names.index("stem.0")]
    assert not stem.internal and "project.0" in stem.members  # coupled through the residual add


def test_model_is_not_modified_and_training_flag_kept():
    m = TinyResNet().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    analyze_model(m, X32)
    assert m.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "build, n_groups, n_internal",
    [
        (tvm.resnet18, 12, 8),  # 8 block-internal convs + stem/stage streams (4)
        (tvm.mobilenet_v2, 25, 20),  # stem, 16 expansions, 7 projections, last conv; 5 stages with adds
        (tvm.vgg11_bn, 10, 10),  # 8 convs + 2 hidden Linear layers (the logits are fixed)
    ],
)
def test_torchvision_group_counts(build, n_groups, n_internal):
    a = analyze_model(build(weights=None), torch.randn(1, 3, 64, 64))
    assert len(a.groups) == n_groups
    assert sum(g.internal for g in a.groups) == n_internal


def test_zoo_resnet56_has_30_groups_27_internal():
    from autocompress.models import get_model

    a = analyze_model(get_model("cifar10_resnet56"), X32)
    assert len(a.groups) == 30
    assert sum(g.internal for g in a.groups) == 27
    assert not any("shortcut" in g.name for g in a.groups)


def test_zoo_vgg16_and_mobilenetv2_group_counts():
    from autocompress.models import get_model

    assert len(analyze_model(get_model("vgg16_bn_cifar"), X32).groups) == 13  # one Linear head: 13 convs
    mb = analyze_model(get_model("mobilenetv2_cifar"), X32).groups
    assert len(mb) == 25 and sum(g.internal for g in mb) == 20


class _TinyAttention(nn.Module):
    """A conv stem feeding self-attention, as in a small vision transformer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(t, t, t, need_weights=False)[0].mean(1))


def test_attention_heads_are_a_group_and_its_embedding_width_stays_whole():
    a = analyze_model(_TinyAttention().eval(), torch.randn(1, 3, 8, 8))
    assert [(g.name, g.kind, g.channels, g.members) for g in a.groups] == [("attn", "heads", 2, ("attn",))]
    assert "stem" in a.skipped and "embedding width of attention layer 'attn', which stays whole" in a.skipped["stem"]


class _LSTMLogits(nn.Module):
    """The LSTM's last step is the logits: its hidden units are the output, so nothing can be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, 10, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.squeeze(1))
        return out[:, -1]


def test_a_network_with_nothing_to_prune_is_refused_not_silently_kept():
    from autocompress.pruning import PruneError, Pruner

    with pytest.raises(PruneError, match=r"_LSTMLogits has no prunable channel groups \(no Conv, Linear, LSTM"):
        Pruner(_LSTMLogits().eval(), torch.randn(1, 1, 28, 28))
