"""Give back what a policy compresses beyond its budget, before the tournament judges it.

A search's policies land anywhere inside the budget: a discrete action grid, channel rounding and a soft latency
reward leave many a policy faster or smaller than asked, and on a small network that slack is accuracy thrown
away (ResNet-20 at a 2x ONNX Runtime target: the chosen policy ran at 2.11x with a block removed and three
groups pruned). Here a policy is walked back one move at a time (one group's prune ratio a grid step lower, a
removed block restored at `max_ratio`, an INT8 group back to the more accurate precision), keeping at each step
the move with the best val top-1 whose network still meets the budget (with a measured-latency budget, re-timed
over many pairs: the episode's short timing only shortlists), until no move both fits and scores at least as
well. A greedy local search, not a second search: it only spends slack the first one left.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from autocompress.atomic import atomic_write_text
from autocompress.config import ConfigError, RefineConfig

REFINE = "refine.json"


class Candidate(NamedTuple):
    """One scored move: its val top-1, policy, log label and the evaluator's outcome and info."""

    top1: float
    ratios: dict[str, float]
    precision: dict[str, str] | None
    label: str
    outcome: Any
    info: dict[str, Any]

Move = tuple[dict[str, float], dict[str, str] | None, str]
"""A candidate policy: prune ratios, group precisions (None: all FP32) and what changed, for the log."""


def ratio_step(env: Any, cfg: RefineConfig) -> float:
    """One move's prune-ratio step: the configured one, else a tenth of the action range (one DQN bin at 11)."""
    return cfg.step if cfg.step is not None else (env.cfg.max_ratio - env.cfg.min_ratio) / 10.0


def give_back_moves(env: Any, ratios: Mapping[str, float], precision: Mapping[str, str] | None,
                    step: float) -> Iterator[Move]:
    """Every single-group move toward the unpruned FP32 network that makes a different network.

    A ratio move steps down until the kept channels change (channel rounding makes small steps no-ops); a
    removed block comes back at `max_ratio`; a precision move goes one place toward the first (most accurate)
    of env.precisions (not on a removed block, whose precision has no layer to act on).
    """
    key = env.evaluator.network_key
    here = key(ratios, precision)
    low, high = env.cfg.min_ratio, env.cfg.max_ratio
    for name, ratio in ratios.items():
        new = float(ratio)
        while new > low:
            new = high if new > high else max(low, new - step)
            moved = {**ratios, name: new}
            if key(moved, precision) != here:
                yield moved, None if precision is None else dict(precision), f"{name}: ratio {ratio:.2f} -> {new:.2f}"
                break
    choices = tuple(env.precision_choices)
    for name, prec in (precision or {}).items():
        place = choices.index(prec) if prec in choices else 0
        if place > 0 and ratios.get(name, 0.0) <= high:  # a removed block's precision changes nothing
            moved_prec = {**precision, name: choices[place - 1]}  # type: ignore[dict-item]
            yield dict(ratios), moved_prec, f"{name}: {prec} -> {choices[place - 1]}"


class BudgetCheck:
    """Whether a candidate meets the search's budget: measured latency re-timed over `rounds` pairs (the
    episode's timing, noisy, only shortlists), else the budget wall's own resource (MACs, params, table ms)."""

    def __init__(self, env: Any, rounds: int) -> None:
        self.env, self.rounds = env, rounds
        cfg = env.cfg
        self.measured = cfg.budget_kind == "latency" and getattr(env.evaluator, "meter", None) is not None
        if cfg.budget_kind == "latency" and not self.measured and getattr(env, "lut", None) is None:
            raise ConfigError("tournament.refine with a latency budget needs env.latency_mode: measured or lut.")
        if getattr(env.evaluator, "sparse", None) is not None:
            raise ConfigError("tournament.refine walks back channel pruning; remove it with env.sparsity: unstructured.")
        self.target = 1.0 / cfg.budget

    def shortlisted(self, ratios: Mapping[str, float], info: Mapping[str, Any]) -> bool:
        if not self.measured:
            return self.env.resource(ratios) <= self.env.wall.target * (1.0 + 1e-9)
        return float(info.get("speedup") or 0.0) >= self.target * 0.98  # within an episode timing's noise

    def confirmed(self, ratios: Mapping[str, float], precision: Mapping[str, str] | None) -> tuple[bool, dict[str, Any]]:
        if not self.measured:
            return True, {}
        _, info = self.env.evaluator.remeasure(ratios, self.rounds, precision)
        return info["speedup"] >= self.target, info


