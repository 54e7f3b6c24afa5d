"""Weight sparsity for size (issue #15 item 3): zeroed weights per group, the compressed export's real bytes,
the size budget, schedules that record it, searches, fine-tuning that keeps the zeros, and `apply`."""

from __future__ import annotations

import copy
import io
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from test_search import small_config

from autocompress.cli import main
from autocompress.config import ConfigError, EnvConfig, PruneConfig, load_config, validate
from autocompress.envs import EnvData, NetCompressEnv
from autocompress.envs.sparse import SIZE_MARGIN
from autocompress.export import load_pruned
from autocompress.measure.size import SizeTable, compressed_bytes, deflated_archive, save_deflated
from autocompress.models import get_model
from autocompress.pipeline import build, run_experiment
from autocompress.pruning import Pruner, Schedule, ScheduleError, apply_schedule
from autocompress.pruning.sparsity import WeightSparsity, freeze_zeros, remove_masks, sparsify, zeroed_count
from autocompress.search import BEST_SCHEDULE, Search, SearchError
from autocompress.tournament import short_finetune

TOLERANCE = 0.005
"""How far the size table's prediction may miss the measured archive between its grid levels (linear
interpolation); the wall keeps SIZE_MARGIN of a size budget in reserve for it."""


def tiny(in_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("tiny_cnn", in_channels=in_channels).eval()


@pytest.fixture(scope="module")
def pruner() -> Pruner:
    return Pruner(tiny(), torch.zeros(1, 3, 16, 16), PruneConfig(scope="all"))


def sparse_env(**kw) -> NetCompressEnv:
    g = torch.Generator().manual_seed(0)
    data = EnvData(torch.randn(48, 3, 16, 16, generator=g), torch.randint(0, 10, (48,), generator=g))
    base = dict(sparsity="unstructured", budget_kind="size", budget=0.4, max_ratio=0.95, val_images=48,
                prune=PruneConfig(scope="all"))
    cfg = EnvConfig(**{**base, **kw})
    validate(cfg, "env")
    return NetCompressEnv(tiny(), data, cfg, model_name="tiny_cnn")


def play(env: NetCompressEnv, actions) -> dict:
    env.reset(seed=0)
    for a in actions:
        *_, terminated, _, info = env.step(np.array([a], np.float32))
    assert terminated
    return info


def test_each_layer_loses_exactly_its_smallest_weights(pruner):
    model = tiny()
    weights = WeightSparsity(model, pruner.layer_specs, pruner.group_names)
    assert weights.layers == {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "conv4": "conv2"}  # fc: dense
    chosen = {"conv1": 0.3, "conv2": 0.75, "conv3": 0.9}
    sparse = sparsify(copy.deepcopy(model), weights.layer_sparsity(chosen))
    before, after = dict(model.named_modules()), dict(sparse.named_modules())
    for layer, group in weights.layers.items():
        w, s = before[layer].weight.detach(), after[layer].weight.detach()
        zeroed = s == 0
        assert int(zeroed.sum()) == zeroed_count(w.numel(), chosen[group])
        assert w[zeroed].abs().max() <= w[~zeroed].abs().min()  # magnitude: the smallest go
        assert torch.equal(s[~zeroed], w[~zeroed])  # the rest untouched
        assert not hasattr(after[layer], "weight_mask")  # prune.remove made it a plain tensor
    assert torch.equal(after["fc"].weight, before["fc"].weight)
    measured = sum(int(torch.count_nonzero(p)) for p in sparse.parameters())
    assert weights.nonzero_params(chosen) == measured < weights.base_nonzero
    assert all(torch.count_nonzero(p) == p.numel() for p in model.parameters() if p.dim() > 1)  # input untouched


def test_compressed_export_really_shrinks_and_loads_as_it_is(pruner, tmp_path):
    model = tiny()
    weights = WeightSparsity(model, pruner.layer_specs, pruner.group_names)
    sizes = [compressed_bytes(sparsify(copy.deepcopy(model), weights.layer_sparsity(dict.fromkeys(pruner.group_names, s))))
             for s in (0.0, 0.5, 0.9)]
    assert sizes[0] > sizes[1] > sizes[2]
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    assert sizes[0] < len(raw.getvalue())  # deflated, even dense
    sparse = sparsify(copy.deepcopy(model), weights.layer_sparsity(dict.fromkeys(pruner.group_names, 0.9)))
    path = save_deflated(sparse.state_dict(), tmp_path / "w.pt")
    assert path.stat().st_size == sizes[2] == len(deflated_archive(sparse.state_dict()))  # the same bytes each time
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in sparse.state_dict().items())


