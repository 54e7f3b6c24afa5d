"""Bad command-line values fail in about a second with one line (exit 2), before data or training."""

from __future__ import annotations

import time

import pytest

from autocompress.cli import main


@pytest.mark.parametrize("argv, expect", [
    (["schedule", "uniform", "--model", "tiny_cnn", "--num-classes", "0", "--flops", "0.5"], "num_classes"),
    (["finetune", "--model", "tiny_cnn", "--schedule", "s.json", "--data", "digits", "--epochs", "-2"], "epochs"),
    (["train", "--model", "tiny_cnn", "--data", "digits", "--lr", "-1"], "lr"),
    (["search", "experiments/quickstart.yaml", "--episodes", "0"], "episodes"),
])
def test_bad_numbers_fail_fast_with_one_line(tmp_path, capsys, argv, expect):
    start = time.perf_counter()
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert time.perf_counter() - start < 30  # no pretraining, no epoch of work first
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_weights_gets_a_short_error_without_unsafe_advice(tmp_path, capsys):
    (tmp_path / "w.json").write_text('{"a": 1}')
    assert main(["evaluate", "--model", "tiny_cnn", "--data", "digits", "--weights", str(tmp_path / "w.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # no unrelated note about the val split on a test-split evaluation
    assert "not a PyTorch file" in err[0] and "weights_only" not in err[0]
