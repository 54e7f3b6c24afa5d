"""How much speed removing whole residual blocks buys an INT8 CIFAR ResNet in ONNX Runtime (batch 1, 1 thread).

Each variant removes the last k identity-shortcut blocks of each stage (prune ratio 1.0 on their inner groups,
through the Pruner, as a schedule would), is quantized to static INT8 (QDQ, per-channel, 128 training images)
and timed in alternation with the FP32 unpruned network; the speedup is the median of per-round ratios.
No accuracy is claimed here (no fine-tune); the searches in bench_quantization.py report that.

    python scripts/bench_block_removal.py --json docs/benchmarks/block_removal.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys

import torch
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import LatencyConfig, PruneConfig, load_config
from autocompress.data import load_data, take_tensors
from autocompress.envs.factory import build_model
from autocompress.measure.latency import LatencyMeter, time_round_robin
from autocompress.pruning.prune import Pruner
from autocompress.quantize import cpu_int8_flags, quantize_int8

VARIANTS = ((0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (6, 3, 3), (6, 6, 6))
"""Blocks removed from the end of stages 1, 2 and 3 (ResNet-56 has 9 per stage, 8 removable)."""


def removal_ratios(pruner: Pruner, per_stage: tuple[int, ...]) -> dict[str, float]:
    """Prune ratio 1.0 on the inner groups of the last `k` removable blocks of each stage."""
    ratios: dict[str, float] = {}
    for stage, k in enumerate(per_stage, start=1):
        blocks = [g for g, path in pruner.droppable.items() if path.startswith(f"layer{stage}.")]
        ratios.update(dict.fromkeys(blocks[len(blocks) - k:] if k else [], 1.0))
    return ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="experiments/resnet56-cifar10jpeg-macs50.yaml", help="model, weights, data")
    p.add_argument("--rounds", type=int, default=100, help="alternating timing rounds")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    calib, _ = take_tensors(bundle.train, 128, seed=1)
    pruner = Pruner(model, calib[:1], PruneConfig())
    meter = LatencyMeter(LatencyConfig(runtime="onnxruntime", threads=1, rounds=args.rounds, warmup=10),
                         bundle.input_shape)
    models = [quantize_int8(pruner.prune(removal_ratios(pruner, v)), calib) for v in VARIANTS]
    times = time_round_robin([(meter, model)] + [(meter, m) for m in models])
    rows = []
    for variant, t in zip(VARIANTS, times[1:], strict=True):
        speedup = statistics.median(a / b for a, b in zip(times[0], t, strict=True))
        kept = pruner.kept_channels(removal_ratios(pruner, variant))
        rows.append({"removed_per_stage": list(variant), "blocks_removed": sum(variant), "speedup": speedup,
                     "latency_ms": statistics.median(t), "macs_ratio": pruner.cost_model.macs(kept) / pruner.cost_model.base_macs})
        print(f"removed {variant}: {rows[-1]['macs_ratio']:.2f} MACs, INT8 {speedup:.2f}x", file=sys.stderr)
    write_json_atomic(args.json, {
        "model": cfg.model.name, "fp32_latency_ms": statistics.median(times[0]), "rows": rows,
        "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no INT8 flags found'})",
        "loadavg": os.getloadavg()[0], "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
    })


if __name__ == "__main__":
    run_script(main)
