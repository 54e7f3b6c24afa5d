"""Benchmark one NetCompressEnv episode on the shared ResNet-56 and the effect of BN recalibration.

Prints and writes (docs/benchmarks/env_episode.json):
- the time of one episode (steps + prune + BN recalibration + evaluation + measured latency) as medians
  over `--episodes` random policies, and the env's own overhead (everything but evaluation and latency
  measurement: wall time minus those two) as a share of it;
- with `--sweep`, the same for other torch thread counts, evaluation batch sizes and recalibration sizes
  (the options to bring an episode under the 2 s target);
- top-1 of uniform 50%-MACs pruning, with and without BN recalibration, for the `all` and `internal` group
  scopes: on the env's held-out images (carved from the subset's training part, which the shared
  weights were trained on) and on the subset's 761 test images (never seen).

    python scripts/bench_env.py --shared ../shared --episodes 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from autocompress.atomic import atomic_write_text
from autocompress.config import (
    DataConfig,
    EnvConfig,
    ExperimentConfig,
    LatencyConfig,
    PruneConfig,
    load_config,
)
from autocompress.data import load_data, take_tensors
from autocompress.envs import NetCompressEnv
from autocompress.measure.accuracy import evaluate_tensors
from autocompress.pipeline import build
from autocompress.pruning import recalibrate_bn
from autocompress.search import uniform_action


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def experiment(shared: Path, env: EnvConfig) -> ExperimentConfig:
    """The shared ResNet-56 on the CIFAR-10 subset, held-out images from its training part."""
    cfg = load_config({
        "model": {"name": "cifar10_resnet56", "weights": str(shared / "models/cifar10_resnet56.pth")},
        "data": {"name": "cifar10_subset", "root": str(shared / "data"), "val_size": 1000},
    })
    return replace(cfg, env=env)


def rollout(env: NetCompressEnv, actions: np.ndarray) -> dict:
    env.reset(seed=0)
    for a in actions:
        _, _, terminated, _, info = env.step(a)
    assert terminated
    return info


def time_episodes(env: NetCompressEnv, episodes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(episodes):
        t, c = time.perf_counter(), time.process_time()
        info = rollout(env, rng.uniform(0, 1, size=(len(env.groups), 1)).astype(np.float32))
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if info["cached"]:
            continue  # a repeated policy is not an episode's cost
        # cpu_s: CPU time of this process; with 1 thread it is what the wall time would be on an idle machine
        rows.append({**info["timing"], "wall_s": wall, "cpu_s": cpu})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    # Everything but evaluation and latency measurement, from the wall time (observations included).
    over = [r["wall_s"] - r["eval_s"] - r["latency_s"] for r in rows]
    med["overhead_s"] = statistics.median(over)
    med["overhead_share"] = statistics.median(o / r["wall_s"] for o, r in zip(over, rows, strict=True))
    med["overhead_without_recalib_share"] = statistics.median(
        (o - r["recalib_s"]) / r["wall_s"] for o, r in zip(over, rows, strict=True))
    med["episodes"] = len(rows)
    med["eval_s_per_1000_images"] = med["eval_s"] * 1000 / len(env.data.val_images)
    med["load"] = _load()
    return med


def test_top1(env: NetCompressEnv, info: dict, test: tuple[torch.Tensor, torch.Tensor]) -> float:
    """The episode's pruned network (same schedule, same recalibration) scored on unseen test images."""
    pruned = env.pruner.prune(info["schedule"])
    if env.cfg.bn_recalib_batches > 0:
        n = env.cfg.bn_recalib_batches * env.cfg.bn_recalib_batch_size
        recalibrate_bn(pruned, env.data.calib_images[:n], env.cfg.bn_recalib_batch_size)
    return evaluate_tensors(pruned, *test, batch_size=250).top1


def uniform_top1(env: NetCompressEnv, test: tuple[torch.Tensor, torch.Tensor]) -> dict:
    a = uniform_action(env)
    info = rollout(env, np.full((len(env.groups), 1), a, np.float32))
    return {"val_top1": info["top1"], "test_top1": test_top1(env, info, test), "macs_ratio": info["macs_ratio"],
            "prune_ratio": env.prune_ratio_of(a)}


