"""Does the search pay off after fine-tuning? Every method, the same budget, episodes and fine-tune recipe.

For each config (ResNet-20 / ResNet-56 on the complete CIFAR-10 as JPEG, 50% MACs) and each method and seed,
one cell: the search (`autocompress.search.Search`, the config's tournament for the search methods, which
chooses on val only), then the chosen schedule applied (`env.evaluator.compress`: prune + BatchNorm recalibration),
top-1 on all test images before fine-tuning, the config's fine-tune recipe (the same for every method), top-1
after, MACs ratio, and speedups measured in alternation against the unpruned network in eager PyTorch and in
ONNX Runtime (batch 1, one thread). Finished cells are written to `--work/<model>/<method>-seed<S>/cell.json`
(with the per-image test correctness as .npy for the paired tests) and skipped on a rerun; an unfinished
search resumes from its checkpoint. The JSON is rebuilt from every finished cell under `--work`, so runs of
the two models (or several sittings) add up to one report. Its rows carry the per-image correctness too
(packed bits), so `--keep-rows-from` an earlier report adds that report's cells to a new run folder's,
paired tests included, after the old run folders are gone. `--searches-from` another --work folder resumes its
finished searches' episodes under this run's config, so a changed tournament (e.g. `include_sensitivity`) is
measured on the very same episodes.

    python scripts/bench_quality.py --configs experiments/resnet20-cifar10jpeg-macs50.yaml \
        --methods ddpg dqn random uniform global sensitivity --seeds 0 1 2 \
        --kendall docs/benchmarks/reward_vs_finetune_resnet20.json --json docs/benchmarks/quality.json
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from plot_utils import cpu_model, mean_std, run_script, write_json_atomic

from autocompress.config import ConfigError, ExperimentConfig, LatencyConfig, load_config
from autocompress.data import make_loader
from autocompress.measure.accuracy import evaluate
from autocompress.measure.latency import LatencyMeter
from autocompress.pipeline import build, choose_by_tournament
from autocompress.pruning import Schedule
from autocompress.search import AGENTS, CHECKPOINT, ENTRANTS, ONE_EPISODE, Search, machine_description
from autocompress.tournament import TOURNAMENT
from autocompress.train import train

RL = ("ddpg", "dqn")
"""The learned searches; every other method (random search included) is a non-RL baseline."""
CELL = "cell.json"


def predictions(model: torch.nn.Module, dataset: Any) -> np.ndarray:
    """Per-image correctness (bool) on `dataset`, in its order."""
    model.eval()
    out = []
    with torch.no_grad():
        for x, y in make_loader(dataset, 500):
            out.append((model(x).argmax(1) == y).numpy())
    return np.concatenate(out)


def speedups(env: Any, pruned: torch.nn.Module, rounds: int) -> dict[str, float]:
    """Speedup over the unpruned network, timed in alternation, batch 1, one thread, per runtime."""
    out = {}
    for runtime in ("torch", "onnxruntime"):
        cfg = LatencyConfig(runtime=runtime, threads=1, batch_size=1, rounds=rounds, warmup=10)
        cmp = LatencyMeter(cfg, env.input_shape).compare(env.model, pruned)
        key = "eager" if runtime == "torch" else "ort"
        out[f"speedup_{key}"], out[f"speedup_{key}_spread"] = cmp.speedup, cmp.spread
    return out


def search_cell(cfg: ExperimentConfig, env: Any, bundle: Any, run_dir: Path) -> tuple[dict[str, Any], float]:
    """Run (or resume) the search; the chosen record (tournament winner for search methods) and its seconds."""
    env.evaluator.cache.clear()  # another cell's evaluations must not count as this one's episodes
    earlier = earlier_sittings_s(run_dir)
    start = time.perf_counter()
    result = Search(cfg, env, run_dir, resume=(run_dir / CHECKPOINT).is_file()).run(progress=True)
    if cfg.tournament is not None and cfg.search.agent not in ONE_EPISODE:
        result = choose_by_tournament(cfg, env, bundle, result)
    return {**result.best, "evaluations": len(env.evaluator.cache)}, earlier + time.perf_counter() - start


def earlier_sittings_s(run_dir: Path) -> float:
    """Search seconds a resumed cell spent before this sitting (its wall clock counts only its own): the
    recorded episodes' own timings and a finished tournament's; the earlier sittings' start-up is left out."""
    seconds = 0.0
    history = run_dir / "history.jsonl"
    if history.is_file():
        for line in history.read_text().splitlines():
            timing = json.loads(line).get("timing") or {}
            seconds += timing.get("total_s", 0.0) + timing.get("update_s", 0.0)
    if (run_dir / TOURNAMENT).is_file():
        seconds += json.loads((run_dir / TOURNAMENT).read_text()).get("seconds", 0.0)
    return seconds


