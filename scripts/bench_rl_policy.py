"""Issue #17's RL-agent benchmark: compress the acting network of a Stable-Baselines3 agent end to end.

Per task (CartPole-v1 with PPO, Acrobot-v1 with DQN by default, Hopper-v5 with PPO when MuJoCo is installed:
`pip install -e ".[mujoco]"`; 2 x 256 MLP policies, or 2 x 64 with --hidden 64, 4 x 64 with --hidden 64 --depth 4;
a Box action space is scored and cloned as continuous):
1. train the agent (or load it from --work/<task>/<algo>/policy.pth) and take out its acting network;
2. uniform pruning to the MACs budget (`search.agent: uniform`) and a search (--agent, DDPG by default) at the
   same budget with measured latency, both run by the package's pipeline from --config: the reward's accuracy
   is the normalised mean return of the search's seeded episodes, the fine-tune is behaviour cloning from the
   unpruned policy (+ DAgger rounds as configured), the report plays test episodes the search never saw;
3. rows of the unpruned, uniform and searched policies before and after fine-tuning go to --out:
   {"rows": [{task, method, after_ft, macs_ratio, speedup, episodes, return_mean, return_std}], "details": ...}.

Resumable: each method's finished rows are written to --work/<task>/<algo>/rows/<method>.json and skipped on a
rerun; an unfinished search resumes from its checkpoint.

    python scripts/bench_rl_policy.py                       # the full benchmark (see --help for the sizes)
    python scripts/bench_rl_policy.py --timesteps 3000 --search-episodes 4 --test-episodes 5 \\
        --bc-observations 2000 --ft-epochs 1 --work /tmp/rl --out /tmp/rl/rl_policy.json   # a smoke test
    python scripts/bench_rl_policy.py --tasks Hopper-v5:ppo --hidden 64 --work runs/rl_policy_h64 \
        --out docs/benchmarks/rl_policy_h64.json            # SB3's default PPO width: less over-parameterised
    python scripts/bench_rl_policy.py ... --reward-clone-batches 400 --reward-observations 20000
                                                            # the search scores candidates after a short clone
    python scripts/bench_rl_policy.py ... --reward-measure imitation   # ... by how well the clone imitates the
                                                            # teacher on held-out states instead of its return
    python scripts/bench_rl_policy.py ... --refine 2        # the 2 best finalists first spend unused MACs
    python scripts/bench_rl_policy.py ... --tournament-batches 1600 --tournament-measure return
                                                            # finalists judged by their return after long clones
    python scripts/bench_rl_policy.py ... --tournament-clone full --task-episodes 100 --clone-restarts 3
                                                            # ... after the final fine-tune itself, on 100 search
                                                            # episodes, keeping the best of 3 clones
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from plot_utils import cpu_model, write_json_atomic

from autocompress import sb3_policy
from autocompress.config import AutocompressError, ExperimentConfig, RefineConfig, RLTaskConfig, load_config
from autocompress.measure.rollouts import make_env
from autocompress.models.mlp_policy import DEPTHS, WIDTHS
from autocompress.pipeline import run_experiment

REPO = Path(__file__).resolve().parent.parent
TIMESTEPS = {("ppo", "CartPole-v1"): 100_000, ("dqn", "CartPole-v1"): 50_000, ("dqn", "Acrobot-v1"): 100_000,
             ("ppo", "Hopper-v5"): 300_000}
"""Training steps per (algorithm, task): RL Baselines3 Zoo's budgets for the classic-control presets; Hopper gets
300k steps of SB3's default PPO (the zoo's 1M with observation normalisation would take ~30 min here, and the
extracted network could not carry the normaliser)."""
MUJOCO_TASK = "Hopper-v5:ppo"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "experiments/ppo-cartpole-policy.yaml"),
                   help="base experiment (env.task, budget, latency, search, fine-tune); tasks override env_id")
    p.add_argument("--tasks", nargs="+", default=None,
                   help=f"env_id:algo pairs (default: CartPole-v1:ppo Acrobot-v1:dqn, and {MUJOCO_TASK} if MuJoCo "
                        "is installed)")
    p.add_argument("--timesteps", type=int, default=None, help="agent training steps (default: TIMESTEPS)")
    p.add_argument("--hidden", type=int, default=sb3_policy.ZOO_HIDDEN[0], choices=WIDTHS,
                   help="the agents' policy width w (net_arch [w, w]); 64 is SB3's default for PPO")
    p.add_argument("--depth", type=int, default=2, choices=DEPTHS,
                   help="hidden layers d of the agents' policy (net_arch [w] * d): deeper gives the search more "
                        "allocations to choose between")
    p.add_argument("--agent", default=None, help="search agent (default: the config's)")
    p.add_argument("--search-episodes", type=int, default=None, help="default: the config's")
    p.add_argument("--test-episodes", type=int, default=None, help="report episodes (default: the config's)")
    p.add_argument("--task-episodes", type=int, default=None, metavar="N",
                   help="the search's seeded task episodes (env.task.episodes), which a return reward and "
                        "--tournament-measure return score on (default: the config's)")
    p.add_argument("--bc-observations", type=int, default=None, help="default: the config's")
    p.add_argument("--ft-epochs", type=int, default=None, help="behaviour-cloning epochs (default: the config's)")
    p.add_argument("--budget", type=float, default=None, help="MACs budget (default: the config's)")
    p.add_argument("--reward-clone-batches", type=int, default=None,
                   help="score every search candidate after this many behaviour-cloning steps on a copy "
                        "(env.task.reward_clone_batches; default: the config's, 0 = as pruned)")
    p.add_argument("--reward-observations", type=int, default=None,
                   help="teacher observations the reward's cloning learns from (env.val_images; default: the config's)")
    p.add_argument("--reward-measure", choices=("return", "imitation"), default=None,
                   help="what the reward scores a candidate by (env.task.reward_measure; default: the config's)")
    add_tournament_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(REPO / "runs/rl_policy"), help="agents, runs and finished rows")
    p.add_argument("--out", default=str(REPO / "docs/benchmarks/rl_policy.json"))
    args = p.parse_args(argv)
    for flag, value, low in (("--reward-clone-batches", args.reward_clone_batches, 0),
                             ("--reward-observations", args.reward_observations, 1), ("--refine", args.refine, 1),
                             ("--tournament-batches", args.tournament_batches, 1),
                             ("--task-episodes", args.task_episodes, 1),
                             ("--clone-restarts", args.clone_restarts, 1),
                             ("--finalists", args.finalists, 1)):
        if value is not None and value < low:
            p.error(f"{flag} {value}: give a whole number >= {low}.")
    if args.tasks is None:
        args.tasks = ["CartPole-v1:ppo", "Acrobot-v1:dqn"] + ([MUJOCO_TASK] if mujoco_installed() else [])
    return args


def add_tournament_flags(p: argparse.ArgumentParser) -> None:
    """Flags of how the tournament picks among the search's leaders and how the final fine-tune clones."""
    p.add_argument("--tournament-measure", choices=("reward", "return"), default=None,
                   help="what the tournament judges cloned finalists by (env.task.tournament_measure; default: the "
                        "config's)")
    p.add_argument("--tournament-clone", choices=("short", "full"), default=None,
                   help="clone the tournament's finalists briefly or with the final fine-tune itself "
                        "(env.task.tournament_clone; default: the config's)")
    p.add_argument("--refine", type=int, default=None, metavar="N",
                   help="walk the tournament's N best finalists back toward the budget before judging them "
                        "(tournament.refine.finalists: spends the MACs a policy left unused; default: the config's)")
    p.add_argument("--tournament-batches", type=int, default=None, metavar="B",
                   help="cloning steps of the tournament's first round (doubled each round; tournament.ft_batches; "
                        "default: the config's)")
    p.add_argument("--finalists", type=int, default=None, metavar="K",
                   help="distinct leading policies the tournament clones and judges (tournament.finalists; "
                        "default: the config's)")
    p.add_argument("--clone-restarts", type=int, default=None, metavar="K",
                   help="the final fine-tune (and the full-clone tournament) clones K times and keeps the clone with "
                        "the best return on the search's episodes (env.task.clone_restarts; default: the config's)")
    p.add_argument("--tournament-uniform", action="store_true",
                   help="the uniform allocation enters the tournament as one more finalist, so the search never "
                        "returns a policy its judge rates below uniform (tournament.include_uniform)")


