"""Each reward function, on hand-made outcomes with known answers."""

import math

import pytest

from autocompress.config import ConfigError
from autocompress.envs.rewards import REWARDS, Outcome, get_reward


def outcome(top1=0.9, macs=1_000_000, latency_ratio=0.5, budget=0.5):
    return Outcome(top1=top1, macs=macs, macs_ratio=0.5, params_ratio=0.6, latency_ratio=latency_ratio, budget=budget)


def test_registry_names():
    assert {"acc", "acc_flops_log", "acc_latency", "acc_latency_linear"} <= set(REWARDS)


def test_acc_is_accuracy():
    assert get_reward("acc", {})(outcome(top1=0.875)) == pytest.approx(0.875)


def test_acc_flops_log_is_minus_error_times_log_flops():
    r = get_reward("acc_flops_log", {})(outcome(top1=0.9, macs=1000))
    assert r == pytest.approx(-0.1 * math.log(1000))
    # fewer FLOPs at the same error is better; lower error at the same FLOPs is better
    assert get_reward("acc_flops_log", {})(outcome(top1=0.9, macs=100)) > r
    assert get_reward("acc_flops_log", {})(outcome(top1=0.95, macs=1000)) > r


def test_acc_latency_hard_constraint_shape():
    fn = get_reward("acc_latency", {"alpha": 0.0, "beta": -1.0})
    assert fn(outcome(top1=0.9, latency_ratio=0.4)) == pytest.approx(0.9)  # within target: accuracy only
    assert fn(outcome(top1=0.9, latency_ratio=1.0)) == pytest.approx(0.9 * 2.0**-1)  # 2x over target: halved
    soft = get_reward("acc_latency", {"alpha": -0.07, "beta": -0.07})
    assert soft(outcome(latency_ratio=0.25)) > soft(outcome(latency_ratio=0.5)) > soft(outcome(latency_ratio=1.0))


def test_acc_latency_linear():
    fn = get_reward("acc_latency_linear", {"lam": 0.2})
    assert fn(outcome(top1=0.9, latency_ratio=0.5)) == pytest.approx(0.8)


def test_latency_reward_without_latency_is_a_clear_error():
    with pytest.raises(ConfigError, match="latency_mode"):
        get_reward("acc_latency", {})(outcome(latency_ratio=None))


def test_unknown_reward_and_bad_kwargs():
    with pytest.raises(ConfigError, match="unknown reward 'speed'.*acc"):
        get_reward("speed", {})
    with pytest.raises(ConfigError, match="gamma not accepted"):
        get_reward("acc_latency", {"gamma": 1.0})