def reused_search(source: Path, env: Any, cfg: ExperimentConfig, run_dir: Path) -> tuple[dict[str, Any], float]:
    """The chosen record and search seconds of a cell finished under another --work (another fine-tune
    recipe), or of its row in a written report (e.g. docs/benchmarks/quality.json, which outlives run
    folders); its schedule saved into `run_dir`: the same networks, fine-tuned differently."""
    method, seed = cfg.search.agent, cfg.search.seed
    if source.suffix == ".json":
        rows = [r for r in json.loads(source.read_text())["details"]
                if (r["model"], r["method"], r["seed"]) == (cfg.model.name, method, seed)]
        if not rows:
            raise SystemExit(f"--schedules-from: {source} has no {cfg.model.name} {method} seed {seed} row; "
                             "run that cell's search or pick another report.")
        old = rows[0]
        schedule = Schedule.from_pruner(env.pruner, old["schedule"], cfg.model.name,
                                        budget={"kind": cfg.env.budget_kind, "fraction": cfg.env.budget})
    else:
        cell_dir = source / cfg.model.name / f"{method}-seed{seed}"
        if not (cell_dir / CELL).is_file():
            raise SystemExit(f"--schedules-from: {cell_dir / CELL} is missing; finish that cell first or drop "
                             "the option.")
        old = json.loads((cell_dir / CELL).read_text())
        schedule = Schedule.load(cell_dir / "best_schedule.json")
    run_dir.mkdir(parents=True, exist_ok=True)
    schedule.save(run_dir / "best_schedule.json")
    best = {"episode": old["best_episode"], "top1": old["val_reward_top1"], "macs_ratio": old["macs_ratio"],
            "evaluations": old["evaluations"], "tournament_val_top1": old.get("tournament_val_top1"),
            "schedule_from": str(source)}
    return best, old["search_s"]


SEARCH_FILES = ("history.jsonl", "config.yaml", "best_schedule.json", CHECKPOINT)
"""What a finished cell's search leaves that a later cell may resume (the checkpoint last: its presence says the
copy is whole)."""


