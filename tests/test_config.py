"""Config loading: defaults, YAML, and clear errors for malformed input."""

import pytest

from autocompress.config import ConfigError, ExperimentConfig, dump_config, load_config


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config({"env": {"budget": 0.4, "prune": {"round_to": 8}}, "search": {"agent": "dqn"}})
    assert cfg.env.budget == 0.4 and cfg.env.prune.round_to == 8 and cfg.search.agent == "dqn"
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_shipped_experiments_load():
    from pathlib import Path

    files = sorted(Path(__file__).parent.parent.glob("experiments/*.yaml"))
    assert files, "experiments/ has no configs"
    for f in files:
        assert isinstance(load_config(f), ExperimentConfig)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"env": {"budget": 1.5}}, r"env.budget: 1.5 is outside \(0, 1\]"),
        ({"env": {"budget": 0}}, r"env.budget"),
        ({"env": {"min_ratio": 0.7, "max_ratio": 0.5}}, "min_ratio 0.7 > max_ratio 0.5"),
        ({"env": {"max_ratio": 1.0}}, r"max_ratio: 1.0 must be in \[0, 1\)"),
        ({"env": {"val_images": 0}}, "val_images: must be > 0"),
        ({"env": {"budget_kind": "energy"}}, "'energy' is not one of 'macs', 'params', 'latency'"),
        ({"env": {"budget_kind": "latency"}}, "latency budget needs latency_mode"),
        ({"env": {"budgett": 0.5}}, "unknown key\\(s\\) 'budgett'; valid keys are budget_kind, budget"),
        ({"search": {"episodes": "many"}}, "search.episodes: expected an integer"),
        ({"env": {"prune": {"criterion": "magic"}}}, "'magic' is not one of"),
        ({"env": {"reward_kwargs": {"w": "x"}}}, "reward_kwargs.w: expected a number"),
        ({"model": None}, "model: null is not allowed"),
    ],
)
def test_malformed_configs_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)
