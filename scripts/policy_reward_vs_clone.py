"""Which reward ranks pruned RL policies by their return AFTER behaviour cloning? (Kendall tau, issue #17)

The policy counterpart of scripts/reward_vs_finetune.py. From a policy experiment's config (a run's
config.yaml, e.g. one written by scripts/bench_rl_policy.py) it draws diverse policies that meet the budget
(uniform, then episodes of random actions through the env's budget wall) and records for each
  - `fit_<N>`: imitation fit (R^2 of the clipped actions, or agreement above chance, on held-out teacher states)
    after N behaviour-cloning steps of a copy (N = 0: as pruned),
  - `return_<N>`: normalised mean return of the search's episodes after N cloning steps,
and the target: mean return over `--test-episodes` test episodes (seeds the search never plays) after the full
fine-tune recipe of the config (behaviour cloning + DAgger rounds), with its imitation fit. Kendall tau of each
candidate reward against the test return goes into the JSON. Every policy's figures are written to `--work`
as soon as they exist, so a killed run resumes where it stopped.

    python scripts/policy_reward_vs_clone.py \\
        --config runs/rl_policy_4x64_macs005_imit/Hopper-v5/ppo/search/config.yaml --policies 16 \\
        --clone-batches 0 400 1600 --test-episodes 100 --work runs/policy-reward-vs-clone-macs005 \\
        --json docs/benchmarks/policy_reward_vs_clone_macs005.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from plot_utils import cpu_model, run_script, write_json_atomic
from reward_vs_finetune import add_random_policies
from scipy.stats import kendalltau

from autocompress.config import ConfigError, load_config
from autocompress.envs.factory import build_env_and_data
from autocompress.measure.scorers import mean_std
from autocompress.rl_finetune import final_clone, short_clone
from autocompress.search import uniform_action


def draw_policies(env: Any, count: int, seed: int) -> list[tuple[str, dict[str, float]]]:
    """uniform, then random episodes through the budget wall, all distinct in kept units."""
    uniform = ("uniform", dict.fromkeys(env.group_names, env.prune_ratio_of(uniform_action(env))))
    return add_random_policies(env, [uniform], count, seed)


def measure(env: Any, bundle: Any, cfg: Any, ratios: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """Every candidate reward and the target of one policy."""
    scorer, task = env.evaluator.scorer, bundle.task
    macs = env.evaluator.cost_model.macs(env.pruner.kept_channels(ratios))  # the evaluator's count, untimed
    rec: dict[str, Any] = {"schedule": ratios, "macs_ratio": macs / env.base_macs}
    for n in args.clone_batches:
        model = env.evaluator.compress(ratios)
        if n:
            model = short_clone(model, env.model, bundle, n, task.reward_clone_lr, task.seed)
        rec[f"fit_{n}"] = scorer.score_as_is(model).value
        rec[f"return_{n}"] = scorer.normalise(mean_std(scorer.returns(model))[0])
    start = time.perf_counter()
    model = final_clone(env, bundle, ratios, cfg.finetune, cfg.search.seed).model
    rec["ft_s"] = time.perf_counter() - start
    rec["ft_fit"] = scorer.score_as_is(model).value
    rec["ft_test_return"], rec["ft_test_return_std"] = mean_std(
        scorer.returns(model, task.test_seed, args.test_episodes))
    return rec


def taus(records: list[dict[str, Any]], predictors: list[str]) -> dict[str, dict[str, float | None]]:
    """Kendall tau of each predictor against the test return; None where a predictor is the same for every policy
    (e.g. every fit floored at 0 as pruned), which ranks nothing."""
    out: dict[str, dict[str, float | None]] = {}
    for p in predictors:
        values = [r[p] for r in records]
        if len(set(values)) == 1:
            out[p] = {"tau": None, "p": None}
            continue
        tau, pval = kendalltau(values, [r["ft_test_return"] for r in records])
        out[p] = {"tau": float(tau), "p": float(pval)}
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a policy experiment (env.scorer episodic_return, "
                   "env.task.reward_measure imitation so that the fit has held-out states)")
    p.add_argument("--policies", type=int, default=16)
    p.add_argument("--clone-batches", type=int, nargs="+", default=[0, 400, 1600])
    p.add_argument("--test-episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/policy-reward-vs-clone")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    if args.policies < 3 or args.test_episodes < 1 or min(args.clone_batches) < 0:
        raise ConfigError("--policies must be >= 3, --test-episodes >= 1 and --clone-batches >= 0.")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    if cfg.env.task is None or cfg.env.task.reward_measure != "imitation" or cfg.finetune is None:
        raise ConfigError(f"{args.config}: needs env.task with reward_measure: imitation and a finetune: section.")
    cfg = replace(cfg, env=replace(cfg.env, task=replace(cfg.env.task, reward_clone_batches=0)))  # clones here
    env, bundle = build_env_and_data(cfg, progress=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (kind, ratios) in enumerate(draw_policies(env, args.policies, args.seed)):
        path = work / f"policy{i:02d}.json"
        if not path.is_file():
            write_json_atomic(path, {"index": i, "kind": kind, **measure(env, bundle, cfg, ratios, args)})
        rec = json.loads(path.read_text())
        records.append(rec)
        print(f"[{i + 1}/{args.policies}] {kind}: MACs {rec['macs_ratio']:.3f} "
              + " ".join(f"fit{n} {rec[f'fit_{n}']:.2f}" for n in args.clone_batches)
              + f" -> after FT fit {rec['ft_fit']:.3f}, test return {rec['ft_test_return']:.1f}", file=sys.stderr)
    predictors = [f"{k}_{n}" for n in args.clone_batches for k in ("fit", "return")] + ["ft_fit"]
    result = {
        "kendall_tau": taus(records, predictors), "n_policies": len(records),
        "target": f"mean return over {args.test_episodes} test episodes after the config's behaviour cloning "
                  f"({cfg.finetune.epochs} epochs + {cfg.env.task.dagger_rounds} DAgger rounds)",
        "config": args.config, "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "cpu": cpu_model(), "torch": torch.__version__,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "policies": records,
    }
    write_json_atomic(args.json, result)
    for name, t in result["kendall_tau"].items():
        said = "constant, ranks nothing" if t["tau"] is None else f"{t['tau']:+.3f} (p {t['p']:.3g})"
        print(f"{name:>12}: tau vs test return after FT {said}")


if __name__ == "__main__":
    run_script(main)