def adopt_search(source: Path, cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Copy the episodes of a finished cell under another --work into `run_dir` (not its tournament or
    fine-tune), so that this cell resumes them with its own config's tournament; the source cell's record."""
    cell_dir = source / cfg.model.name / f"{cfg.search.agent}-seed{cfg.search.seed}"
    if not (cell_dir / CELL).is_file():
        raise SystemExit(f"--searches-from: {cell_dir / CELL} is missing; finish that cell first or drop the option.")
    if not (run_dir / CHECKPOINT).is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in SEARCH_FILES:
            tmp = run_dir / f".{name}.tmp"
            shutil.copy2(cell_dir / name, tmp)
            os.replace(tmp, run_dir / name)
    return json.loads((cell_dir / CELL).read_text())


def chosen(cfg: ExperimentConfig, env: Any, bundle: Any, run_dir: Path, schedules_from: Path | None,
           searches_from: Path | None) -> tuple[dict[str, Any], float]:
    """The cell's chosen record and search seconds: a new search, a reused schedule or adopted episodes."""
    if schedules_from is not None:
        return reused_search(schedules_from, env, cfg, run_dir)
    if searches_from is None or cfg.search.agent in ONE_EPISODE:
        return search_cell(cfg, env, bundle, run_dir)
    old = adopt_search(searches_from, cfg, run_dir)
    best, seconds = search_cell(cfg, env, bundle, run_dir)  # the copied episodes' seconds and this tournament's
    return {**best, "evaluations": best["evaluations"] + old["evaluations"], "search_from": str(searches_from)}, seconds


def run_cell(cfg: ExperimentConfig, env: Any, bundle: Any, method: str, seed: int, work: Path,
             rounds: int, schedules_from: Path | None = None, searches_from: Path | None = None) -> dict[str, Any]:
    run_dir = work / f"{method}-seed{seed}"
    if (run_dir / CELL).is_file():
        return json.loads((run_dir / CELL).read_text())
    cfg = replace(cfg, search=replace(cfg.search, agent=method, seed=seed, out_dir=str(run_dir)))
    best, search_s = chosen(cfg, env, bundle, run_dir, schedules_from, searches_from)
    schedule = Schedule.load(run_dir / "best_schedule.json")
    pruned = env.evaluator.compress(schedule.prune_ratios())
    before = predictions(pruned, bundle.test)
    torch.manual_seed(seed)  # the fine-tune's augmentation (the loader's own seeded generator sets the order)
    history = train(pruned, bundle, cfg.finetune, teacher=env.model, out_dir=run_dir / "finetune", resume=True)
    ft_s = sum(h["seconds"] for h in history)  # every epoch's, also those of an earlier sitting
    after = predictions(pruned, bundle.test)
    np.save(run_dir / "test_correct_after_ft.npy", after)
    cell = {
        "model": cfg.model.name, "method": method, "seed": seed,
        "budget": f"{cfg.env.budget_kind}{cfg.env.budget:g}",
        "episodes": cfg.search.episodes if method not in ONE_EPISODE else 1,
        "evaluations": best["evaluations"], "ft_epochs": cfg.finetune.epochs, "ft_lr": cfg.finetune.lr,
        "test_images": int(len(after)),
        "macs_ratio": best["macs_ratio"], **speedups(env, pruned.eval(), rounds), "timing_loadavg": os.getloadavg()[0],
        "top1_before_ft": 100.0 * float(before.mean()), "top1_after_ft": 100.0 * float(after.mean()),
        "search_s": search_s, "ft_s": ft_s,
        "best_episode": best["episode"], "val_reward_top1": best["top1"], "schedule_from": best.get("schedule_from"),
        "tournament_val_top1": best.get("tournament_val_top1"), "search_from": best.get("search_from"),
        "tournament_rule_won": next((name for name in ENTRANTS if best.get(name)), None),
        "val_top1_after_ft": history[-1].get("val_top1") if history else None,
        "schedule": schedule.prune_ratios(), "run_dir": str(run_dir),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json_atomic(run_dir / CELL, cell)
    return cell


def retime(env: Any, work: Path, rounds: int) -> None:
    """Speedups of every finished cell measured again (the search and fine-tunes may have shared the CPU)."""
    for path in sorted(work.glob(f"*/{CELL}")):
        cell = json.loads(path.read_text())
        pruned = env.evaluator.compress(Schedule.load(path.parent / "best_schedule.json").prune_ratios())
        cell.update(speedups(env, pruned, rounds), retimed=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    retimed_loadavg=os.getloadavg()[0])
        write_json_atomic(path, cell)
        print(f"{cell['method']} seed {cell['seed']}: eager {cell['speedup_eager']:.2f}x, "
              f"ORT {cell['speedup_ort']:.2f}x", file=sys.stderr)


def pack_correct(correct: np.ndarray) -> str:
    """Per-image correctness as base64 of packed bits (1.7 kB for 10,000 images): what a paired test needs,
    small enough to live in a committed report after the run folder is gone."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool))).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def paired_tests(rows: list[dict[str, Any]], a: str, b: str, model: str,
                 samples: int = 10000) -> dict[str, Any] | None:
    """Methods a vs b on the same test images, after fine-tuning (`paired_stats` over their seeds). A row
    without its per-image results (kept from a report written before rows carried them) makes the test
    impossible: the entry then says which seeds to rerun instead of testing on a subset."""
    sel = {m: [r for r in rows if r["model"] == model and r["method"] == m] for m in (a, b)}
    if not sel[a] or not sel[b]:
        return None
    missing = {m: [r["seed"] for r in sel[m] if "test_correct_after_ft" not in r] for m in (a, b)}
    if missing[a] or missing[b]:
        gaps = "; ".join(f"{m} seeds {s}" for m, s in missing.items() if s)
        return {"model": model, "a": a, "b": b,
                "not_computed": f"no per-image test results for {gaps} (cells finished before reports kept "
                                "them); rerun those cells to test"}
    ca, cb = ({r["seed"]: unpack_correct(r["test_correct_after_ft"], r["test_images"]) for r in sel[m]}
              for m in (a, b))
    return {"model": model, "a": a, "b": b, "seeds_a": sorted(ca), "seeds_b": sorted(cb),
            **paired_stats(ca, cb, samples)}


def paired_stats(ca: dict[int, np.ndarray], cb: dict[int, np.ndarray], samples: int = 10000) -> dict[str, Any]:
    """a vs b from per-image correctness per seed: a bootstrap over images of the difference of seed-mean
    accuracies, and McNemar's exact test per seed present in both."""
    from scipy.stats import binomtest

    diff = np.mean(list(ca.values()), axis=0) - np.mean(list(cb.values()), axis=0)
    rng = np.random.default_rng(0)
    boot = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(samples)])
    ci, p_boot = bootstrap_ci_p(boot)
    mcnemar = {}
    for seed in sorted(set(ca) & set(cb)):
        only_a, only_b = int((ca[seed] & ~cb[seed]).sum()), int((~ca[seed] & cb[seed]).sum())
        p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        mcnemar[str(seed)] = {"only_a_correct": only_a, "only_b_correct": only_b, "p": float(p)}
    return {"mean_diff_points": 100.0 * float(diff.mean()),
            "bootstrap_ci95_points": ci, "bootstrap_p": p_boot, "mcnemar_per_seed": mcnemar, **seed_level_tests(ca, cb, samples)}


