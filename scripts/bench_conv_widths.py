"""How a 3x3 convolution's time in ONNX Runtime depends on its channel count, in FP32 and static INT8.

Why: pruning picks channel counts, and the CPU kernels do not price them linearly. FP32 convolutions run in
blocked layouts (16 channels per block with AVX-512), so 24 channels can cost what 32 do; INT8 kernels have a
per-call floor, so a very narrow INT8 layer can be slower than a wider one. Both decide which prune ratios and
`env.prune.round_to` / `min_channels` are worth searching with `precisions: fp32+int8`.

Each cell: two conv+ReLU layers (c -> c -> c, 3x3, padding 1) at batch 1 and one spatial size, exported to ONNX,
quantized with the project's `quantize_int8` (QDQ, per-channel weights), and the FP32 and INT8 sessions timed in
alternation (one thread; medians of per-round medians).

    python scripts/bench_conv_widths.py --json docs/benchmarks/conv_widths.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch
from plot_utils import cpu_model, run_script, write_json_atomic
from torch import nn

from autocompress.measure.latency import export_onnx_bytes
from autocompress.quantize import OrtModule, cpu_int8_flags, quantize_int8


def median_us(session: Any, x: np.ndarray, calls: int) -> float:
    feed = {session.get_inputs()[0].name: x}
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def cell(channels: int, size: int, rounds: int, calls: int) -> dict[str, Any]:
    """FP32 and INT8 time of one width, alternating FP32 / INT8 each round."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()).eval()
    calib = torch.randn(16, channels, size, size)
    fp32 = OrtModule(export_onnx_bytes(model, calib[:1])).session(1)
    int8 = quantize_int8(model, calib).session(1)
    x = calib[:1].numpy()
    for session in (fp32, int8):
        median_us(session, x, 20)  # warm-up
    pairs = [(median_us(fp32, x, calls), median_us(int8, x, calls)) for _ in range(rounds)]
    f, q = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    return {"channels": channels, "size": size, "macs": 2 * 9 * channels * channels * size * size,
            "fp32_us": f, "int8_us": q, "int8_speedup": statistics.median(a / b for a, b in pairs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, nargs="+", default=[8, 16, 24, 32, 40, 48, 64])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 16, 8], help="spatial sizes (CIFAR ResNet stages)")
    p.add_argument("--rounds", type=int, default=9, help="alternating FP32/INT8 rounds per cell")
    p.add_argument("--calls", type=int, default=50, help="timed calls per session per round")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for size in args.sizes:
        for channels in args.channels:
            row = cell(channels, size, args.rounds, args.calls)
            rows.append(row)
            print(f"{size:2}x{size:<2} c {channels:3}: FP32 {row['fp32_us']:7.1f} us  INT8 {row['int8_us']:7.1f} us  "
                  f"INT8 {row['int8_speedup']:.2f}x", file=sys.stderr, flush=True)
    write_json_atomic(args.json, {
        "rows": rows, "cpu": cpu_model(), "cpu_int8_flags": cpu_int8_flags(), "loadavg": os.getloadavg()[0],
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    })


if __name__ == "__main__":
    run_script(main)
