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
