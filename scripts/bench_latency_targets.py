"""Measured-latency targets: does the searched network reach the speedup asked for, and at what accuracy?

For each target speedup, a DDPG search runs with a latency budget (the budget wall uses the latency
look-up table; the reward uses the speedup measured at the end of every episode). The best policy is
then applied and timed against the unpruned network in alternation (`--final-rounds` pairs), and
compared with the uniform schedule whose *measured* speedup is the same (uniform ratio bisected on
measured speedups, `uniform_same_latency`) and, for reference, with the uniform schedule matched on the
look-up table's prediction (`uniform_same_table_latency`). Top-1 is on the test split after BatchNorm
recalibration, before fine-tuning. Writes docs/benchmarks/latency_targets.json.

The wall's table predictions are corrected by the measured/predicted latency of recent episodes
(`env.lut_feedback`, on by default; `--lut-feedback 0` trusts the table alone). `--weights none` runs a
model without trained weights (e.g. mobilenetv2_cifar, which has none here): the speedups are real, the
accuracies are not meaningful. `--data fashion_mnist --weights runs/fmnist-mobilenetv2/model.pth` runs a
network trained on Fashion-MNIST (held-out images from its training split, top-1 on its 10,000 test images).

    python scripts/bench_latency_targets.py --model cifar10_resnet56 --targets 1.5 2 3 --episodes 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from plot_utils import run_script, write_json_atomic

from autocompress.config import ConfigError, load_config
from autocompress.data import make_loader
from autocompress.measure.accuracy import evaluate
from autocompress.measure.latency import LatencyMeter
from autocompress.pipeline import build
from autocompress.pruning import Schedule, recalibrate_bn
from autocompress.search import BEST_SCHEDULE, Search, uniform_ratios_at_speedup


def weights_path(args: argparse.Namespace) -> str | None:
    """--weights, or the shared pretrained file of --model; None for 'none' (random initialisation)."""
    if args.weights == "none":
        return None
    return args.weights or str(Path(args.shared) / f"models/{args.model}.pth")


def experiment(args: argparse.Namespace, target: float, out_dir: Path):
    shared = Path(args.shared)
    return load_config({
        "name": f"{args.model}-latency{target}x",
        "model": {"name": args.model, "weights": weights_path(args)},
        "data": {"name": args.data, "root": str(shared / "data"), "val_size": args.val_images},
        "env": {
            "budget_kind": "latency", "budget": 1.0 / target, "max_ratio": args.max_ratio,
            "reward": "acc_latency", "reward_kwargs": {"alpha": 0.0, "beta": -1.0},
            "latency_mode": "measured", "val_images": args.val_images, "eval_batch_size": 500,
            "bn_recalib_batches": 2, "bn_recalib_batch_size": 128,
            "lut_path": str(out_dir / "lut.json"), "lut_feedback": args.lut_feedback,
            "prune": {"scope": "all", "round_to": args.round_to},
            "latency": {"runtime": args.runtime, "threads": 1, "batch_size": 1, "rounds": args.rounds},
        },
        "search": {"agent": "ddpg", "episodes": args.episodes, "seed": args.seed, "out_dir": str(out_dir / f"t{target}")},
        "ddpg": {"warmup_episodes": max(5, args.episodes // 4), "lr_actor": 1e-3, "updates_per_step": 4,
                 "noise_decay": 0.97},
    })


def confirmed_figures(run_dir: Path) -> dict[str, float]:
    """The chosen policy's speedup as timed in its episode and when re-timed at the end (confirmed.json)."""
    path = run_dir / "confirmed.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())
    best = next((r for r in rows if r.get("chosen")), None) or max(rows, key=lambda r: r["reward"])
    return {"speedup_in_episode": best["speedup_in_episode"], "speedup_confirmed": best["speedup"],
            "confirmed_candidates": len(rows)}


def top1_on_test(env, ratios, bundle) -> tuple[float, torch.nn.Module]:
    pruned = env.pruner.prune(ratios)
    recalibrate_bn(pruned, env.data.calib_images, 128)
    return evaluate(pruned, make_loader(bundle.test, batch_size=500)).top1, pruned


def uniform_at_predicted_speedup(env, speedup: float) -> dict[str, float]:
    """The uniform prune ratio whose look-up-table speedup equals `speedup` (bisection)."""
    base = env.base_lut_ms
    lo, hi = 0.0, env.cfg.max_ratio
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        pred = base / env.lut.predict_ms(env.pruner.kept_channels(dict.fromkeys(env.group_names, mid)))
        lo, hi = (mid, hi) if pred < speedup else (lo, mid)
    return dict.fromkeys(env.group_names, hi)