def mujoco_installed() -> bool:
    """Whether gymnasium's MuJoCo tasks can be made here (the `mujoco` extra)."""
    return importlib.util.find_spec("mujoco") is not None


def action_kind(task: RLTaskConfig) -> str:
    """The task's `action` kind: continuous for a Box action space (the outputs are the action), else discrete."""
    env = make_env(task)  # the scorer's own constructor: an unknown id or a missing extra is a one-line error
    try:
        return "continuous" if isinstance(env.action_space, gym.spaces.Box) else "discrete"
    finally:
        env.close()


def trained_policy(algo: str, env_id: str, timesteps: int, seed: int, folder: Path,
                   hidden: int = sb3_policy.ZOO_HIDDEN[0], depth: int = 2) -> dict[str, Any]:
    """The agent's acting network (`depth` x `hidden`) as a state dict in `folder` (trained once, then read back)."""
    info_path = folder / "policy.json"
    net_arch = [hidden] * depth
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        old = (info["timesteps"], info["seed"], info["net_arch"])
        if old != (timesteps, seed, net_arch):
            sys.exit(f"{folder} holds an agent trained for {old[0]} steps with seed {old[1]} and net_arch {old[2]}, "
                     f"not {timesteps} / {seed} / {net_arch}; delete the folder or give another --work.")
        return info
    start = time.perf_counter()
    agent = sb3_policy.train_agent(algo, env_id, timesteps, seed=seed, path=folder / "agent.zip", hidden=net_arch)
    name, weights = sb3_policy.save_policy(agent, folder / "policy.pth")
    info = {"algo": algo, "env_id": env_id, "timesteps": timesteps, "seed": seed, "zoo_model": name,
            "weights": str(weights), "train_s": time.perf_counter() - start,
            "hyperparameters": sb3_policy.PRESETS.get((algo, env_id), "SB3 defaults"), "net_arch": net_arch}
    write_json_atomic(info_path, info)
    return info