def sweep(shared: Path, base_env: EnvConfig, episodes: int, threads: list[int]) -> list[dict]:
    """Episode time under other settings: torch threads, evaluation batch size, recalibration images."""
    variants = [{"threads": t, "eval_batch_size": base_env.eval_batch_size,
                 "bn_recalib_batches": base_env.bn_recalib_batches} for t in threads]
    variants += [{"threads": 1, "eval_batch_size": b, "bn_recalib_batches": base_env.bn_recalib_batches}
                 for b in (100, 1000)]
    variants += [{"threads": 1, "eval_batch_size": base_env.eval_batch_size, "bn_recalib_batches": r} for r in (0, 8)]
    other = "onnxruntime" if base_env.eval_runtime == "torch" else "torch"
    variants += [{"threads": t, "eval_batch_size": base_env.eval_batch_size,
                  "bn_recalib_batches": base_env.bn_recalib_batches, "eval_runtime": other} for t in threads]
    rows = []
    previous = torch.get_num_threads()
    for v in variants:
        torch.set_num_threads(v["threads"])
        cfg = replace(base_env, eval_batch_size=v["eval_batch_size"], bn_recalib_batches=v["bn_recalib_batches"],
                      eval_runtime=v.get("eval_runtime", base_env.eval_runtime))
        env, _ = build(experiment(shared, cfg), progress=False)
        timing = time_episodes(env, episodes, seed=1)
        rows.append({**v, "episode_median_s": timing})
        print(f"sweep {v}: episode {timing['wall_s']:.3f} s (eval {timing['eval_s']:.3f}, recalib "
              f"{timing['recalib_s']:.3f}, latency {timing['latency_s']:.3f}) load {timing['load'][0]}", flush=True)
    torch.set_num_threads(previous)
    return rows


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--recalib-batches", type=int, default=2)
    ap.add_argument("--eval-batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (evaluation, recalibration, pruning)")
    ap.add_argument("--eval-runtime", choices=["torch", "onnxruntime"], default="torch",
                    help="score candidates in eager PyTorch or ONNX Runtime")
    ap.add_argument("--sweep", action="store_true", help="also time episodes under other settings")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the uniform 50%% accuracy part")
    ap.add_argument("--sweep-episodes", type=int, default=4)
    ap.add_argument("--out", default="docs/benchmarks/env_episode.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", message="val_size")
    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    load_start = _load()

    base_env = EnvConfig(budget=0.5, val_images=1000, eval_batch_size=args.eval_batch_size, eval_runtime=args.eval_runtime,
                         bn_recalib_batches=args.recalib_batches, bn_recalib_batch_size=128, latency_mode="measured",
                         latency=LatencyConfig(runtime="torch", threads=1, batch_size=1, rounds=20))
    t = time.perf_counter()
    env, bundle = build(experiment(shared, base_env), progress=False)
    build_s = time.perf_counter() - t
    print(f"ResNet-56: {len(env.groups)} groups, baseline held-out top-1 {env.baseline_top1:.2f}% "
          f"on {len(env.data.val_images)} images, torch threads {torch.get_num_threads()}, env built in {build_s:.1f} s",
          flush=True)
    timing = time_episodes(env, args.episodes, seed=0)
    print("episode breakdown (median s): " + ", ".join(f"{k} {v}" for k, v in timing.items()), flush=True)

    test = take_tensors(bundle.test, None, seed=0)
    base_test = evaluate_tensors(env.model, *test).top1
    calib = _calib(shared, 16 * 128)
    accuracy = {}
    for scope in () if args.no_accuracy else ("all", "internal"):
        for recalib in (0, 16):
            cfg = replace(base_env, latency_mode="flops", bn_recalib_batches=recalib,
                          prune=PruneConfig(scope=scope))
            e = NetCompressEnv(env.model, replace(env.data, calib_images=calib), cfg)
            key = f"{scope}_recalib{recalib * 128}"
            accuracy[key] = uniform_top1(e, test)
            print(f"uniform 50% MACs, scope={scope}, BN recalibration on {recalib * 128} images: "
                  f"val top-1 {accuracy[key]['val_top1']:.2f}%, test top-1 {accuracy[key]['test_top1']:.2f}% "
                  f"(MACs ratio {accuracy[key]['macs_ratio']:.3f})", flush=True)
    sweep_rows = sweep(shared, base_env, args.sweep_episodes, [1, 2]) if args.sweep else []
    result = {
        "command": "python scripts/bench_env.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}",
        "torch_threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_start": load_start,
        "load_end": _load(),
        "env_build_s": build_s,
        "baseline_val_top1": env.baseline_top1,
        "baseline_test_top1": base_test,
        "val_images": len(env.data.val_images),
        "test_images": len(test[0]),
        "episode_median_s": timing,
        "uniform50_top1": accuracy,
        "sweep": sweep_rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _calib(shared: Path, n: int) -> torch.Tensor:
    bundle = load_data(DataConfig(name="cifar10_subset", root=str(shared / "data"), val_size=1000))
    return take_tensors(bundle.train, n, seed=1)[0]


if __name__ == "__main__":
    main()
