"""scripts/bench_quantization.py's int8_ft control and scripts/paired_quant.py at tiny scale (digits, tiny CNN):
the control is INT8 everywhere with nothing pruned after the search cells' fine-tune, kept out of issue #15's
rows, and its paired tests pool one --work folder per seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from script_loader import load_script

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from autocompress.models import get_model  # noqa: E402
from autocompress.pruning import Schedule  # noqa: E402

CONFIG = {
    "name": "tiny-joint",
    "model": {"name": "tiny_cnn"},
    "data": {"name": "digits", "val_size": 60, "batch_size": 64},
    "env": {"precisions": "fp32+int8", "budget_kind": "latency", "budget": 0.8, "latency_mode": "measured",
            "reward": "acc_latency", "val_images": 60, "bn_recalib_batches": 1, "bn_recalib_batch_size": 32,
            "latency": {"runtime": "onnxruntime", "rounds": 3, "warmup": 1, "threads": 1},
            "quant": {"calib_images": 32}},
    "search": {"agent": "dqn", "episodes": 4, "seed": 0, "out_dir": "unused", "checkpoint_every": 2},
    "dqn": {"warmup_episodes": 2, "batch_size": 8, "bins": 3},
    "finetune": {"epochs": 1, "lr": 0.01, "distill": True},
}


def _main(script: str, monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    load_script(script).main()


@pytest.fixture(scope="module")
def controls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The int8_ft control of seeds 0 and 1 (one --work folder each) and an int8_ptq row, made once."""
    tmp = tmp_path_factory.mktemp("controls")
    torch.manual_seed(0)
    torch.save(get_model("tiny_cnn", in_channels=1).state_dict(), tmp / "tiny_cnn.pth")  # digits: 1 channel
    config = tmp / "tiny-joint.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "model": {"name": "tiny_cnn", "weights": str(tmp / "tiny_cnn.pth")}}))
    with pytest.MonkeyPatch.context() as mp:
        for seed in (0, 1):
            _main("bench_quantization", mp, "--configs", str(config), "--methods", "int8_ptq", "--controls", "int8_ft",
                  "--joint-config", str(config), "--ft-epochs", "1", "--rounds", "3", "--calib", "32",
                  "--seed", str(seed), "--work", str(tmp / f"w{seed}"), "--json", str(tmp / f"r{seed}.json"))
    return {"tmp": tmp, "config": config, "report": json.loads((tmp / "r0.json").read_text())}


def test_the_control_is_int8_everywhere_unpruned_after_the_cells_fine_tune(controls):
    report = controls["report"]
    assert [r["method"] for r in report["rows"]] == ["int8_ptq"]  # issue #15's rows keep their methods
    (row,) = report["control_rows"]
    assert (row["method"], row["seed"], row["target_speedup"], row["episodes"]) == ("int8_ft", 0, None, 0)
    schedule = Schedule.load(Path(row["run_dir"]) / "best_schedule.json")
    assert set(schedule.prune_ratios().values()) == {0.0} and row["blocks_removed"] == 0
    assert row["int8_layers"] == row["layers"] > 0 and set(schedule.layer_precision().values()) == {"int8"}
    assert (Path(row["run_dir"]) / "finetune" / "checkpoint.pt").is_file() and row["ft_s"] > 0
    assert row["test_images"] == report["rows"][0]["test_images"] and row["speedup_measured"] > 0


def test_paired_tests_pool_one_work_folder_per_seed(controls, monkeypatch):
    tmp = controls["tmp"]
    out = tmp / "paired.json"
    _main("paired_quant", monkeypatch, "--configs", str(controls["config"]), "--work", str(tmp / "w0"),
          str(tmp / "w1"), "--report", str(tmp / "r0.json"), "--cells", "int8_ft", "--calib", "32", "--json", str(out))
    (test,) = json.loads(out.read_text())["tests"]
    rows = [json.loads((tmp / f"w{s}" / "tiny_cnn" / "int8_ft.json").read_text()) for s in (0, 1)]
    assert test["seeds"] == [0, 1] and set(test["mcnemar_per_seed"]) == {"0", "1"}
    assert test["a_top1"] == pytest.approx(sum(r["top1_after_ft"] for r in rows) / 2)
    assert [s["a_top1"] for s in test["per_seed"]] == [r["top1_after_ft"] for r in rows]
    assert test["b_top1"] == controls["report"]["rows"][0]["top1_after_ft"]  # INT8 alone: one network for both


def test_one_seed_given_twice_is_a_one_line_error(controls, monkeypatch):
    tmp = controls["tmp"]
    with pytest.raises(SystemExit, match="one seed twice"):
        _main("paired_quant", monkeypatch, "--configs", str(controls["config"]), "--work", str(tmp / "w0"),
              str(tmp / "w0"), "--report", str(tmp / "r0.json"), "--cells", "int8_ft", "--calib", "32",
              "--json", str(tmp / "twice.json"))
