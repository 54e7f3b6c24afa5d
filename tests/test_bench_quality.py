"""scripts/bench_quality.py at tiny scale (quickstart: digits, tiny CNN): the report carries issue #14's row keys,
and --schedules-from a written report fine-tunes the very schedules it records, without searching again."""

from __future__ import annotations

import importlib.util
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ROW_KEYS = ("model", "method", "seed", "budget", "episodes", "ft_epochs", "test_images", "macs_ratio",
            "speedup_eager", "speedup_ort", "top1_before_ft", "top1_after_ft", "search_s", "ft_s")


@cache
def bench() -> Any:
    sys.path.insert(0, str(REPO / "scripts"))  # the script imports its sibling plot_utils
    spec = importlib.util.spec_from_file_location("autocompress_bench_quality", REPO / "scripts/bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    bench().main(["--configs", str(REPO / "experiments/quickstart.yaml"), "--seeds", "0", "--episodes", "4",
                  "--ft-epochs", "1", "--ft-max-batches", "2", "--rounds", "2", "--threads", "1",
                  "--work", str(tmp_path / name), "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_a_report_s_schedules_are_fine_tuned_again_without_a_search(tmp_path):
    first = _run(tmp_path, "first", "--methods", "dqn", "uniform")
    assert [tuple(r)[: len(ROW_KEYS)] for r in first["rows"]] == [ROW_KEYS] * 2
    again = _run(tmp_path, "again", "--methods", "dqn", "--ft-epochs", "2",
                 "--schedules-from", str(tmp_path / "first.json"))
    (old,) = [d for d in first["details"] if d["method"] == "dqn"]
    (new,) = again["details"]
    assert new["schedule"] == pytest.approx(old["schedule"])  # the same network, pruned the same way
    assert new["schedule_from"] == str(tmp_path / "first.json") and new["ft_epochs"] == 2
    assert (new["search_s"], new["best_episode"]) == (old["search_s"], old["best_episode"])  # no new search


def test_a_report_without_the_asked_cell_is_a_one_line_error(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"details": []}))
    with pytest.raises(SystemExit, match="has no tiny_cnn random seed 0 row") as info:
        _run(tmp_path, "w", "--methods", "random", "--schedules-from", str(report))
    assert "\n" not in str(info.value)