def bootstrap_ci_p(boot: np.ndarray) -> tuple[list[float], float]:
    """A bootstrap's 95% interval in points and its two-sided p (never below one over the samples drawn)."""
    p = float(min(1.0, max(2 * min((boot <= 0).mean(), (boot >= 0).mean()), 1.0 / len(boot))))
    return [100.0 * float(np.percentile(boot, q)) for q in (2.5, 97.5)], p


def seed_level_tests(ca: dict[int, np.ndarray], cb: dict[int, np.ndarray],
                     samples: int = 10000) -> dict[str, Any]:
    """Tests that also count the fine-tune's seed-to-seed noise, which the bootstrap over images alone
    ignores: Welch's t over per-seed top-1, and a two-level bootstrap (seeds of each method drawn with
    replacement, then the test images, paired). Both need >= 2 seeds per method; else they are None."""
    from scipy.stats import ttest_ind

    if min(len(ca), len(cb)) < 2:
        return {"welch_seeds_p": None, "two_level_bootstrap_ci95_points": None, "two_level_bootstrap_p": None}
    a, b = (np.stack([c[s] for s in sorted(c)]).astype(np.float32) for c in (ca, cb))
    welch_p = float(ttest_ind(a.mean(axis=1), b.mean(axis=1), equal_var=False).pvalue)
    rng = np.random.default_rng(1)
    n = a.shape[1]
    boot = np.empty(samples)
    for i in range(samples):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float32) / n
        pick_a, pick_b = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        boot[i] = (a[pick_a] @ weights).mean() - (b[pick_b] @ weights).mean()
    ci, p_boot = bootstrap_ci_p(boot)
    return {"welch_seeds_p": welch_p, "two_level_bootstrap_ci95_points": ci, "two_level_bootstrap_p": p_boot}


