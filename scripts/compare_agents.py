"""Compare search agents (ddpg, dqn, random, uniform) at the same budget and number of evaluated episodes.

For every method and seed: a search (`autocompress.search.Search`, no finalize), then the package's
`autocompress.pipeline.finalize` on the best schedule -- prune with the env's pruner, the config's BN
recalibration, test top-1 BEFORE fine-tuning, a short distilled fine-tune (`--ft-epochs` on the training
split), test top-1 after, MACs counted on the pruned network, and the measured speedup
(LatencyMeter.compare with the config's LatencyConfig). `uniform` is one deterministic episode.

Data, model and env are built ONCE (`pipeline.build`); each run gets a fresh Search, its own run folder
and an emptied env evaluation cache, and the agents seed their own generators, so runs stay independent.
Finished runs leave `compare_result.json` in their folder and are reused on a rerun (a killed run resumes
from its search checkpoint).

    python scripts/compare_agents.py --config experiments/resnet20-cifar10-dqn.yaml \
        --agents ddpg dqn random uniform --seeds 0 1 2 --episodes 60 --ft-epochs 1 \
        --json docs/benchmarks/amc_cifar10_resnet20.json --plot docs/benchmarks/amc_cifar10_resnet20_agents.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from plot_utils import best_so_far, mean_std, plot_best_curves, write_json_atomic

from autocompress.config import (
    AutocompressError,
    ConfigError,
    DDPGConfig,
    DQNConfig,
    ExperimentConfig,
    TrainConfig,
    from_dict,
    load_config,
    to_dict,
)
from autocompress.pipeline import build, finalize
from autocompress.search import CHECKPOINT, Search, machine_description

METHODS = ("ddpg", "dqn", "random", "uniform")
SHORT_RUN_EPISODES = 60
RESULT = "compare_result.json"


def short_run_agents(cfg: ExperimentConfig, episodes: int) -> tuple[DDPGConfig, DQNConfig]:
    """Agent settings for short searches: AMC's defaults (100 warm-up episodes, actor lr 1e-4) need ~300.

    Only for short runs: past ~100 episodes these settings drive DDPG's actor into saturation (every ratio at
    the maximum), so longer runs keep the config's (AMC's) learning rate and one update per step.
    """
    ddpg = replace(cfg.ddpg, warmup_episodes=max(1, round(0.2 * episodes)), lr_actor=1e-3,
                   updates_per_step=4, noise_decay=0.97)
    dqn = replace(cfg.dqn, warmup_episodes=max(1, round(0.2 * episodes)),
                  epsilon_decay_episodes=max(1, episodes // 2))
    return ddpg, dqn


def parse_overrides(base: Any, items: list[str], where: str) -> Any:
    """`key=value` strings (values parsed as YAML scalars) applied to a config dataclass, validated."""
    data = to_dict(base)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: {item!r} is not key=value (e.g. warmup_episodes=20).")
        data[key.strip()] = yaml.safe_load(value)
    return from_dict(type(base), data, where)


def resolve(args: argparse.Namespace) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The experiment config with the command line's settings, and those settings for the report."""
    cfg = load_config(args.config)
    env = cfg.env if args.val_images is None else replace(cfg.env, val_images=args.val_images)
    ddpg, dqn = cfg.ddpg, cfg.dqn
    short = args.episodes <= SHORT_RUN_EPISODES and not args.paper_agents
    if short:
        ddpg, dqn = short_run_agents(cfg, args.episodes)
    ddpg = parse_overrides(ddpg, args.ddpg_overrides, "--ddpg-overrides")
    dqn = parse_overrides(dqn, args.dqn_overrides, "--dqn-overrides")
    base_ft = cfg.finetune or TrainConfig(lr=0.01, distill=True)
    finetune = replace(base_ft, epochs=args.ft_epochs)
    out_root = Path(args.out_root or f"runs/compare-{cfg.name}")
    cfg = replace(cfg, env=env, ddpg=ddpg, dqn=dqn, finetune=finetune,
                  search=replace(cfg.search, episodes=args.episodes, out_dir=str(out_root)))
    settings = {
        "config": str(args.config),
        "model": cfg.model.name,
        "data": cfg.data.name,
        "val_images": cfg.env.val_images,
        "scope": cfg.env.prune.scope,
        "criterion": cfg.env.prune.criterion,
        "reward": cfg.env.reward,
        "bn_recalib_batches": cfg.env.bn_recalib_batches,
        "short_run_agent_settings": short,
        "ddpg": to_dict(ddpg),
        "dqn": to_dict(dqn),
        "finetune": to_dict(finetune),
        "seeds": list(args.seeds),
        "out_root": str(out_root),
    }
    return cfg, settings


