"""Search cost on the shared ResNet-56: episodes per second of a DDPG search and where the time goes.

Runs `autocompress.search.Search` (the real loop: env episodes, agent updates, logging, checkpoints) for
`--episodes` DDPG episodes in each latency mode (`flops`: no timing; `measured`: the pruned network timed
against the unpruned one every episode), and splits the wall time into the env's steps, copy + prune,
BatchNorm recalibration, evaluation, latency measurement (from the env's own `info["timing"]`), the agent's
act / observe calls and its update (timed here by wrapping the agent's methods), and the rest (TensorBoard
logging, best-schedule and checkpoint writes). Writes docs/benchmarks/search_cost.json.

    python scripts/bench_search_cost.py --shared ../shared --episodes 20
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from autocompress import search as search_module
from autocompress.atomic import atomic_write_text
from autocompress.config import DDPGConfig, EnvConfig, LatencyConfig, SearchConfig, load_config
from autocompress.measure.lut import machine_info
from autocompress.pipeline import build
from autocompress.runlog import RunLogger
from autocompress.search import Search

ENV_PARTS = ("steps_s", "prune_s", "recalib_s", "eval_s", "latency_s")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class TimedRunLogger(RunLogger):
    """RunLogger whose per-episode scalars and best-policy figures are timed (into `seconds`)."""

    seconds: dict[str, float] = {"log_episode_s": 0.0, "log_best_policy_s": 0.0}
    improvements = 0

    def episode(self, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        super().episode(*args, **kwargs)
        self.seconds["log_episode_s"] += time.perf_counter() - t0

    def best_policy(self, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        super().best_policy(*args, **kwargs)
        TimedRunLogger.improvements += 1
        self.seconds["log_best_policy_s"] += time.perf_counter() - t0


class TimedSearch(Search):
    """`Search` whose agent calls and episodes are timed; the loop itself is the real one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds: dict[str, float] = dict.fromkeys(("act_s", "observe_s", "update_s", "env_call_s",
                                                         "checkpoint_s"), 0.0)
        self.episodes: list[dict[str, Any]] = []
        for name in ("act", "observe", "update"):
            setattr(self.agent, name, self._timed(getattr(self.agent, name), f"{name}_s"))
        for name in ("step", "reset"):  # the env's whole calls, observations included
            setattr(self.act_env, name, self._timed(getattr(self.act_env, name), "env_call_s"))

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The real loop, with its logger swapped for the timed one for the duration of the run."""
        TimedRunLogger.seconds = {"log_episode_s": 0.0, "log_best_policy_s": 0.0}
        TimedRunLogger.improvements = 0
        original, search_module.RunLogger = search_module.RunLogger, TimedRunLogger
        try:
            return super().run(*args, **kwargs)
        finally:
            search_module.RunLogger = original

    def _save_checkpoint(self) -> None:
        t0 = time.perf_counter()
        super()._save_checkpoint()
        self.seconds["checkpoint_s"] += time.perf_counter() - t0

    def _timed(self, fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0

        return wrapper

    def _play_episode(self) -> dict[str, Any]:
        before = dict(self.seconds)
        t0, c0 = time.perf_counter(), time.process_time()
        record = super()._play_episode()
        wall = time.perf_counter() - t0
        row = {"episode": record["episode"], "wall_s": wall, "cpu_s": time.process_time() - c0,
               "cached": record.get("cached", False),
               "act_s": self.seconds["act_s"] - before["act_s"],
               "observe_s": self.seconds["observe_s"] - before["observe_s"],
               "env_call_s": self.seconds["env_call_s"] - before["env_call_s"]}
        timing = record.get("timing") or {}
        row.update({k: timing.get(k, 0.0) for k in ENV_PARTS})
        self.episodes.append(row)
        return record


def experiment(shared: Path, env: EnvConfig, episodes: int, warmup: int, seed: int):
    cfg = load_config({
        "model": {"name": "cifar10_resnet56", "weights": str(shared / "models/cifar10_resnet56.pth")},
        "data": {"name": "cifar10_subset", "root": str(shared / "data"), "val_size": 1000},
    })
    return replace(cfg, env=env, search=SearchConfig(agent="ddpg", episodes=episodes, seed=seed, checkpoint_every=10),
                   ddpg=DDPGConfig(warmup_episodes=warmup))


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    env_cfg = EnvConfig(budget=0.5, val_images=args.val_images, eval_batch_size=args.eval_batch_size,
                        bn_recalib_batches=args.recalib_batches, bn_recalib_batch_size=128, latency_mode=mode,
                        latency=LatencyConfig(runtime=args.runtime, threads=1, batch_size=1, rounds=args.rounds))
    cfg = experiment(Path(args.shared), env_cfg, args.episodes, args.warmup, args.seed)
    t0 = time.perf_counter()
    env, _ = build(cfg, progress=False)
    build_s = time.perf_counter() - t0
    load_start = _load()
    with tempfile.TemporaryDirectory(prefix="bench_search_cost_") as tmp:
        search = TimedSearch(cfg, env, Path(tmp) / "run")
        t0, c0 = time.perf_counter(), time.process_time()
        result = search.run(progress=not args.quiet)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    eps = search.episodes
    parts = {k: sum(e[k] for e in eps) for k in ENV_PARTS}
    # env calls beyond its own timing: observations (features, cost model) and reset
    parts["observe_env_s"] = sum(e["env_call_s"] for e in eps) - sum(parts.values())
    parts.update({k: sum(e[k] for e in eps) for k in ("act_s", "observe_s")})
    parts["update_s"] = search.seconds["update_s"]
    parts["checkpoint_s"] = search.seconds["checkpoint_s"]
    parts.update(TimedRunLogger.seconds)
    parts["other_s"] = wall - sum(parts.values())  # best-schedule writes, progress bar, the loop itself
    learning = eps[args.warmup:]
    return {
        "latency_mode": mode,
        "episodes": result.episodes,
        "cached_episodes": sum(e["cached"] for e in eps),
        "val_images": len(env.data.val_images),
        "build_s": round(build_s, 2),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "episodes_per_s": round(result.episodes / wall, 4),
        "episodes_per_cpu_s": round(result.episodes / cpu, 4),
        "s_per_episode": round(wall / result.episodes, 3),
        "total_s": {k: round(v, 3) for k, v in parts.items()},
        "share": {k: round(v / wall, 4) for k, v in parts.items()},
        "median_episode_s": round(statistics.median(e["wall_s"] for e in eps), 3),
        "median_episode_cpu_s": round(statistics.median(e["cpu_s"] for e in eps), 3),
        "update_s_per_learning_episode": round(search.seconds["update_s"] / max(len(learning), 1), 4),
        "best_improvements": TimedRunLogger.improvements,
        "best_top1": result.best.get("top1"),
        "best_macs_ratio": result.best.get("macs_ratio"),
        "load_start": load_start,
        "load_end": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="DDPG warm-up episodes (random actions, no updates)")
    ap.add_argument("--modes", default="flops,measured")
    ap.add_argument("--runtime", default="torch", help="runtime of the measured mode")
    ap.add_argument("--rounds", type=int, default=20, help="alternating timing pairs per episode (measured mode)")
    ap.add_argument("--val-images", type=int, default=1000)
    ap.add_argument("--eval-batch-size", type=int, default=500)
    ap.add_argument("--recalib-batches", type=int, default=2, help="BN recalibration batches of 128 images")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for evaluation / pruning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default="docs/benchmarks/search_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    rows = []
    for mode in modes:
        row = run_mode(args, mode)
        rows.append(row)
        print(f"{mode}: {row['episodes_per_s']:.3f} episodes/s ({row['s_per_episode']:.2f} s each); share "
              + ", ".join(f"{k} {v:.1%}" for k, v in row["share"].items()), file=sys.stderr)
    result = {
        "command": "python scripts/bench_search_cost.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {**machine_info(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "gpu": torch.cuda.is_available(), "torch_threads": torch.get_num_threads()},
        "agent": "ddpg",
        "warmup_episodes": args.warmup,
        "modes": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
