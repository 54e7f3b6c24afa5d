"""NetCompressEnv: Gymnasium contract, budget wall on real pruning, determinism, errors, SB3."""

from __future__ import annotations

import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from autocompress.config import ConfigError, EnvConfig, PruneConfig, dump_config, load_config
from autocompress.envs import ENV_ID, DiscreteActions, EnvData, NetCompressEnv
from autocompress.measure.flops import count_macs_params
from autocompress.models import get_model
from autocompress.pruning import PruneError


def tiny_data(n: int = 32, shape=(3, 16, 16), seed: int = 0) -> EnvData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return EnvData(val_images=x, val_labels=y, calib_images=torch.randn(64, *shape, generator=g))


def tiny_env(**env_kwargs) -> NetCompressEnv:
    torch.manual_seed(0)
    model = get_model("tiny_cnn", num_classes=10, in_channels=3)
    return NetCompressEnv(model, tiny_data(), EnvConfig(**env_kwargs), model_name="tiny_cnn")


def rollout(env: gym.Env, actions: np.ndarray, seed: int = 0):
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        if terminated:
            return np.stack(observations), rewards, info
    raise AssertionError("episode did not terminate after one step per group")


def test_check_env_passes():
    check_env(tiny_env(), skip_render_check=True)


def test_check_env_passes_with_discrete_wrapper():
    env = DiscreteActions(tiny_env(), bins=5)
    assert env.action_space == gym.spaces.Discrete(5)
    check_env(env, skip_render_check=True)


def test_episode_shape_rewards_and_info():
    env = tiny_env(budget=0.5)
    n = len(env.groups)
    obs_seq, rewards, info = rollout(env, np.full((n, 1), 0.3, np.float32))
    assert len(rewards) == n and all(r == 0.0 for r in rewards[:-1])
    assert obs_seq.dtype == np.float32 and ((obs_seq >= 0) & (obs_seq <= 1)).all()
    for key in ("schedule", "top1", "latency_ms", "speedup", "macs", "macs_ratio", "params", "params_ratio", "timing"):
        assert key in info
    assert set(info["schedule"]) == set(env.group_names)
    assert rewards[-1] == pytest.approx(info["top1"] / 100)
    assert info["macs_ratio"] <= 0.5 + 1e-9


def test_same_seed_same_rollout_in_flops_mode():
    actions = np.random.default_rng(1).uniform(0, 1, size=(50, 1)).astype(np.float32)
    a = rollout(tiny_env(), actions, seed=3)
    b = rollout(tiny_env(), actions, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and a[2]["schedule"] == b[2]["schedule"] and a[2]["top1"] == b[2]["top1"]


def test_identical_policies_are_served_from_the_cache():
    env = tiny_env()
    n = len(env.groups)
    first = rollout(env, np.full((n, 1), 0.5, np.float32))[2]
    second = rollout(env, np.full((n, 1), 0.5, np.float32))[2]
    assert not first["cached"] and second["cached"] and second["top1"] == first["top1"]


def test_random_episodes_on_resnet20_meet_the_macs_budget():
    torch.manual_seed(0)
    model = get_model("cifar10_resnet20")
    data = tiny_data(n=8, shape=(3, 32, 32))
    env = NetCompressEnv(model, data, EnvConfig(budget=0.5, eval_batch_size=8), model_name="cifar10_resnet20")
    base_macs, _ = count_macs_params(model, data.val_images[:1])
    rng = np.random.default_rng(0)
    for episode in range(200):
        _, _, info = rollout(env, rng.uniform(0, 1, size=(len(env.groups), 1)).astype(np.float32), seed=episode)
        assert info["macs_ratio"] <= 0.5 + 1e-9, f"episode {episode} broke the budget: {info['macs_ratio']}"
        if episode % 50 == 0:  # the analytic count agrees with the physically pruned network
            pruned = env.pruner.prune(info["schedule"])
            assert count_macs_params(pruned, data.val_images[:1])[0] == info["macs"]
            assert info["macs"] / base_macs <= 0.5 + 1e-9


def test_bn_recalibration_and_measured_latency():
    env = tiny_env(bn_recalib_batches=2, bn_recalib_batch_size=16, latency_mode="measured",
                   latency=replace(EnvConfig().latency, rounds=3, warmup=1))
    _, _, info = rollout(env, np.full((len(env.groups), 1), 0.6, np.float32))
    assert info["latency_ms"] > 0 and info["baseline_latency_ms"] > 0 and info["speedup"] > 0
    assert info["timing"]["recalib_s"] > 0 and info["timing"]["latency_s"] > 0


def test_bn_recalibration_leaves_a_network_with_nothing_removed_as_it_was():
    env = tiny_env(bn_recalib_batches=2, bn_recalib_batch_size=16, min_ratio=0.0)
    bns = lambda m: [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]  # noqa: E731
    unpruned = env.evaluator.compress({g.name: 0.0 for g in env.groups})
    for before, after in zip(bns(env.evaluator.model), bns(unpruned), strict=True):
        assert torch.equal(before.running_mean, after.running_mean)
        assert torch.equal(before.running_var, after.running_var)
    pruned = env.evaluator.compress({g.name: 0.5 for g in env.groups})  # removed channels: statistics re-estimated
    assert not torch.equal(bns(env.evaluator.model)[-1].running_var[: bns(pruned)[-1].num_features],
                           bns(pruned)[-1].running_var)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward": "speed"}, "unknown reward"),
        ({"reward": "acc_latency"}, "needs latency"),
        ({"budget": 0.01, "max_ratio": 0.3}, "unreachable"),
        ({"bn_recalib_batches": 1}, None),  # fine: calibration images are present
    ],
)
def test_configuration_errors_at_construction(kwargs, message):
    if message is None:
        tiny_env(**kwargs)
        return
    with pytest.raises(ConfigError, match=message):
        tiny_env(**kwargs)


