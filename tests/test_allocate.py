"""Non-RL allocations (global ranking, sensitivity + greedy) on a real tiny env, and their place in the search."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from test_search import small_config

from autocompress import allocate
from autocompress.agents import ScheduleAgent
from autocompress.pipeline import build
from autocompress.pruning import Schedule
from autocompress.search import AGENTS, BEST_SCHEDULE, Search, SearchError, make_agent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("alloc") / "run", "global", episodes=30)
    env, _ = build(cfg, progress=False)
    return cfg, env


def test_global_ranking_meets_the_budget_without_wasting_it(built) -> None:
    _, env = built
    ratios = allocate.global_ranking_ratios(env)
    assert allocate.meets_budget(env, ratios)
    assert env.resource(ratios) >= 0.9 * env.wall.target  # not pruned far past the budget
    assert all(env.cfg.min_ratio <= r <= env.cfg.max_ratio for r in ratios.values())
    assert len(set(np.round(list(ratios.values()), 6))) > 1  # per-group, not one uniform ratio


def test_sensitivity_prunes_the_insensitive_group_most(built) -> None:
    _, env = built
    levels = allocate.sensitivity_levels(env, 30)
    a, b, c = env.group_names
    curves = {a: [90.0] * len(levels),  # a loses nothing at any level
              b: [90.0 - 20 * i for i in range(len(levels))],
              c: [90.0 - 5 * i for i in range(len(levels))]}
    ratios = allocate.sensitivity_ratios(env, levels, curves)
    assert allocate.meets_budget(env, ratios)
    assert ratios[a] >= ratios[c] >= ratios[b] and ratios[a] > ratios[b]


def test_sensitivity_curves_probe_one_group_at_a_time(built) -> None:
    _, env = built
    env.evaluation_cache.clear()
    levels = allocate.sensitivity_levels(env, 12)
    assert len(levels) == 4 and levels[-1] == pytest.approx(env.cfg.max_ratio)
    curves = allocate.sensitivity_curves(env, levels)
    assert set(curves) == set(env.group_names) and all(len(c) == 4 for c in curves.values())
    assert all(0.0 <= acc <= 100.0 for c in curves.values() for acc in c)
    assert 1 <= len(env.evaluation_cache) <= 12


def test_schedule_agent_replays_its_actions_each_episode(built) -> None:
    _, env = built
    ratios = allocate.global_ranking_ratios(env)
    agent = ScheduleAgent(allocate.ratios_to_actions(env, ratios))
    for _ in range(2):
        obs, _ = env.reset(seed=0)
        played = {}
        done = False
        while not done:
            obs2, reward, done, _, info = env.step(agent.act(obs))
            agent.observe(obs, None, reward, obs2, done)
            played[info["group"]] = info["prune_ratio"]
            obs = obs2
        assert env.pruner.kept_channels(played) == env.pruner.kept_channels(ratios)
    assert agent.episode == 2


@pytest.mark.parametrize("agent", ["global", "sensitivity"])
def test_baselines_run_in_the_search_loop(tmp_path, agent) -> None:
    cfg = small_config(tmp_path / agent, agent, episodes=30)
    env, _ = build(cfg, progress=False)
    result = Search(cfg, env, tmp_path / agent).run(progress=False)
    assert result.episodes == 1
    schedule = Schedule.load(tmp_path / agent / BEST_SCHEDULE)
    assert allocate.meets_budget(env, schedule.prune_ratios())
    if agent == "sensitivity":
        report = json.loads((tmp_path / agent / "sensitivity.json").read_text())
        assert report["evaluations"] == 30 and set(report["curves"]) == set(env.group_names)


def test_unknown_agent_lists_the_choices(built) -> None:
    cfg, env = built
    bad = replace(cfg, search=replace(cfg.search, agent="ppo"))
    with pytest.raises(SearchError, match="choose one of " + ", ".join(AGENTS)):
        make_agent(bad, env)


def test_config_and_registry_name_the_same_methods() -> None:
    from autocompress.config import SEARCH_METHODS

    assert tuple(AGENTS) == SEARCH_METHODS


def test_resuming_a_sensitivity_search_reads_its_probes_from_the_checkpoint(tmp_path) -> None:
    cfg = small_config(tmp_path / "run", "sensitivity", episodes=30)
    env, _ = build(cfg, progress=False)
    Search(cfg, env, tmp_path / "run").run(progress=False)
    fresh, _ = build(cfg, progress=False)  # a new process would start with an empty cache
    pruned = []
    compress = fresh.compress
    fresh.compress = lambda ratios, timing=None: pruned.append(ratios) or compress(ratios, timing)
    first_actions = Search(cfg, env, tmp_path / "other").agent.actions
    resumed = Search(cfg, fresh, tmp_path / "run", resume=True)
    assert pruned == [], f"{len(pruned)} probes were run again on resume"
    assert [float(a[0]) for a in resumed.agent.actions] == [float(a[0]) for a in first_actions]