def summarise(rows: list[dict[str, Any]], earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per model and method: mean/std over seeds; the best RL search against each non-RL baseline (random
    search included; the best of them first), paired. A test that cannot be computed now is taken from the
    `earlier` report when that one compared the very same seeds."""
    out: dict[str, Any] = {"per_method": {}, "paired_tests": []}
    for model in sorted({r["model"] for r in rows}):
        stats = {}
        for method in sorted({r["method"] for r in rows if r["model"] == model}):
            sel = [r for r in rows if r["model"] == model and r["method"] == method]
            m_after, s_after = mean_std([r["top1_after_ft"] for r in sel])
            m_before, s_before = mean_std([r["top1_before_ft"] for r in sel])
            stats[method] = {"seeds": [r["seed"] for r in sel], "top1_after_ft_mean": m_after,
                             "top1_after_ft_std": s_after, "top1_before_ft_mean": m_before,
                             "top1_before_ft_std": s_before, **val_test_gap(sel)}
        out["per_method"][model] = stats
        rl = [m for m in stats if m in RL]
        base = [m for m in stats if m not in RL]
        if rl and base:
            # the best by mean among the methods with the most seeds: one lucky seed must not outrank three
            def rank(m: str, st: dict[str, Any] = stats) -> tuple[int, float]:
                return len(st[m]["seeds"]), st[m]["top1_after_ft_mean"]

            rl.sort(key=rank, reverse=True)
            base.sort(key=rank, reverse=True)
            out.setdefault("best", {})[model] = {"rl": rl[0], "non_rl": base[0]}
            # every RL search against every non-RL baseline, the best of each first: the targets name the
            # best pair and uniform; the others show whether the conclusion depends on which agent led
            for agent in rl:
                for other in base:
                    test = paired_tests(rows, agent, other, model)
                    if test and "not_computed" in test:
                        test = earlier_test(earlier, test, stats) or test
                    if test:
                        out["paired_tests"].append(test)
    return out


def val_test_gap(sel: list[dict[str, Any]]) -> dict[str, float]:
    """Mean val top-1 after fine-tuning and its gap to test: a val the base network was trained on shows up as a
    gap that grows with what a schedule keeps, which a val-scored search is then paid for (BENCHMARKS, "clean val")."""
    vals = [r.get("val_top1_after_ft") for r in sel]
    if any(v is None for v in vals):
        return {}
    # the spread of the per-seed gaps says whether two methods' gaps differ by more than seed noise
    gap_mean, gap_std = mean_std([v - r["top1_after_ft"] for v, r in zip(vals, sel, strict=True)])
    return {"val_top1_after_ft_mean": mean_std(vals)[0], "val_minus_test_mean": gap_mean,
            "val_minus_test_std": gap_std}


def earlier_test(earlier: dict[str, Any] | None, test: dict[str, Any],
                 stats: dict[str, Any]) -> dict[str, Any] | None:
    """The earlier report's test of the same pair, if it ran on the seeds both methods have now."""
    for old in (earlier or {}).get("summary", {}).get("paired_tests", []):
        if (old["model"], old["a"], old["b"]) != (test["model"], test["a"], test["b"]) or "not_computed" in old:
            continue
        seeds = sorted(int(s) for s in old["mcnemar_per_seed"])
        if seeds == sorted(stats[test["a"]]["seeds"]) == sorted(stats[test["b"]]["seeds"]):
            return {**old, "carried_from_earlier_report": True}
    return None


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<18}{'method':<12}{'seed':>5}{'MACs':>7}{'eager':>7}{'ORT':>7}{'before FT':>11}"
            f"{'after FT':>10}{'search s':>10}{'FT s':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<18}{r['method']:<12}{r['seed']:>5}{r['macs_ratio']:>7.3f}"
                     f"{r['speedup_eager']:>6.2f}x{r['speedup_ort']:>6.2f}x{r['top1_before_ft']:>11.2f}"
                     f"{r['top1_after_ft']:>10.2f}{r['search_s']:>10.0f}{r['ft_s']:>8.0f}")
    return "\n".join(lines)


def adapted_top1(env: Any, bundle: Any, work: Path, model: str) -> float:
    path = work / model / "baseline.json"
    if path.is_file():
        return json.loads(path.read_text())["test_top1"]
    top1 = evaluate(env.model, make_loader(bundle.test, 500)).top1
    write_json_atomic(path, {"test_top1": top1, "weights": None})
    return top1


def collect(work: Path, earlier: dict[str, Any] | None = None, source: str = "") -> list[dict[str, Any]]:
    """Every finished cell under `work` (with its per-image correctness packed in), plus the rows of the
    `earlier` report (read from `source`) for cells `work` does not have."""
    rows = []
    for path in sorted(work.glob(f"*/*/{CELL}")):
        row = json.loads(path.read_text())
        if (npy := path.parent / "test_correct_after_ft.npy").is_file():
            row["test_correct_after_ft"] = pack_correct(np.load(npy))
        rows.append(row)
    if earlier is not None:
        have = {(r["model"], r["method"], r["seed"]) for r in rows}
        rows += [{**r, "kept_from": r.get("kept_from", source)} for r in earlier["details"]
                 if (r["model"], r["method"], r["seed"]) not in have]
    return sorted(rows, key=lambda r: (r["model"], r["method"], r["seed"]))


