"""Full pipeline on a complete real dataset: Fashion-MNIST, searched policy vs uniform at the same budget.

A trained baseline (e.g. from `autocompress train --model cifar10_resnet20 --data fashion_mnist ...`) is
searched at a measured-latency target (budget wall on the latency look-up table, reward on the speedup
measured each episode), then the best policy and the uniform policy of the same *measured* speedup
(bisected on measured latency; `--uniform-match table` matches the look-up table's prediction of the
budget instead, as the first runs did) are each pruned, BatchNorm-recalibrated, fine-tuned the same way
(distilling from the unpruned network) and tested on the 10,000 test images.
Writes docs/benchmarks/fmnist_pipeline.json.

    python scripts/bench_fmnist_pipeline.py --weights runs/fmnist-resnet20/model.pth --speedup 2 --episodes 40
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from plot_utils import run_script, write_json_atomic

from autocompress.config import TrainConfig, load_config
from autocompress.data import make_loader
from autocompress.measure.accuracy import evaluate
from autocompress.measure.latency import LatencyMeter
from autocompress.pipeline import build
from autocompress.pruning import Schedule, recalibrate_bn
from autocompress.search import BEST_SCHEDULE, Search, uniform_action, uniform_ratios_at_speedup
from autocompress.train import train


def experiment(args: argparse.Namespace):
    return load_config({
        "name": f"fmnist-{args.model}-latency{args.speedup}x",
        "model": {"name": args.model, "weights": args.weights},
        "data": {"name": "fashion_mnist", "root": args.data_root, "val_size": 5000, "batch_size": 128},
        "env": {
            "budget_kind": "latency", "budget": 1.0 / args.speedup, "max_ratio": 0.9,
            "reward": "acc_latency", "reward_kwargs": {"alpha": 0.0, "beta": -1.0},
            "latency_mode": "measured", "val_images": 1000, "eval_batch_size": 500, "eval_runtime": "onnxruntime",
            "bn_recalib_batches": 2, "lut_path": str(Path(args.work) / f"lut-{args.runtime}.json"),
            "prune": {"scope": "all", "round_to": args.round_to},
            "latency": {"runtime": args.runtime, "threads": 1, "batch_size": 1, "rounds": args.rounds},
        },
        "search": {"agent": "ddpg", "episodes": args.episodes, "seed": args.seed, "out_dir": str(Path(args.work) / "search")},
        "ddpg": {"warmup_episodes": max(5, args.episodes // 4), "lr_actor": 1e-3, "updates_per_step": 4,
                 "noise_decay": 0.97},
    })


def prune_finetune_test(env, bundle, ratios, args, meter) -> dict:
    """Prune, recalibrate, test, fine-tune (distilling from the unpruned net), test again, time."""
    test = make_loader(bundle.test, batch_size=500)
    pruned = env.pruner.prune(ratios)
    recalibrate_bn(pruned, env.data.calib_images, 128)
    before = evaluate(pruned, test).top1
    t = time.perf_counter()
    ft = TrainConfig(epochs=args.ft_epochs, lr=args.ft_lr, distill=True, max_batches=args.ft_max_batches,
                     cpu_bf16=args.cpu_bf16)
    history = train(pruned, bundle, ft, teacher=env.model, progress=False)
    ft_s = time.perf_counter() - t
    after = evaluate(pruned.eval(), test).top1
    cmp = meter.compare(env.model, pruned)
    kept = env.pruner.kept_channels(ratios)
    return {"top1_before_ft": before, "top1_after_ft": after, "speedup": cmp.speedup, "spread": cmp.spread,
            "latency_ms": cmp.latency_ms, "baseline_ms": cmp.baseline_ms,
            "macs_ratio": env.cost_model.macs(kept) / env.base_macs, "finetune_s": ft_s,
            "finetune_history": history}


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cifar10_resnet20")
    ap.add_argument("--weights", required=True, help="the baseline trained on Fashion-MNIST")
    ap.add_argument("--data-root", default=str(Path(os.environ.get("AUTOCOMPRESS_SHARED", "../shared")) / "data"))
    ap.add_argument("--speedup", type=float, default=2.0)
    ap.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                    help="target runtime timed for the speedup (1 thread, batch 1)")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--final-rounds", type=int, default=40)
    ap.add_argument("--round-to", type=int, default=4)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--ft-max-batches", type=int, default=None)
    ap.add_argument("--cpu-bf16", action="store_true", help="fine-tune with bf16 autocast on the CPU (TrainConfig.cpu_bf16)")
    ap.add_argument("--uniform-match", choices=("measured", "table"), default="measured",
                    help="match the uniform baseline to the searched policy's measured speedup, or to the table's budget")
    ap.add_argument("--policies", nargs="+", choices=("searched", "uniform"), default=["searched", "uniform"],
                    help="which policies to fine-tune and test (each fine-tune of a pruned MobileNetV2 takes ~10 min "
                    "per epoch on 2 CPU cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/fmnist-pipeline")
    ap.add_argument("--out", default="docs/benchmarks/fmnist_pipeline.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    cfg = experiment(args)
    t0 = time.perf_counter()
    env, bundle = build(cfg, progress=False)
    run_dir = Path(cfg.search.out_dir)
    Search(cfg, env, run_dir, resume=(run_dir / "checkpoint.pt").is_file()).run(progress=True)
    search_s = time.perf_counter() - t0
    meter = LatencyMeter(replace(cfg.env.latency, rounds=args.final_rounds), env.input_shape)
    searched = Schedule.load(run_dir / BEST_SCHEDULE).prune_ratios()
    if "uniform" not in args.policies:
        uniform = {}
    elif args.uniform_match == "measured":
        target = meter.compare(env.model, env.pruner.prune(searched)).speedup
        bisect_meter = LatencyMeter(replace(cfg.env.latency, rounds=2 * args.rounds), env.input_shape)
        uniform, _ = uniform_ratios_at_speedup(env, bisect_meter, target)
    else:
        uniform = dict.fromkeys(env.group_names, env.prune_ratio_of(uniform_action(env)))
    baseline_top1 = evaluate(env.model, make_loader(bundle.test, batch_size=500)).top1
    rows = {}
    for name, ratios in (("searched", searched), ("uniform", uniform)):
        if name not in args.policies:
            continue
        rows[name] = prune_finetune_test(env, bundle, ratios, args, meter)
        r = rows[name]
        print(f"{name}: speedup {r['speedup']:.2f}x (spread {r['spread']:.3f}), MACs {r['macs_ratio']:.3f}, test top-1 "
              f"{r['top1_before_ft']:.2f}% -> {r['top1_after_ft']:.2f}% after fine-tuning "
              f"(baseline {baseline_top1:.2f}%, drop {baseline_top1 - r['top1_after_ft']:.2f})", file=sys.stderr)
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, no GPU",
        "load_average": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
        "uniform_prune_ratio": next(iter(uniform.values()), None),
        "train_images_for_finetune": len(bundle.train),
        "test_images": len(bundle.test),
        "baseline_top1": baseline_top1,
        "search_s": search_s,
        **rows,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_script(main)
