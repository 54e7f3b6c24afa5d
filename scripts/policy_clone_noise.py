"""Does a pruned policy's lead survive another behaviour-cloning seed? (issue #17)

`scripts/bench_rl_policy.py` clones each method's pruned policy once (seed = the search seed) and compares
methods by Welch's test over test episodes. That p-value covers episode noise only: a second cloning run of the
same pruned network (another mini-batch order) can land elsewhere. This re-clones the search's and uniform's
pruned networks of one bench_rl_policy task folder with the experiment's own recipe (epochs, DAgger rounds)
under several cloning seeds, scores each on the same test episodes, and compares the methods by the spread
over cloning seeds (Welch over the per-seed means), the way #14 compares fine-tune seeds. Each (method, seed)
cell is written to `--work` as soon as it exists, so a killed run resumes.

    python scripts/policy_clone_noise.py runs/rl_policy_4x64_macs01_s1_f8/Hopper-v5/ppo --clone-seeds 0 1 2 3 4 \\
        --test-episodes 100 --work runs/clone-noise-macs01-s1 --json docs/benchmarks/policy_clone_noise_macs01_s1.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from plot_utils import cpu_model, mean_std, run_script, write_json_atomic
from scipy.stats import ttest_ind

from autocompress.config import ConfigError, load_config
from autocompress.envs.factory import build_env_and_data
from autocompress.measure.scorers import mean_std as episode_mean_std
from autocompress.pruning import Schedule
from autocompress.rl_finetune import final_clone

METHODS = ("search", "uniform")
"""bench_rl_policy.py's method folders inside a task folder."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task_dir", type=Path, help="a bench_rl_policy task folder (holds search/ and uniform/)")
    p.add_argument("--clone-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--test-episodes", type=int, default=100)
    p.add_argument("--work", type=Path, required=True, help="finished cells (resumable)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    if len(set(args.clone_seeds)) < 2 or args.test_episodes < 1:
        raise ConfigError("give >= 2 distinct --clone-seeds and --test-episodes >= 1.")
    for m in METHODS:
        if not (args.task_dir / m / "best_schedule.json").is_file():
            raise ConfigError(f"{args.task_dir / m} has no best_schedule.json; give a finished bench_rl_policy "
                              "task folder (e.g. runs/rl_policy/Hopper-v5/ppo).")
    return args


def clone_and_score(env: Any, bundle: Any, cfg: Any, ratios: dict[str, float], seed: int,
                    episodes: int) -> dict[str, Any]:
    """The pipeline's fine-tune of one pruned network under cloning seed `seed`, then its test return."""
    start = time.perf_counter()
    model = final_clone(env, bundle, ratios, cfg.finetune, seed).model
    mean, std = episode_mean_std(env.evaluator.scorer.returns(model, bundle.task.test_seed, episodes))
    return {"return_mean": mean, "return_std": std, "ft_s": time.perf_counter() - start}


def compare(cells: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per method the mean and spread over cloning seeds; search - uniform with Welch's test over those means."""
    out: dict[str, Any] = {}
    for m, rows in cells.items():
        means = [r["return_mean"] for r in rows]
        out[m] = {"mean_over_seeds": mean_std(means)[0], "sd_over_seeds": mean_std(means)[1], "per_seed": means}
    a, b = out["search"]["per_seed"], out["uniform"]["per_seed"]
    test = ttest_ind(a, b, equal_var=False)
    out["search_minus_uniform"] = {"diff": out["search"]["mean_over_seeds"] - out["uniform"]["mean_over_seeds"],
                                   "welch_p_over_seeds": float(test.pvalue),
                                   "search_ahead_in_seeds": sum(x > y for x, y in zip(a, b, strict=True))}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.task_dir / "search" / "config.yaml")
    if cfg.env.task is None or cfg.finetune is None:
        raise ConfigError(f"{args.task_dir}: its search config has no env.task or finetune: section.")
    env, bundle = build_env_and_data(cfg, progress=True)
    args.work.mkdir(parents=True, exist_ok=True)
    cells: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for seed in args.clone_seeds:
        for m in METHODS:
            path = args.work / f"{m}-seed{seed}.json"
            if not path.is_file():
                ratios = Schedule.load(args.task_dir / m / "best_schedule.json").prune_ratios()
                write_json_atomic(path, {"method": m, "clone_seed": seed,
                                         **clone_and_score(env, bundle, cfg, ratios, seed, args.test_episodes)})
            cell = json.loads(path.read_text())
            cells[m].append(cell)
            print(f"{m:>8} clone seed {seed}: return {cell['return_mean']:.1f} ± {cell['return_std']:.1f} "
                  f"over {args.test_episodes} test episodes", file=sys.stderr)
    result = {"task_dir": str(args.task_dir), "clone_seeds": args.clone_seeds, "test_episodes": args.test_episodes,
              "recipe": f"{cfg.finetune.epochs} epochs + {bundle.task.dagger_rounds} DAgger rounds",
              "comparison": compare(cells), "cells": cells, "cpu": cpu_model(), "torch": torch.__version__,
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_json_atomic(args.json, result)
    c = result["comparison"]
    print(f"search {c['search']['mean_over_seeds']:.1f} ± {c['search']['sd_over_seeds']:.1f}, uniform "
          f"{c['uniform']['mean_over_seeds']:.1f} ± {c['uniform']['sd_over_seeds']:.1f} over "
          f"{len(args.clone_seeds)} cloning seeds: search - uniform {c['search_minus_uniform']['diff']:+.1f}, "
          f"Welch p {c['search_minus_uniform']['welch_p_over_seeds']:.3g}, search ahead in "
          f"{c['search_minus_uniform']['search_ahead_in_seeds']} of {len(args.clone_seeds)}")
    return result


if __name__ == "__main__":
    run_script(main)
