"""Transformers and modern CNNs on tiny torchvision builds: ViT heads + MLP width, ConvNeXt (channels-last Linear,
LayerNorm2d, layer_scale), ShuffleNetV2 (channel shuffle left whole), Swin (MLP width; window attention kept).

Exactness: pruning a group equals zeroing, in the unpruned model, the input columns its consumers read from the
removed channels (for heads: out_proj's columns), because nothing else reads those channels. Cost: the analytic
model equals our op counter exactly, and its matmul MACs equal PyTorch's FlopCounterMode (FLOPs / 2).
"""

from __future__ import annotations

import copy
import random
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch_pruning.pruner import function as tpf
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.shufflenetv2 import ShuffleNetV2
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from autocompress.config import PruneConfig
from autocompress.envs.features import static_features
from autocompress.measure.flops import count_macs_params, flop_counter_macs
from autocompress.pruning import PruneError, Pruner
from autocompress.pruning.attention import HeadPrunedMultiheadAttention, prune_mha_heads
from autocompress.pruning.tracing import time_limit
from autocompress.pruning.window_attention import HeadPrunedWindowAttention, prune_window_heads

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def vit() -> nn.Module:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                             num_classes=10)


def convnext() -> nn.Module:
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)], num_classes=10)


def swin() -> nn.Module:
    return SwinTransformer([4, 4], 16, [1, 1], [2, 4], [4, 4], num_classes=10)


def shufflenet() -> nn.Module:
    return ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 128], num_classes=10)


BUILDS = {"vit": vit, "convnext": convnext, "swin": swin, "shufflenet": shufflenet}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = BUILDS[name]().eval()
    with torch.no_grad():  # random BN statistics and LayerNorm / layer_scale values: nothing is a no-op
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            if hasattr(m, "layer_scale"):
                m.layer_scale.uniform_(0.5, 1.5)
    return model


def consumer_masked(model: nn.Module, pruner: Pruner, kept: dict[str, int]) -> nn.Module:
    """The unpruned model with the removed channels' consumer input columns (and removed heads' out_proj
    columns) zeroed: what physical removal computes when nothing else reads those channels."""
    masked = copy.deepcopy(model)
    modules = dict(masked.named_modules())
    with torch.no_grad():
        for name, roots in pruner.removed_channels(kept).items():
            for item in pruner.plans[name]:
                idxs = torch.as_tensor(item.idxs[np.isin(item.root_idxs, roots)])
                m = modules[item.module]
                if item.fn in (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels):
                    m.weight[:, idxs] = 0
                elif item.fn in (prune_mha_heads, prune_window_heads):
                    out = m.out_proj if item.fn is prune_mha_heads else m.proj
                    d = out.in_features // m.num_heads
                    out.weight[:, torch.cat([torch.arange(h * d, (h + 1) * d) for h in idxs.tolist()])] = 0
    return masked


def _pruned(name: str, ratio: float = 0.5, scope: str = "all") -> tuple[nn.Module, Pruner, nn.Module, dict]:
    model = _model(name)
    pruner = Pruner(model, X, PruneConfig(scope=scope))
    kept = pruner.kept_channels({g.name: ratio for g in pruner.groups})
    return model, pruner, pruner.prune_kept(kept).eval(), kept


@pytest.mark.parametrize("name, scope", [("vit", "all"), ("convnext", "internal"), ("swin", "all"),
                                         ("shufflenet", "all")])
def test_pruning_is_exact_and_shrinks_the_model(name, scope):
    model, pruner, pruned, kept = _pruned(name, scope=scope)
    with torch.no_grad():
        out, ref = pruned(X), consumer_masked(model, pruner, kept)(X)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_vit_heads_and_mlp_width_shrink_physically():
    _, pruner, pruned, _ = _pruned("vit")
    assert [(g.kind, g.channels) for g in pruner.groups] == [("heads", 4), ("mlp", 128)] * 2
    block = pruned.encoder.layers.encoder_layer_0
    attn = block.self_attention
    assert isinstance(attn, HeadPrunedMultiheadAttention) and (attn.num_heads, attn.head_dim) == (2, 16)
    assert attn.in_proj_weight.shape == (3 * 32, 64) and attn.out_proj.weight.shape == (64, 32)
    assert attn.embed_dim == 64 and block.mlp[0].weight.shape == (64, 64) and block.mlp[3].weight.shape == (64, 64)
    assert "conv_proj" not in {g.name for g in pruner.groups}  # the embedding width (residual stream) stays whole