def run_one(cfg: ExperimentConfig, env: Any, bundle: Any, method: str, seed: int, progress: bool) -> dict[str, Any]:
    """Search with one method and seed, then finalize (prune, test, fine-tune, test, time)."""
    run_dir = Path(cfg.search.out_dir) / f"{method}-seed{seed}"
    done = run_dir / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    run_cfg = replace(cfg, search=replace(cfg.search, agent=method, seed=seed, out_dir=str(run_dir)))
    env.evaluator.cache.clear()  # evaluations of another run must not count as this run's episodes
    start = time.perf_counter()
    search = Search(run_cfg, env, run_dir, resume=(run_dir / CHECKPOINT).is_file())
    result = search.run(progress=progress)
    search_s = time.perf_counter() - start
    distinct = len(env.evaluator.cache)
    torch.manual_seed(seed)  # fine-tuning's augmentation draws from the global generator
    start = time.perf_counter()
    summary = finalize(run_cfg, env, bundle, result, progress=progress)
    p, b = summary["pruned"], summary["baseline"]
    record = {
        "method": method,
        "seed": seed,
        "episodes": result.episodes,
        "distinct_policies_evaluated": distinct,
        "best_episode": result.best["episode"],
        "best_val_reward": result.best["reward"],
        "best_val_top1": result.best["top1"],
        "top1_before_ft": p["top1_before_finetune"],
        "top1_after_ft": p["top1"],
        "macs_ratio": p["macs"] / b["macs"],
        "params_ratio": p["params"] / b["params"],
        "speedup": p["speedup"],
        "speedup_spread": p["speedup_spread"],
        "baseline_test_top1": b["top1"],
        "search_s": search_s,
        "finalize_s": time.perf_counter() - start,
        "run_dir": str(run_dir),
    }
    write_json_atomic(done, record)
    return record


def report(records: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: lists over seeds (the keys issue #6 asks for) plus a few extras."""
    keys = ("top1_before_ft", "top1_after_ft", "macs_ratio", "speedup", "best_val_reward", "best_val_top1",
            "speedup_spread", "distinct_policies_evaluated", "search_s")
    out = {}
    for m in methods:
        rows = sorted((r for r in records if r["method"] == m), key=lambda r: r["seed"])
        out[m] = {k: [r[k] for r in rows] for k in keys}
        out[m]["seeds"] = [r["seed"] for r in rows]
        out[m]["episodes"] = [r["episodes"] for r in rows]
    return out


def table(per_method: dict[str, dict[str, Any]]) -> str:
    """Mean +- std over seeds, one row per method."""
    def ms(values: list[float], fmt: str) -> str:
        m, s = mean_std(values)
        return f"{m:{fmt}} +- {s:{fmt}}"

    head = f"{'method':<8}{'n':>3}{'best val top-1':>18}{'test top-1 before FT':>23}{'after FT':>18}" \
           f"{'MACs ratio':>20}{'speedup':>17}"
    lines = [head, "-" * len(head)]
    for m, d in per_method.items():
        lines.append(f"{m:<8}{len(d['seeds']):>3}{ms(d['best_val_top1'], '.2f'):>18}"
                     f"{ms(d['top1_before_ft'], '.2f'):>23}{ms(d['top1_after_ft'], '.2f'):>18}"
                     f"{ms(d['macs_ratio'], '.4f'):>20}{ms(d['speedup'], '.2f'):>17}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--agents", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--episodes", type=int, required=True, help="episodes per search (uniform always plays 1)")
    p.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs after pruning (0 = none)")
    p.add_argument("--val-images", type=int, default=None, help="override env.val_images (held-out images per episode)")
    p.add_argument("--ddpg-overrides", nargs="*", default=[], metavar="K=V")
    p.add_argument("--dqn-overrides", nargs="*", default=[], metavar="K=V")
    p.add_argument("--paper-agents", action="store_true",
                   help=f"keep the config's agent settings even for <= {SHORT_RUN_EPISODES} episodes")
    p.add_argument("--out-root", default=None, help="folder for the run folders (default runs/compare-<name>)")
    p.add_argument("--json", required=True, help="output JSON")
    p.add_argument("--plot", default=None, help="output PNG: best held-out top-1 vs episodes")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for search and fine-tuning")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        if args.episodes < 1:
            raise ConfigError("--episodes must be >= 1.")
        if args.ft_epochs < 0:
            raise ConfigError("--ft-epochs must be >= 0.")
        return _run(args)
    except AutocompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    cfg, settings = resolve(args)
    progress = not args.quiet
    env, bundle = build(cfg, progress=progress)
    settings.update(val_images=len(env.data.val_images), train_images=len(bundle.train), val_split_images=len(bundle.val), test_images=len(bundle.test),
                    prunable_groups=len(env.groups), baseline_val_top1=env.baseline_top1, threads=args.threads)
    print(f"{cfg.model.name}: {len(env.groups)} groups, baseline val top-1 {env.baseline_top1:.2f}% "
          f"on {len(env.data.val_images)} held-out images", file=sys.stderr)
    records = []
    for seed in args.seeds:  # seed-major: an interrupted job still has whole seeds to compare
        for method in args.agents:
            print(f"== {method} seed {seed}", file=sys.stderr)
            records.append(run_one(cfg, env, bundle, method, seed, progress))
    per_method = report(records, args.agents)
    out: dict[str, Any] = {
        "budget": cfg.env.budget,
        "budget_kind": cfg.env.budget_kind,
        "episodes": args.episodes,
        **per_method,
        "baseline_test_top1": records[0]["baseline_test_top1"] if records else None,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{machine_description()}; {platform.processor() or platform.machine()}",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": settings,
        "runs": records,
    }
    write_json_atomic(args.json, out)
    if args.plot:
        curves = {m: [best_so_far(Path(r["run_dir"]) / "history.jsonl") for r in records if r["method"] == m]
                  for m in args.agents}
        title = (f"{cfg.model.name}, {cfg.env.budget:.0%} {cfg.env.budget_kind}, "
                 f"{settings['val_images']} held-out images, seeds {' '.join(map(str, args.seeds))}")
        plot_best_curves(curves, args.plot, title)
    print(table(per_method))
    return 0


if __name__ == "__main__":
    sys.exit(main())
