"""Static INT8 in ONNX Runtime: per-layer FP32 choice, real calibration, timed and scored like any model."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from autocompress.config import LatencyConfig, QuantConfig  # noqa: E402
from autocompress.measure.latency import LatencyError, LatencyMeter, export_onnx_bytes  # noqa: E402
from autocompress.models import get_model  # noqa: E402
from autocompress.quantize import (  # noqa: E402
    QuantizationError,
    cpu_int8_flags,
    layer_nodes,
    module_of_node,
    quantize_int8,
)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = get_model("cifar10_resnet20").eval()
    calib = torch.randn(64, 3, 32, 32)
    return model, calib


def test_node_names_map_back_to_torch_layers():
    assert module_of_node("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_of_node("/conv1/Conv") == "conv1"
    assert module_of_node("/features/features.1/conv/conv.0/conv.0.0/Conv") == "features.1.conv.0.0"
    assert module_of_node("/linear/Gemm") == "linear"


@pytest.mark.parametrize("name", ["cifar10_resnet20", "tv:mobilenet_v2"])
def test_every_conv_and_linear_is_a_choosable_layer(name):
    model = get_model(name).eval()
    layers = layer_nodes(export_onnx_bytes(model, torch.randn(1, 3, 32, 32)))
    convs = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    assert set(layers) == convs


def _weight_precision(blob: bytes) -> dict[str, str]:
    """Per Conv/Gemm node: 'int8' when its weight comes through a DequantizeLinear, else 'fp32'."""
    graph = onnx.load_from_string(blob).graph
    producer = {o: n for n in graph.node for o in n.output}
    out = {}
    for n in graph.node:
        if n.op_type in ("Conv", "Gemm"):
            w = producer.get(n.input[1])
            out[module_of_node(n.name)] = "int8" if w is not None and w.op_type == "DequantizeLinear" else "fp32"
    return out


def test_int8_keeps_the_chosen_layers_fp32_and_agrees_with_fp32(resnet):
    model, calib = resnet
    q = quantize_int8(model, calib, QuantConfig(calib_images=64), keep_fp32=["conv1", "linear"])
    precision = _weight_precision(q.onnx_bytes)
    assert precision["conv1"] == precision["linear"] == "fp32"
    assert all(p == "int8" for name, p in precision.items() if name not in ("conv1", "linear"))
    assert q.precision == precision
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.2 * ref.abs().max()  # 8-bit, not garbage
    assert q.nbytes < len(export_onnx_bytes(model, calib[:1])) / 2.5  # ~4x smaller weights


def test_unknown_layer_names_are_refused(resnet):
    model, calib = resnet
    with pytest.raises(QuantizationError, match="not quantizable layers.*choose from"):
        quantize_int8(model, calib, keep_fp32=["layer9.conv"])


def test_int8_model_is_timed_in_onnxruntime_only(resnet):
    model, calib = resnet
    q = quantize_int8(model, calib, QuantConfig(calib_images=32))
    cmp = LatencyMeter(LatencyConfig(runtime="onnxruntime", threads=1, rounds=5, warmup=2), (3, 32, 32)).compare(
        model, q)
    assert cmp.speedup > 0 and cmp.n == 5
    with pytest.raises(LatencyError, match="time it with runtime 'onnxruntime'"):
        LatencyMeter(LatencyConfig(runtime="torch", rounds=2, warmup=0), (3, 32, 32)).measure(q)


def test_cpu_flags_are_read_from_the_flag_list():
    assert cpu_int8_flags(["fpu", "avx2", "avx512_vnni", "amx_int8"]) == ["avx512_vnni", "amx_int8", "avx2"]


def test_cli_quantize_writes_the_model_and_reports(tmp_path, capsys):
    from autocompress.cli import main

    out = tmp_path / "tiny.int8.onnx"
    assert main(["quantize", "--model", "tiny_cnn", "--data", "digits", "--calib-images", "32", "--rounds", "3",
                 "--keep-fp32", "fc", "--reduce-range", "on", "--json", "--out", str(out)]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["reduce_range"] is True
    assert out.stat().st_size == report["bytes"] > 0
    assert report["test_images"] == 360 and report["keep_fp32"] == ["fc"] and report["speedup"] > 0
    assert main(["quantize", "--model", "tiny_cnn", "--data", "digits", "--keep-fp32", "nope", "--out",
                 str(tmp_path / "x.onnx")]) == 2
    assert "not quantizable layers" in capsys.readouterr().err


def test_per_layer_int8_sensitivity_scores_each_layer_alone():
    from autocompress.quantize import int8_sensitivity

    torch.manual_seed(0)
    model = get_model("tiny_cnn", num_classes=10, in_channels=1).eval()
    images = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        labels = model(images).argmax(1)  # the FP32 network is right on all of them by construction
    sens = int8_sensitivity(model, images[:32], images, labels, QuantConfig(calib_images=32))
    assert set(sens) == {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}
    for s in sens.values():
        assert 0 < s["logit_error"] < 0.5 and 0 <= s["top1_drop"] <= 100


def test_only_quantizes_just_the_named_layer(resnet):
    model, calib = resnet
    q = quantize_int8(model, calib, QuantConfig(calib_images=32), only=["layer2.0.conv1"])
    precision = _weight_precision(q.onnx_bytes)
    assert [n for n, p in precision.items() if p == "int8"] == ["layer2.0.conv1"]
    ops = [n.op_type for n in onnx.load_from_string(q.onnx_bytes).graph.node]
    assert ops.count("QuantizeLinear") <= 2  # its input (and weight), no residual Add or pooling quantized


def _int8_weight_range(blob: bytes) -> int:
    """Largest |value| among the INT8 weight initializers of a QDQ model."""
    from onnx import numpy_helper

    graph = onnx.load_from_string(blob).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return max(int(abs(w.astype(int)).max()) for w in weights if w.size > 1)


def test_reduce_range_quantizes_weights_to_seven_bits(resnet):
    model, calib = resnet
    full = quantize_int8(model, calib, QuantConfig(calib_images=32, reduce_range=False))
    reduced = quantize_int8(model, calib, QuantConfig(calib_images=32, reduce_range=True))
    assert _int8_weight_range(full.onnx_bytes) == 127  # per-channel max-abs lands on the end of the range
    assert _int8_weight_range(reduced.onnx_bytes) <= 64


@pytest.mark.parametrize("flags, expected", [
    (["fpu", "avx2"], True),                   # AVX2 only (e.g. AMD Zen 2): 16-bit u8 x s8 sums saturate
    (["avx2", "avx512f"], True),               # AVX-512 without VNNI: the same
    (["avx2", "avx512_vnni"], False),          # VNNI accumulates in 32 bits
    (["avx2", "avx_vnni"], False),
    (["avx2", "amx_int8"], False),
    ([], False),                                # not x86 (no flags line, e.g. ARM): nothing to work around
])
def test_reduce_range_auto_follows_the_cpu(flags, expected):
    from autocompress.quantize import reduce_range

    assert reduce_range(QuantConfig(), flags) is expected
    assert reduce_range(QuantConfig(reduce_range=True), flags) is True
    assert reduce_range(QuantConfig(reduce_range=False), flags) is False
