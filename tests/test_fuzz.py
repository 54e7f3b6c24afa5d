"""Fuzzing: malformed schedules, configs, CLI arguments, env actions, checkpoints and pruned files all end in a
project error (or are valid and accepted); never a traceback, a hang or a silent acceptance.

Runs a few hundred cases of scripts/fuzz.py (the full >= 1,000-case run is in docs/BENCHMARKS.md) plus
hypothesis properties over arbitrary JSON values in schedules and configs and arbitrary env actions.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from script_loader import load_script

from autocompress.config import AutocompressError, ConfigError, load_config
from autocompress.pruning import Schedule
from autocompress.pruning.schedule import ScheduleError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def fuzz_module() -> ModuleType:
    return load_script("fuzz")


@cache
def fixture():
    import tempfile

    return fuzz_module().build_fixture(Path(tempfile.mkdtemp(prefix="autocompress-fuzz-test-")))


def test_a_few_hundred_fuzz_cases_end_in_clear_errors():
    fz = fuzz_module()
    result = fz.fuzz(300, seed=12345, timeout=20, progress=False)
    assert set(fz.GENERATORS) <= set(result["by_kind"]), result["by_kind"]  # every class of input was tried
    assert result["errors"] > 200, result["by_kind"]
    bad = [f"{f['outcome']} {f['kind']} {f['case']}: {f['detail']}" for f in result["failures"]]
    assert (result["tracebacks"], result["hangs"], result["silent"]) == (0, 0, 0), "\n".join(bad[:20])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["name", "members", "channels_before", "channels_after", "prune_ratio"]),
       value=JSON, index=st.integers(0, 10))
def test_any_value_in_a_schedule_group_is_refused_or_consistent(field, value, index):
    data = json.loads(json.dumps(fixture().schedule))
    group = data["groups"][index % len(data["groups"])]
    group[field] = value
    try:
        schedule = Schedule.from_json(json.dumps(data))
    except ScheduleError as exc:
        assert "\n" not in str(exc)
        return
    for e in schedule.groups:  # what is accepted is a usable schedule
        assert 1 <= e.channels_after <= e.channels_before and 0 <= e.prune_ratio < 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["search", "ddpg", "dqn", "env", "finetune", "data", "pretrain", "tournament"]),
       key=st.sampled_from(["seed", "episodes", "lr", "tau", "discount", "batch_size", "budget", "max_batches",
                            "momentum", "label_smoothing", "replay_size", "bins", "val_images", "finalists"]),
       value=JSON)
def test_any_value_in_a_config_is_refused_or_usable(tmp_path_factory, section, key, value):
    data = json.loads(json.dumps(fuzz_module().BASE_CONFIG))
    data.setdefault(section, {})[key] = value
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    try:
        fuzz_module()._load_config(fixture(), path)  # load, build the model and agent, take steps, learn
    except AutocompressError as exc:
        assert "\n" not in str(exc)
    else:
        if isinstance(value, float) and not math.isfinite(value):
            pytest.fail(f"{section}.{key}={value} accepted")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda v: np.array([v], np.float32)),
    st.lists(st.floats(-2, 2), min_size=0, max_size=4).map(lambda v: np.array(v, np.float32)),
    st.floats(-2, 2), st.none(), st.text(max_size=3)))
def test_any_env_action_is_refused_or_gives_a_valid_step(action):
    env = fixture().env
    env.reset(seed=0)
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except AutocompressError as exc:
        assert "\n" not in str(exc)
        return
    finite = np.asarray(action, dtype=np.float64).size == 1 and np.isfinite(np.asarray(action, np.float64)).all()
    assert finite, f"non-finite or wrong-shape action {action!r} was accepted"
    assert env.observation_space.contains(obs) and math.isfinite(reward)


def test_fuzz_config_module_loads_valid_base():
    assert load_config(fuzz_module().BASE_CONFIG).model.name == "tiny_cnn"
    with pytest.raises(ConfigError):
        load_config({**fuzz_module().BASE_CONFIG, "surprise": 1})
