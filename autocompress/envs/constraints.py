"""The budget wall (AMC's resource-constrained mode).

Before an action is applied it is raised, if needed, to the smallest prune ratio for which the
budget can still be met by pruning every later group at `max_ratio`. Because the cost is
evaluated on the exact kept channel counts (rounding included), the final network always meets
the budget whatever the actions were.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

Cost = Callable[[Mapping[str, float]], float]
"""Resource of the network for given prune ratios (groups not named stay whole)."""


class BudgetWall:
    """Clips prune ratios so that `cost(...) <= target` stays reachable."""

    def __init__(self, cost: Cost, target: float, order: Sequence[str], max_ratio: float, steps: int = 24):
        self.cost = cost
        self.target = target
        self.order = list(order)
        self.max_ratio = max_ratio
        self.steps = steps

    def _feasible(self, decided: Mapping[str, float], index: int, ratio: float) -> bool:
        ratios = dict(decided)
        ratios[self.order[index]] = ratio
        for name in self.order[index + 1 :]:
            ratios[name] = self.max_ratio
        return self.cost(ratios) <= self.target

    def reachable(self) -> bool:
        """Whether pruning every group at max_ratio meets the budget at all."""
        return self.cost(dict.fromkeys(self.order, self.max_ratio)) <= self.target

    def clip(self, decided: Mapping[str, float], index: int, prune_ratio: float) -> float:
        """The smallest ratio >= `prune_ratio` that keeps the budget reachable (bisection; cost falls with ratio)."""
        if self._feasible(decided, index, prune_ratio):
            return prune_ratio
        lo, hi = prune_ratio, self.max_ratio
        for _ in range(self.steps):
            mid = 0.5 * (lo + hi)
            if self._feasible(decided, index, mid):
                hi = mid
            else:
                lo = mid
        return hi
