"""Training speed and accuracy by precision and memory layout on this CPU: fp32 NCHW, fp32 channels-last,
bf16 autocast + channels-last (TrainConfig.channels_last / cpu_bf16).

Each variant trains the same model from the same seed on the same data for the same epochs, then is tested;
step time is an epoch's wall time
(the val split is empty, so it is all training) over its steps; one run of each, in turn. Writes docs/benchmarks/train_precision.json.

    python scripts/bench_train_precision.py --model cifar10_resnet20 --data fashion_mnist --epochs 1
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import DataConfig, TrainConfig, shared_dir, validate
from autocompress.data import load_data, make_loader
from autocompress.measure.accuracy import evaluate
from autocompress.models import get_model
from autocompress.train import cpu_has_native_bf16, train

VARIANTS = {
    "fp32_nchw": {"channels_last": False, "cpu_bf16": False},
    "fp32_channels_last": {"channels_last": True, "cpu_bf16": False},
    "bf16_channels_last": {"channels_last": True, "cpu_bf16": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cifar10_resnet20")
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--data-root", default=str(shared_dir() / "data"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch (quick runs)")
    ap.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/benchmarks/train_precision.json")
    args = ap.parse_args()
    data_cfg = DataConfig(name=args.data, root=args.data_root, val_size=0, batch_size=args.batch_size)
    validate(data_cfg, "data")
    bundle = load_data(data_cfg)
    test = make_loader(bundle.test, batch_size=500)
    rows = {}
    for name in args.variants:
        torch.manual_seed(args.seed)
        model = get_model(args.model, bundle.num_classes, in_channels=bundle.input_shape[0])
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, max_batches=args.max_batches, device="cpu", **VARIANTS[name])
        start = time.perf_counter()
        history = train(model, bundle, cfg, progress=True)
        wall = time.perf_counter() - start
        steps = math.ceil(len(bundle.train) / args.batch_size)
        steps = min(steps, args.max_batches or steps) * args.epochs
        step_s = sum(h["seconds"] for h in history) / steps
        top1 = evaluate(model, test, "cpu").top1
        rows[name] = {**VARIANTS[name], "step_s": step_s, "steps": steps,
                      "train_wall_s": wall, "final_train_loss": history[-1]["train_loss"], "test_top1": top1}
        print(f"{name}: {step_s * 1e3:.0f} ms/step, {wall:.0f} s, test top-1 {top1:.2f}%",
              file=sys.stderr)
    base = rows.get("fp32_nchw")
    if base:
        for r in rows.values():
            r["step_speedup_vs_fp32_nchw"] = base["step_s"] / r["step_s"]
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"native bf16: {cpu_has_native_bf16()}, threads {torch.get_num_threads()}, no GPU",
        "load_average": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "train_images": len(bundle.train),
        "test_images": len(bundle.test),
        **rows,
    }
    write_json_atomic(Path(args.out), result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_script(main)
