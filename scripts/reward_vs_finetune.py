"""How well does a search's reward rank policies by their accuracy AFTER fine-tuning? (Kendall tau)

Draws diverse policies that meet the config's budget (uniform, global ranking, sensitivity + greedy, and
episodes of random actions through the env's budget wall), and for each one records the candidate rewards
  - `acc_pruned`: held-out top-1 right after pruning, no BatchNorm recalibration,
  - `acc_recalib`: the env's reward (BatchNorm recalibrated as configured),
  - `short_ft_<B>`: val top-1 after a short distilled fine-tune of B batches (the tournament's score),
and the target: top-1 after `--ft-epochs` epochs of the fine-tune recipe, on val and on the whole test split.
Kendall tau of each reward against the targets goes into the JSON. Each policy's figures are written to
`--work` as soon as they exist, so a killed run resumes where it stopped.

    python scripts/reward_vs_finetune.py --config experiments/resnet20-cifar10jpeg-macs50.yaml \
        --policies 20 --ft-epochs 2 --json docs/benchmarks/reward_vs_finetune_resnet20.json
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

import numpy as np
import torch
from plot_utils import run_script, write_json_atomic
from scipy.stats import kendalltau

from autocompress import allocate
from autocompress.config import ConfigError, TrainConfig, load_config
from autocompress.data import make_loader, take_tensors
from autocompress.measure.accuracy import evaluate, evaluate_tensors
from autocompress.pipeline import build
from autocompress.search import machine_description, uniform_action
from autocompress.tournament import short_finetune
from autocompress.train import train


def random_policy(env: Any, rng: np.random.Generator) -> dict[str, float]:
    """One episode of uniform random actions through the budget wall (what random search samples)."""
    env.reset(seed=int(rng.integers(1 << 31)))
    ratios: dict[str, float] = {}
    for _ in env.group_names:
        _, _, done, _, info = env.step(np.array([rng.random()], dtype=np.float32))
        ratios[info["group"]] = info["prune_ratio"]
        if done:
            break
    return ratios


def draw_policies(env: Any, count: int, seed: int, work: Path) -> list[tuple[str, dict[str, float]]]:
    """uniform, global, sensitivity, then random episodes, all distinct in kept channels. A sensitivity policy
    already measured in `work` is read back rather than analysed again (the random draws do not depend on it)."""
    done = {r["kind"]: r["schedule"] for r in map(json.loads, (p.read_text() for p in work.glob("policy*.json")))}
    policies = [("uniform", dict.fromkeys(env.group_names, env.prune_ratio_of(uniform_action(env)))),
                ("global", allocate.global_ranking_ratios(env))]
    if "sensitivity" in done:
        policies.append(("sensitivity", done["sensitivity"]))
    else:
        levels = allocate.sensitivity_levels(env, 300)
        curves = allocate.sensitivity_curves(env, levels)
        policies.append(("sensitivity", allocate.sensitivity_ratios(env, levels, curves)))
    return add_random_policies(env, policies, count, seed)


def add_random_policies(env: Any, policies: list[tuple[str, dict[str, float]]], count: int,
                        seed: int) -> list[tuple[str, dict[str, float]]]:
    """`policies` topped up to `count` with random episodes, each distinct in kept channels from all before."""
    rng = np.random.default_rng(seed)
    seen = {tuple(env.pruner.kept_channels(r).values()) for _, r in policies}
    while len(policies) < count:
        ratios = random_policy(env, rng)
        key = tuple(env.pruner.kept_channels(ratios).values())
        if key not in seen:
            seen.add(key)
            policies.append((f"random{len(policies)}", ratios))
    return policies


def measure(env: Any, bundle: Any, ratios: dict[str, float], args: argparse.Namespace,
            val: tuple[torch.Tensor, torch.Tensor], finetune: TrainConfig) -> dict[str, Any]:
    """Every candidate reward and both targets of one policy."""
    rec: dict[str, Any] = {"schedule": ratios}
    plain = env.pruner.prune(ratios)
    rec["acc_pruned"] = evaluate_tensors(plain, env.data.val_images, env.data.val_labels).top1
    _, info = env.evaluator.evaluate(ratios)
    rec["acc_recalib"], rec["macs_ratio"] = info["top1"], info["macs_ratio"]
    for b in args.short_batches:
        t = time.perf_counter()
        model = short_finetune(env.evaluator.compress(ratios), bundle, b, finetune.lr, env.model, args.seed)
        rec[f"short_ft_{b}"] = evaluate_tensors(model, *val).top1
        rec[f"short_ft_{b}_s"] = time.perf_counter() - t
    model = env.evaluator.compress(ratios)
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    train(model, bundle, finetune, teacher=env.model, progress=False)
    rec["ft_s"] = time.perf_counter() - t
    rec["ft_val_top1"] = evaluate_tensors(model.eval(), *val).top1
    rec["ft_test_top1"] = evaluate(model, make_loader(bundle.test, 500)).top1
    return rec


def taus(records: list[dict[str, Any]], predictors: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for p in predictors:
        out[p] = {}
        for target in ("ft_test_top1", "ft_val_top1"):
            tau, pval = kendalltau([r[p] for r in records], [r[target] for r in records])
            out[p][target] = float(tau)
            out[p][f"{target}_p"] = float(pval)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--policies", type=int, default=20)
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--short-batches", type=int, nargs="+", default=[50, 200])
    p.add_argument("--ft-max-batches", type=int, default=None, help="cap batches per fine-tune epoch (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/reward-vs-finetune")
    p.add_argument("--reverse", action="store_true",
                   help="measure the policies last to first (a second process beside a first one)")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    if args.policies < 3 or args.ft_epochs < 1:
        raise ConfigError("--policies must be >= 3 and --ft-epochs >= 1.")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    env, bundle = build(cfg, progress=True)
    finetune = replace(cfg.finetune or TrainConfig(lr=0.01, distill=True), epochs=args.ft_epochs, distill=True,
                       max_batches=args.ft_max_batches)
    val = take_tensors(bundle.val, None, seed=args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    records = []
    policies = list(enumerate(draw_policies(env, args.policies, args.seed, work)))
    for i, (kind, ratios) in policies[::-1] if args.reverse else policies:
        path = work / f"policy{i:02d}.json"
        if path.is_file():
            records.append(json.loads(path.read_text()))
            continue
        rec = {"index": i, "kind": kind, **measure(env, bundle, ratios, args, val, finetune)}
        write_json_atomic(path, rec)
        records.append(rec)
        print(f"[{i + 1}/{args.policies}] {kind}: pruned {rec['acc_pruned']:.2f} recalib {rec['acc_recalib']:.2f} "
              + " ".join(f"ft{b} {rec[f'short_ft_{b}']:.2f}" for b in args.short_batches)
              + f" -> after {args.ft_epochs} epochs val {rec['ft_val_top1']:.2f} test {rec['ft_test_top1']:.2f}",
              file=sys.stderr)
    records.sort(key=lambda r: r["index"])
    predictors = ["acc_pruned", "acc_recalib"] + [f"short_ft_{b}" for b in args.short_batches]
    result = {
        "kendall_tau": taus(records, predictors),
        "n_policies": len(records),
        "target": f"top-1 after {args.ft_epochs} epochs of distilled fine-tuning (lr {finetune.lr})",
        "val_images_short_ft": len(val[1]),
        "reward_val_images": len(env.data.val_images),
        "test_images": len(bundle.test),
        "config": args.config,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{machine_description()}; {platform.processor() or platform.machine()}",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "policies": records,
    }
    write_json_atomic(args.json, result)
    for name, t in result["kendall_tau"].items():
        print(f"{name:>14}: tau vs test-after-FT {t['ft_test_top1']:+.3f} (p {t['ft_test_top1_p']:.3g}), "
              f"vs val-after-FT {t['ft_val_top1']:+.3f}")


if __name__ == "__main__":
    run_script(main)