def test_size_table_prices_the_archive_it_predicts(pruner):
    model = tiny()
    weights = WeightSparsity(model, pruner.layer_specs, pruner.group_names)
    table = SizeTable.build(compressed_bytes(model), list(weights.layers), weights.sparse_weight)
    rng = np.random.default_rng(0)
    for k, level in enumerate([0.0, 0.5, 0.9, *rng.uniform(0, 0.95, 4)]):
        chosen = {g: float(level if k < 3 else rng.uniform(0, 0.95)) for g in pruner.group_names}
        layers = weights.layer_sparsity(chosen)
        real = compressed_bytes(sparsify(copy.deepcopy(model), layers))
        if k < 3:  # grid levels: exact, as entries are deflated independently
            assert table.predict(layers) == real
        assert table.predict(layers) == pytest.approx(real, rel=TOLERANCE)
    assert all(np.all(np.diff(v) <= 0) for v in table.layer_bytes.values())  # the wall's bisection needs this


def test_size_budget_is_met_for_random_actions():
    env = sparse_env()
    check_env(env, skip_render_check=True)
    rng = np.random.default_rng(1)
    keys = set()
    for _ in range(5):
        info = play(env, rng.random(len(env.groups)))
        assert info["predicted_bytes"] <= env.cfg.budget * (1 - SIZE_MARGIN) * info["baseline_compressed_bytes"]
        assert info["size_ratio"] <= env.cfg.budget  # measured, not just predicted
        assert info["compressed_bytes"] < info["baseline_compressed_bytes"]
        assert info["macs_ratio"] == 1.0 and info["params_ratio"] == 1.0  # no channel removed, no speed claim
        assert 0 < info["nonzero_ratio"] < 1
        keys.add(env.evaluator.network_key(info["schedule"]))
    assert len(keys) == 5  # different sparsities are different networks, not cache hits
    info = play(env, [0.0] * len(env.groups))  # the wall raises what the actions leave short
    assert info["size_ratio"] <= env.cfg.budget


def test_params_budget_holds_the_nonzero_count_exactly():
    env = sparse_env(budget_kind="params", budget=0.3)
    for seed in range(3):
        info = play(env, np.random.default_rng(seed).random(len(env.groups)))
        assert info["nonzero_ratio"] <= 0.3
        assert "predicted_bytes" not in info  # no size table without a size budget


def test_an_unreachable_size_budget_is_refused():
    with pytest.raises(ConfigError, match="unreachable"):
        sparse_env(budget=0.05, max_ratio=0.5)


@pytest.mark.parametrize(("env", "field"), [
    ({"budget_kind": "size"}, "env.budget_kind"),
    ({"sparsity": "unstructured"}, "env.budget_kind"),  # macs: zeros are not faster
    ({"sparsity": "unstructured", "budget_kind": "latency", "latency_mode": "measured"}, "env.budget_kind"),
    ({"sparsity": "unstructured", "budget_kind": "size", "precisions": "fp32+int8", "latency_mode": "measured",
      "latency": {"runtime": "onnxruntime"}}, "env.precisions"),
    ({"sparsity": "unstructured", "budget_kind": "size", "latency_mode": "lut"}, "env.latency_mode"),
    ({"sparsity": "unstructured", "budget_kind": "size", "prune": {"criterion": "fpgm"}}, "env.prune.criterion"),
    ({"sparsity": "unstructured", "budget_kind": "size", "prune": {"reconstruct": True}}, "env.prune.reconstruct"),
    ({"sparsity": "unstructured", "budget_kind": "size", "prune": {"round_to": 8}}, "env.prune.round_to"),
    ({"sparsity": "unstructured", "budget_kind": "size", "scorer": "episodic_return",
      "task": {"env_id": "CartPole-v1"}}, "env.scorer"),
])
def test_incompatible_settings_are_refused_in_one_line(env, field):
    with pytest.raises(ConfigError) as err:
        load_config({"env": env})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"config.{field}: "), message


def test_schedule_records_per_layer_sparsity_and_round_trips(pruner, tmp_path):
    weights = WeightSparsity(tiny(), pruner.layer_specs, pruner.group_names)
    chosen = {"conv1": 0.2, "conv2": 0.8, "conv3": 0.6}
    block = {"method": "l1_unstructured", "groups": chosen, "layers": weights.layer_sparsity(chosen)}
    schedule = Schedule.from_pruner(pruner, {}, "tiny_cnn", budget={"kind": "size", "fraction": 0.4}, sparsity=block)
    assert schedule.sparse and schedule.layer_sparsity()["conv4"] == 0.8 and schedule.group_sparsity() == chosen
    assert schedule.kept_channels() == {g.name: g.channels for g in pruner.all_groups}  # channels all kept
    path = schedule.save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["version"] == 3 and data["sparsity"] == block
    loaded = Schedule.load(path)
    assert loaded == schedule and loaded.to_json() == schedule.to_json()
    plain = Schedule.from_pruner(pruner, {"conv1": 0.5}, "tiny_cnn")
    assert json.loads(plain.to_json())["version"] == 2  # earlier readers still read what they can apply
    for version in (1, 2):  # older files load; a sparsity block needs version 3
        old = json.loads(plain.to_json())
        old["version"] = version
        assert Schedule.from_json(json.dumps(old)).sparsity is None
        with pytest.raises(ScheduleError, match="needs schedule version 3"):
            Schedule.from_json(json.dumps({**old, "sparsity": block}))


