"""Post-training static INT8 in ONNX Runtime, with a per-layer choice of which layers stay FP32.

On the CPUs users deploy to, INT8 kernels (AVX512-VNNI, AMX) buy more measured speed than channel pruning:
quantization runs where the network will run, so the quantized model is an ONNX Runtime model, made by
`onnxruntime.quantization.quantize_static` (QDQ format, per-channel weights, ranges calibrated on training
images) from the same TorchScript-exported ONNX graph the latency meter times. `OrtModule` wraps the result
so that the project's evaluation and `LatencyMeter(runtime="onnxruntime")` take it like any network.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocompress.config import AutocompressError, QuantConfig, validate
from autocompress.measure.latency import ONNX_HINT, export_onnx_bytes

PRECISIONS = ("fp32", "int8")
"""Per-layer precisions a policy may choose, in action order (ONNX Runtime static INT8 on the CPU)."""
QUANTIZABLE_KINDS = ("conv", "depthwise", "linear")
"""Layer kinds (measure.flops.LayerSpec) whose precision is chosen per layer."""
QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
"""The ops whose precision is a per-layer choice; the rest follow their inputs."""
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16", "avx2")
"""CPU flags that decide how fast INT8 (and bf16) kernels run: recorded beside every INT8 timing."""
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
"""x86 INT8 dot-product instructions that accumulate u8 x s8 products in 32 bits (no 16-bit saturation)."""


class QuantizationError(AutocompressError):
    """Quantization cannot be done as asked; the message says why and what to do."""


class OrtModule(nn.Module):
    """An ONNX Runtime model (e.g. INT8) behind the nn.Module call interface, on the CPU.

    `forward` runs the session on a float32 batch; `onnx_bytes` is what `LatencyMeter` times directly.
    The session uses torch's current thread count, so evaluation and timing follow the caller's settings.
    """

    def __init__(self, onnx_bytes: bytes, precision: dict[str, str] | None = None) -> None:
        super().__init__()
        self.onnx_bytes = onnx_bytes
        self.precision = dict(precision or {})
        """Layer name -> "int8" or "fp32", for the layers whose precision was chosen."""
        self._sessions: dict[int, Any] = {}

    def session(self, threads: int) -> Any:
        if threads not in self._sessions:
            ort = _onnxruntime()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            self._sessions[threads] = ort.InferenceSession(self.onnx_bytes, opts, providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session(torch.get_num_threads())
        name = session.get_inputs()[0].name
        out = session.run(None, {name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out)

    @property
    def nbytes(self) -> int:
        """Size of the serialized model (what a user ships)."""
        return len(self.onnx_bytes)


def module_of_node(node_name: str) -> str:
    """The torch module an exported ONNX node came from: '/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1'.

    The TorchScript exporter names each scope by the child's attribute ('conv1'), except that a numbered
    child of a Sequential is written after its parent's scope name ('layer1' -> 'layer1.0',
    'conv.0' -> 'conv.0.0'); both forms are joined back into the module's dotted name.
    """
    parts = [p for p in node_name.split("/") if p][:-1]  # the last part is the op (Conv, Conv_1, ...)
    name, previous = "", ""
    for part in parts:
        if previous and part.startswith(previous + "."):
            name += part[len(previous):]
        else:
            name = f"{name}.{part}" if name else part
        previous = part
    return name


def layer_nodes(onnx_bytes: bytes) -> dict[str, list[str]]:
    """Torch layer name -> names of its quantizable ONNX nodes (Conv / Gemm / MatMul)."""
    import onnx

    out: dict[str, list[str]] = {}
    for node in onnx.load_from_string(onnx_bytes).graph.node:
        if node.op_type in QUANTIZABLE_OPS:
            out.setdefault(module_of_node(node.name), []).append(node.name)
    return out


def quantize_int8(model: nn.Module, calib_images: torch.Tensor, cfg: QuantConfig | None = None,
                  keep_fp32: Iterable[str] = (), only: Iterable[str] | None = None) -> OrtModule:
    """`model` as a static-INT8 ONNX Runtime model; layers named in `keep_fp32` stay FP32.

    The FP32 graph is exported with a free batch size, calibrated on `calib_images` (N, C, H, W; only the
    first cfg.calib_images are used) and quantized with QDQ nodes around every other Conv/Gemm/MatMul (and
    the ops ONNX Runtime quantizes with them, e.g. residual Adds). `only` quantizes just those layers' nodes,
    nothing else: a per-layer sensitivity measurement.
    """
    cfg = cfg or QuantConfig()
    validate(cfg, "quant")
    q = _quantization_api()
    with tempfile.TemporaryDirectory(prefix="autocompress-int8-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(export_onnx_bytes(model.eval(), calib_images[:1].cpu(), dynamic_batch=True))
        q.quant_pre_process(str(src), str(pre))  # shape inference + graph cleanup, as ORT recommends
        layers = layer_nodes(pre.read_bytes())  # node names after pre-processing
        keep = _checked_keep(keep_fp32, layers)
        chosen = None if only is None else [n for name in _checked_keep(only, layers) for n in layers[name]]
        methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                   "percentile": q.CalibrationMethod.Percentile}
        q.quantize_static(
            str(pre), str(dst), _Calibration(calib_images[: cfg.calib_images]), quant_format=q.QuantFormat.QDQ,
            per_channel=cfg.per_channel, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            reduce_range=reduce_range(cfg),
            nodes_to_exclude=[n for name in keep for n in layers[name]], calibrate_method=methods[cfg.calibration],
            nodes_to_quantize=chosen,
        )
        blob = dst.read_bytes()
    int8 = set(layers) - keep if only is None else set(only) - keep
    return OrtModule(blob, {name: "int8" if name in int8 else "fp32" for name in layers})


def layer_precision(layer_specs: Iterable[Any], group_precision: Mapping[str, str],
                    other: str = "int8") -> dict[str, str]:
    """Quantizable layer -> precision, from the precisions chosen per searched group.

    A layer follows the group that produces its output channels when that group was searched, else the
    group that feeds its input channels (a ResNet block's second conv follows its block's group), else
    `other` (the stem, shortcut convs and classifier when only the blocks' inner groups are searched).
    With every layer FP32 nothing is quantized, so `other` only applies when some layer is INT8.
    """
    out = {}
    for spec in layer_specs:
        if spec.kind not in QUANTIZABLE_KINDS or spec.name in out:
            continue
        owner = spec.out_group if spec.out_group in group_precision else spec.in_group
        out[spec.name] = group_precision.get(owner, other)
    if all(p == "fp32" for p in group_precision.values()):
        return dict.fromkeys(out, "fp32")
    return out


def quantize_layers(model: nn.Module, calib_images: torch.Tensor, precision: Mapping[str, str],
                    cfg: QuantConfig | None = None) -> nn.Module:
    """`model` with the layers `precision` marks "int8" in static INT8 (an `OrtModule`); the model itself
    when every layer is FP32 (nothing to quantize, so no quantize/dequantize overhead either)."""
    bad = sorted({p for p in precision.values()} - set(PRECISIONS))
    if bad:
        raise QuantizationError(f"precision {bad[0]!r} is not one of {', '.join(PRECISIONS)}.")
    present = dict(model.named_modules())
    precision = {n: p for n, p in precision.items() if n in present}  # a removed block's layers are gone
    if not any(p == "int8" for p in precision.values()):
        return model
    return quantize_int8(model, calib_images, cfg, keep_fp32=[n for n, p in precision.items() if p == "fp32"])


def _checked_keep(keep_fp32: Iterable[str], layers: dict[str, list[str]]) -> set[str]:
    keep = set(keep_fp32)
    unknown = sorted(keep - set(layers))
    if unknown:
        raise QuantizationError(f"layer names {unknown[:6]} are not quantizable layers of this model; "
                                f"choose from {sorted(layers)[:12]}{' ...' if len(layers) > 12 else ''}.")
    return keep


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a tensor of images, in batches of 32."""

    def __init__(self, images: torch.Tensor, batch: int = 32) -> None:
        self._batches = iter([images[i : i + batch].cpu().float().numpy() for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {"input": x}

    def rewind(self) -> None:  # part of the protocol; one pass is all quantize_static makes here
        pass


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise QuantizationError(f"INT8 needs ONNX Runtime: {ONNX_HINT}") from None
    return onnxruntime


def _quantization_api() -> Any:
    _onnxruntime()
    import onnxruntime.quantization as q

    return q


def cpu_int8_flags(flags: Sequence[str] | None = None) -> list[str]:
    """Which of INT8_CPU_FLAGS this CPU has (from /proc/cpuinfo; empty where that does not exist)."""
    found = set(_this_cpu_flags() if flags is None else flags)
    return [f for f in INT8_CPU_FLAGS if f in found]


@functools.cache
def _this_cpu_flags() -> tuple[str, ...]:
    """/proc/cpuinfo's flags, read once: `reduce_range` asks on every quantization (each joint-search episode)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return tuple(line.split(":", 1)[-1].split())


def reduce_range(cfg: QuantConfig, flags: Sequence[str] | None = None) -> bool:
    """Whether weights are quantized to 7 bits: `cfg.reduce_range`, or for "auto" whether this CPU (`flags`:
    its /proc/cpuinfo flags) is x86 with AVX2 and no VNNI, where 8-bit weights saturate ONNX Runtime's
    16-bit u8 x s8 sums and cost accuracy (see QuantConfig.reduce_range)."""
    if cfg.reduce_range != "auto":
        return bool(cfg.reduce_range)
    found = set(cpu_int8_flags(flags))
    return "avx2" in found and not found & set(VNNI_FLAGS)


def int8_sensitivity(model: nn.Module, calib_images: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                     cfg: QuantConfig | None = None) -> dict[str, dict[str, float]]:
    """Per quantizable layer: the network with only that layer's op in INT8 (no other op quantized), scored
    on held-out images.

    What tells a search which layers tolerate 8 bits (HAQ's per-layer sensitivity): `logit_error` is the
    relative L2 error of the logits against FP32, `top1_drop` the points lost. One quantization per layer
    (about 1.5 s each for ResNet-20 here), so it is computed once per network, not per episode.
    """
    with torch.no_grad():
        ref = model.eval()(images)
    base = float((ref.argmax(1) == labels).float().mean()) * 100.0
    layers = sorted(layer_nodes(export_onnx_bytes(model, calib_images[:1].cpu())))
    out = {}
    for name in layers:
        q = quantize_int8(model, calib_images, cfg, only=[name])
        logits = q(images)
        out[name] = {"logit_error": float((logits - ref).norm() / ref.norm().clamp_min(1e-12)),
                     "top1_drop": base - float((logits.argmax(1) == labels).float().mean()) * 100.0}
    return out


def int8_report(fp32: nn.Module, candidate: nn.Module, test: Any, input_shape: Sequence[int],
                rounds: int = 100, threads: int = 1) -> dict[str, Any]:
    """Top-1 on `test` (a dataset) and the ONNX Runtime speedup over the FP32 network (batch 1, `threads`,
    timed in alternation), plus model bytes: what a user weighs before shipping an INT8 model."""
    from autocompress.config import LatencyConfig
    from autocompress.data import make_loader
    from autocompress.measure.accuracy import evaluate
    from autocompress.measure.latency import LatencyMeter

    result = evaluate(candidate, make_loader(test, 500))
    meter = LatencyMeter(LatencyConfig(runtime="onnxruntime", threads=threads, rounds=rounds, warmup=10),
                         input_shape)
    cmp = meter.compare(fp32, candidate)
    size = candidate.nbytes if isinstance(candidate, OrtModule) else len(
        export_onnx_bytes(candidate.eval(), torch.zeros(1, *input_shape)))
    return {"top1": result.top1, "test_images": result.n, "speedup": cmp.speedup, "speedup_spread": cmp.spread,
            "latency_ms": cmp.latency_ms, "fp32_latency_ms": cmp.baseline_ms, "bytes": size,
            "cpu_int8_flags": cpu_int8_flags()}
