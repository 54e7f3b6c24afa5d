"""Uniform pruning: the one ratio for every group that meets a resource budget (bisection)."""

from __future__ import annotations

from collections.abc import Callable

from autocompress.pruning.errors import PruneError


def bisect_uniform_ratio(
    fraction_at: Callable[[float], float],
    target: float,
    max_ratio: float = 0.95,
    steps: int = 40,
    what: str = "MACs",
) -> float:
    """Smallest prune ratio r in [0, max_ratio] with fraction_at(r) <= target.

    `fraction_at(r)` is the remaining share of the resource (MACs, params, or 1/speedup) when every group
    is pruned by r; it must fall as r rises (true for analytic costs; approximately for measured latency).
    """
    if not 0 < target <= 1:
        raise PruneError(f"budget {target} is outside (0, 1]; 0.5 keeps half of the {what}.")
    if fraction_at(0.0) <= target:
        return 0.0
    if fraction_at(max_ratio) > target:
        raise PruneError(
            f"uniform pruning cannot reach {target:.3f} of the {what}: even at prune ratio {max_ratio} the model "
            f"keeps {fraction_at(max_ratio):.3f}; loosen the budget or use --scope all."
        )
    lo, hi = 0.0, max_ratio
    for _ in range(steps):
        mid = (lo + hi) / 2
        if fraction_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def bisect_uniform_ratio_on_speedup(
    speedup_at: Callable[[float], float],
    speedup: float,
    max_ratio: float = 0.95,
    steps: int = 7,
) -> tuple[float, float]:
    """The uniform prune ratio whose *measured* speedup reaches `speedup`, and the speedup it measured.

    `speedup_at(r)` times the network pruned by r against the unpruned one. Each ratio is timed once
    (bisection visits it twice), and ratio 0 is taken as 1.0x without timing: it is the same network, so
    timing it would only measure noise. Few steps, because every step is a measurement; matching a
    searched policy on measured rather than predicted latency is what makes the comparison fair.
    """
    if speedup < 1:
        raise PruneError(f"speedup {speedup} must be >= 1 (2.0 = twice as fast).")
    seen: dict[float, float] = {0.0: 1.0}

    def slowdown(r: float) -> float:
        if r not in seen:
            seen[r] = speedup_at(r)
        return 1.0 / seen[r]

    ratio = bisect_uniform_ratio(slowdown, 1.0 / speedup, max_ratio, steps=steps, what="latency")
    return ratio, 1.0 / slowdown(ratio)
