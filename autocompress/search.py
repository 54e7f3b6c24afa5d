"""The search loop: an agent plays NetCompressEnv episodes; the best policy is kept and exported.

A run folder holds the resolved config, TensorBoard events, `history.jsonl`, `best_schedule.json`
(rewritten whenever the best improves) and `checkpoint.pt` (agent with replay buffer and RNG
states, episode counter, best so far, evaluation cache), written atomically every
`search.checkpoint_every` episodes. `resume=True` continues from the checkpoint: in `flops` and
`lut` modes the result equals that of an uninterrupted run with the same seed. Checkpoints are tensors
plus JSON behind a checksum (`autocompress.checkpoint`): resuming a shared folder runs no code from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from autocompress import allocate, checkpoint
from autocompress.agents import DDPGAgent, DQNAgent, RandomAgent, ScheduleAgent, UniformAgent
from autocompress.atomic import atomic_write_text
from autocompress.config import AutocompressError, ExperimentConfig, dump_config, to_dict
from autocompress.envs import DiscreteActions, NetCompressEnv
from autocompress.envs.rewards import Outcome
from autocompress.measure.latency import LatencyMeter
from autocompress.parallel import make_backend
from autocompress.paths import ensure_writable
from autocompress.progress import progress as progress_bar
from autocompress.pruning import Schedule
from autocompress.pruning.sparsity import METHOD
from autocompress.pruning.uniform import bisect_uniform_ratio_on_speedup
from autocompress.quantize import reduce_range
from autocompress.runlock import LOCK_NAME, RunFolderBusy, RunFolderLock
from autocompress.runlog import RunLogger

CHECKPOINT = "checkpoint.pt"
BEST_SCHEDULE = "best_schedule.json"
_RESUMABLE_CHANGES = ("episodes", "out_dir", "checkpoint_every", "torch_threads", "workers", "backend", "address")
"""Settings a resume may change: they do not change which episodes are played (the round size stays)."""

_AFTER_SEARCH = ("tournament",)
"""Sections a resume may change because they act only after the episodes (a changed tournament is run again)."""

_LABELS = ("name",)
"""Keys a resume may change because they only label the run (e.g. a config that adds a tournament entrant)."""


def _drop_unchecked(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict without what a resume may change (see the two tuples above)."""
    for key in _RESUMABLE_CHANGES:
        data.get("search", {}).pop(key, None)
    for key in _AFTER_SEARCH + _LABELS:
        data.pop(key, None)
    return data


class SearchError(AutocompressError):
    """A run folder or checkpoint that cannot be used; the message says what to do."""


@dataclass
class SearchResult:
    """What a finished search leaves: the run folder and the best episode's record."""

    run_dir: Path
    episodes: int
    best: dict[str, Any]
    schedule_path: Path


def machine_description() -> str:
    """The machine a measurement was taken on, for schedules and reports."""
    return f"{platform.machine()} {platform.system()} {os.cpu_count()} cores, torch {torch.__version__}"


