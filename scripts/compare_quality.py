"""Two methods from two bench_quality reports, paired on the same test images and seeds.

bench_quality's own summary pairs methods inside one run folder; a variant measured in its own folder (e.g. the
portfolio tournament on DQN's very episodes, whose rows are also called "dqn") needs its comparison across
reports. The statistics are bench_quality's (`paired_stats`: image bootstrap, McNemar per seed, Welch over
seeds and the two-level bootstrap with seed noise).

    python scripts/compare_quality.py --a docs/benchmarks/quality_portfolio.json dqn \
        --b docs/benchmarks/quality_scratch.json sensitivity --seeds 0 1 2 3 4 --json /tmp/portfolio_vs_sens.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench_quality import paired_stats, read_report, seed_level_text, unpack_correct
from plot_utils import mean_std, write_json_atomic


def side(report: dict[str, Any], path: str, method: str, seeds: list[int] | None,
         model: str | None) -> dict[int, Any]:
    """Per-seed per-image correctness of `method` in one report, or a one-line exit naming what is missing."""
    rows = [r for r in report["details"] if r["method"] == method and (model is None or r["model"] == model)]
    models = sorted({r["model"] for r in rows})
    if len(models) != 1:
        found = "no rows" if not models else f"rows of {', '.join(models)}; give --model"
        raise SystemExit(f"{path}: {method}: {found} (methods there: "
                         f"{', '.join(sorted({r['method'] for r in report['details']}))}).")
    have = {r["seed"] for r in rows}
    if seeds is not None and set(seeds) - have:
        raise SystemExit(f"{path}: {method} has no finished seed {sorted(set(seeds) - have)}; "
                         f"it has seeds {sorted(have)}.")
    rows = [r for r in rows if seeds is None or r["seed"] in seeds]
    lacking = [r["seed"] for r in rows if "test_correct_after_ft" not in r]
    if lacking:
        raise SystemExit(f"{path}: {method} seeds {lacking} have no per-image test results; rerun those cells.")
    return {r["seed"]: unpack_correct(r["test_correct_after_ft"], r["test_images"]) for r in rows}


def compare(a: tuple[str, str], b: tuple[str, str], seeds: list[int] | None = None, model: str | None = None,
            samples: int = 10000) -> dict[str, Any]:
    """a vs b after fine-tuning: per-seed top-1 of both, their means, and bench_quality's paired tests."""
    ca, cb = (side(read_report(Path(path), flag), path, method, seeds, model)
              for flag, (path, method) in (("--a", a), ("--b", b)))
    if seeds is None and set(ca) != set(cb):
        raise SystemExit(f"seeds differ ({sorted(ca)} vs {sorted(cb)}); give --seeds to compare the same ones.")
    top1 = {name: {s: 100.0 * float(c[s].mean()) for s in sorted(c)} for name, c in (("a", ca), ("b", cb))}
    return {"a": {"report": a[0], "method": a[1], "top1_after_ft": top1["a"], "mean": mean_std(list(top1["a"].values()))[0]},
            "b": {"report": b[0], "method": b[1], "top1_after_ft": top1["b"], "mean": mean_std(list(top1["b"].values()))[0]},
            **paired_stats(ca, cb, samples)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs=2, required=True, metavar=("REPORT", "METHOD"))
    p.add_argument("--b", nargs=2, required=True, metavar=("REPORT", "METHOD"))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed both sides have")
    p.add_argument("--model", default=None, help="needed only when a report holds several models' rows")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    out = compare(tuple(args.a), tuple(args.b), args.seeds, args.model)
    if args.json:
        write_json_atomic(args.json, out)
    lo, hi = out["bootstrap_ci95_points"]
    print(f"{args.a[1]} ({args.a[0]}) {out['a']['mean']:.2f} - {args.b[1]} ({args.b[0]}) {out['b']['mean']:.2f} "
          f"= {out['mean_diff_points']:+.2f} points after FT over seeds {sorted(out['a']['top1_after_ft'])} "
          f"(95% CI {lo:+.2f}..{hi:+.2f}, bootstrap p {out['bootstrap_p']:.3g}{seed_level_text(out)})")


if __name__ == "__main__":
    main(sys.argv[1:])
