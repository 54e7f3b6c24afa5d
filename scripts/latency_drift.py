"""How much does the absolute latency of one unchanged network wander on this machine?

Times the same model against itself (`LatencyMeter.compare`, alternating pairs) every `--interval` seconds in
one otherwise idle process and prints the baseline latency each time. On shared VMs the absolute figure can
move by 2x within a minute while the speedup of alternated pairs stays stable: this is the evidence for timing
candidates in alternation and reporting ratios. Writes docs/benchmarks/latency_drift.json.

    python scripts/latency_drift.py --model cifar10_resnet56 --samples 12 --interval 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from plot_utils import run_script, write_json_atomic

from autocompress.config import LatencyConfig
from autocompress.measure.latency import LatencyMeter
from autocompress.models import get_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cifar10_resnet56")
    ap.add_argument("--weights", default=None, help="default: the shared pretrained file of --model")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--interval", type=float, default=5.0, help="idle seconds between samples")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--shared", default=os.environ.get("AUTOCOMPRESS_SHARED", "../shared"))
    ap.add_argument("--out", default="docs/benchmarks/latency_drift.json")
    args = ap.parse_args()
    weights = args.weights or str(Path(args.shared) / f"models/{args.model}.pth")
    model = get_model(args.model, weights=weights).eval()
    meter = LatencyMeter(LatencyConfig(threads=1, batch_size=1, rounds=args.rounds), (3, 32, 32))
    samples = []
    for i in range(args.samples):
        if i:
            time.sleep(args.interval)
        cmp = meter.compare(model, model)
        samples.append({"t_s": i * args.interval, "latency_ms": cmp.baseline_ms, "self_speedup": cmp.speedup})
        print(f"{i * args.interval:5.0f} s: {cmp.baseline_ms:.2f} ms, self-speedup {cmp.speedup:.3f}", file=sys.stderr)
    lat = [s["latency_ms"] for s in samples]
    ratio = [s["self_speedup"] for s in samples]
    summary = {"latency_ms_min": min(lat), "latency_ms_median": statistics.median(lat), "latency_ms_max": max(lat),
               "max_over_min": max(lat) / min(lat), "self_speedup_min": min(ratio), "self_speedup_max": max(ratio)}
    print(", ".join(f"{k} {v:.3f}" for k, v in summary.items()), file=sys.stderr)
    write_json_atomic(args.out, {
        "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, no GPU",
        "load_average": os.getloadavg(), "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "summary": summary, "samples": samples,
    })
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_script(main)
