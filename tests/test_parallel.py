"""Batched search: rounds of episodes scored together, in this process or on a real Ray cluster (loopback)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from test_search import history, small_config

from autocompress.config import ConfigError, load_config, to_dict
from autocompress.pipeline import build, run_experiment
from autocompress.pruning import Schedule
from autocompress.search import BEST_SCHEDULE, Search


def batched(path, agent="ddpg", episodes=12, **search):
    cfg = small_config(path, agent, episodes=episodes)
    return replace(cfg, search=replace(cfg.search, batch_episodes=4, checkpoint_every=4, **search))


def test_batched_search_is_exact_across_a_kill(tmp_path):
    run_experiment(batched(tmp_path / "straight"), progress=False, finalize_run=False)
    cfg = batched(tmp_path / "killed")
    env, _ = build(cfg, progress=False)
    with Search(cfg, env, tmp_path / "killed") as s:
        s.run(progress=False, stop_after=6)  # killed in the middle of the second round
    run_experiment(cfg, resume=True, progress=False, finalize_run=False)
    a, b = history(tmp_path / "straight"), history(tmp_path / "killed")
    assert [h["episode"] for h in b] == list(range(12))
    assert [h["reward"] for h in a] == [h["reward"] for h in b]
    assert Schedule.load(tmp_path / "straight" / BEST_SCHEDULE).to_json() == Schedule.load(
        tmp_path / "killed" / BEST_SCHEDULE).to_json()


def test_several_workers_need_the_ray_backend():
    with pytest.raises(ConfigError, match="workers need backend: ray"):
        load_config({**to_dict(small_config("x")), "search": {"workers": 2}})


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # 127.0.0.1 only
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield ray, cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_ray_workers_give_the_same_search_as_one_process(tmp_path, ray_cluster):
    ray, cluster = ray_cluster
    run_experiment(batched(tmp_path / "local", "dqn"), progress=False, finalize_run=False)
    cfg = batched(tmp_path / "ray", "dqn", workers=2, backend="ray", address=cluster.address)
    run_experiment(cfg, progress=False, finalize_run=False)
    a, b = history(tmp_path / "local"), history(tmp_path / "ray")
    assert [h["reward"] for h in a] == [h["reward"] for h in b]
    assert [h["schedule"] for h in a] == [h["schedule"] for h in b]
    assert json.loads((tmp_path / "local" / BEST_SCHEDULE).read_text())["groups"] == json.loads(
        (tmp_path / "ray" / BEST_SCHEDULE).read_text())["groups"]
    assert ray.is_initialized()  # the search joined the cluster and left it running


def test_a_ray_worker_that_dies_is_restarted_and_its_schedules_scored(tmp_path, ray_cluster):
    ray, cluster = ray_cluster
    from autocompress.parallel import RayBackend

    cfg = batched(tmp_path / "run", workers=2, backend="ray", address=cluster.address)
    env, _ = build(cfg, progress=False)
    backend = RayBackend(env.evaluator, cfg.search)
    schedules = [{g: r for g in env.group_names} for r in (0.1, 0.3, 0.5, 0.7)]
    ray.kill(backend.workers[0], no_restart=False)  # dies; Ray restarts it and retries its calls
    got = backend.evaluate(schedules)
    backend.close()
    local = [env.evaluator.evaluate(s) for s in schedules]  # cached now: what the workers sent back
    assert [g[1]["top1"] for g in got] == [x[1]["top1"] for x in local]
    assert {g[1]["worker_pid"] for g in got} - {os.getpid()} == {g[1]["worker_pid"] for g in got}  # not here
    fresh, _ = build(batched(tmp_path / "run2"), progress=False)
    assert [fresh.evaluator.evaluate(s)[1]["top1"] for s in schedules] == [g[1]["top1"] for g in got]


def test_measured_latency_is_timed_here_for_outcomes_scored_elsewhere(tmp_path):
    """With measured latency, workers score accuracy only; this process times each network alone."""
    cfg = small_config(tmp_path / "run")
    flops_env, _ = build(cfg, progress=False)
    timed = replace(cfg, env=replace(cfg.env, latency_mode="measured",
                                     latency=replace(cfg.env.latency, rounds=3, warmup=1)))
    env, _ = build(timed, progress=False)
    schedule = {g: 0.5 for g in env.group_names}
    outcome, info = flops_env.evaluator.evaluate(schedule)
    assert outcome.latency_ratio is None
    outcome, info = env.evaluator.with_measured_latency(schedule, outcome, info)
    assert outcome.latency_ratio == pytest.approx(1.0 / info["speedup"]) and info["speedup"] > 0
    assert info["timing"]["latency_s"] > 0 and info["top1"] == flops_env.evaluator.evaluate(schedule)[1]["top1"]


def test_ray_workers_score_int8_choices_and_this_process_times_them(tmp_path, ray_cluster):
    """Joint prune + INT8 policies: workers quantize and score; this process quantizes again and times."""
    pytest.importorskip("onnxruntime")
    ray, cluster = ray_cluster
    from autocompress.parallel import RayBackend

    cfg = load_config({**to_dict(small_config(tmp_path / "run")), "env": {
        "precisions": "fp32+int8", "budget_kind": "latency", "budget": 0.8, "latency_mode": "measured",
        "reward": "acc_latency", "val_images": 120, "bn_recalib_batches": 1, "bn_recalib_batch_size": 32,
        "latency": {"runtime": "onnxruntime", "rounds": 3, "warmup": 1}, "quant": {"calib_images": 32}}})
    cfg = replace(cfg, search=replace(cfg.search, workers=2, backend="ray", address=cluster.address))
    env, _ = build(cfg, progress=False)
    names = env.group_names
    schedules = [dict.fromkeys(names, 0.25)] * 2
    precisions = [dict.fromkeys(names, "int8"), dict.fromkeys(names, "fp32")]
    backend = RayBackend(env.evaluator, cfg.search)
    got = backend.evaluate(schedules, [0.0, 0.0], precisions)
    backend.close()
    assert [g[1]["int8_layers"] > 0 for g in got] == [True, False]
    assert all(g[1]["worker_pid"] != os.getpid() and g[1]["speedup"] > 0 for g in got)
    fresh, _ = build(replace(cfg, search=replace(cfg.search, workers=1, backend="local")), progress=False)
    local = [fresh.evaluator.evaluate(s, precision=p)[1]["top1"] for s, p in zip(schedules, precisions, strict=True)]
    assert [g[1]["top1"] for g in got] == local