def test_empty_validation_set_and_model_without_groups():
    data = tiny_data()
    empty = EnvData(val_images=data.val_images[:0], val_labels=data.val_labels[:0])
    with pytest.raises(ConfigError, match="validation set is empty"):
        NetCompressEnv(get_model("tiny_cnn"), empty, EnvConfig())
    linear_only = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    with pytest.raises(PruneError, match="no prunable channel group"):  # the Pruner refuses it, for every user
        NetCompressEnv(linear_only, data, EnvConfig())
    no_calib = EnvData(val_images=data.val_images, val_labels=data.val_labels)
    with pytest.raises(ConfigError, match="calibration images"):
        NetCompressEnv(get_model("tiny_cnn"), no_calib, EnvConfig(bn_recalib_batches=1))


def test_step_outside_an_episode_is_refused():
    env = tiny_env()
    with pytest.raises(ConfigError, match=r"step\(\) before the first reset\(\).*call reset\(\)"):
        env.step(np.array([0.5], np.float32))
    rollout(env, np.full((len(env.groups), 1), 0.5, np.float32))
    with pytest.raises(ConfigError, match="no episode in progress"):
        env.step(np.array([0.5], np.float32))
    env.reset(seed=0)
    assert env.step(np.array([0.5], np.float32))[4]["group"] == env.group_names[0]


@pytest.fixture(scope="module")
def shared_env() -> NetCompressEnv:
    return tiny_env()


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([], np.float32), r"shape \(0,\) \(0 values\)"),
        (np.zeros(3, np.float32), r"shape \(3,\) \(3 values\)"),
        (np.zeros((1, 1, 2), np.float32), r"shape \(1, 1, 2\)"),
        (np.array([np.nan], np.float32), "action is nan"),
        (np.array([np.inf], np.float32), "action is inf"),
        (np.array([-np.inf], np.float32), "action is -inf"),
        ("0.5", "'0.5' is not a number"),
        (None, "None is not a number"),
        ([object()], "is not numeric"),
    ],
)
def test_malformed_actions_are_refused_and_leave_the_episode_intact(shared_env, action, match):
    shared_env.reset(seed=0)
    with pytest.raises(ConfigError, match=match):
        shared_env.step(action)
    assert shared_env.step(np.array([0.5], np.float32))[4]["group"] == shared_env.group_names[0]


def test_finite_actions_outside_the_box_are_clipped(shared_env):
    first_ratio = {}
    for a in (-3.0, 0.0, 1.0, 5.0, 1e30):
        shared_env.reset(seed=0)
        first_ratio[a] = shared_env.step(np.array([a], np.float32))[4]["prune_ratio"]
    assert first_ratio[-3.0] == first_ratio[0.0] and first_ratio[5.0] == first_ratio[1e30] == first_ratio[1.0]
    shared_env.reset(seed=0)
    assert shared_env.step(0.5)[4]["prune_ratio"] == pytest.approx(shared_env.prune_ratio_of(0.5))  # scalars too


@pytest.mark.parametrize("action", [-1, 5, 2.5, np.float32(2.0), True, "1", None, np.array([1, 2]), np.array([])])
def test_discrete_wrapper_refuses_what_is_not_a_bin(shared_env, action):
    env = DiscreteActions(shared_env, bins=5)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"not a bin index; the action space is Discrete\(5\)"):
        env.step(action)