def test_convnext_stream_prunes_layer_norms_layer_scale_and_depthwise_convs():
    model, pruner, pruned, kept = _pruned("convnext", ratio=0.25)
    stem = pruner.group("features.0.0")
    assert stem.kind == "depthwise" and not stem.internal
    assert {"features.0.1", "features.1.0.block.2", "features.1.0.layer_scale", "features.2.0"} <= set(stem.members)
    c = kept["features.0.0"]
    block = pruned.features[1][0]
    assert pruned.features[0][1].weight.shape == (c,) and block.block[2].normalized_shape == (c,)
    assert block.layer_scale.shape == (c, 1, 1) and block.block[0].weight.shape == (c, 1, 7, 7)
    assert pruner.group("features.1.0.block.3").kind == "mlp"
    with torch.no_grad():
        assert torch.isfinite(pruned(X)).all()
    assert pruner.cost_model.params(kept) == sum(p.numel() for p in pruned.parameters())


def test_shufflenet_refuses_only_the_shuffled_channels():
    model = _model("shufflenet")
    pruner = Pruner(model, X)
    names = {g.name for g in pruner.groups}
    assert {"conv1.0", "stage2.0.branch2.0", "stage3.0.branch2.0", "conv5.0"} <= names
    skipped = pruner._analysis.skipped
    assert "stage2.0.branch2.5" not in names and "channel shuffle" in skipped["stage2.0.branch2.5"]


@pytest.mark.parametrize("name", list(BUILDS))
def test_analytic_macs_match_flop_counter_and_op_counter(name):
    model = _model(name)
    pruner = Pruner(model, X)
    cost, rng = pruner.cost_model, random.Random(0)
    assert (cost.base_macs, cost.base_params) == count_macs_params(model, X)
    assert abs(cost.matmul_macs({}) / flop_counter_macs(model, X) - 1) < 0.01
    for _ in range(2):
        kept = pruner.kept_channels({g.name: rng.uniform(0.1, 0.8) for g in pruner.groups})
        pruned = pruner.prune_kept(kept)
        assert (cost.macs(kept), cost.params(kept)) == count_macs_params(pruned, X)
        assert abs(cost.matmul_macs(kept) / flop_counter_macs(pruned, X) - 1) < 0.01
        assert cost.matmul_macs(kept) <= cost.macs(kept) < 1.3 * cost.matmul_macs(kept)  # + norms, acts, biases


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", list(BUILDS))
def test_pruned_models_export_to_onnx_and_match(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from autocompress.export import export_onnx

    model, _, pruned, _ = _pruned(name)
    for tag, m in (("unpruned", model), ("pruned", pruned)):  # unpruned ViT: MHA's fused kernel has no export
        path = export_onnx(m, tmp_path / f"{name}-{tag}.onnx", X[:1])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": X.numpy()})[0]  # batch 2: the exported batch size stays free
        with torch.no_grad():
            assert np.allclose(got, m(X).numpy(), atol=1e-4), tag


@pytest.mark.parametrize("batch_first", [True, False])
def test_head_pruned_attention_equals_masked_heads_with_masks(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    pad = torch.tensor([[False] * 4 + [True], [False] * 5])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    ref = copy.deepcopy(mha)
    with torch.no_grad():
        ref.out_proj.weight[:, 4:8] = 0  # head 1
        ref.out_proj.weight[:, 12:16] = 0  # head 3
    pruned = prune_mha_heads(copy.deepcopy(mha), [1, 3])
    for kw in ({}, {"key_padding_mask": pad, "attn_mask": causal}, {"need_weights": False}):
        with torch.no_grad():
            (out, w), (want, w_ref) = pruned(x, x, x, **kw, average_attn_weights=False), ref(x, x, x, **kw,
                                                                                             average_attn_weights=False)
        assert torch.allclose(out, want, atol=1e-5)
        if w is not None:
            assert torch.allclose(w, w_ref[:, [0, 2]], atol=1e-5)


def test_features_describe_head_and_mlp_groups():
    model = _model("vit")
    pruner = Pruner(model, X)
    rows = static_features(pruner.groups, dict(model.named_modules()))
    assert rows[:, 1].tolist() == pytest.approx([0.75, 0.875, 0.75, 0.875])
    assert np.isfinite(rows).all() and (rows[:, 9] > 0).all()  # per-head weight magnitude


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "random", "bn_scale"])
def test_every_criterion_ranks_heads(criterion):
    model = _model("vit")
    pruner = Pruner(model, X, PruneConfig(criterion=criterion))
    with torch.no_grad():
        assert torch.isfinite(pruner.prune({g.name: 0.5 for g in pruner.groups})(X)).all()


