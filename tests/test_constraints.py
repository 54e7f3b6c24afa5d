"""The budget wall keeps the budget reachable for any action sequence."""

import numpy as np

from autocompress.envs.constraints import BudgetWall


def linear_cost(weights):
    """A toy resource: each group's weight times its kept share (1 - ratio)."""
    return lambda ratios: sum(w * (1 - ratios.get(name, 0.0)) for name, w in weights.items())


def test_wall_leaves_feasible_actions_alone_and_raises_infeasible_ones():
    weights = {"a": 1.0, "b": 1.0, "c": 1.0}
    wall = BudgetWall(linear_cost(weights), target=1.5, order=list(weights), max_ratio=0.8)
    assert wall.reachable()
    assert wall.clip({}, 0, 0.5) == 0.5
    # keeping everything of a and b forces c beyond max_ratio: the wall must raise b's ratio
    ratio_b = wall.clip({"a": 0.0}, 1, 0.0)
    assert ratio_b > 0.0
    assert linear_cost(weights)({"a": 0.0, "b": ratio_b, "c": 0.8}) <= 1.5 + 1e-9


def test_random_action_sequences_always_meet_the_budget():
    rng = np.random.default_rng(0)
    weights = {f"g{i}": float(w) for i, w in enumerate(rng.uniform(0.5, 3.0, size=8))}
    cost = linear_cost(weights)
    target = 0.45 * cost({})
    wall = BudgetWall(cost, target, list(weights), max_ratio=0.9)
    for _ in range(200):
        decided = {}
        for i, name in enumerate(weights):
            decided[name] = wall.clip(decided, i, float(rng.uniform(0, 0.9)))
        assert cost(decided) <= target * (1 + 1e-6)


def test_unreachable_budget_is_detected():
    wall = BudgetWall(linear_cost({"a": 1.0}), target=0.1, order=["a"], max_ratio=0.5)
    assert not wall.reachable()
