"""Does 7-bit weight quantization (`QuantConfig.reduce_range`) matter on this CPU? INT8 PTQ with 8-bit and with
7-bit weights, and the FP32 network, scored on the same test images, paired.

On x86 CPUs without VNNI, ONNX Runtime multiplies u8 activations by s8 weights into saturating 16-bit sums, so
8-bit weights can overflow and cost accuracy; VNNI accumulates in 32 bits and needs no reduction. This measures
the effect where it runs (the CPU and its INT8 flags are recorded) and says which setting `auto` picks here.
Run from the repository root:

    python scripts/int8_reduce_range.py --configs experiments/resnet20-cifar10jpeg-macs50.yaml \
        --json docs/benchmarks/int8_reduce_range_zen2.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

import torch
from bench_quality import paired_stats, predictions
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import QuantConfig, load_config
from autocompress.data import load_data, take_tensors
from autocompress.envs.factory import build_model
from autocompress.quantize import cpu_int8_flags, quantize_int8, reduce_range


def compare(config: str, calib_images: int) -> dict[str, Any]:
    """One config's network: top-1 of FP32, INT8 with 8-bit and with 7-bit weights, and the paired tests."""
    cfg = load_config(config)
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    source = bundle.train_eval if getattr(bundle, "train_eval", None) else bundle.train
    calib, _ = take_tensors(source, calib_images, seed=1)  # the images bench_quantization's int8_ptq row uses
    correct = {"fp32": predictions(model, bundle.test)}
    for name, rr in (("int8_8bit", False), ("int8_7bit", True)):
        int8 = quantize_int8(model, calib, QuantConfig(calib_images=calib_images, reduce_range=rr))
        correct[name] = predictions(int8, bundle.test)
    row = {"model": cfg.model.name, "test_images": int(len(correct["fp32"])),
           **{f"top1_{k}": 100.0 * float(v.mean()) for k, v in correct.items()},
           "auto_picks_7bit": reduce_range(QuantConfig()),
           "7bit_minus_8bit": paired_stats({0: correct["int8_7bit"]}, {0: correct["int8_8bit"]}),
           "7bit_minus_fp32": paired_stats({0: correct["int8_7bit"]}, {0: correct["fp32"]}),
           "8bit_minus_fp32": paired_stats({0: correct["int8_8bit"]}, {0: correct["fp32"]})}
    print(f"{row['model']}: FP32 {row['top1_fp32']:.2f}%, INT8 8-bit weights {row['top1_int8_8bit']:.2f}%, "
          f"7-bit {row['top1_int8_7bit']:.2f}% (7-bit - 8-bit {row['7bit_minus_8bit']['mean_diff_points']:+.2f}, "
          f"McNemar p {row['7bit_minus_8bit']['mcnemar_per_seed']['0']['p']:.2g}); auto picks "
          f"{'7' if row['auto_picks_7bit'] else '8'}-bit here")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", required=True, help="experiment YAMLs (model, adapted weights, data)")
    p.add_argument("--calib", type=int, default=128, help="calibration images (training split)")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [compare(c, args.calib) for c in args.configs]
    write_json_atomic(args.json, {
        "rows": rows, "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no INT8 flags found'})",
        "command": " ".join(["python", *sys.argv]),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")})


if __name__ == "__main__":
    run_script(main)