def test_discrete_wrapper_takes_integer_bins(shared_env):
    env = DiscreteActions(shared_env, bins=5)
    for action in (2, np.int64(2), np.array(2), np.array([2])):
        env.reset(seed=0)
        assert env.step(action)[4]["prune_ratio"] == pytest.approx(shared_env.prune_ratio_of(0.5))


def test_internal_scope_exposes_fewer_groups():
    all_groups = tiny_env(prune=PruneConfig(scope="all"))
    internal = tiny_env(prune=PruneConfig(scope="internal"))
    assert 0 < len(internal.groups) < len(all_groups.groups)


def test_gymnasium_make_from_a_config_file(tmp_path):
    cfg = load_config({
        "model": {"name": "tiny_cnn"},
        "data": {"name": "digits", "val_size": 100},
        "env": {"val_images": 50, "budget": 0.6},
    })
    path = tmp_path / "exp.yaml"
    path.write_text(dump_config(cfg))
    env = gym.make(ENV_ID, config=str(path))
    assert isinstance(env.unwrapped, NetCompressEnv)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_gymnasium_make_honours_pretrain(tmp_path, capsys):
    """The README's gym.make example must not hand the agent an untrained network."""
    cfg = {"model": {"name": "tiny_cnn"}, "data": {"name": "digits", "val_size": 100, "batch_size": 32},
           "pretrain": {"epochs": 5, "lr": 0.05}, "env": {"val_images": 100, "budget": 0.6},
           "search": {"out_dir": str(tmp_path / "run")}}
    env = gym.make(ENV_ID, config=cfg)
    assert env.unwrapped.baseline_top1 > 60  # 10 classes: an untrained network scores about 10
    assert (tmp_path / "run" / "baseline.pt").is_file()
    assert "training the baseline tiny_cnn" in capsys.readouterr().err
    again = gym.make(ENV_ID, config=cfg)  # the trained baseline is reused, not trained again
    assert again.unwrapped.baseline_top1 == env.unwrapped.baseline_top1
    assert "training the baseline" not in capsys.readouterr().err


def test_stable_baselines3_td3_runs_on_the_env():
    sb3 = pytest.importorskip("stable_baselines3")
    env = tiny_env()
    model = sb3.TD3("MlpPolicy", env, learning_starts=50, train_freq=10, gradient_steps=2, seed=0, verbose=0,
                    policy_kwargs={"net_arch": [32, 32]})
    model.learn(total_timesteps=300)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)


def fixed_cost_lut(lut):
    """`lut` with its timings replaced by a cost that grows with the kept channels, the same on every run.

    Timed tables of tiny_cnn are nearly flat (per-call overhead dominates), so on a busy machine noise can
    make pruning look no faster and the budget unreachable; what the wall guarantees does not depend on the
    numbers.
    """
    from autocompress.measure.lut import LatencyLUT

    data = json.loads(json.dumps(lut.data))
    for e in data["layers"]:
        e["ms"] = [[0.005 + 2e-4 * cin * cout for cout in e["out_choices"]] for cin in e["in_choices"]]
    data["const_ms"], data["scale"] = 0.02, 1.0
    return LatencyLUT(data)


def test_latency_budget_from_the_lookup_table_is_met(tmp_path):
    from autocompress.envs.factory import load_or_build_lut

    budget = 0.5  # tight enough that random actions often need the wall
    cfg = load_config({
        "model": {"name": "tiny_cnn"},
        "env": {"budget_kind": "latency", "budget": budget, "latency_mode": "lut", "reward": "acc_latency",
                "lut_path": str(tmp_path / "lut.json"), "latency": {"rounds": 10, "warmup": 2}},
    })
    torch.manual_seed(0)
    model = get_model("tiny_cnn")
    data = tiny_data(shape=(3, 32, 32))
    timed = load_or_build_lut(cfg, model, data.val_images[:1])
    assert (tmp_path / "lut.json").is_file()
    # a second build reads the saved table instead of timing again
    again = load_or_build_lut(cfg, model, data.val_images[:1])
    assert again.data == timed.data
    env = NetCompressEnv(model, data, cfg.env, lut=fixed_cost_lut(timed))
    lo, hi = env.cfg.min_ratio, env.cfg.max_ratio
    rng = np.random.default_rng(0)
    clipped = 0
    for episode in range(20):
        actions = rng.uniform(0, 1, size=(len(env.groups), 1)).astype(np.float32)
        _, _, info = rollout(env, actions, seed=episode)
        assert info["latency_ms"] <= budget * env.base_lut_ms * (1 + 1e-9)
        assert info["speedup"] >= 1 / budget - 1e-9
        asked = {g.name: lo + float(a[0]) * (hi - lo) for g, a in zip(env.groups, actions, strict=True)}
        clipped += any(info["schedule"][name] > ratio + 1e-9 for name, ratio in asked.items())
    assert clipped > 0, "the wall never raised an action: the budget was not tested"


