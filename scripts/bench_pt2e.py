"""Issue #15 item 1's optional path: PyTorch's own x86 INT8 (PT2E + Inductor) against ONNX Runtime's INT8.

Which runtime should run an INT8 network on this CPU? Both are post-training static INT8 of the same network
(per-channel weights, calibration on the same training images, no fine-tuning):
- ONNX Runtime: `autocompress.quantize.quantize_int8` (QDQ), what the package ships;
- PyTorch: `torch.export` -> torchao's PT2E `prepare_pt2e` / `convert_pt2e` with `X86InductorQuantizer`,
  then `torch.compile` (Inductor, freezing on), which lowers to oneDNN's INT8 kernels (needs `torchao`).
All four programs (FP32 eager, FP32 ORT, INT8 ORT, INT8 PT2E) are timed in alternation, batch 1, one thread;
each speedup is the median of per-round ratios against FP32 in ONNX Runtime (the baseline of
docs/benchmarks/quantization.json). Top-1 on the config's whole test set.

    python scripts/bench_pt2e.py --config experiments/resnet20-cifar10jpeg-macs50.yaml \\
        --json docs/benchmarks/pt2e.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import AutocompressError, QuantConfig, load_config
from autocompress.data import load_data, make_loader, take_tensors
from autocompress.envs.factory import build_model
from autocompress.measure.accuracy import evaluate
from autocompress.measure.latency import export_onnx_bytes
from autocompress.quantize import OrtModule, cpu_int8_flags, quantize_int8


def pt2e_int8(model: torch.nn.Module, calib: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` quantized by PT2E's x86 Inductor quantizer and compiled for batch 1 (the timed shape)."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        raise AutocompressError("the PT2E path needs torchao: pip install torchao") from None
    example = (calib[:1],)
    with torch.no_grad():
        exported = torch.export.export(model.eval(), example).module()
        quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for image in calib.split(1):  # the exported graph is batch 1
            prepared(image)
        converted = convert_pt2e(prepared)
    torch._inductor.config.freezing = True
    compiled = torch.compile(converted)
    with torch.no_grad():
        compiled(example[0])  # compile now, not inside the timing
    return compiled


def time_alternating(programs: dict[str, Callable[[], Any]], rounds: int, warmup: int = 20) -> dict[str, list[float]]:
    """Per-call seconds of each program, one call each per round, order reversed every other round."""
    names = list(programs)
    for _ in range(warmup):
        for n in names:
            programs[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            programs[n]()
            times[n].append(time.perf_counter() - start)
    return times


def top1_batch1(fn: Callable[[torch.Tensor], torch.Tensor], test: Any) -> float:
    """Top-1 (percent) of a batch-1 program over the whole test set (the compiled PT2E graph is batch 1)."""
    correct = total = 0
    with torch.no_grad():
        for x, y in make_loader(test, 1):
            correct += int(fn(x).argmax(dim=1).item() == int(y))
            total += 1
    return 100.0 * correct / total


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="experiments/resnet20-cifar10jpeg-macs50.yaml")
    p.add_argument("--calib", type=int, default=128, help="calibration images (training split)")
    p.add_argument("--rounds", type=int, default=300, help="timed calls of each program, in alternation")
    p.add_argument("--json", required=True)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    calib, _ = take_tensors(bundle.train_eval if getattr(bundle, "train_eval", None) else bundle.train,
                            args.calib, seed=1)
    x = torch.zeros(1, *bundle.input_shape)
    start = time.perf_counter()
    ort_int8 = quantize_int8(model, calib, QuantConfig(calib_images=args.calib))
    ort_s = time.perf_counter() - start
    start = time.perf_counter()
    pt2e = pt2e_int8(model, calib)
    pt2e_s = time.perf_counter() - start
    ort_fp32 = OrtModule(export_onnx_bytes(model, x))
    with torch.no_grad():
        times = time_alternating({"fp32_eager": lambda: model(x), "fp32_ort": lambda: ort_fp32(x),
                                  "int8_ort": lambda: ort_int8(x), "int8_pt2e": lambda: pt2e(x)}, args.rounds)
    base = times["fp32_ort"]
    rows = {n: {"latency_ms": 1e3 * statistics.median(t),
                "speedup_vs_fp32_ort": statistics.median(b / c for b, c in zip(base, t, strict=True))}
            for n, t in times.items()}
    rows["fp32_eager"]["top1"] = rows["fp32_ort"]["top1"] = evaluate(model, make_loader(bundle.test, 500)).top1
    rows["int8_ort"]["top1"] = evaluate(ort_int8, make_loader(bundle.test, 500)).top1
    rows["int8_pt2e"]["top1"] = top1_batch1(pt2e, bundle.test)
    rows["int8_ort"]["quantize_s"], rows["int8_pt2e"]["quantize_and_compile_s"] = ort_s, pt2e_s
    result = {"model": cfg.model.name, "weights": cfg.model.weights, "rounds": args.rounds, "batch": 1, "threads": 1,
              "calib_images": args.calib, "test_images": len(bundle.test), "programs": rows,
              "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no INT8 flags found'})",
              "torch": torch.__version__, "loadavg": os.getloadavg()[0],
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_json_atomic(args.json, result)
    for n, r in rows.items():
        print(f"{n:<11} {r['latency_ms']:.3f} ms  {r['speedup_vs_fp32_ort']:.2f}x vs FP32 ORT  top-1 {r['top1']:.2f}")


if __name__ == "__main__":
    run_script(main)