def method_config(base: ExperimentConfig, args: argparse.Namespace, policy: dict[str, Any], method: str,
                  run_dir: Path) -> ExperimentConfig:
    """`base` for one task and method: the agent's weights, the task, the budget and the sizes asked for."""
    task = replace(base.env.task, env_id=policy["env_id"])
    task = replace(task, action=action_kind(task))
    if args.test_episodes is not None:
        task = replace(task, test_episodes=args.test_episodes)
    if args.task_episodes is not None:
        task = replace(task, episodes=args.task_episodes)
    if args.clone_restarts is not None:
        task = replace(task, clone_restarts=args.clone_restarts)
    if args.bc_observations is not None:
        task = replace(task, bc_observations=args.bc_observations)
    if args.reward_clone_batches is not None:
        task = replace(task, reward_clone_batches=args.reward_clone_batches)
    if args.reward_measure is not None:
        task = replace(task, reward_measure=args.reward_measure)
    if args.tournament_measure is not None:
        task = replace(task, tournament_measure=args.tournament_measure)
    if args.tournament_clone is not None:
        task = replace(task, tournament_clone=args.tournament_clone)
    env = replace(base.env, task=task, budget=args.budget or base.env.budget,
                  val_images=args.reward_observations or base.env.val_images)
    agent = "uniform" if method == "uniform" else (args.agent or base.search.agent)
    search = replace(base.search, agent=agent, seed=args.seed, out_dir=str(run_dir),
                     episodes=args.search_episodes or base.search.episodes)
    ddpg = replace(base.ddpg, warmup_episodes=min(base.ddpg.warmup_episodes, search.episodes // 4))
    dqn = replace(base.dqn, warmup_episodes=min(base.dqn.warmup_episodes, search.episodes // 4))
    finetune = base.finetune if args.ft_epochs is None else replace(base.finetune, epochs=args.ft_epochs)
    tournament = base.tournament
    if args.refine is not None and tournament is not None:
        tournament = replace(tournament, refine=replace(tournament.refine or RefineConfig(), finalists=args.refine))
    if args.tournament_batches is not None and tournament is not None:
        tournament = replace(tournament, ft_batches=args.tournament_batches)
    if args.finalists is not None and tournament is not None:
        tournament = replace(tournament, finalists=args.finalists)
    if args.tournament_uniform and tournament is not None:
        tournament = replace(tournament, include_uniform=True)
    return replace(base, name=f"{policy['env_id']}-{policy['algo']}-{method}",
                   model=replace(base.model, name=policy["zoo_model"], weights=policy["weights"]),
                   env=env, search=search, ddpg=ddpg, dqn=dqn, finetune=finetune, tournament=tournament)


def unpruned_row(task: str, baseline: dict[str, Any], episodes: int) -> dict[str, Any]:
    """The unpruned policy's row (scored on the same test episodes by every method's report)."""
    return {"task": task, "method": "unpruned", "after_ft": False, "macs_ratio": 1.0, "speedup": 1.0,
            "episodes": episodes, "return_mean": baseline["return_mean"], "return_std": baseline["return_std"]}


def rows_of(task: str, method: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A pruned policy's rows, before and after fine-tuning."""
    b, p, n = summary["baseline"], summary["pruned"], summary["task"]["test_episodes"]
    return [{"task": task, "method": method, "after_ft": after_ft, "macs_ratio": p["macs"] / b["macs"],
             "speedup": p["speedup"], "episodes": n, "return_mean": p[f"return_mean{suffix}"],
             "return_std": p[f"return_std{suffix}"]}
            for after_ft, suffix in ((False, "_before_finetune"), (True, ""))]


def method_cell(base: ExperimentConfig, args: argparse.Namespace, policy: dict[str, Any], method: str,
                folder: Path) -> dict[str, Any]:
    """A method's rows and details, run through the pipeline once and read back from disk afterwards."""
    cell_path = folder / "rows" / f"{method}.json"
    if cell_path.is_file():
        return json.loads(cell_path.read_text())
    run_dir = folder / method
    cfg = method_config(base, args, policy, method, run_dir)
    start = time.perf_counter()
    summary = run_experiment(cfg, resume=(run_dir / "config.yaml").is_file(), progress=True)
    cell = {"rows": rows_of(policy["env_id"], method, summary),
            "details": {"run_dir": str(run_dir), "seconds": time.perf_counter() - start,
                        "search_agent": cfg.search.agent, "search_episodes": cfg.search.episodes,
                        "reward": {"measure": cfg.env.task.reward_measure,
                                   "clone_batches": cfg.env.task.reward_clone_batches,
                                   "observations": cfg.env.val_images},
                        "refine": cfg.tournament.refine.finalists if cfg.tournament and cfg.tournament.refine else 0,
                        "tournament_batches": cfg.tournament.ft_batches if cfg.tournament else 0,
                        "tournament_measure": cfg.env.task.tournament_measure,
                        "task_episodes": cfg.env.task.episodes, "clone_restarts": cfg.env.task.clone_restarts,
                        "tournament_uniform": bool(cfg.tournament and cfg.tournament.include_uniform),
                        "budget": {"kind": cfg.env.budget_kind, "fraction": cfg.env.budget},
                        "best": summary.get("best"), "baseline": summary["baseline"], "pruned": summary["pruned"],
                        "finetune": {**summary["finetune"], "epochs": cfg.finetune.epochs if cfg.finetune else 0},
                        "latency": summary["latency"]}}
    write_json_atomic(cell_path, cell)
    return cell


def task_rows(base: ExperimentConfig, args: argparse.Namespace, spec: str) -> tuple[list[dict], dict[str, Any]]:
    """Rows of one env_id:algo pair: unpruned, uniform and search, before and after fine-tuning."""
    env_id, _, algo = spec.partition(":")
    algo = algo or "ppo"
    folder = Path(args.work) / env_id / algo
    steps = args.timesteps or TIMESTEPS.get((algo, env_id), 100_000)
    policy = trained_policy(algo, env_id, steps, args.seed, folder, args.hidden, args.depth)
    uniform = method_cell(base, args, policy, "uniform", folder)
    search = method_cell(base, args, policy, "search", folder)
    unpruned = unpruned_row(env_id, uniform["details"]["baseline"], uniform["rows"][0]["episodes"])
    details = {"agent": policy, "uniform": uniform["details"], "search": search["details"]}
    return [unpruned, *uniform["rows"], *search["rows"]], details


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    base = load_config(args.config)
    try:  # every task id and algorithm checked before any agent trains: a typo is a one-line error, not a traceback
        for spec in args.tasks:
            env_id, _, algo = spec.partition(":")
            if (algo or "ppo") not in sb3_policy.ALGOS:
                raise sb3_policy.SB3Error(f"--tasks {spec}: unknown algorithm; choose one of {', '.join(sb3_policy.ALGOS)}.")
            action_kind(replace(base.env.task, env_id=env_id))
    except AutocompressError as exc:
        sys.exit(f"error: {exc}")
    rows, details = [], {}
    for spec in args.tasks:
        task_rows_, task_details = task_rows(base, args, spec)
        rows += task_rows_
        details[spec] = task_details
    details["machine"] = {"cpu": cpu_model(), "torch": torch.__version__, "config": args.config}
    write_json_atomic(args.out, {"rows": rows, "details": details})
    for r in rows:
        print(f"{r['task']:<14}{r['method']:<10}{'after ft' if r['after_ft'] else 'pruned':<10}"
              f"MACs {r['macs_ratio']:.3f}  speedup {r['speedup']:.2f}x  return {r['return_mean']:.1f} ± "
              f"{r['return_std']:.1f} ({r['episodes']} episodes)", file=sys.stderr)


if __name__ == "__main__":
    main()