def test_onnxruntime_evaluation_scores_like_eager():
    pytest.importorskip("onnxruntime")
    eager, onnx = tiny_env(), tiny_env(eval_runtime="onnxruntime")
    assert onnx.baseline_top1 == pytest.approx(eager.baseline_top1)
    actions = np.full((len(eager.groups), 1), 0.5, np.float32)
    assert rollout(onnx, actions)[2]["top1"] == pytest.approx(rollout(eager, actions)[2]["top1"])


def measured_latency_env(tmp_path, **env_overrides) -> NetCompressEnv:
    from autocompress.envs.factory import load_or_build_lut

    env_cfg = {"budget_kind": "latency", "budget": 0.95, "latency_mode": "measured", "reward": "acc_latency",
               "lut_path": str(tmp_path / "lut.json"), "lut_feedback": 3, "latency": {"rounds": 10, "warmup": 2}}
    cfg = load_config({"model": {"name": "tiny_cnn"}, "env": {**env_cfg, **env_overrides}})
    torch.manual_seed(0)
    model = get_model("tiny_cnn")
    data = tiny_data(shape=(3, 64, 64))  # compute, not per-op overhead, dominates: pruning is clearly faster
    return NetCompressEnv(model, data, cfg.env, lut=load_or_build_lut(cfg, model, data.val_images[:1]))


def test_measured_latency_corrects_the_tables_prediction_in_the_wall(tmp_path):
    env = measured_latency_env(tmp_path)
    assert env.lut_correction == 1.0 and env.resource({}) == pytest.approx(env.base_lut_ms)
    rng = np.random.default_rng(0)
    for episode in range(5):
        correction = env.lut_correction
        _, _, info = rollout(env, rng.uniform(0, 1, size=(len(env.groups), 1)).astype(np.float32), seed=episode)
        if info["cached"]:
            continue
        assert info["lut_correction"] == correction  # the correction the wall used in this episode
        predicted_ratio = env.lut.predict_ms(info["kept_channels"]) / env.base_lut_ms
        assert env.lut_feedback[-1] == pytest.approx(1 / info["speedup"] / predicted_ratio)
    recent = env.lut_feedback[-3:]
    assert len(env.lut_feedback) >= 3
    assert env.lut_correction == pytest.approx(min(max(float(np.median(recent)), 0.5), 2.0))
    ratios = dict.fromkeys(env.group_names, 0.5)
    predicted = env.lut.predict_ms(env.pruner.kept_channels(ratios))
    assert env.resource(ratios) == pytest.approx(predicted * env.lut_correction)
    assert env.resource({}) == pytest.approx(env.base_lut_ms)  # the unpruned network is the reference: no factor


def test_latency_correction_can_be_turned_off(tmp_path):
    env = measured_latency_env(tmp_path, lut_feedback=0)
    _, _, info = rollout(env, np.full((len(env.groups), 1), 0.5, dtype=np.float32))
    assert env.lut_feedback == [] and env.lut_correction == 1.0 and "lut_correction" not in info
    with pytest.raises(ConfigError, match="lut_feedback"):
        load_config({"model": {"name": "tiny_cnn"}, "env": {"lut_feedback": -1}})


def test_uniform_baseline_matched_on_measured_speedup(tmp_path):
    """Real pruning and timing: the uniform policy is bisected until its measured speedup reaches the target."""
    from autocompress.measure.latency import LatencyMeter
    from autocompress.search import uniform_ratios_at_speedup

    env = measured_latency_env(tmp_path)
    meter = LatencyMeter(env.cfg.latency, env.input_shape)
    ratios, reached = uniform_ratios_at_speedup(env, meter, 1.05)
    assert set(ratios) == set(env.group_names) and len(set(ratios.values())) == 1
    assert 0 < next(iter(ratios.values())) <= env.cfg.max_ratio and reached >= 1.05
    assert uniform_ratios_at_speedup(env, meter, 1.0) == (dict.fromkeys(env.group_names, 0.0), 1.0)