@pytest.mark.parametrize(("edit", "match"), [
    (lambda b: b.update(method="random"), "method"),
    (lambda b: b["layers"].update(conv1=1.0), "outside"),
    (lambda b: b["groups"].update(nowhere=0.5), "not in 'groups'"),
    (lambda b: b.pop("groups"), "exactly the keys"),
])
def test_malformed_sparsity_blocks_are_refused(pruner, edit, match):
    block = {"method": "l1_unstructured", "groups": {"conv1": 0.5}, "layers": {"conv1": 0.5}}
    data = json.loads(Schedule.from_pruner(pruner, {}, "tiny_cnn", sparsity=block).to_json())
    edit(data["sparsity"])
    with pytest.raises(ScheduleError, match=match):
        Schedule.from_json(json.dumps(data))


def test_a_schedule_for_other_layers_does_not_apply(pruner):
    block = {"method": "l1_unstructured", "groups": {"conv1": 0.5}, "layers": {"features.9": 0.5}}
    schedule = Schedule.from_pruner(pruner, {}, "tiny_cnn", sparsity=block)
    with pytest.raises(ScheduleError, match="features.9"):
        apply_schedule(tiny(), schedule, torch.zeros(1, 3, 16, 16))


def test_fine_tuning_keeps_the_zeros(pruner):
    model = tiny()
    weights = WeightSparsity(model, pruner.layer_specs, pruner.group_names)
    sparse = sparsify(copy.deepcopy(model), weights.layer_sparsity(dict.fromkeys(pruner.group_names, 0.7)))
    freeze_zeros(sparse, weights.layers).train()
    zeros = {n: int((m.weight == 0).sum()) for n, m in sparse.named_modules() if n in weights.layers}
    opt = torch.optim.SGD(sparse.parameters(), lr=0.5, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        sparse(torch.randn(8, 3, 16, 16)).square().mean().backward()
        opt.step()
    remove_masks(sparse)
    after = {n: int((m.weight == 0).sum()) for n, m in sparse.named_modules() if n in weights.layers}
    assert after == zeros and all(not hasattr(m, "weight_orig") for m in sparse.modules())


def size_config(out_dir, agent: str, episodes: int = 8, weights=None, **extra):
    cfg = small_config(out_dir, agent, episodes)
    env = replace(cfg.env, sparsity="unstructured", budget_kind="size", budget=0.4, max_ratio=0.95,
                  prune=replace(cfg.env.prune, scope="all"))
    cfg = replace(cfg, env=env, **extra)
    if weights is not None:  # the baseline trained once, by the first search
        cfg = replace(cfg, pretrain=None, model=replace(cfg.model, weights=str(weights)))
    validate(cfg.env, "env")
    return cfg


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A trained tiny CNN on digits (the first search trains it), shared by the other searches."""
    out = tmp_path_factory.mktemp("size") / "ddpg"
    summary = run_experiment(size_config(out, "ddpg"), progress=False, finalize_run=False)
    return out, summary


@pytest.mark.parametrize("agent", ["ddpg", "dqn", "uniform", "random", "sensitivity"])
def test_searches_meet_the_size_budget_and_record_it(baseline, tmp_path, agent):
    run_dir, summary = baseline
    if agent != "ddpg":
        run_dir = tmp_path / agent
        summary = run_experiment(size_config(run_dir, agent, weights=baseline[0] / "baseline.pt"),
                                 progress=False, finalize_run=False)
    schedule = Schedule.load(run_dir / BEST_SCHEDULE)
    assert schedule.sparse and schedule.budget == {"kind": "size", "fraction": 0.4}
    assert schedule.metrics["size_ratio"] <= 0.4
    assert summary["best"]["size_ratio"] == schedule.metrics["size_ratio"]
    assert set(schedule.group_sparsity()) == {"conv1", "conv2", "conv3"}
    assert schedule.layer_sparsity()["conv4"] == schedule.group_sparsity()["conv2"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert all(h["size_ratio"] <= 0.4 for h in history)


def test_a_killed_sparse_search_resumes_to_the_same_result(baseline, tmp_path):
    weights = baseline[0] / "baseline.pt"
    straight = size_config(tmp_path / "straight", "dqn", episodes=8, weights=weights)
    run_experiment(straight, progress=False, finalize_run=False)
    killed = size_config(tmp_path / "killed", "dqn", episodes=8, weights=weights)
    env, _ = build(killed, progress=False)
    Search(killed, env, tmp_path / "killed").run(progress=False, stop_after=6)  # checkpoint at 4
    run_experiment(killed, resume=True, progress=False, finalize_run=False)
    a, b = ([json.loads(line) for line in (tmp_path / run / "history.jsonl").read_text().splitlines()]
            for run in ("straight", "killed"))
    assert [h["episode"] for h in b] == list(range(8))
    assert [(h["reward"], h["compressed_bytes"]) for h in a] == [(h["reward"], h["compressed_bytes"]) for h in b]
    assert Schedule.load(tmp_path / "straight" / BEST_SCHEDULE).to_json() == Schedule.load(
        tmp_path / "killed" / BEST_SCHEDULE).to_json()


def test_channel_ranking_baseline_is_refused(baseline, tmp_path):
    cfg = size_config(tmp_path / "g", "global", weights=baseline[0] / "baseline.pt")
    env, _ = build(cfg, progress=False)
    with pytest.raises(SearchError, match="ranks channels"):
        Search(cfg, env, tmp_path / "g")


def test_the_tournaments_short_fine_tunes_keep_the_zeros(baseline, tmp_path):
    cfg = size_config(tmp_path / "t", "random", weights=baseline[0] / "baseline.pt")
    env, bundle = build(cfg, progress=False)
    chosen = dict.fromkeys(env.group_names, 0.8)
    model = env.evaluator.compress(chosen, keep_masks=True)
    layers = env.evaluator.sparse.layers
    before = {layer: model.get_submodule(layer).weight.detach().clone() for layer in layers}
    short_finetune(model, bundle, 3, 0.05, env.model, seed=0)
    remove_masks(model)
    for layer in layers:
        w0, w1 = before[layer], model.get_submodule(layer).weight.detach()
        assert torch.equal(w1 == 0, w0 == 0) and not torch.equal(w0, w1)  # trained, the same weights zero


def test_finalize_and_apply_ship_the_sparse_model(baseline, tmp_path, capsys):
    """Tournament and fine-tune keep the zeros; the saved model and `apply`'s are sparse, deflated, loadable."""
    from autocompress.config import TournamentConfig, TrainConfig

    weights = baseline[0] / "baseline.pt"
    cfg = size_config(tmp_path / "run", "random", episodes=6, weights=weights,
                      finetune=TrainConfig(epochs=1, lr=0.01, max_batches=4),
                      tournament=TournamentConfig(finalists=2, ft_batches=2, val_images=60))
    summary = run_experiment(cfg, progress=False)
    size = summary["size"]
    schedule = Schedule.load(tmp_path / "run" / BEST_SCHEDULE)
    assert size["size_ratio"] <= 0.4 * (1 + 0.05)  # fine-tuned weights, the same zeros: about the searched size
    model, saved = load_pruned(summary["artefacts"]["pruned_model"])
    assert saved.layer_sparsity() == schedule.layer_sparsity()
    for name, m in model.named_modules():
        if name in schedule.layer_sparsity():
            assert int((m.weight == 0).sum()) >= zeroed_count(m.weight.numel(), schedule.layer_sparsity()[name])
    assert size["file_bytes"] < size["baseline_compressed_bytes"]

    shutil.copy(tmp_path / "run" / BEST_SCHEDULE, tmp_path / "s.json")
    code = main(["apply", "--model", "tiny_cnn", "--weights", str(weights), "--schedule", str(tmp_path / "s.json"),
                 "--data", "digits", "--out", str(tmp_path / "sparse.pt"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["compressed_bytes"] == schedule.metrics["compressed_bytes"]  # the bytes the search measured
    assert result["size_ratio"] <= 0.4 and result["macs_ratio"] == 1.0
    applied, _ = load_pruned(tmp_path / "sparse.pt")
    assert sum(int(torch.count_nonzero(p)) for p in applied.parameters()) == result["nonzero_params"]
    assert result["file_bytes"] < result["baseline_compressed_bytes"]

    code = main(["finetune", "--model", "tiny_cnn", "--weights", str(weights), "--schedule", str(tmp_path / "s.json"),
                 "--data", "digits", "--epochs", "1", "--max-batches", "3", "--out", str(tmp_path / "ft"), "--json"])
    assert code == 0
    tuned, _ = load_pruned(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pruned_model"])
    for name, m in tuned.named_modules():  # `autocompress finetune` keeps a sparse schedule's zeros too
        if name in schedule.layer_sparsity():
            assert torch.equal(m.weight == 0, applied.get_submodule(name).weight == 0)