class _CrossAttention(nn.Module):
    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)
        kv = x[:, :3] if self.attn.kdim == 8 else torch.zeros(x.shape[0], 3, self.attn.kdim)
        return self.head(self.attn(q, kv, kv)[0].mean(1))


@pytest.mark.parametrize("kdim, match", [(None, "cross-attention"), (4, "kdim/vdim")])
def test_unsupported_attention_fails_in_one_line_quickly(kdim, match):
    t0 = time.perf_counter()
    with pytest.raises(PruneError, match=rf"layer 'attn' \(MultiheadAttention\) is not supported: .*{match}") as err:
        Pruner(_CrossAttention(kdim).eval(), torch.randn(1, 6, 8))
    assert "\n" not in str(err.value) and time.perf_counter() - t0 < 5


def test_a_runaway_graph_build_becomes_an_error_not_a_hang():
    t0 = time.perf_counter()
    with pytest.raises(PruneError, match="did not finish within 0 s"), time_limit(0.2, "the dependency graph of X"):
        while True:
            pass
    assert time.perf_counter() - t0 < 3


def test_swin_builds_in_seconds_and_prunes_window_heads_and_mlp_width():
    t0 = time.perf_counter()
    pruner = Pruner(_model("swin"), X)
    assert time.perf_counter() - t0 < 10
    assert [(g.name, g.kind, g.channels) for g in pruner.groups] == [
        ("features.1.0.attn", "heads", 2), ("features.1.0.mlp.0", "mlp", 64),
        ("features.3.0.attn", "heads", 4), ("features.3.0.mlp.0", "mlp", 128)]
    assert any("attention layer 'features.1.0.attn'" in why for why in pruner._analysis.skipped.values())
    attn = pruner.prune({"features.3.0.attn": 0.5}).features[3][0].attn
    assert isinstance(attn, HeadPrunedWindowAttention) and attn.num_heads == 2
    assert attn.qkv.weight.shape == (3 * 16, 32) and attn.proj.weight.shape == (32, 16)
    assert attn.relative_position_bias_table.shape == (49, 2)


def test_env_runs_an_episode_on_a_vision_transformer():
    from gymnasium.utils.env_checker import check_env

    from autocompress.config import EnvConfig
    from autocompress.envs import EnvData, NetCompressEnv

    g = torch.Generator().manual_seed(0)
    data = EnvData(val_images=torch.randn(16, 3, 32, 32, generator=g), val_labels=torch.randint(0, 10, (16,),
                   generator=g), calib_images=torch.randn(16, 3, 32, 32, generator=g))
    env = NetCompressEnv(_model("vit"), data, EnvConfig(budget=0.5), model_name="vit")
    check_env(env, skip_render_check=True)
    env.reset(seed=0)
    for _ in env.groups:
        _, reward, terminated, _, info = env.step(np.full(1, 0.5, np.float32))
    assert terminated and np.isfinite(reward) and info["macs"] <= 0.5 * env.evaluator.pruner.cost_model.base_macs


def test_latency_table_refuses_attention_and_token_linears():
    from autocompress.config import LatencyConfig
    from autocompress.measure.lut import LatencyLUT, LUTError

    for name, what in (("vit", "is attention"), ("convnext", "Linear applied at every token or pixel")):
        pruner = Pruner(_model(name), X)
        with pytest.raises(LUTError, match=what):
            LatencyLUT.build(pruner.layer_specs, (3, 32, 32), LatencyConfig())
