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
        ({"env": {"quant": {"reduce_range": 1}}}, "env.quant.reduce_range: must be auto, true or false"),
        ({"env": {"quant": {"reduce_range": "sometimes"}}}, "'sometimes' is not one of 'auto', True, False"),
    ],
)
def test_malformed_configs_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"search": {"seed": -1}}, r"search.seed: -1 must be in \[0, 4294967295\]"),
        ({"search": {"seed": 2**40}}, "search.seed"),
        ({"search": {"torch_threads": 10**9}}, r"search.torch_threads: 1000000000 must be in \[1, 1024\]"),
        ({"ddpg": {"lr_actor": -1e-4}}, "ddpg.lr_actor: must be > 0"),
        ({"ddpg": {"lr_critic": 0}}, "ddpg.lr_critic: must be > 0"),
        ({"ddpg": {"tau": 2}}, r"ddpg.tau: 2.0 must be in \(0, 1\]"),
        ({"ddpg": {"tau": 0}}, r"ddpg.tau: 0.0 must be in \(0, 1\]"),
        ({"ddpg": {"replay_size": 0}}, r"ddpg.replay_size: 0 must be in \[1, "),
        ({"ddpg": {"replay_size": 10**12}}, "ddpg.replay_size: .*allocated up front"),
        ({"ddpg": {"batch_size": 0}}, "ddpg.batch_size: must be >= 1"),
        ({"ddpg": {"batch_size": 4000}}, "ddpg.batch_size: 4000 > replay_size 2000: the agent would never learn"),
        ({"ddpg": {"discount": 1.5}}, r"ddpg.discount: 1.5 must be in \[0, 1\]"),
        ({"ddpg": {"warmup_episodes": -1}}, "ddpg.warmup_episodes: must be >= 0"),
        ({"ddpg": {"noise_sigma": -0.1}}, "ddpg.noise_sigma: must be >= 0"),
        ({"ddpg": {"noise_decay": 1.5}}, r"ddpg.noise_decay: 1.5 must be in \[0, 1\]"),
        ({"ddpg": {"baseline_decay": -0.5}}, "ddpg.baseline_decay"),
        ({"ddpg": {"hidden": 10**9}}, r"ddpg.hidden: .*\(AMC uses 300\)"),
        ({"ddpg": {"updates_per_step": 0}}, "ddpg.updates_per_step"),
        ({"dqn": {"batch_size": 0}}, "dqn.batch_size: must be >= 1"),
        ({"dqn": {"lr": -0.001}}, "dqn.lr: must be > 0"),
        ({"dqn": {"epsilon_start": 1.5}}, r"dqn.epsilon_start: 1.5 must be in \[0, 1\]"),
        ({"dqn": {"epsilon_end": -0.1}}, r"dqn.epsilon_end: -0.1 must be in \[0, 1\]"),
        ({"dqn": {"target_update_steps": 0}}, "dqn.target_update_steps: must be >= 1"),
        ({"dqn": {"bins": 10**9}}, "dqn.bins"),
        ({"dqn": {"replay_size": 0}}, "dqn.replay_size"),
        ({"data": {"batch_size": 0}}, "data.batch_size: must be >= 1"),
        ({"data": {"num_workers": -1}}, "data.num_workers"),
        ({"data": {"seed": -3}}, "data.seed"),
        ({"finetune": {"lr": -0.1}}, "finetune.lr: must be > 0"),
        ({"finetune": {"momentum": -0.5}}, r"finetune.momentum: -0.5 must be in \[0, 1\)"),
        ({"finetune": {"momentum": 1}}, r"finetune.momentum: 1.0 must be in \[0, 1\)"),
        ({"finetune": {"label_smoothing": 2}}, r"finetune.label_smoothing: 2.0 must be in \[0, 1\)"),
        ({"finetune": {"weight_decay": -1e-4}}, "finetune.weight_decay: must be >= 0"),
        ({"finetune": {"max_batches": 0}}, r"finetune.max_batches: must be >= 1 \(or null\)"),
        ({"finetune": {"distill_temperature": 0}}, "finetune.distill_temperature"),
        ({"finetune": {"device": "gpu"}}, "finetune.device: 'gpu': use auto, cpu or cuda"),
        ({"pretrain": {"epochs": -1}}, "pretrain.epochs: must be >= 0"),
        ({"tournament": {"seed": -1}}, "tournament.seed"),
        ({"env": {"bn_recalib_batch_size": 0}}, "env.bn_recalib_batch_size"),
        ({"env": {"latency": {"device": "tpu"}}}, "env.latency.device: 'tpu'"),
        ({"env": {"latency": {"threads": 10**6}}}, "env.latency.threads"),
        ({"model": {"in_channels": 0}}, "model.in_channels"),
    ],
)
def test_out_of_range_numbers_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ddpg": {"discount": float("nan")}}, "ddpg.discount: nan is not a finite number"),
        ({"env": {"budget": float("inf")}}, "env.budget: inf is not a finite number"),
        ({"finetune": {"lr": -float("inf")}}, "finetune.lr: -inf is not a finite number"),
        ({"env": {"reward_kwargs": {"w": float("nan")}}}, "env.reward_kwargs.w: nan is not a finite number"),
        ({"finetune": {"lr": 10**400}}, "finetune.lr: .* is too large for a number"),
        ({1: 2}, "config: key 1 is int, not a field name; quote it"),
        ({"env": {None: 1}}, "env: key None is NoneType, not a field name"),
        ({"env": {"reward_kwargs": {1: 2.0}}}, "env.reward_kwargs: key 1 is int"),
        ({"ddpg": {"lr_actor": "1e-4"}}, "YAML reads 1e-4 as text: write it with a dot"),
    ],
)
def test_non_finite_numbers_and_odd_keys_are_refused(data, message):
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


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_non_utf8_file_names_the_byte(tmp_path):
    path = write(tmp_path, b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\); save it as UTF-8"):
        load_config(path)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "env: " + "{a: " * 5000 + "1" + "}" * 5000])
