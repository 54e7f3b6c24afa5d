"""Refinement: a policy walked back toward the unpruned network while it still meets the budget."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from test_search import small_config

from autocompress import refine, tournament
from autocompress.config import (
    ConfigError,
    EnvConfig,
    LatencyConfig,
    RefineConfig,
    TournamentConfig,
    load_config,
)
from autocompress.envs import EnvData, NetCompressEnv
from autocompress.models import get_model
from autocompress.pipeline import build, run_experiment


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("refine") / "run", "random", episodes=1)
    return build(cfg, progress=False)


def over_pruned(env) -> dict:
    """A history record of a policy far inside the 50% MACs budget (every group at max_ratio)."""
    ratios = dict.fromkeys(env.group_names, env.cfg.max_ratio)
    outcome, info = env.evaluator.evaluate(ratios)
    return {**info, "episode": 7, "reward": env.reward_fn(outcome)}


def test_refinement_spends_the_slack_and_stops_at_a_local_optimum(built) -> None:
    env, _ = built
    start = over_pruned(env)
    cfg = RefineConfig(evaluations=500)
    out = refine.refine_policy(env, start, cfg, progress=False)
    assert start["macs_ratio"] < 0.4  # the slack there was to spend
    assert out["refine"]["moves"], "no move was accepted"
    assert start["macs_ratio"] < out["macs_ratio"] <= env.cfg.budget + 1e-9
    assert out["top1"] >= start["top1"] and out["episode"] == 7
    assert all(out["schedule"][g] <= start["schedule"][g] for g in env.group_names)
    # nothing is left to give back: every further move breaks the budget or scores worse
    for ratios, precision, _ in refine.give_back_moves(env, out["schedule"], None, refine.ratio_step(env, cfg)):
        _, info = env.evaluator.evaluate(ratios, precision=precision)
        assert info["macs_ratio"] > env.cfg.budget or info["top1"] < out["top1"]


def test_moves_make_different_networks_and_give_back_precision() -> None:
    g = torch.Generator().manual_seed(0)
    data = EnvData(torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g),
                   torch.randn(32, 3, 16, 16, generator=g))
    pytest.importorskip("onnxruntime")
    cfg = EnvConfig(precisions="fp32+int8", latency_mode="measured", budget_kind="latency", budget=0.8,
                    reward="acc_latency", val_images=32,
                    latency=LatencyConfig(runtime="onnxruntime", rounds=3, warmup=1, threads=1))
    env = NetCompressEnv(get_model("tiny_cnn").eval(), data, cfg, model_name="tiny_cnn")
    ratios = {**dict.fromkeys(env.group_names, 0.0), env.group_names[0]: 0.5}
    precision = dict.fromkeys(env.group_names, "int8")
    moves = list(refine.give_back_moves(env, ratios, precision, 0.01))  # tiny steps: stepped until channels change
    here = env.evaluator.network_key(ratios, precision)
    assert all(env.evaluator.network_key(r, p) != here for r, p, _ in moves)
    assert sum("int8 -> fp32" in label for *_, label in moves) == len(env.group_names)
    ratio_moves = [r for r, p, label in moves if "ratio" in label]
    assert len(ratio_moves) == 1 and ratio_moves[0][env.group_names[0]] < 0.5


def test_a_removed_block_comes_back_at_max_ratio_and_keeps_its_precision() -> None:
    pytest.importorskip("onnxruntime")
    g = torch.Generator().manual_seed(0)
    data = EnvData(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g),
                   torch.randn(16, 3, 8, 8, generator=g))
    cfg = EnvConfig(precisions="fp32+int8", latency_mode="measured", budget_kind="latency", budget=0.8,
                    reward="acc_latency", val_images=16, drop_blocks=True, max_ratio=0.8,
                    latency=LatencyConfig(runtime="onnxruntime", rounds=3, warmup=1, threads=1))
    env = NetCompressEnv(get_model("cifar10_resnet20").eval(), data, cfg, model_name="cifar10_resnet20")
    block = next(n for n in env.group_names if n in env.pruner.droppable)
    ratios = {**dict.fromkeys(env.group_names, 0.0), block: 1.0}
    moves = list(refine.give_back_moves(env, ratios, dict.fromkeys(env.group_names, "int8"), 0.08))
    assert [r[block] for r, _, label in moves if label.startswith(f"{block}: ratio")] == [0.8]
    assert not any(label.startswith(f"{block}: int8") for *_, label in moves)
    assert sum("int8 -> fp32" in label for *_, label in moves) == len(env.group_names) - 1


def test_tournament_refines_its_finalists_once(tmp_path, monkeypatch) -> None:
    cfg = small_config(tmp_path / "run", "random", episodes=8)
    cfg = replace(cfg, tournament=TournamentConfig(finalists=1, ft_batches=2, val_images=60,
                                                   refine=RefineConfig(finalists=1, evaluations=40)))
    summary = run_experiment(cfg, progress=False, finalize_run=False)
    refined = json.loads((tmp_path / "run" / refine.REFINE).read_text())["policies"]
    result = json.loads((tmp_path / "run" / tournament.TOURNAMENT).read_text())
    assert len(refined) == 1
    (origin, rec), = refined.items()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    leader = max(history, key=lambda h: (h["reward"], -h["episode"]))
    assert int(origin) == leader["episode"] and rec["macs_ratio"] <= 0.5 + 1e-9 and rec["top1"] >= leader["top1"]
    assert result["config"]["refine"]["finalists"] == 1
    assert result["winner"]["schedule"] == rec["schedule"]  # the lone finalist enters refined
    assert summary["best"]["refine"] == rec["refine"] and summary["best"]["schedule"] == rec["schedule"]

    def no_refining(*args, **kwargs):
        raise AssertionError("a finished refinement was run again")

    monkeypatch.setattr(refine, "refine_policy", no_refining)
    (tmp_path / "run" / tournament.TOURNAMENT).unlink()  # the tournament again, its refinements read back
    run_experiment(cfg, resume=True, progress=False, finalize_run=False)

    # a finished search resumed with other tournament settings: no config error, the tournament runs again
    monkeypatch.undo()
    other = replace(cfg, tournament=replace(cfg.tournament, refine=None))
    again = run_experiment(other, resume=True, progress=False, finalize_run=False)
    result = json.loads((tmp_path / "run" / tournament.TOURNAMENT).read_text())
    assert result["config"]["refine"] is None and "refine" not in result["winner"]
    assert again["best"]["schedule"] == result["winner"]["schedule"] and "refine" not in again["best"]


def test_refine_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="tournament.refine.rounds"):
        load_config({"tournament": {"refine": {"rounds": 2}}})
    with pytest.raises(ConfigError, match="tournament.refine.step"):
        load_config({"tournament": {"refine": {"step": 0}}})
    assert load_config({"tournament": {"refine": {}}}).tournament.refine == RefineConfig()
    with pytest.raises(ConfigError, match="config.tournament.refine: .*sparsity unstructured"):
        load_config({"env": {"sparsity": "unstructured", "budget_kind": "size"}, "tournament": {"refine": {}}})


def test_the_plan_says_the_finalists_are_refined(built, tmp_path) -> None:
    from autocompress.pipeline import plan

    _, bundle = built
    cfg = replace(small_config(tmp_path / "run", "random", episodes=4),
                  tournament=TournamentConfig(finalists=4, refine=RefineConfig(finalists=2)))
    assert "the best 2 first refined to the budget" in plan(cfg, bundle, finalize_run=False)
    assert "refined" not in plan(replace(cfg, tournament=TournamentConfig()), bundle, finalize_run=False)