def uniform_row(env, bundle, meter, ratios) -> dict[str, float]:
    top1, pruned = top1_on_test(env, ratios, bundle)
    timed = meter.compare(env.model, pruned)
    macs = env.cost_model.macs(env.pruner.kept_channels(ratios)) / env.base_macs
    return {"speedup": timed.speedup, "spread": timed.spread, "macs_ratio": macs, "top1": top1,
            "prune_ratio": next(iter(ratios.values()))}


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cifar10_resnet56")
    ap.add_argument("--data", default="cifar10_subset", help="dataset in --shared/data (e.g. fashion_mnist)")
    ap.add_argument("--targets", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--runtime", default="torch")
    ap.add_argument("--rounds", type=int, default=10, help="alternating pairs per episode")
    ap.add_argument("--final-rounds", type=int, default=40, help="alternating pairs for the final figures")
    ap.add_argument("--round-to", type=int, default=4)
    ap.add_argument("--max-ratio", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lut-feedback", type=int, default=20, help="env.lut_feedback (0: trust the table alone)")
    ap.add_argument("--weights", default=None, help="model weights (default: the shared pretrained file; 'none')")
    ap.add_argument("--shared", default=os.environ.get("AUTOCOMPRESS_SHARED", "../shared"))
    ap.add_argument("--work", default="runs/latency-targets")
    ap.add_argument("--out", default="docs/benchmarks/latency_targets.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(args.work) / (args.model if args.data == "cifar10_subset" else f"{args.model}-{args.data}")
    rows = []
    for target in args.targets:
        cfg = experiment(args, target, work)
        t0 = time.perf_counter()
        try:
            env, bundle = build(cfg, progress=False)
        except ConfigError as exc:  # e.g. a target this model cannot reach even at max_ratio: say so, go on
            print(f"target {target:.1f}x: {exc}", file=sys.stderr)
            rows.append({"target_speedup": target, "error": str(exc)})
            continue
        run_dir = Path(cfg.search.out_dir)
        Search(cfg, env, run_dir, resume=(run_dir / "checkpoint.pt").is_file()).run(progress=True)
        search_s = time.perf_counter() - t0
        ratios = Schedule.load(run_dir / BEST_SCHEDULE).prune_ratios()
        meter = LatencyMeter(replace(cfg.env.latency, rounds=args.final_rounds), env.input_shape)
        top1, pruned = top1_on_test(env, ratios, bundle)
        searched = meter.compare(env.model, pruned)
        bisect_meter = LatencyMeter(replace(cfg.env.latency, rounds=2 * args.rounds), env.input_shape)
        uniform_ratios, _ = uniform_ratios_at_speedup(env, bisect_meter, searched.speedup)
        uniform = uniform_row(env, bundle, meter, uniform_ratios)
        table_uniform = uniform_row(env, bundle, meter, uniform_at_predicted_speedup(env, searched.speedup))
        kept = env.pruner.kept_channels(ratios)
        macs_ratio = env.cost_model.macs(kept) / env.base_macs
        row = {
            "target_speedup": target,
            "searched": {"speedup": searched.speedup, "spread": searched.spread, "latency_ms": searched.latency_ms,
                         "macs_ratio": macs_ratio, "top1": top1, "lut_speedup": env.base_lut_ms / env.lut.predict_ms(kept),
                         "reached_share_of_target": searched.speedup / target,
                         "lut_correction_at_end": env.lut_correction,
                         **confirmed_figures(run_dir),
                         "speedup_per_macs_reduction": searched.speedup / (1 / macs_ratio)},
            "uniform_same_latency": uniform,
            "uniform_same_table_latency": table_uniform,
            "baseline": {"top1": evaluate(env.model, make_loader(bundle.test, batch_size=500)).top1,
                         "latency_ms": searched.baseline_ms},
            "search_s": search_s,
            "lut": {"scale": env.lut.scale, "const_ms": env.lut.const_ms,
                    "calibration": {k: v for k, v in env.lut.data["calibration"].items() if k != "pruned_kept"}},
        }
        rows.append(row)
        s, u = row["searched"], row["uniform_same_latency"]
        print(f"target {target:.1f}x: searched {s['speedup']:.2f}x (+-{s['spread']:.3f}, {s['reached_share_of_target']:.2f} of target), "
              f"MACs {s['macs_ratio']:.3f}, top-1 {s['top1']:.2f}% | uniform {u['speedup']:.2f}x, MACs {u['macs_ratio']:.3f}, "
              f"top-1 {u['top1']:.2f}% (matched on the table: {row['uniform_same_table_latency']['speedup']:.2f}x, "
              f"{row['uniform_same_table_latency']['top1']:.2f}%) | search {search_s / 60:.1f} min", file=sys.stderr)
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, no GPU",
        "load_average": os.getloadavg(),
        "weights": weights_path(args),
        "accuracy_meaningful": weights_path(args) is not None,
        "settings": {k: v for k, v in vars(args).items() if k not in ("shared", "work", "out")},
        "rows": rows,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    run_script(main)
