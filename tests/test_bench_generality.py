"""scripts/bench_generality.py at tiny scale: rows carry issue #17's keys with the right types, finished cells are
skipped on a rerun, and a --work made with other settings is refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from script_loader import load_script

from autocompress.config import ConfigError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TYPES = {"model": str, "macs_ratio": float, "params_ratio": float, "speedup_eager": float, "speedup_ort": float,
         "macs_ours": int, "macs_reference": int}


def bench() -> ModuleType:
    return load_script("bench_generality")


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--smoke", "--rounds", "2", "--train-threads", "1", "--work", str(tmp_path / "work"),
            "--json", str(tmp_path / "generality.json"), *extra]


def _rows(tmp_path: Path) -> list[dict[str, Any]]:
    rows = json.loads((tmp_path / "generality.json").read_text())["rows"]
    for row in rows:
        assert list(row)[: len(bench().CONTRACT)] == list(bench().CONTRACT)
        for key, kind in TYPES.items():
            assert type(row[key]) is kind, (key, row[key])
        assert row["macs_ours"] == row["macs_reference"]  # our matmul count equals PyTorch's counter
        assert 0.45 <= row["macs_ratio"] <= 0.5 and row["cpu"]
    return rows


def test_torchvision_row_meets_the_contract_resumes_and_refuses_other_settings(tmp_path):
    argv = _argv(tmp_path, "--models", "tv:shufflenet_v2_x1_0", "--input-shape", "3,64,64", "--num-classes", "10")
    bench().main(argv)
    (row,) = _rows(tmp_path)
    assert row["top1_unpruned"] is None and row["top1_after_ft"] is None and row["heads_per_block"] is None
    cell = tmp_path / "work/tv_shufflenet_v2_x1_0/uniform/cell.json"
    stamp = cell.stat().st_mtime_ns
    bench().main(argv)
    assert cell.stat().st_mtime_ns == stamp  # skipped, not redone
    with pytest.raises(ConfigError, match="other settings"):
        bench().main([*argv, "--macs", "0.4"])


def test_lstm_row_fills_test_top1_before_pruning_and_after_fine_tuning(tmp_path, shared):
    bench().main(_argv(tmp_path, "--models", "lstm_seq_fmnist", "--lstm-max-batches", "2",
                       "--data-root", str(shared / "data")))
    (row,) = _rows(tmp_path)
    assert row["model"] == "lstm_seq_fmnist" and row["test_images"] == 10_000
    assert type(row["top1_unpruned"]) is float and type(row["top1_after_ft"]) is float
