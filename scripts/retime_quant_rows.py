"""Do issue #15's networks keep their speedup on this CPU? Every row of a quantization report, timed here.

A latency-searched policy is chosen against the CPU it was searched on; the same schedule may run slower or
faster elsewhere, and rows timed on different CPUs (the report records each row's) cannot be compared for speed.
This rebuilds each row's network from the report alone (its prune ratios, removed blocks and per-layer precision,
on the adapted weights: the speed of a network does not depend on its weight values, so the fine-tuned weights
are not needed), checks that the rebuilt network has the row's MACs ratio, and times it against the unpruned FP32
network in ONNX Runtime (batch 1, one thread, alternation, median of the per-pair ratios), all rows in one run,
in several passes (median per row).
Run from the repository root, on a machine as quiet as you can make it:

    python scripts/retime_quant_rows.py --configs experiments/resnet20-cifar10jpeg-macs50.yaml \
        experiments/resnet56-cifar10jpeg-macs50.yaml --json docs/benchmarks/quantization_retimed_amd.json \
        --plot docs/benchmarks/quantization_retimed_amd.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import LatencyConfig, PruneConfig, QuantConfig, load_config
from autocompress.data import load_data, take_tensors
from autocompress.envs.factory import build_model
from autocompress.measure.latency import LatencyMeter
from autocompress.pruning import Pruner
from autocompress.quantize import cpu_int8_flags, quantize_int8, quantize_layers

JOINT_DEFAULT = "experiments/{arch}-cifar10jpeg-int8-joint.yaml"
"""The search settings of rows that do not name theirs (bench_quantization's --joint-config default)."""
WIDENED_MIN_CHANNELS = 8
"""The channel floor bench_joint may have widened a cell to (REACH) to reach its target: tried after the
config's own floor when the rebuilt MACs do not match the row's."""
MACS_MATCH = 1e-4


def prune_config(row: dict[str, Any], arch: str) -> PruneConfig:
    """The pruning settings of the row's search (its joint config's env.prune, its recorded scope)."""
    joint = load_config(row.get("joint_config") or JOINT_DEFAULT.format(arch=arch))
    cfg = joint.env.prune
    return replace(cfg, scope=row.get("prune_scope") or cfg.scope)


def rebuilt(model: torch.nn.Module, row: dict[str, Any], arch: str, example: torch.Tensor) -> torch.nn.Module:
    """The row's pruned FP32 network; refused unless its MACs ratio is the row's (else it is another network)."""
    base = prune_config(row, arch)
    tried = []
    for floor in dict.fromkeys((base.min_channels, min(base.min_channels, WIDENED_MIN_CHANNELS))):
        pruner = Pruner(model, example, replace(base, min_channels=floor))
        kept = pruner.kept_channels(row["schedule"])
        ratio = pruner.cost_model.macs(kept) / pruner.cost_model.base_macs
        tried.append(round(ratio, 5))
        if abs(ratio - row["macs_ratio"]) <= MACS_MATCH:
            return pruner.prune_kept(kept).eval()
    raise SystemExit(f"retime_quant_rows: {row['model']} {row['method']}@{row.get('target_speedup')}x rebuilds to "
                     f"MACs ratios {tried}, not the row's {row['macs_ratio']:.5f}; its pruning settings are not "
                     "recoverable from the report.")


def candidate(row: dict[str, Any], model: torch.nn.Module, calib: torch.Tensor, arch: str,
              example: torch.Tensor) -> torch.nn.Module:
    """The network the row deployed (up to its weight values)."""
    if row["method"] == "int8_ptq":
        return quantize_int8(model, calib, QuantConfig(calib_images=len(calib)))
    pruned = rebuilt(model, row, arch, example)
    precision = row.get("layer_precision") or {}
    if not any(p == "int8" for p in precision.values()):
        return pruned
    return quantize_layers(pruned, calib, precision, QuantConfig(calib_images=len(calib)))


def time_rows(cfg_path: str, rows: list[dict[str, Any]], rounds: int, calib_images: int,
              repeats: int) -> list[dict[str, Any]]:
    """Each row's network against the unpruned FP32 one; `repeats` passes over all rows, each row's speedup the
    median of its passes (one pass can catch a noisy minute; passes in turn spread that over every row)."""
    cfg = load_config(cfg_path)
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    arch = cfg.model.name.removeprefix("cifar10_")
    calib, _ = take_tensors(bundle.train, calib_images, seed=1)
    example = calib[:1]
    meter = LatencyMeter(LatencyConfig(runtime="onnxruntime", threads=1, rounds=rounds, warmup=10),
                         tuple(bundle.input_shape))
    mine = [r for r in rows if r["model"] == cfg.model.name and r["method"] != "fp32"]
    nets = [candidate(row, model, calib, arch, example) for row in mine]
    passes = [[meter.compare(model, net) for net in nets] for _ in range(repeats)]
    out = []
    for k, row in enumerate(mine):
        speedups = [p[k].speedup for p in passes]
        out.append({"model": row["model"], "method": row["method"], "target_speedup": row.get("target_speedup"),
                    "speedup_here": statistics.median(speedups), "speedup_here_passes": speedups,
                    "latency_ms_here": statistics.median(p[k].latency_ms for p in passes),
                    "fp32_latency_ms_here": statistics.median(p[k].baseline_ms for p in passes),
                    "speedup_recorded": row["speedup_measured"], "cpu_recorded": row["cpu"],
                    "top1_after_ft": row["top1_after_ft"], "macs_ratio": row.get("macs_ratio"),
                    "loadavg": os.getloadavg()[0]})
        r = out[-1]
        print(f"{r['model']:18} {r['method']:13} {r['target_speedup'] or '':>4} recorded {r['speedup_recorded']:.2f}x "
              f"({r['cpu_recorded'].split(' (')[0]}), here {r['speedup_here']:.2f}x "
              f"({min(speedups):.2f}-{max(speedups):.2f})", file=sys.stderr)
    return out


def plot(rows: list[dict[str, Any]], cpu: str, path: str) -> None:
    """Per model: each row's speedup as recorded (its CPU) and here, with its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sel = [r for r in rows if r["model"] == model]
        labels = [r["method"].replace("_search", "") + (f"@{r['target_speedup']:g}x" if r["target_speedup"] else "")
                  for r in sel]
        x = range(len(sel))
        ax.bar([i - 0.2 for i in x], [r["speedup_recorded"] for r in sel], 0.4, label="as recorded (row's CPU)")
        ax.bar([i + 0.2 for i in x], [r["speedup_here"] for r in sel], 0.4, label=f"here: {cpu}")
        for i, r in enumerate(sel):
            if r["target_speedup"]:
                ax.hlines(r["target_speedup"], i - 0.42, i + 0.42, color="k", lw=1.5)
        ax.set_xticks(list(x), labels, rotation=20, fontsize=9)
        ax.set_ylabel("ONNX Runtime speedup over FP32 (batch 1, 1 thread)")
        ax.set_title(f"{model} (black line: target)", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", required=True, help="experiment YAMLs (model, adapted weights, data)")
    p.add_argument("--report", default="docs/benchmarks/quantization.json")
    p.add_argument("--rounds", type=int, default=200, help="alternating timing pairs per row")
    p.add_argument("--repeats", type=int, default=5, help="passes over all rows (median per row)")
    p.add_argument("--calib", type=int, default=128, help="calibration images of the INT8 layers")
    p.add_argument("--json", required=True)
    p.add_argument("--plot", default=None)
    args = p.parse_args()
    try:
        rows = json.loads(Path(args.report).read_text())["details"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SystemExit(f"retime_quant_rows: cannot read the rows' details from --report {args.report} ({exc}); "
                         "give bench_quantization's report JSON.") from None
    torch.set_num_threads(1)
    cpu = f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no INT8 flags found'})"
    timed = [r for path in args.configs for r in time_rows(path, rows, args.rounds, args.calib, args.repeats)]
    write_json_atomic(args.json, {
        "rows": timed, "cpu": cpu, "report": args.report, "rounds": args.rounds, "repeats": args.repeats,
        "command": "python " + " ".join(sys.argv),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")})
    if args.plot and timed:
        plot(timed, cpu.rsplit(" (", 1)[0], args.plot)


if __name__ == "__main__":
    run_script(main)
