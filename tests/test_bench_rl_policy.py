"""scripts/bench_rl_policy.py's flags reach the experiment each method runs: the reward measure, refinement and
the tournament's cloning length change the search only, and bad values are refused by the parser."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from script_loader import load_script

from autocompress.config import load_config

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
POLICY = {"env_id": "CartPole-v1", "algo": "ppo", "zoo_model": "mlp_policy_tanh_4x64", "weights": "w.pth"}


def bench() -> ModuleType:
    return load_script("bench_rl_policy")


def _config(tmp_path: Path, method: str, *flags: str) -> Any:
    args = bench().parse_args(["--tasks", "CartPole-v1:ppo", *flags])
    base = load_config(args.config)
    return bench().method_config(base, args, POLICY, method, tmp_path / method)


def test_search_flags_reach_the_search_s_config(tmp_path) -> None:
    cfg = _config(tmp_path, "search", "--reward-measure", "imitation", "--reward-clone-batches", "400",
                  "--refine", "2", "--tournament-batches", "300", "--budget", "0.1", "--tournament-measure", "return",
                  "--finalists", "8", "--tournament-clone", "full", "--task-episodes", "100",
                  "--clone-restarts", "3", "--tournament-uniform")
    task = cfg.env.task
    assert cfg.tournament.include_uniform and not _config(tmp_path, "search").tournament.include_uniform
    assert (task.episodes, task.clone_restarts) == (100, 3)
    assert (task.tournament_measure, task.tournament_clone) == ("return", "full")
    assert (task.reward_measure, task.reward_clone_batches, cfg.env.budget) == ("imitation", 400, 0.1)
    assert cfg.tournament.refine.finalists == 2 and cfg.tournament.ft_batches == 300
    assert cfg.tournament.finalists == 8
    assert cfg.model.name == "mlp_policy_tanh_4x64" and cfg.search.out_dir == str(tmp_path / "search")
    default = _config(tmp_path, "search")
    assert default.env.task.reward_measure == "return" and default.tournament.refine is None
    configured_task = load_config(bench().parse_args([]).config).env.task
    assert (default.env.task.episodes, default.env.task.clone_restarts) == (configured_task.episodes, 1)
    configured = load_config(bench().parse_args([]).config).tournament
    assert (default.tournament.ft_batches, default.tournament.finalists) == (configured.ft_batches, configured.finalists)
    assert _config(tmp_path, "uniform", "--reward-measure", "imitation").search.agent == "uniform"


@pytest.mark.parametrize("flags", [["--refine", "0"], ["--tournament-batches", "0"], ["--reward-measure", "loss"],
                                   ["--tournament-measure", "fit"], ["--reward-clone-batches", "-1"],
                                   ["--finalists", "0"], ["--tournament-clone", "long"], ["--task-episodes", "0"],
                                   ["--clone-restarts", "0"]])
def test_bad_values_are_refused_by_the_parser(flags: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        bench().parse_args(["--tasks", "CartPole-v1:ppo", *flags])
    assert flags[0] in capsys.readouterr().err