def read_report(path: Path, flag: str = "--keep-rows-from") -> dict[str, Any]:
    """A report bench_quality wrote, or a one-line exit naming the option (`flag`) that gave the path."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{flag}: cannot read {path} ({exc}); give a report bench_quality.py wrote.") from None
    if not isinstance(report, dict) or not isinstance(report.get("details"), list):
        raise SystemExit(f"{flag}: {path} has no 'details' list; give a report bench_quality.py wrote.")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", required=True, help="experiment YAMLs (one per model)")
    p.add_argument("--methods", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=None, help="override search.episodes (default: the config's)")
    p.add_argument("--ft-epochs", type=int, default=None, help="override finetune.epochs (default: the config's)")
    p.add_argument("--ft-lr", type=float, default=None, help="override finetune.lr (default: the config's)")
    p.add_argument("--ft-max-batches", type=int, default=None, help="cap batches per fine-tune epoch (smoke runs)")
    p.add_argument("--rounds", type=int, default=40, help="alternating timing pairs per runtime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kendall", default=None, help="reward_vs_finetune.py JSON to report alongside")
    p.add_argument("--work", default="runs/quality")
    p.add_argument("--schedules-from", default=None,
                   help="another --work folder or a report JSON written by this script (e.g. "
                        "docs/benchmarks/quality.json): reuse its finished cells' schedules (no search), e.g. to "
                        "fine-tune the same networks with a longer recipe")
    p.add_argument("--searches-from", default=None,
                   help="another --work folder: resume its finished cells' episodes (no new episodes) and run this "
                        "config's tournament on them, e.g. one that lets tournament.include_sensitivity in")
    p.add_argument("--json", required=True)
    p.add_argument("--plot", default=None, help="PNG: top-1 before and after fine-tuning per method and seed")
    p.add_argument("--keep-rows-from", default=None,
                   help="an earlier report JSON of this script: its rows for cells --work lacks go into the new "
                        "report (e.g. after a new checkout lost the run folders); it may be the --json path")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rebuild the JSON and plot from the finished cells (e.g. while cells still run)")
    p.add_argument("--report-seeds", nargs="+", type=int, default=None,
                   help="report only these seeds' rows and tests (e.g. the seeds a recipe was not chosen on)")
    p.add_argument("--retime", action="store_true",
                   help="only re-measure the speedups of every finished cell (run it on a quiet machine)")
    args = p.parse_args(argv)
    if args.schedules_from and args.searches_from:
        p.error("--schedules-from reuses schedules and --searches-from reuses episodes; give one of them.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    adapted: dict[str, float] = {}
    if not args.report_only:
        for path in args.configs:
            run_config(args, path, work, adapted)
    write_report(args, work, adapted)


def run_config(args: argparse.Namespace, path: str, work: Path, adapted: dict[str, float]) -> None:
    """Every asked (seed, method) cell of one model's config (or, with --retime, only their speedups)."""
    cfg = load_config(path)
    if cfg.finetune is None:
        raise ConfigError(f"{path}: the benchmark needs a finetune section (the recipe every method gets).")
    ft = replace(cfg.finetune, distill=True, **{k: v for k, v in (("epochs", args.ft_epochs), ("lr", args.ft_lr),
                                                                   ("max_batches", args.ft_max_batches)) if v})
    search = cfg.search if args.episodes is None else replace(cfg.search, episodes=args.episodes)
    cfg = replace(cfg, finetune=ft, search=search)
    env, bundle = build(cfg, progress=True)
    adapted[cfg.model.name] = adapted_top1(env, bundle, work, cfg.model.name)
    if args.retime:
        retime(env, work / cfg.model.name, args.rounds)
        return
    # Seed-major: an interrupted run still has whole seeds to compare. Deterministic allocations
    # (uniform, global, sensitivity) run every seed too: the seed drives the fine-tune's augmentation,
    # and that noise belongs in every method's spread.
    for seed in args.seeds:
        for method in args.methods:
            print(f"== {cfg.model.name} {method} seed {seed}", file=sys.stderr)
            cell = run_cell(cfg, env, bundle, method, seed, work / cfg.model.name, args.rounds,
                            Path(args.schedules_from) if args.schedules_from else None,
                            Path(args.searches_from) if args.searches_from else None)
            print(table([cell]).splitlines()[-1], file=sys.stderr)


