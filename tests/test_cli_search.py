"""CLI: export-schedule and finetune on a real (small) search run, and their errors."""

from __future__ import annotations

import json

import pytest
import torch
from test_search import small_config

from autocompress.cli import main
from autocompress.export import load_pruned
from autocompress.pipeline import run_experiment
from autocompress.pruning import Schedule


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    run_experiment(small_config(out, "random", episodes=3), progress=False, finalize_run=False)
    return out


def test_export_schedule_then_finetune(run_dir, tmp_path, capsys):
    schedule_path = tmp_path / "s.json"
    assert main(["export-schedule", str(run_dir), "--out", str(schedule_path)]) == 0
    assert Schedule.load(schedule_path).to_json() == Schedule.load(run_dir / "best_schedule.json").to_json()
    capsys.readouterr()
    code = main(["finetune", "--model", "tiny_cnn", "--weights", str(run_dir / "baseline.pt"), "--schedule",
                 str(schedule_path), "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "ft"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["top1_before"] < result["top1"] <= 100, "one epoch of fine-tuning should recover accuracy"
    model, schedule = load_pruned(result["pruned_model"])
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert schedule.kept_channels() == Schedule.load(schedule_path).kept_channels()
    # --resume on a finished fine-tune trains nothing more and gives the same network
    code = main(["finetune", "--model", "tiny_cnn", "--weights", str(run_dir / "baseline.pt"), "--schedule",
                 str(schedule_path), "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "ft"), "--json",
                 "--resume"])
    captured = capsys.readouterr()
    assert code == 0 and "epoch 1/1 done" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["top1"] == pytest.approx(result["top1"])


def test_cli_errors_are_one_line_messages(run_dir, tmp_path, capsys):
    assert main(["export-schedule", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    code = main(["finetune", "--model", "cifar10_resnet20", "--schedule", str(run_dir / "best_schedule.json"),
                 "--data", "digits", "--epochs", "0", "--out", str(tmp_path / "ft")])
    assert code == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_finetune_seed_repeats_a_run(run_dir, tmp_path, capsys):
    """`finetune --seed`: the same seed gives the same network, another seed another (augmentation and order)."""
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        code = main(["finetune", "--model", "tiny_cnn", "--weights", str(run_dir / "baseline.pt"), "--schedule",
                     str(run_dir / "best_schedule.json"), "--data", "digits", "--epochs", "1", "--max-batches", "3",
                     "--seed", str(seed), "--out", str(tmp_path / name), "--json"])
        assert code == 0
        path = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pruned_model"]
        return load_pruned(path)[0].state_dict()

    torch.manual_seed(123)  # a different global state before each run must not matter
    a = weights(0, "a")
    torch.manual_seed(456)
    b, c = weights(0, "b"), weights(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert main(["finetune", "--model", "tiny_cnn", "--schedule", str(run_dir / "best_schedule.json"),
                 "--data", "digits", "--seed", "-1", "--out", str(tmp_path / "d")]) == 2
    assert "seed" in capsys.readouterr().err
