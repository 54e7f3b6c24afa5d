"""Benchmark one NetCompressEnv episode on the shared ResNet-56 and the effect of BN recalibration.

Prints and writes (docs/benchmarks/env_episode.json):
- the time of one episode (steps + prune + BN recalibration + evaluation + measured latency) as medians
  over `--episodes` random policies, and the env's own overhead (steps + prune) as a share of it;
- top-1 on the held-out images of uniform 50%-MACs pruning, with and without BN recalibration, for the
  `all` and `internal` group scopes.

    python scripts/bench_env.py --shared ../shared --episodes 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from autocompress.config import EnvConfig, ExperimentConfig, LatencyConfig, PruneConfig, load_config
from autocompress.envs import NetCompressEnv
from autocompress.pipeline import build
from autocompress.search import uniform_action


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
        t = time.perf_counter()
        info = rollout(env, rng.uniform(0, 1, size=(len(env.groups), 1)).astype(np.float32))
        wall = time.perf_counter() - t
        rows.append({**info["timing"], "wall_s": wall})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["overhead_s"] = med["steps_s"] + med["prune_s"]
    med["overhead_share"] = med["overhead_s"] / med["wall_s"]
    med["overhead_with_recalib_share"] = (med["overhead_s"] + med["recalib_s"]) / med["wall_s"]
    return med


def uniform_top1(env: NetCompressEnv) -> dict:
    a = uniform_action(env)
    info = rollout(env, np.full((len(env.groups), 1), a, np.float32))
    return {"top1": info["top1"], "macs_ratio": info["macs_ratio"], "prune_ratio": env.prune_ratio_of(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--recalib-batches", type=int, default=2)
    ap.add_argument("--out", default="docs/benchmarks/env_episode.json")
    args = ap.parse_args()
    shared = Path(args.shared)

    base_env = EnvConfig(budget=0.5, val_images=1000, eval_batch_size=500, bn_recalib_batches=args.recalib_batches,
                         bn_recalib_batch_size=128, latency_mode="measured",
                         latency=LatencyConfig(runtime="torch", threads=1, batch_size=1, rounds=20))
    env, _ = build(experiment(shared, base_env), progress=False)
    print(f"ResNet-56: {len(env.groups)} groups, baseline held-out top-1 {env.baseline_top1:.2f}% "
          f"on {len(env.data.val_images)} images, torch threads {torch.get_num_threads()}")
    timing = time_episodes(env, args.episodes, seed=0)
    print("episode breakdown (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in timing.items()))

    accuracy = {}
    for scope in ("all", "internal"):
        for recalib in (0, 16):
            cfg = replace(base_env, latency_mode="flops", bn_recalib_batches=recalib,
                          prune=PruneConfig(scope=scope))
            e = NetCompressEnv(env.model, replace(env.data, calib_images=_calib(shared, 16 * 128)), cfg)
            key = f"{scope}_recalib{recalib * 128}"
            accuracy[key] = uniform_top1(e)
            print(f"uniform 50% MACs, scope={scope}, BN recalibration on {recalib * 128} images: "
                  f"top-1 {accuracy[key]['top1']:.2f}% (MACs ratio {accuracy[key]['macs_ratio']:.3f})")
    result = {
        "command": "python scripts/bench_env.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "baseline_top1": env.baseline_top1,
        "val_images": len(env.data.val_images),
        "episode_median_s": timing,
        "uniform50_top1": accuracy,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def _calib(shared: Path, n: int) -> torch.Tensor:
    from autocompress.config import DataConfig
    from autocompress.data import load_data, take_tensors

    bundle = load_data(DataConfig(name="cifar10_subset", root=str(shared / "data"), val_size=1000))
    return take_tensors(bundle.train, n, seed=1)[0]


if __name__ == "__main__":
    main()
