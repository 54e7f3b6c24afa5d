"""Non-RL allocations of per-group prune ratios to a budget: the baselines users of other tools reach for.

* `global_ranking_ratios`: one ranking of every channel across the network (the criterion's score divided by
  its group's mean score, as Torch-Pruning's global pruning normalises), cut at the threshold that meets
  the budget. No evaluation at all.
* `sensitivity_ratios`: per-group sensitivity analysis (each group pruned alone at several ratios and scored on
  the held-out images, as the episodes are), then the highest accuracy floor whose per-group ratios meet the
  budget (the greedy compression-ratio selection of Qualcomm AIMET), then any slack handed back.

Both see the same env (pruner, budget, evaluator) as the agents, and the search plays the result as one
episode, so it is logged, checkpointed and finalized like theirs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from autocompress.progress import progress as progress_bar

SENSITIVITY_MAX_LEVELS = 16
"""Ratios probed per group at most (0.05 apart at max_ratio 0.8)."""


def meets_budget(env: Any, ratios: Mapping[str, float]) -> bool:
    """Whether `ratios` meet the env's budget (the wall's target, exact kept channel counts)."""
    return env.resource(ratios) <= env.wall.target


def ratios_to_actions(env: Any, ratios: Mapping[str, float]) -> list[float]:
    """The per-step actions in [0, 1] (float32) that map to `ratios`, in the env's group order."""
    lo, hi = env.cfg.min_ratio, env.cfg.max_ratio
    span = hi - lo
    return [float(np.float32(0.0 if span <= 0 else (ratios[n] - lo) / span)) for n in env.group_names]


def _ratio_keeping(channels: int, kept: int, lo: float, hi: float) -> float:
    """A prune ratio in [lo, hi] that keeps about `kept` of `channels` (exact where the range allows)."""
    return float(min(max((channels - kept) / channels, lo), hi))


def global_ranking_ratios(env: Any, steps: int = 50) -> dict[str, float]:
    """Prune every channel whose normalised score is below one global threshold, bisected to the budget."""
    lo, hi = env.cfg.min_ratio, env.cfg.max_ratio
    groups = {g.name: g.channels for g in env.groups}
    norm = {}
    for name in groups:
        s = env.pruner.channel_scores(name).astype(np.float64)
        norm[name] = np.sort(s / max(float(s.mean()), 1e-12))

    def at(threshold: float) -> dict[str, float]:
        out = {}
        for name, c in groups.items():
            below = int(np.searchsorted(norm[name], threshold, side="left"))
            out[name] = _ratio_keeping(c, c - below, lo, hi)
        return out

    if meets_budget(env, at(-math.inf)):
        return at(-math.inf)
    t_lo, t_hi = 0.0, max(float(v[-1]) for v in norm.values()) + 1.0
    for _ in range(steps):
        mid = 0.5 * (t_lo + t_hi)
        t_lo, t_hi = (t_lo, mid) if meets_budget(env, at(mid)) else (mid, t_hi)
    return at(t_hi)


def sensitivity_levels(env: Any, evaluations: int) -> list[float]:
    """Ratios probed per group: evenly spaced up to max_ratio, as many as `evaluations` allows (2..16)."""
    count = max(2, min(SENSITIVITY_MAX_LEVELS, evaluations // max(len(env.groups), 1)))
    lo, hi = env.cfg.min_ratio, env.cfg.max_ratio
    return [lo + (hi - lo) * (i + 1) / count for i in range(count)]


def sensitivity_curves(env: Any, levels: list[float], progress: bool = True) -> dict[str, list[float]]:
    """Held-out top-1 (%) of the network with each group alone pruned at each level (others at min_ratio).
    A bar (or plain log lines) counts the probes: on ResNet-56 they take minutes before the first episode."""
    base = dict.fromkeys(env.group_names, env.cfg.min_ratio)
    curves: dict[str, list[float]] = {}
    with progress_bar(total=len(env.group_names) * len(levels), desc="sensitivity analysis",
                      disable=not progress) as bar:
        for name in env.group_names:
            curves[name] = []
            for r in levels:
                curves[name].append(float(env.evaluator.evaluate({**base, name: r})[1]["top1"]))
                bar.update(1)
    return curves


def _deepest(curve: list[float], floor: float) -> int:
    """Index of the deepest level whose top-1, and that of every shallower level, is >= floor (-1: none)."""
    idx = -1
    for i, acc in enumerate(curve):
        if acc < floor:
            break
        idx = i
    return idx


def sensitivity_ratios(env: Any, levels: list[float], curves: Mapping[str, list[float]]) -> dict[str, float]:
    """The highest accuracy floor whose per-group deepest levels meet the budget, then slack handed back.

    Handing back: while the budget still holds, the group that regains most accuracy by it steps one level up.
    """
    lo = env.cfg.min_ratio
    names = env.group_names

    def ratios_of(idx: Mapping[str, int]) -> dict[str, float]:
        return {n: (levels[i] if i >= 0 else lo) for n, i in idx.items()}

    chosen: dict[str, int] | None = None
    for floor in sorted({a for c in curves.values() for a in c} | {math.inf}, reverse=True):
        idx = {n: _deepest(curves[n], floor) for n in names}
        if meets_budget(env, ratios_of(idx)):
            chosen = idx
            break
    if chosen is None:  # even every group at max_ratio misses: the wall will make it meet
        return dict.fromkeys(names, levels[-1])
    def regained(n: str) -> float:
        i = chosen[n]
        return (curves[n][i - 1] if i > 0 else env.baseline_top1) - curves[n][i]

    improved = True
    while improved:
        improved = False
        for n in sorted((n for n in names if chosen[n] >= 0), key=regained, reverse=True):
            trial = {**chosen, n: chosen[n] - 1}
            if meets_budget(env, ratios_of(trial)):
                chosen, improved = trial, True
                break
    return ratios_of(chosen)


def sensitivity_report(levels: list[float], curves: Mapping[str, list[float]], ratios: Mapping[str, float],
                       baseline_top1: float) -> dict[str, Any]:
    """What a user wants to see of the analysis (written as sensitivity.json in the run folder)."""
    return {"baseline_top1": baseline_top1, "levels": list(levels), "curves": dict(curves),
            "chosen_prune_ratios": dict(ratios), "evaluations": len(levels) * len(curves)}
