"""Joint prune + INT8 action (issue #15): the env, the DQN wrapper, the evaluator and a whole search."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from autocompress.config import ConfigError, EnvConfig, LatencyConfig, load_config  # noqa: E402
from autocompress.envs import DiscreteActions, EnvData, NetCompressEnv  # noqa: E402
from autocompress.envs.evaluator import cache_key  # noqa: E402
from autocompress.models import get_model  # noqa: E402
from autocompress.pipeline import build  # noqa: E402
from autocompress.pruning import Schedule  # noqa: E402
from autocompress.quantize import OrtModule, reduce_range  # noqa: E402
from autocompress.search import BEST_SCHEDULE, Search, SearchError, make_agent  # noqa: E402

ORT = LatencyConfig(runtime="onnxruntime", rounds=3, warmup=1, threads=1)


def joint_cfg(**kw) -> EnvConfig:
    base = dict(precisions="fp32+int8", latency_mode="measured", latency=ORT, budget_kind="latency", budget=0.8,
                reward="acc_latency", val_images=48)
    return EnvConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def env() -> NetCompressEnv:
    g = torch.Generator().manual_seed(0)
    data = EnvData(torch.randn(48, 3, 16, 16, generator=g), torch.randint(0, 10, (48,), generator=g),
                   torch.randn(64, 3, 16, 16, generator=g))
    torch.manual_seed(0)
    return NetCompressEnv(get_model("tiny_cnn").eval(), data, joint_cfg(), model_name="tiny_cnn")


def play(env: gym.Env, actions) -> dict:
    env.reset(seed=0)
    for a in actions:
        *_, terminated, _, info = env.step(a)
    assert terminated
    return info


def test_joint_env_passes_gymnasium_checks(env):
    assert env.action_space == gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    assert env.observation_space.shape == (17,)  # AMC's 15 + INT8 sensitivity + previous precision
    check_env(env, skip_render_check=True)


def test_second_number_picks_the_precision_and_int8_layers_are_really_quantized(env):
    n = len(env.groups)
    info = play(env, [np.array([0.2, 0.9 if i == 0 else 0.1], np.float32) for i in range(n)])
    first = env.groups[0].name
    assert info["precision"] == {g.name: "int8" if g.name == first else "fp32" for g in env.groups}
    assert info["layer_precision"][first] == "int8" and info["int8_layers"] >= 1
    assert info["speedup"] > 0 and "quantize_s" in info["timing"]
    model = env.evaluator.deployable(env.compress(info["schedule"]), info["precision"])
    assert isinstance(model, OrtModule)
    ops = {node.op_type for node in onnx.load_from_string(model.onnx_bytes).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # INT8 and FP32 versions of one pruned network are different policies, scored separately
    kept = env.pruner.kept_channels(info["schedule"])
    assert cache_key(kept, info["precision"]) != cache_key(kept) == cache_key(kept, dict.fromkeys(info["precision"], "fp32"))


def test_an_all_fp32_joint_episode_scores_the_plain_pruned_network(env):
    n = len(env.groups)
    info = play(env, [np.array([0.3, 0.2], np.float32)] * n)
    assert info["int8_layers"] == 0 and info["layer_precision"] == {}
    plain = env.compress(info["schedule"])
    assert env.evaluator.deployable(plain, info["precision"]) is plain
    assert info["top1"] == pytest.approx(env.evaluator.accuracy(plain))


def test_int8_sensitivity_feature_is_measured_per_group(env):
    sens = env.evaluator.int8_group_sensitivity(images=16)
    assert set(sens) == {g.name for g in env.groups} and all(v > 0 for v in sens.values())
    obs, _ = env.reset(seed=0)
    assert 0.0 <= obs[15] <= 1.0 and obs[16] == 0.0  # sensitivity, previous precision (none yet)
    obs, *_ = env.step(np.array([0.1, 0.95], np.float32))
    assert obs[16] == 1.0


def test_dqn_wrapper_enumerates_ratio_precision_pairs(env):
    wrapped = DiscreteActions(env, bins=3)
    assert wrapped.action_space == gym.spaces.Discrete(6)
    assert wrapped.action(0).tolist() == [0.0, 0.25] and wrapped.action(5).tolist() == [1.0, 0.75]
    with pytest.raises(ConfigError, match="Discrete\\(6\\)"):
        wrapped.action(6)


def test_joint_action_shape_errors_are_one_line(env):
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="pass 2 finite numbers"):
        env.step(np.array([0.3], np.float32))


def test_configs_that_cannot_price_int8_are_refused():
    with pytest.raises(ConfigError, match="latency_mode: measured and latency.runtime: onnxruntime"):
        load_config({"env": {"precisions": "fp32+int8", "latency_mode": "flops"}})
    with pytest.raises(ConfigError, match="latency_mode: measured and latency.runtime: onnxruntime"):
        load_config({"env": {"precisions": "fp32+int8", "latency_mode": "measured"}})  # torch runtime
    with pytest.raises(ConfigError, match="is not one of"):
        load_config({"env": {"precisions": "int4"}})
    data = EnvData(torch.randn(8, 3, 16, 16), torch.zeros(8, dtype=torch.long), torch.randn(8, 3, 16, 16))
    with pytest.raises(ConfigError, match="enforced by the reward alone"):
        NetCompressEnv(get_model("tiny_cnn"), data, joint_cfg(reward="acc"))


def _search_config(tmp_path, agent: str):
    return load_config({
        "name": "joint",
        "model": {"name": "tiny_cnn"},
        "data": {"name": "digits", "val_size": 60},
        "env": {"precisions": "fp32+int8", "budget_kind": "latency", "budget": 0.8, "latency_mode": "measured",
                "reward": "acc_latency", "val_images": 60, "bn_recalib_batches": 1, "bn_recalib_batch_size": 32,
                "latency": {"runtime": "onnxruntime", "rounds": 3, "warmup": 1, "threads": 1},
                "quant": {"calib_images": 32}},
        "search": {"agent": agent, "episodes": 6, "seed": 1, "out_dir": str(tmp_path / agent), "checkpoint_every": 3},
        "dqn": {"warmup_episodes": 2, "batch_size": 8, "bins": 3},
    })


def test_a_joint_dqn_search_saves_a_schedule_with_per_layer_precision(tmp_path):
    cfg = _search_config(tmp_path, "dqn")
    env, _ = build(cfg, progress=False)
    result = Search(cfg, env, tmp_path / "dqn").run(progress=False)
    records = [json.loads(line) for line in (tmp_path / "dqn" / "history.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(set(r["precision"].values()) <= {"fp32", "int8"} for r in records)
    saved = Schedule.load(tmp_path / "dqn" / BEST_SCHEDULE)
    assert saved.layer_precision() == result.best["layer_precision"]
    # the block records 7-bit weights exactly where this CPU needed them (x86 without VNNI), as version 5
    reduced = reduce_range(cfg.env.quant) and saved.quantized
    assert json.loads((tmp_path / "dqn" / BEST_SCHEDULE).read_text())["version"] == (5 if reduced else 2)
    assert saved.quantization is None or saved.quantization.get("reduce_range", False) == reduced


def test_ratio_only_baselines_refuse_a_joint_action(tmp_path):
    cfg = _search_config(tmp_path, "uniform")
    env, _ = build(cfg, progress=False)
    with pytest.raises(SearchError, match="allocates prune ratios only"):
        make_agent(cfg, env)


def test_a_killed_joint_search_resumes_with_its_int8_evaluations(tmp_path):
    cfg = _search_config(tmp_path, "dqn")
    env, _ = build(cfg, progress=False)
    with Search(cfg, env, tmp_path / "dqn") as first:
        first.run(progress=False, stop_after=4)  # checkpoint at 3, killed at 4
    env2, _ = build(cfg, progress=False)
    with Search(cfg, env2, tmp_path / "dqn", resume=True) as search:
        assert search.episode == 3 and len(env2.evaluator.cache) >= 1
        assert all(hash(key) is not None for key in env2.evaluator.cache)  # INT8 keys come back as tuples
        search.run(progress=False)
    records = [json.loads(line) for line in (tmp_path / "dqn" / "history.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in records] == list(range(6))


def test_checkpoints_written_before_a_config_field_existed_still_compare_equal():
    from autocompress.config import ExperimentConfig, to_dict
    from autocompress.search import _fill_new_fields

    old = to_dict(ExperimentConfig())
    for key in ("precisions", "quant", "scorer"):
        del old["env"][key]
    _fill_new_fields(old, ExperimentConfig)
    assert old == to_dict(ExperimentConfig())
