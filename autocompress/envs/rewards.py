"""Reward functions: small pure functions of an episode's outcome, chosen by name in the config.

Each takes the episode's `Outcome` plus keyword arguments from `EnvConfig.reward_kwargs` and
returns a float. Accuracy enters as a fraction in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from autocompress.config import ConfigError


@dataclass(frozen=True)
class Outcome:
    """What an episode produced, in the units the reward functions need."""

    top1: float
    """Top-1 accuracy on the held-out images, as a fraction in [0, 1]."""
    macs: int
    macs_ratio: float
    """Pruned MACs / unpruned MACs."""
    params_ratio: float
    latency_ratio: float | None
    """Pruned latency / unpruned latency (None when latency is not measured or predicted)."""
    budget: float
    """The budget as a fraction of the unpruned resource (0.5 = half the MACs, or a 2x speedup)."""
    size_ratio: float | None = None
    """Measured compressed bytes / unpruned compressed bytes (env.sparsity unstructured; else None)."""


RewardFn = Callable[..., float]
REWARDS: dict[str, RewardFn] = {}
LATENCY_REWARDS = frozenset({"acc_latency", "acc_latency_linear"})


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Add a reward function to the registry under `name`."""

    def add(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return add


@register("acc")
def acc(o: Outcome) -> float:
    """AMC's resource-constrained reward: accuracy alone; the budget wall enforces the budget."""
    return o.top1


@register("acc_flops_log")
def acc_flops_log(o: Outcome) -> float:
    """AMC's -error * log(FLOPs): trades error against compute without a hard budget."""
    return -(1.0 - o.top1) * math.log(max(o.macs, 1))


def _latency(o: Outcome) -> float:
    if o.latency_ratio is None:
        raise ConfigError("this reward needs latency: set env.latency_mode to 'lut' or 'measured'.")
    return o.latency_ratio


@register("acc_latency")
def acc_latency(o: Outcome, alpha: float = 0.0, beta: float = -1.0) -> float:
    """MnasNet's acc * (latency / target)^w, w = alpha within the target and beta beyond it."""
    ratio = _latency(o) / o.budget
    w = alpha if ratio <= 1.0 else beta
    return o.top1 * ratio**w


@register("acc_latency_linear")
def acc_latency_linear(o: Outcome, lam: float = 0.5) -> float:
    """acc - lam * (pruned latency / unpruned latency): a linear accuracy-speed trade-off."""
    return o.top1 - lam * _latency(o)


def get_reward(name: str, kwargs: Mapping[str, float]) -> Callable[[Outcome], float]:
    """The reward `name` bound to `kwargs`; unknown names or arguments fail at construction."""
    if name not in REWARDS:
        raise ConfigError(f"env.reward: unknown reward {name!r}; choose one of {', '.join(sorted(REWARDS))}.")
    fn = REWARDS[name]
    import inspect

    accepted = set(list(inspect.signature(fn).parameters)[1:])
    bad = sorted(set(kwargs) - accepted)
    if bad:
        raise ConfigError(
            f"env.reward_kwargs: {', '.join(bad)} not accepted by {name!r} "
            f"(it takes {', '.join(sorted(accepted)) or 'no arguments'})."
        )
    bound = dict(kwargs)
    return lambda outcome: float(fn(outcome, **bound))