def uniform_action(env: NetCompressEnv) -> float:
    """The action whose prune ratio, applied to every group, just meets the budget (bisection).

    Actions are float32 in the env's Box, so feasibility is checked on float32-rounded actions:
    otherwise rounding would push the policy over the budget and the wall would bend it.
    """

    def meets(action: float) -> bool:
        ratio = env.prune_ratio_of(float(np.float32(action)))
        return env.resource(dict.fromkeys(env.group_names, ratio)) <= env.wall.target

    if meets(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return float(np.float32(hi))


def uniform_entrant(env: NetCompressEnv) -> dict[str, Any]:
    """The uniform allocation at the env's budget as a tournament entrant: a history-like record with episode -1
    (tournament.include_uniform)."""
    ratio = env.prune_ratio_of(float(np.float32(uniform_action(env))))
    schedule = dict.fromkeys(env.group_names, ratio)
    outcome, _ = env.evaluator.evaluate(schedule)
    return {"episode": -1, "reward": float(env.evaluator.reward_fn(outcome)), "schedule": schedule, "uniform": True}


def sensitivity_entrant(cfg: ExperimentConfig, env: NetCompressEnv) -> dict[str, Any]:
    """The sensitivity analysis's allocation at the env's budget as a tournament entrant: a history-like record
    with episode -2 (tournament.include_sensitivity); the same schedule the `sensitivity` method would return."""
    _, _, ratios = _sensitivity_analysis(cfg, env)
    actions = allocate.ratios_to_actions(env, ratios)
    schedule = {name: env.prune_ratio_of(a) for name, a in zip(env.group_names, actions, strict=True)}
    outcome, _ = env.evaluator.evaluate(schedule)
    return {"episode": -2, "reward": float(env.evaluator.reward_fn(outcome)), "schedule": schedule,
            "sensitivity": True}


ENTRANTS: dict[str, Callable[[ExperimentConfig, NetCompressEnv], dict[str, Any]]] = {
    "uniform": lambda cfg, env: uniform_entrant(env),
    "sensitivity": sensitivity_entrant,
}
"""Simple rules that may enter the tournament beside the search's leaders, by the record flag they carry
(tournament.include_<name>)."""


def entrant_rules(cfg: ExperimentConfig) -> list[str]:
    """The simple rules the config lets into the tournament (tournament.include_<name>), in ENTRANTS order."""
    return [name for name in ENTRANTS if cfg.tournament is not None and getattr(cfg.tournament, f"include_{name}")]


def tournament_entrants(cfg: ExperimentConfig, env: NetCompressEnv) -> list[dict[str, Any]]:
    """Those rules' records, built now (the sensitivity analysis evaluates its probes here)."""
    return [ENTRANTS[name](cfg, env) for name in entrant_rules(cfg)]


def uniform_ratios_at_speedup(
    env: NetCompressEnv, meter: LatencyMeter, speedup: float, steps: int = 7
) -> tuple[dict[str, float], float]:
    """Every group pruned alike, bisected until the *measured* speedup reaches `speedup`.

    The fair baseline for a latency search: a uniform policy matched on the look-up table's prediction
    lands 5-15% off in measured speed, so accuracy and speed would differ together. Returns the ratios
    and the speedup measured for them.
    """
    def speedup_at(ratio: float) -> float:
        return meter.compare(env.model, env.pruner.prune(dict.fromkeys(env.group_names, ratio))).speedup

    ratio, reached = bisect_uniform_ratio_on_speedup(speedup_at, speedup, env.cfg.max_ratio, steps=steps)
    return dict.fromkeys(env.group_names, ratio), reached


AgentBuilder = Callable[[ExperimentConfig, NetCompressEnv], tuple[Any, gym.Env]]


def _ddpg(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    return DDPGAgent(int(env.observation_space.shape[0]), env.action_space, cfg.ddpg, seed=cfg.search.seed), env


def _dqn(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    wrapped = DiscreteActions(env, bins=cfg.dqn.bins)
    n_actions = int(wrapped.action_space.n)  # bins, or bins x precisions for a joint action
    agent = DQNAgent(
        int(env.observation_space.shape[0]), n_actions, cfg.dqn, seed=cfg.search.seed, precisions=wrapped.precisions
    )
    return agent, wrapped


def _random(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    return RandomAgent(env.action_space, seed=cfg.search.seed), env


def _uniform(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    return UniformAgent(np.array([uniform_action(env)], dtype=np.float32)), env


def _global(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    return ScheduleAgent(allocate.ratios_to_actions(env, allocate.global_ranking_ratios(env))), env


def _sensitivity_analysis(
    cfg: ExperimentConfig, env: NetCompressEnv
) -> tuple[list[float], dict[str, list[float]], dict[str, float]]:
    """Probe levels, per-group accuracy curves and the allocation they give (search.episodes evaluations)."""
    levels = allocate.sensitivity_levels(env, cfg.search.episodes)
    curves = allocate.sensitivity_curves(env, levels)
    return levels, curves, allocate.sensitivity_ratios(env, levels, curves)


def _sensitivity(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    levels, curves, ratios = _sensitivity_analysis(cfg, env)
    agent = ScheduleAgent(allocate.ratios_to_actions(env, ratios))
    agent.report = allocate.sensitivity_report(levels, curves, ratios, env.baseline_top1)  # type: ignore[attr-defined]
    return agent, env


AGENTS: dict[str, AgentBuilder] = {
    "ddpg": _ddpg,
    "dqn": _dqn,
    "random": _random,
    "uniform": _uniform,
    "global": _global,
    "sensitivity": _sensitivity,
}
"""Search methods by name: the learning agents and the baselines they must beat, all in the same loop
(config.SEARCH_METHODS lists the same names for the config and the command line; a test keeps them equal)."""

ONE_EPISODE = frozenset({"uniform", "global", "sensitivity"})
"""Methods whose policy is fixed before the first episode: one evaluated episode is their whole search."""

CHANNEL_ONLY = frozenset({"global"})
"""Methods that allocate by ranking channels, which env.sparsity unstructured does not remove."""


def make_agent(cfg: ExperimentConfig, env: NetCompressEnv) -> tuple[Any, gym.Env]:
    """The configured agent and the env it acts on (DQN gets the discrete-action wrapper)."""
    try:
        builder = AGENTS[cfg.search.agent]
    except KeyError:
        raise SearchError(f"unknown search.agent {cfg.search.agent!r}; choose one of {', '.join(AGENTS)}.") from None
    if cfg.search.agent in ONE_EPISODE and getattr(env, "joint", False):
        joint = sorted(set(AGENTS) - ONE_EPISODE)
        raise SearchError(f"search.agent {cfg.search.agent!r} allocates prune ratios only; with env.precisions "
                          f"{cfg.env.precisions!r} use one of {', '.join(joint)} (or precisions: fp32).")
    if cfg.search.agent in CHANNEL_ONLY and cfg.env.sparsity != "structured":
        usable = sorted(set(AGENTS) - CHANNEL_ONLY)
        raise SearchError(f"search.agent {cfg.search.agent!r} ranks channels, and env.sparsity "
                          f"{cfg.env.sparsity!r} zeroes single weights; use one of {', '.join(usable)}.")
    return builder(cfg, env)


def _comparable(cfg: ExperimentConfig) -> dict[str, Any]:
    data = to_dict(cfg)
    data["search"]["batch_episodes"] = cfg.search.batch_episodes or cfg.search.workers  # the round size
    return _drop_unchecked(data)


SIZE_METRICS = ("compressed_bytes", "baseline_compressed_bytes", "size_ratio", "predicted_bytes", "nonzero_params",
                "baseline_nonzero_params", "nonzero_ratio")
"""What a schedule of zeroed weights records of its evaluation (env.sparsity unstructured)."""


def quantization_block(cfg: ExperimentConfig, layers: dict[str, str]) -> dict[str, Any]:
    """A schedule's quantization block: per-layer precision and the recipe that calibrated it, reduce_range
    as resolved on this machine (so an export elsewhere quantizes the same way)."""
    q = cfg.env.quant
    return {"layers": dict(layers), "calib_images": q.calib_images, "per_channel": q.per_channel,
            "calibration": q.calibration, "reduce_range": reduce_range(q)}


def best_schedule(env: NetCompressEnv, cfg: ExperimentConfig, record: dict[str, Any]) -> Schedule:
    metrics = {
        "top1": record["top1"],
        "baseline_top1": record["baseline_top1"],
        "latency_ms": record["latency_ms"],
        "baseline_latency_ms": record["baseline_latency_ms"],
        "speedup": record["speedup"],
        "macs": record["macs"],
        "params": record["params"],
        "macs_ratio": record["macs_ratio"],
        "params_ratio": record["params_ratio"],
        "runtime": cfg.env.latency.runtime if cfg.env.latency_mode != "flops" else None,
        "latency_mode": cfg.env.latency_mode,
        "machine": machine_description(),
        "episode": record["episode"],
        "split": "val",
        **({"tournament_val_top1": record["tournament_val_top1"]} if "tournament_val_top1" in record else {}),
    }
    budget = {"kind": cfg.env.budget_kind, "fraction": cfg.env.budget}
    quant = quantization_block(cfg, record["layer_precision"]) if record.get("layer_precision") else None
    sparse = env.evaluator.sparse
    if sparse is not None:  # weights zeroed, channels kept: the per-group choice and the layers it zeroes
        metrics.update({k: record[k] for k in SIZE_METRICS if k in record})
        block = {"method": METHOD, "groups": dict(record["schedule"]),
                 "layers": sparse.weights.layer_sparsity(record["schedule"])}
        return Schedule.from_pruner(env.pruner, {}, cfg.model.name, budget=budget, metrics=metrics, sparsity=block)
    return Schedule.from_pruner(env.pruner, record["schedule"], cfg.model.name, budget=budget, metrics=metrics,
                                quantization=quant)


class Search:
    """One search run over a run folder (new or resumed)."""

    def __init__(self, cfg: ExperimentConfig, env: NetCompressEnv, run_dir: Path, resume: bool = False,
                 lock: RunFolderLock | None = None):
        self.cfg = cfg
        self.env = env
        self.run_dir = Path(run_dir)
        self.episode = 0
        self.best: dict[str, Any] | None = None
        self.confirmed_at: int | None = None  # episode count when the leaders were last re-timed
        if cfg.search.agent in ONE_EPISODE:
            self.cfg = replace(cfg, search=replace(cfg.search, episodes=1))
        self.lock = lock if lock is not None and lock.held else lock_run_folder(self.run_dir)
        try:
            agent_state = self._prepare_run_dir(resume)
            # After the checkpoint's evaluation cache is back: an agent that evaluates while it is made
            # (sensitivity probes) then reads its probes from the cache instead of running them again.
            self.agent, self.act_env = make_agent(cfg, env)
            if agent_state is not None:
                self._load_agent(agent_state)
        except BaseException:
            self.lock.release()
            raise
        report = getattr(self.agent, "report", None)
        if report is not None:
            atomic_write_text(self.run_dir / f"{cfg.search.agent}.json", json.dumps(report, indent=1))

    def close(self) -> None:
        """Let another process write to the run folder (also happens when this process ends)."""
        self.lock.release()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- run folder
    def _prepare_run_dir(self, resume: bool) -> Any:
        """Check (or resume) the run folder; the checkpoint's agent state, if there is one."""
        ckpt = self.run_dir / CHECKPOINT
        agent_state = None
        if resume and not ckpt.is_file() and (self.run_dir / "config.yaml").is_file():
            print(f"{self.run_dir} has no {CHECKPOINT} yet (stopped before the first one): starting at episode 0",
                  file=sys.stderr)
        elif resume:
            if not ckpt.is_file():
                raise SearchError(f"--resume: no {CHECKPOINT} in {self.run_dir}; start a new search without --resume.")
            agent_state = self._load_checkpoint(ckpt)
        elif ckpt.exists():
            raise SearchError(
                f"{self.run_dir} already holds a search; pass --resume to continue it or --out a new folder."
            )
        else:
            check_run_folder(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))
        return agent_state

    def _load_agent(self, state: Any) -> None:
        try:
            self.agent.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SearchError(f"{self.run_dir / CHECKPOINT} does not fit this search's agent "
                              f"({type(exc).__name__}: {exc}); start a new run.") from None

    def _load_checkpoint(self, path: Path) -> Any:
        """Restore episode, best and evaluation cache; the agent's state is returned for `_load_agent`."""
        try:
            version, tensors, meta = checkpoint.load(path, legacy_classes=[Outcome])
        except checkpoint.CheckpointError as exc:
            raise SearchError(str(exc)) from None
        if version == 1:  # written before checkpoints were JSON + tensors; read without running any code
            meta, tensors = _legacy_meta(tensors), {"agent": tensors.get("agent") if isinstance(tensors, dict) else None}
        if not isinstance(meta, dict) or meta.get("format") != "autocompress.checkpoint":
            raise SearchError(f"{path} is not an autocompress search checkpoint.")
        stored = meta.get("config") or {}
        if isinstance(stored.get("search"), dict):  # written before rounds existed: one episode per round
            stored["search"].setdefault("batch_episodes", 1)
        _fill_new_fields(stored, ExperimentConfig)  # e.g. env.scorer, env.precisions: what the run used
        if _drop_unchecked(stored) != _comparable(self.cfg):
            changeable = ([f"search.{k}" for k in _RESUMABLE_CHANGES] + [f"the {s} section" for s in _AFTER_SEARCH]
                          + list(_LABELS))
            raise SearchError(
                f"{self.run_dir} was made with a different config; resume with the same config "
                f"(only {', '.join(changeable)} may change) or use a new --out."
            )
        try:
            agent_state = tensors["agent"]
            cache = {_key(key): (Outcome(**outcome), info) for key, outcome, info in meta["env_cache"]}
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SearchError(f"{path} does not fit this search ({type(exc).__name__}: {exc}); "
                              "start a new run.") from None
        self.episode = int(meta["episode"])
        self.best = meta["best"]
        self.confirmed_at = meta.get("confirmed_at")
        self.env.evaluator.cache.update(cache)
        self.env.evaluator.lut_feedback[:] = meta.get("env_lut_feedback", [])
        print(f"resumed {self.run_dir} after episode {self.episode} of {self.cfg.search.episodes}", file=sys.stderr)
        return agent_state

    def _save_checkpoint(self) -> None:
        meta = {
            "format": "autocompress.checkpoint",
            "episode": self.episode,
            "best": self.best,
            "confirmed_at": self.confirmed_at,
            "env_cache": [[list(key), asdict(outcome), info]
                          for key, (outcome, info) in self.env.evaluator.cache.items()],
            "env_lut_feedback": list(self.env.evaluator.lut_feedback),
            "config": _comparable(self.cfg),
        }
        checkpoint.save(self.run_dir / CHECKPOINT, {"agent": self.agent.state_dict()}, meta)

    def _confirm_best(self, log: RunLogger) -> None:
        """With measured latency: re-time the leading policies 3x longer and keep the best on those timings.

        Episodes are timed briefly, so the best reward tends to belong to a policy whose timing was lucky and
        which misses the latency target when timed again; this picks among the top few on longer timings.
        With a latency budget the target is a promise: the leaders by reward are joined by the leaders among
        episodes that met it, and a policy that meets it on re-timing wins over any that does not
        (`choose_confirmed`). Done once per finished run: resuming a finished search keeps its choice (re-timing
        would pick again on new noise); extending it with more episodes confirms again.
        """
        if getattr(self.env, "meter", None) is None or not hasattr(self.env, "remeasure"):
            return
        history = self.run_dir / "history.jsonl"
        records = [json.loads(line) for line in history.read_text().splitlines()] if history.exists() else []
        target = latency_target(self.cfg)
        pools = [records]
        if target is not None:
            pools.append([r for r in records if r.get("speedup", 0.0) >= target])
        seen: set[tuple[float, ...]] = set()
        leaders = []
        for pool in pools:
            taken = 0
            for rec in sorted(pool, key=lambda r: r["reward"], reverse=True):
                if taken == CONFIRM_CANDIDATES:
                    break
                key = (*(round(v, 9) for v in rec["schedule"].values()), *sorted((rec.get("precision") or {}).items()))
                if key not in seen:
                    seen.add(key)
                    leaders.append(rec)
                    taken += 1
        rounds = 3 * max(self.cfg.env.latency.rounds, 10)
        confirmed = []
        for rec in leaders:
            reward, info = self.env.remeasure(rec["schedule"], rounds, rec.get("precision"))
            confirmed.append({"episode": rec["episode"], "reward": reward, **info})
        if not confirmed:
            return
        best = choose_confirmed(confirmed, target)
        self.confirmed_at = self.episode
        if target is not None and not meets_target(best["speedup"], target):
            print(f"warning: none of the {len(confirmed)} leading policies reached the {target:.2f}x target when "
                  f"re-timed (best {best['speedup']:.2f}x); run more episodes, or keep env.lut_feedback on so the "
                  "budget wall learns the table's error.", file=sys.stderr)
        self.best = {k: v for k, v in best.items() if k not in ("group", "prune_ratio")}
        best_schedule(self.env, self.cfg, self.best).save(self.run_dir / BEST_SCHEDULE)
        atomic_write_text(self.run_dir / "confirmed.json", json.dumps(
            [{k: r.get(k) for k in ("episode", "reward", "top1", "speedup", "speedup_in_episode", "macs_ratio")}
             | {"chosen": r is best} for r in confirmed], indent=1))
        self._save_checkpoint()

    # ----------------------------------------------------------------- the loop
    def _play_episode(self) -> dict[str, Any]:
        obs, _ = self.act_env.reset(seed=self.cfg.search.seed * 1_000_003 + self.episode)
        while True:
            action = self.agent.act(obs, explore=True)
            next_obs, reward, terminated, truncated, info = self.act_env.step(action)
            self.agent.observe(obs, action, float(reward), next_obs, bool(terminated))
            obs = next_obs
            if terminated or truncated:
                return {"episode": self.episode, "reward": float(reward), **info}

    def _plan_episode(self, episode: int) -> tuple[list[tuple[Any, Any, Any, bool]], dict[str, Any]]:
        """Play an episode without scoring it (env.defer_evaluation): its transitions and last step's info."""
        obs, _ = self.act_env.reset(seed=self.cfg.search.seed * 1_000_003 + episode)
        steps = []
        while True:
            action = self.agent.act(obs, explore=True)
            next_obs, _, terminated, truncated, info = self.act_env.step(action)
            steps.append((obs, action, next_obs, bool(terminated)))
            obs = next_obs
            if terminated or truncated:
                return steps, info

    def _learn(self, steps: list[tuple[Any, Any, Any, bool]], info: dict[str, Any], outcome: Outcome,
               scored: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """Feed a scored episode to the agent, in the order it was played; its record and the update's metrics."""
        reward = float(self.env.reward_fn(outcome))
        for obs, action, next_obs, terminated in steps:
            self.agent.observe(obs, action, reward if terminated else 0.0, next_obs, terminated)
        step_info = {k: v for k, v in info.items() if k not in ("deferred", "steps_s", "schedule")}
        record = {"episode": self.episode, **step_info, **scored, "reward": reward}
        return record, self._update(record)

    def _update(self, record: dict[str, Any]) -> dict[str, float]:
        """The agent's update after an episode, its seconds put in the record's timing as `update_s`: the
        serial part of a parallel search (scripts/bench_scaling.py)."""
        start = time.perf_counter()
        metrics = self.agent.update()
        record["timing"] = {**(record.get("timing") or {}), "update_s": time.perf_counter() - start}
        return metrics

    def _after_episode(self, record: dict[str, Any], metrics: dict[str, float], log: RunLogger, bar: Any) -> None:
        improved = self.best is None or record["reward"] > self.best["reward"]
        if improved:
            self.best = {k: v for k, v in record.items() if k not in ("group", "prune_ratio")}
            best_schedule(self.env, self.cfg, self.best).save(self.run_dir / BEST_SCHEDULE)
        log.episode(self.episode, _loggable(record), metrics, self.best)
        if improved:
            names = self.env.group_names
            log.best_policy(self.episode, names, [self.best["schedule"][n] for n in names],
                            f"best policy, episode {self.episode}: top-1 {self.best['top1']:.2f}%")
        self.episode += 1
        bar.set_postfix(_postfix(self.best), refresh=False)
        bar.update(1)  # after the postfix, so a line printed by this update shows this episode's best

    def _run_batched(self, end: int, log: RunLogger, bar: Any) -> None:
        """Rounds of `batch_episodes` episodes: all proposed first, scored together (on the backend's
        workers), then learned from in proposal order; checkpoints only between rounds, so a resume replays
        the same rounds."""
        batch = self.cfg.search.batch_episodes or self.cfg.search.workers
        backend = make_backend(self.env.evaluator, self.cfg.search)
        self.env.defer_evaluation = True
        try:
            while self.episode < end:
                start = time.perf_counter()
                planned = [self._plan_episode(self.episode + i) for i in range(min(batch, end - self.episode))]
                proposed = time.perf_counter()
                results = backend.evaluate([info["schedule"] for _, info in planned],
                                           [info["steps_s"] for _, info in planned],
                                           [info.get("precision") for _, info in planned])
                # The whole round's seconds, on each of its episodes: proposing them, and scoring them on the backend.
                round_s = {"round_propose_s": proposed - start, "round_backend_s": time.perf_counter() - proposed}
                before = self.episode
                for (steps, info), (outcome, scored) in zip(planned, results, strict=True):
                    record, metrics = self._learn(steps, info, outcome, scored)
                    record["timing"] = {**record["timing"], **round_s}
                    self._after_episode(record, metrics, log, bar)
                every = self.cfg.search.checkpoint_every
                if self.episode // every > before // every or self.episode == self.cfg.search.episodes:
                    self._save_checkpoint()
        finally:
            self.env.defer_evaluation = False
            backend.close()

    def run(self, progress: bool = True, stop_after: int | None = None) -> SearchResult:
        """Play episodes until `search.episodes` (in rounds when `search.batch_episodes` or workers > 1).

        `stop_after` plays only that many more and returns without a final checkpoint, as a killed
        run would (used to test resume).
        """
        total = self.cfg.search.episodes
        end = total if stop_after is None else min(total, self.episode + stop_after)
        log = RunLogger(self.run_dir, start_episode=self.episode)
        if self.episode == 0:
            log.config(dump_config(self.cfg))
        bar = progress_bar(total=total, initial=self.episode, desc=f"search[{self.cfg.search.agent}]",
                           disable=not progress, dynamic_ncols=True)
        batched = (self.cfg.search.batch_episodes or self.cfg.search.workers) > 1 or self.cfg.search.backend != "local"
        try:
            if batched:
                self._run_batched(end, log, bar)
            while not batched and self.episode < end:
                record = self._play_episode()
                metrics = self._update(record)
                self._after_episode(record, metrics, log, bar)
                if self.episode % self.cfg.search.checkpoint_every == 0 or self.episode == total:
                    self._save_checkpoint()
            if self.episode == total and self.best and self.confirmed_at != self.episode:
                self._confirm_best(log)
                log.hparams(_flat(to_dict(self.cfg)), {k: self.best.get(k) for k in ("reward", "top1", "macs_ratio", "speedup")})
        finally:
            bar.close()
            log.close()
        return SearchResult(self.run_dir, self.episode, self.best or {}, self.run_dir / BEST_SCHEDULE)


CONFIRM_CANDIDATES = 5
"""Leading policies re-timed at the end of a search with measured latency (see NetCompressEnv.remeasure);
with a latency budget, as many again from the episodes that met it."""

CONFIRM_TOLERANCE = 0.02
"""Share of the target speedup a re-timed policy may fall short by and still count as meeting it: about the
spread of a 30-pair median on a quiet 2-core CPU, so that timing noise alone does not disqualify a policy."""


def meets_target(speedup: float, target_speedup: float) -> bool:
    """Whether a re-timed speedup counts as reaching the target, within CONFIRM_TOLERANCE."""
    return speedup >= target_speedup * (1.0 - CONFIRM_TOLERANCE)


def latency_target(cfg: ExperimentConfig) -> float | None:
    """The speedup a latency budget asks for (budget 0.5: 2x), or None for other budgets."""
    return 1.0 / cfg.env.budget if cfg.env.budget_kind == "latency" else None


def episodes_meeting_target(run_dir: Path, target_speedup: float | None) -> set[int] | None:
    """Episodes whose policy met the latency target when the search re-timed its leaders (confirmed.json).

    None when there is no target, nothing was re-timed, or no re-timed policy met it: then nothing narrows
    the choice. Later steps that choose among the leaders (the tournament) keep to this set, so that a policy
    whose short episode timing was lucky cannot win after its re-timing showed it slower than asked.
    """
    path = Path(run_dir) / "confirmed.json"
    if target_speedup is None or not path.is_file():
        return None
    meeting = {int(r["episode"]) for r in json.loads(path.read_text())
               if r.get("speedup") is not None and meets_target(float(r["speedup"]), target_speedup)}
    return meeting or None


def choose_confirmed(confirmed: list[dict[str, Any]], target_speedup: float | None) -> dict[str, Any]:
    """The best re-timed policy: highest reward, among those that meet the target speedup if any do.

    The reward trades accuracy against latency softly, so a policy that misses the target by a few percent
    can outscore every one that meets it; a user who asked for a speedup gets one that delivers it.
    """
    if target_speedup is not None:
        meeting = [r for r in confirmed if meets_target(r["speedup"], target_speedup)]
        if meeting:
            return max(meeting, key=lambda r: r["reward"])
    return max(confirmed, key=lambda r: r["reward"])


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys (TensorBoard's hparams want flat scalars)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


RUN_FOLDER_MARKERS = frozenset({"config.yaml", CHECKPOINT, "baseline.pt", "history.jsonl", LOCK_NAME})
"""Files only autocompress puts in a run folder: a non-empty folder without any of them belongs to someone else."""


def check_run_folder(run_dir: Path) -> None:
    """Refuse a `--out` that is a file, or a folder with other files in it (a search would write among them)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SearchError(f"--out {run_dir} is a file, not a folder; give --out a folder name.")
    ensure_writable(run_dir, folder=True)
    if run_dir.is_dir():
        names = {p.name for p in run_dir.iterdir()}
        if names and not names & RUN_FOLDER_MARKERS:
            raise SearchError(f"{run_dir} has other files in it and is not a run folder; "
                              "give --out a new or empty folder.")


def lock_run_folder(run_dir: Path) -> RunFolderLock:
    """The run folder's writer lock, or a SearchError naming who holds it."""
    check_run_folder(run_dir)
    try:
        return RunFolderLock(run_dir).acquire()
    except RunFolderBusy as busy:
        raise SearchError(f"{run_dir} is in use by another search ({busy}); wait for it to finish "
                          "or give --out another folder.") from None
    except OSError as exc:
        raise SearchError(f"cannot write to run folder {run_dir}: {exc.strerror or exc}; "
                          "give --out a folder you can write to.") from None


def _legacy_meta(state: Any) -> dict[str, Any] | None:
    """A version-1 checkpoint's fields in the version-2 JSON layout (its cache held Outcome objects)."""
    if not isinstance(state, dict) or state.get("format") != "autocompress.checkpoint":
        return None
    cache = [[list(key), asdict(outcome), info] for key, (outcome, info) in state.get("env_cache", {}).items()]
    keep = ("format", "episode", "best", "confirmed_at", "env_lut_feedback", "config")
    return {**{k: state.get(k) for k in keep}, "env_cache": cache}


def _key(key: Any) -> Any:
    """An evaluation-cache key read back from JSON: lists (an INT8 policy's nested part too) as tuples."""
    return tuple(_key(k) for k in key) if isinstance(key, list) else key


def _fill_new_fields(stored: dict[str, Any], cls: type) -> None:
    """Give the fields a checkpoint's config lacks (added to the config since it was written) their defaults,
    which is what the run used without them, so that the comparison with the current config stays exact."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = next((a for a in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(a)), hints[f.name])
        if f.name not in stored:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            stored[f.name] = to_dict(default) if dataclasses.is_dataclass(default) else default
        elif dataclasses.is_dataclass(tp) and isinstance(stored[f.name], dict):
            _fill_new_fields(stored[f.name], tp)


def _loggable(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("reward", "top1", "latency_ms", "speedup", "macs_ratio", "params_ratio", "cached", "timing", "schedule")
    # lut_correction: latency-budget searches with measured latency; precision..bytes: INT8 choices (env.precisions);
    # return_*: policies (env.scorer episodic_return), whose top1 is the normalised return; worker_pid: the Ray
    # worker that scored the episode; compressed_bytes..nonzero_ratio: zeroed weights (env.sparsity unstructured)
    optional = ("lut_correction", "precision", "int8_layers", "bytes", "return_mean", "return_std", "worker_pid",
                "compressed_bytes", "size_ratio", "predicted_bytes", "nonzero_ratio")
    return {**{k: record.get(k) for k in keep}, **{k: record[k] for k in optional if k in record}}


def _postfix(best: dict[str, Any] | None) -> dict[str, str]:
    if not best:
        return {}
    out = {"best_reward": f"{best['reward']:.4f}", "top1": f"{best['top1']:.2f}", "macs": f"{best['macs_ratio']:.3f}"}
    if best.get("size_ratio"):
        out["size"] = f"{best['size_ratio']:.3f}"
    if best.get("speedup"):
        out["speedup"] = f"{best['speedup']:.2f}x"
    return out