def test_deep_nesting_is_refused_without_recursion(tmp_path, text):
    with pytest.raises(ConfigError, match="nested more than 20 levels deep"):
        load_config(write(tmp_path, text))


def test_alias_bomb_is_refused_before_expanding(tmp_path):
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 9)}]" for c in "bcdefghi"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert path.stat().st_size < 400  # 9**9 strings once expanded
    with pytest.raises(ConfigError, match=r"line 2, column \d+: YAML aliases \(\*a\) are not allowed"):
        load_config(path)


def test_aliases_are_refused_even_when_small(tmp_path):
    with pytest.raises(ConfigError, match="write the value out in full"):
        load_config(write(tmp_path, "ddpg: &d {batch_size: 32}\ndqn: *d\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env:\n  budget: 0.5\n  budget: 0.3\n", r"line 3, column 3: duplicate key 'budget' \(first at line 2\)"),
        ("env: {}\nsearch: {}\nenv: {}\n", r"line 3, column 1: duplicate key 'env' \(first at line 1\)"),
    ],
)
def test_duplicate_keys_name_key_and_lines(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_oversized_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="over 1,000,000 bytes"):
        load_config(write(tmp_path, "# padding\n" * 200_000))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", r"expected a mapping of keys to values .*got list \['a', 'b'\]"),
        ("just a string\n", "expected a mapping of keys to values .*got str 'just a string'"),
        ("0\n", "expected a mapping of keys to values .*got int 0"),
        ("false\n", "expected a mapping of keys to values .*got bool False"),
        ("1: 2\n", "key 1 is int, not a field name"),
        ("env:\n  yes: 1\n", "env: key True is bool, not a field name; quote it"),
        ("ddpg:\n  discount: .nan\n", "ddpg.discount: nan is not a finite number"),
        ("finetune:\n  lr: -.inf\n", "finetune.lr: -inf is not a finite number"),
        ("search:\n  seed: " + "9" * 5000 + "\n", "line 2, column 9: integer too long"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ],
)
def test_yaml_shapes_give_one_line_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value) and "::" not in str(info.value)


def test_empty_file_and_utf8_bom_still_load(tmp_path):
    assert load_config(write(tmp_path, "# only a comment\n")) == ExperimentConfig()
    assert load_config(write(tmp_path, b"\xef\xbb\xbfname: bom\n")).name == "bom"


@pytest.mark.parametrize("source", [5, [1, 2], None, b"c.yaml"])
def test_load_config_rejects_other_types(source):
    with pytest.raises(ConfigError, match="expected a YAML path"):
        load_config(source)


def test_folder_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


@pytest.mark.parametrize("config", [5, [1, 2], 2.5])
def test_gymnasium_make_rejects_a_config_of_the_wrong_type(config):
    import gymnasium as gym

    from autocompress.envs import ENV_ID

    with pytest.raises(ConfigError, match="config=: expected an ExperimentConfig, a YAML path .* or a mapping"):
        gym.make(ENV_ID, config=config)


def test_control_characters_in_yaml_are_a_config_error(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"search:\n  seed: 1\x1a\n")
    with pytest.raises(ConfigError, match="not valid YAML .*special characters"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("value", ["auto", True, False])
def test_reduce_range_takes_auto_true_or_false(value):
    assert load_config({"env": {"quant": {"reduce_range": value}}}).env.quant.reduce_range == value
