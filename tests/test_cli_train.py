"""CLI `models`, `train` and `evaluate`, run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autocompress.cli import main
from autocompress.models import get_model


def test_models_lists_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)["models"]
    assert "cifar10_resnet56" in names and "tiny_cnn" in names
    assert main(["models"]) == 0
    assert "tv:<name>" in capsys.readouterr().out


def test_train_then_evaluate_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny_cnn", "--data", "digits", "--epochs", "4", "--lr", "0.2",
                 "--batch-size", "64", "--val-size", "200", "--max-batches", "15", "--out", str(out),
                 "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test"]["n"] == 360 and result["test"]["top1"] > 50.0
    assert len(result["history"]) == 4
    for name in ("model.pth", "checkpoint.pt", "result.json"):
        assert (out / name).is_file()
    # the saved state dict is plain and fits the 1-channel model built from the dataset
    get_model("tiny_cnn", 10, out / "model.pth", in_channels=1)

    assert main(["evaluate", "--model", "tiny_cnn", "--weights", str(out / "model.pth"), "--data", "digits",
                 "--split", "test", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert set(ev) == {"top1", "top5", "loss", "images_per_s", "n", "model", "data", "split"}
    assert ev["top1"] == pytest.approx(result["test"]["top1"])
    assert main(["evaluate", "--model", "tiny_cnn", "--weights", str(out / "model.pth"), "--split", "val",
                 "--val-size", "200", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 200


def test_train_with_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = tmp_path / "teacher.pth"
    torch.save(get_model("tiny_cnn", in_channels=1).state_dict(), teacher)
    assert main(["train", "--model", "tiny_cnn", "--data", "digits", "--epochs", "1", "--max-batches", "3",
                 "--teacher", "tiny_cnn", "--teacher-weights", str(teacher), "--out", str(tmp_path / "kd"),
                 "--quiet"]) == 0
    assert "final test top-1" in capsys.readouterr().out


def test_train_resume_finishes_a_run_and_refuses_another_epoch_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--model", "tiny_cnn", "--data", "digits", "--max-batches", "2", "--out", str(tmp_path / "r"),
            "--quiet", "--resume"]
    assert main([*args, "--epochs", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*args, "--epochs", "2", "--json"]) == 0  # already finished: nothing trains again
    captured = capsys.readouterr()
    assert "epoch 2/2 done" in captured.err
    assert json.loads(captured.out)["test"]["top1"] == pytest.approx(first["test"]["top1"])
    assert main([*args, "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "2-epoch run, this one has 3 epochs" in err and "Traceback" not in err


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "resnet57", "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet57'" in err and "Traceback" not in err
    assert main(["evaluate", "--model", "tiny_cnn", "--weights", str(tmp_path / "x.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--model", "tiny_cnn", "--data", "cifar10", "--data-root", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["train", "--model", "tiny_cnn", "--data", "digits", "--teacher", "tiny_cnn"]) == 2
    assert "--teacher-weights" in capsys.readouterr().err


def test_evaluate_shared_resnet20(shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", "cifar10_resnet20", "--weights", str(shared / "models" / "cifar10_resnet20.pth"),
                 "--data", "cifar10_subset", "--data-root", str(shared / "data"), "--split", "test", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 761 and res["top1"] == pytest.approx(91.72, abs=0.01)


def test_train_seed_repeats_a_run_from_scratch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`train --seed` fixes the initial weights, augmentation and order: the same seed, the same network."""
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed + 1000)  # whatever the global state was must not matter
        assert main(["train", "--model", "tiny_cnn", "--data", "digits", "--epochs", "1", "--max-batches", "3",
                     "--seed", str(seed), "--out", str(tmp_path / name), "--quiet"]) == 0
        return torch.load(tmp_path / name / "model.pth", weights_only=True)

    a, b, c = weights(0, "a"), weights(0, "b"), weights(1, "c")
    capsys.readouterr()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