def refine_policy(env: Any, record: Mapping[str, Any], cfg: RefineConfig, progress: bool = True) -> dict[str, Any]:
    """`record` (a search history record) walked back while it meets the budget; the last accepted network as a
    record of the same shape, with `refine` listing the accepted moves (empty when none fitted)."""
    check, step = BudgetCheck(env, cfg.rounds), ratio_step(env, cfg)
    ratios, precision = dict(record["schedule"]), record.get("precision")
    best = {k: v for k, v in record.items() if k != "refine"}
    accepted: list[dict[str, Any]] = []
    spent = 0
    while spent < cfg.evaluations:
        scored = []
        for moved, moved_prec, label in give_back_moves(env, ratios, precision, step):
            if spent >= cfg.evaluations:
                break
            outcome, info = env.evaluator.evaluate(moved, precision=moved_prec)
            spent += not info.get("cached")
            if check.shortlisted(moved, info) and info["top1"] >= best["top1"]:
                scored.append(Candidate(info["top1"], moved, moved_prec, label, outcome, info))
        choice = _first_confirmed(check, scored)
        if choice is None:
            break
        top1, ratios, precision, label, outcome, info = choice
        best = {**best, **{k: v for k, v in info.items() if k not in ("group", "prune_ratio", "cached", "timing")},
                "schedule": ratios, "precision": precision, "top1": top1, "reward": env.reward_fn(outcome)}
        accepted.append({"move": label, "top1": top1, "speedup": info.get("speedup"), "macs_ratio": info["macs_ratio"]})
        if progress:
            print(f"refine: episode {record['episode']}: {label} -> val score {top1:.2f}%, MACs "
                  f"{info['macs_ratio']:.3f}" + (f", {info['speedup']:.2f}x" if info.get("speedup") else ""),
                  file=sys.stderr)
    return {**best, "refine": {"from_top1": record["top1"], "moves": accepted, "evaluations": spent}}


def _first_confirmed(check: BudgetCheck, scored: list[Candidate]) -> Candidate | None:
    """The best-scoring shortlisted move that meets the budget when checked properly (re-timed)."""
    for cand in sorted(scored, key=lambda c: -c.top1):
        fits, info = check.confirmed(cand.ratios, cand.precision)
        if fits:
            return cand._replace(info={**cand.info, **info})
    return None


def refine_entrants(entrants: list[dict[str, Any]], env: Any, cfg: RefineConfig, run_dir: Path,
                    progress: bool = True) -> list[dict[str, Any]]:
    """The tournament's entrants with the best `cfg.finalists` of them refined (`refine_policy`); two that refine
    to the same network enter once. Each refinement is saved to refine.json as it finishes and read back on
    resume (with the same settings), so a killed run does not redo them."""
    path, settings = Path(run_dir) / REFINE, asdict(cfg)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    done: dict[str, Any] = saved.get("policies", {}) if saved.get("config") == settings else {}
    out, seen = [], set()
    for i, rec in enumerate(entrants):
        if i < cfg.finalists:
            if str(rec["episode"]) not in done:
                done[str(rec["episode"])] = refine_policy(env, rec, cfg, progress)
                atomic_write_text(path, json.dumps({"config": settings, "policies": done}, indent=1, default=float))
            rec = done[str(rec["episode"])]
        key = env.evaluator.network_key(rec["schedule"], rec.get("precision"))
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out
