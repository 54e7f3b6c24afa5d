"""scripts/bench_quality.py at tiny scale (quickstart: digits, tiny CNN): the report carries issue #14's row keys,
and --schedules-from a written report fine-tunes the very schedules it records, without searching again."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from script_loader import load_script

REPO = Path(__file__).resolve().parent.parent
ROW_KEYS = ("model", "method", "seed", "budget", "episodes", "ft_epochs", "test_images", "macs_ratio",
            "speedup_eager", "speedup_ort", "top1_before_ft", "top1_after_ft", "search_s", "ft_s")


def bench() -> ModuleType:
    return load_script("bench_quality")


def _run(tmp_path: Path, name: str, *extra: str, config: Path = REPO / "experiments/quickstart.yaml") -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    bench().main(["--configs", str(config), "--seeds", "0", "--episodes", "4",
                  "--ft-epochs", "1", "--ft-max-batches", "2", "--rounds", "2", "--threads", "1",
                  "--work", str(tmp_path / name), "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_a_report_s_schedules_are_fine_tuned_again_without_a_search(tmp_path):
    first = _run(tmp_path, "first", "--methods", "dqn", "uniform")
    assert [tuple(r)[: len(ROW_KEYS)] for r in first["rows"]] == [ROW_KEYS] * 2
    again = _run(tmp_path, "again", "--methods", "dqn", "--ft-epochs", "2", "--ft-lr", "0.02",
                 "--schedules-from", str(tmp_path / "first.json"))
    (old,) = [d for d in first["details"] if d["method"] == "dqn"]
    (new,) = again["details"]
    assert new["schedule"] == pytest.approx(old["schedule"])  # the same network, pruned the same way
    assert new["schedule_from"] == str(tmp_path / "first.json") and (new["ft_epochs"], new["ft_lr"]) == (2, 0.02)
    assert (new["search_s"], new["best_episode"]) == (old["search_s"], old["best_episode"])  # no new search


def test_a_cell_resumes_another_folder_s_episodes_and_runs_its_own_tournament(tmp_path):
    first = _run(tmp_path, "first", "--methods", "dqn")
    data = yaml.safe_load((REPO / "experiments/quickstart.yaml").read_text())
    data["tournament"] = {"finalists": 2, "ft_batches": 1, "val_images": 30, "include_sensitivity": True}
    data["name"] = "quickstart-portfolio"  # a new experiment's label on the same episodes
    (tmp_path / "portfolio.yaml").write_text(yaml.safe_dump(data))
    again = _run(tmp_path, "again", "--methods", "dqn", "--searches-from", str(tmp_path / "first"),
                 config=tmp_path / "portfolio.yaml")
    old_dir, new_dir = (tmp_path / name / "tiny_cnn" / "dqn-seed0" for name in ("first", "again"))
    assert (new_dir / "history.jsonl").read_text() == (old_dir / "history.jsonl").read_text()  # no new episodes
    tournament = json.loads((new_dir / "tournament.json").read_text())
    assert tournament["rounds"][0]["episodes"][-1] == -2  # the sensitivity allocation entered beside the leaders
    (old,), (new,) = first["details"], again["details"]
    episodes = [json.loads(line)["timing"] for line in (new_dir / "history.jsonl").read_text().splitlines()]
    copied_s = sum(t["total_s"] + t["update_s"] for t in episodes)  # the copied episodes' cost counts, once
    assert new["search_from"] == str(tmp_path / "first")
    assert copied_s + tournament["seconds"] <= new["search_s"] <= copied_s + tournament["seconds"] + 5.0
    assert new["evaluations"] > old["evaluations"]  # the analysis's probes count too
    assert new["tournament_rule_won"] in (None, "sensitivity")


def test_a_resumed_cell_s_search_seconds_count_the_earlier_sitting_s_episodes(tmp_path):
    first = _run(tmp_path, "cells", "--methods", "dqn")
    cell_dir = tmp_path / "cells" / "tiny_cnn" / "dqn-seed0"
    episodes = [json.loads(line)["timing"] for line in (cell_dir / "history.jsonl").read_text().splitlines()]
    episode_s = sum(t["total_s"] + t["update_s"] for t in episodes)
    (cell_dir / "cell.json").unlink()  # as if the first sitting stopped during the fine-tune
    (again,) = _run(tmp_path, "cells", "--methods", "dqn")["details"]
    assert len(episodes) == 4 and episode_s > 0
    assert again["best_episode"] == first["details"][0]["best_episode"]  # the same search, resumed finished
    assert episode_s <= again["search_s"] <= first["details"][0]["search_s"] + 5.0


def test_a_report_without_the_asked_cell_is_a_one_line_error(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"details": []}))
    with pytest.raises(SystemExit, match="has no tiny_cnn random seed 0 row") as info:
        _run(tmp_path, "w", "--methods", "random", "--schedules-from", str(report))
    assert "\n" not in str(info.value)


def test_a_new_run_folder_keeps_an_earlier_report_s_rows_and_their_paired_tests(tmp_path):
    first = _run(tmp_path, "first", "--methods", "dqn", "uniform")
    (dqn,) = [d for d in first["details"] if d["method"] == "dqn"]
    npy = bench().np.load(tmp_path / "first" / "tiny_cnn" / "dqn-seed0" / "test_correct_after_ft.npy")
    assert (bench().unpack_correct(dqn["test_correct_after_ft"], dqn["test_images"]) == npy).all()
    # a new checkout: the run folder is gone, a new seed runs in a new one, the old rows come from the report
    again = _run(tmp_path, "again", "--methods", "uniform", "--seeds", "1", "--keep-rows-from",
                 str(tmp_path / "first.json"))
    assert [(r["method"], r["seed"]) for r in again["rows"]] == [("dqn", 0), ("uniform", 0), ("uniform", 1)]
    assert [d.get("kept_from") for d in again["details"]] == [str(tmp_path / "first.json"), str(tmp_path / "first.json"),
                                                            None]
    (test,) = again["summary"]["paired_tests"]
    assert (test["a"], test["seeds_a"], test["b"], test["seeds_b"]) == ("dqn", [0], "uniform", [0, 1])
    assert "mean_diff_points" in test and "carried_from_earlier_report" not in test
    # a report of some seeds only (e.g. those a recipe was not chosen on): its rows and its test use no other
    seed0 = _run(tmp_path, "again", "--report-only", "--report-seeds", "0", "--keep-rows-from",
                 str(tmp_path / "first.json"))
    assert [(r["method"], r["seed"]) for r in seed0["rows"]] == [("dqn", 0), ("uniform", 0)]
    (test,) = seed0["summary"]["paired_tests"]
    assert (test["seeds_a"], test["seeds_b"]) == ([0], [0])


def test_rows_without_per_image_results_are_not_tested_on_a_subset(tmp_path):
    first = _run(tmp_path, "first", "--methods", "dqn", "uniform")
    old = json.loads((tmp_path / "first.json").read_text())
    for d in old["details"]:
        del d["test_correct_after_ft"]  # as in reports written before rows carried them
    (tmp_path / "old.json").write_text(json.dumps(old))
    same = _run(tmp_path, "same", "--methods", "uniform", "--report-only", "--keep-rows-from", str(tmp_path / "old.json"))
    (carried,) = same["summary"]["paired_tests"]  # the same seeds as the earlier report's test: carried over
    assert carried["carried_from_earlier_report"] and carried["mean_diff_points"] == pytest.approx(
        first["summary"]["paired_tests"][0]["mean_diff_points"])
    more = _run(tmp_path, "more", "--methods", "uniform", "--seeds", "1", "--keep-rows-from", str(tmp_path / "old.json"))
    (untested,) = more["summary"]["paired_tests"]
    assert "dqn seeds [0]; uniform seeds [0]" in untested["not_computed"] and "mean_diff_points" not in untested


def test_an_unreadable_earlier_report_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="--keep-rows-from: cannot read") as info:
        _run(tmp_path, "w", "--methods", "uniform", "--report-only", "--keep-rows-from", str(tmp_path / "bad.json"))
    assert "\n" not in str(info.value)


def _seeds(rng: Any, accuracies: list[float], n: int = 4000) -> dict[int, Any]:
    return {seed: rng.random(n) < acc for seed, acc in enumerate(accuracies)}


def test_seed_noise_widens_the_paired_test_that_images_alone_would_call_significant():
    rng = bench().np.random.default_rng(0)
    # a leads b by ~1.3 points on average, but its seeds spread over 6 points: the images alone cannot see that
    noisy = bench().paired_stats(_seeds(rng, [0.80, 0.86, 0.83]), _seeds(rng, [0.82, 0.78, 0.85]), samples=2000)
    assert noisy["bootstrap_p"] < 0.05 < noisy["two_level_bootstrap_p"] and noisy["welch_seeds_p"] > 0.05
    lo, hi = noisy["two_level_bootstrap_ci95_points"]
    assert lo < 0 < hi and hi - lo > noisy["bootstrap_ci95_points"][1] - noisy["bootstrap_ci95_points"][0]
    # a lead far above the seed spread stays significant under both levels
    clear = bench().paired_stats(_seeds(rng, [0.90, 0.91, 0.90]), _seeds(rng, [0.80, 0.81, 0.80]), samples=2000)
    assert clear["two_level_bootstrap_p"] < 0.01 and clear["welch_seeds_p"] < 0.01
    assert 5 < clear["two_level_bootstrap_ci95_points"][0] < clear["mean_diff_points"]
    # one seed per method: no seed-level test, said as None rather than a made-up p
    single = bench().paired_stats(_seeds(rng, [0.9]), _seeds(rng, [0.8]), samples=200)
    assert single["welch_seeds_p"] is None and single["two_level_bootstrap_p"] is None


def test_every_agent_is_paired_with_every_baseline_the_best_first():
    rng = bench().np.random.default_rng(0)
    accuracy = {"dqn": 0.86, "ddpg": 0.88, "random": 0.85, "uniform": 0.80}
    rows = [{"model": "m", "method": method, "seed": seed, "test_images": 2000, "top1_before_ft": 50.0,
             "top1_after_ft": 100.0 * float(correct.mean()), "test_correct_after_ft": bench().pack_correct(correct)}
            for method, acc in accuracy.items() for seed in (0, 1) for correct in [rng.random(2000) < acc]]
    summary = bench().summarise(rows)
    assert summary["best"]["m"] == {"rl": "ddpg", "non_rl": "random"}
    pairs = [(t["a"], t["b"]) for t in summary["paired_tests"]]
    assert pairs == [("ddpg", "random"), ("ddpg", "uniform"), ("dqn", "random"), ("dqn", "uniform")]
    assert all(t["mean_diff_points"] > 0 and t["welch_seeds_p"] is not None for t in summary["paired_tests"])


def test_summary_reports_the_val_test_gap_only_when_every_row_has_val():
    rows = [{"model": "m", "method": "dqn", "seed": s, "top1_before_ft": 60.0, "top1_after_ft": t,
             "val_top1_after_ft": v} for s, (t, v) in enumerate([(87.0, 90.5), (87.4, 90.5)])]
    rows += [{"model": "m", "method": "uniform", "seed": 0, "top1_before_ft": 50.0, "top1_after_ft": 86.5}]
    stats = bench().summarise(rows)["per_method"]["m"]
    assert stats["dqn"]["val_top1_after_ft_mean"] == 90.5
    assert abs(stats["dqn"]["val_minus_test_mean"] - 3.3) < 1e-9
    assert abs(stats["dqn"]["val_minus_test_std"] - bench().mean_std([3.5, 3.1])[1]) < 1e-9
    assert "val_minus_test_mean" not in stats["uniform"]


def _report(path: Path, method: str, accuracies: list[float], rng: Any) -> Path:
    rows = []
    for seed, acc in enumerate(accuracies):
        correct = rng.random(3000) < acc
        rows.append({"model": "m", "method": method, "seed": seed, "test_images": 3000,
                     "top1_after_ft": 100.0 * float(correct.mean()),
                     "test_correct_after_ft": bench().pack_correct(correct)})
    path.write_text(json.dumps({"details": rows}))
    return path


def test_two_reports_methods_of_one_name_are_compared_on_the_same_seeds(tmp_path):
    compare = load_script("compare_quality")
    rng = bench().np.random.default_rng(0)
    # both reports call their method "dqn": the comparison goes by report, seed by seed
    a = _report(tmp_path / "a.json", "dqn", [0.90, 0.91, 0.90], rng)
    b = _report(tmp_path / "b.json", "dqn", [0.85, 0.86], rng)
    out = compare.compare((str(a), "dqn"), (str(b), "dqn"), seeds=[0, 1], samples=500)
    assert sorted(out["a"]["top1_after_ft"]) == [0, 1] and 3 < out["mean_diff_points"] < 7
    assert out["bootstrap_p"] < 0.01 and set(out["mcnemar_per_seed"]) == {"0", "1"}
    with pytest.raises(SystemExit, match=r"no finished seed \[2\]; it has seeds \[0, 1\]"):
        compare.compare((str(a), "dqn"), (str(b), "dqn"), seeds=[2])
    with pytest.raises(SystemExit, match="seeds differ"):
        compare.compare((str(a), "dqn"), (str(b), "dqn"))
    with pytest.raises(SystemExit, match="ddpg: no rows"):
        compare.compare((str(a), "ddpg"), (str(b), "dqn"))