def write_report(args: argparse.Namespace, work: Path, adapted: dict[str, float]) -> None:
    earlier = read_report(Path(args.keep_rows_from)) if args.keep_rows_from else None
    rows = collect(work, earlier, args.keep_rows_from or "")
    if args.report_seeds is not None:
        rows = [r for r in rows if r["seed"] in args.report_seeds]
        if not rows:
            raise SystemExit(f"--report-seeds {' '.join(map(str, args.report_seeds))}: no finished cell has these "
                             f"seeds under {work}; give seeds that ran (see the cell folders' -seedN names).")
    for baseline in work.glob("*/baseline.json"):
        adapted.setdefault(baseline.parent.name, json.loads(baseline.read_text())["test_top1"])
    for model, top1 in ((earlier or {}).get("adapted_top1") or {}).items():
        adapted.setdefault(model, top1)
    keys = ("model", "method", "seed", "budget", "episodes", "ft_epochs", "test_images", "macs_ratio",
            "speedup_eager", "speedup_ort", "top1_before_ft", "top1_after_ft", "search_s", "ft_s")
    kendall = None
    if args.kendall and Path(args.kendall).is_file():
        k = json.loads(Path(args.kendall).read_text())
        final = k.get("final_reward", "short_ft_200")
        kendall = {"value": k["kendall_tau"][final]["ft_test_top1"], "n_policies": k["n_policies"],
                   "target": f"{k['target']} on test; reward {final} (the tournament's score)"}
    result = {
        "adapted_top1": adapted,
        "kendall_tau": kendall,
        "kendall_tau_all_rewards": k["kendall_tau"] if kendall else None,
        "rows": [{k: r[k] for k in keys} for r in rows],
        "summary": summarise(rows, earlier),
        "details": rows,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{machine_description()}; {platform.processor() or platform.machine()}; "
                   f"{cpu_model()}",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json_atomic(args.json, result)
    if args.plot and rows:
        plot(rows, adapted, args.plot)
    print(table(rows))
    for t in result["summary"]["paired_tests"]:
        if "not_computed" in t:
            print(f"{t['model']}: {t['a']} vs {t['b']}: not tested: {t['not_computed']}")
            continue
        print(f"{t['model']}: {t['a']} - {t['b']} = {t['mean_diff_points']:+.2f} points after FT "
              f"(95% CI {t['bootstrap_ci95_points'][0]:+.2f}..{t['bootstrap_ci95_points'][1]:+.2f}, "
              f"bootstrap p {t['bootstrap_p']:.3g}" + seed_level_text(t) + ")")


def seed_level_text(test: dict[str, Any]) -> str:
    if test.get("two_level_bootstrap_p") is None:
        return ""
    lo, hi = test["two_level_bootstrap_ci95_points"]
    return (f"; with seed noise: two-level bootstrap CI {lo:+.2f}..{hi:+.2f}, "
            f"p {test['two_level_bootstrap_p']:.3g}, Welch p {test['welch_seeds_p']:.3g}")


def plot(rows: list[dict[str, Any]], adapted: dict[str, float], path: str) -> None:
    """Per model, two panels: test top-1 after fine-tuning (zoomed: the differences that matter are tenths of a
    point) with each method's mean, and right after pruning (before fine-tuning)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(2, len(models), figsize=(6.5 * len(models), 7), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for col, model in enumerate(models):
        sel = [r for r in rows if r["model"] == model]
        methods = sorted({r["method"] for r in sel}, key=lambda m: list(AGENTS).index(m))
        for panel, key in ((axes[0][col], "top1_after_ft"), (axes[1][col], "top1_before_ft")):
            for x, method in enumerate(methods):
                values = [r[key] for r in sel if r["method"] == method]
                jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
                panel.scatter(x + jitter, values, color="C0" if key == "top1_after_ft" else "C1", zorder=3)
                if key == "top1_after_ft":
                    panel.hlines(np.mean(values), x - 0.25, x + 0.25, color="C0", lw=2)
                    panel.annotate(f"{np.mean(values):.2f}", (x + 0.27, np.mean(values)), xytext=(2, 0),
                                   textcoords="offset points", ha="left", va="center", fontsize=9)
            panel.set_xticks(range(len(methods)), methods, fontsize=10)
        top, bottom = axes[0][col], axes[1][col]
        if model in adapted:
            top.axhline(adapted[model], color="grey", ls="--", lw=1, label=f"unpruned {adapted[model]:.2f}%")
            top.legend(fontsize=9, loc="lower left")
        top.set_ylabel("top-1 after fine-tuning (%)")
        top.set_title(f"{model}, {sel[0]['budget']}, {sel[0]['ft_epochs']} FT epochs, "
                      f"{sel[0]['test_images']:,} test images\n(dot = one seed, bar = mean)", fontsize=10)
        bottom.set_ylabel("top-1 right after pruning (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    run_script(main)
