"""Accuracy against measured speedup for searched and uniform policies at several latency budgets.

Reads the JSON of scripts/bench_latency_targets.py and draws one point per budget and method, with the
unpruned network at 1x:

    python scripts/plot_pareto.py docs/benchmarks/latency_targets.json --out docs/benchmarks/pareto_resnet56_latency.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="JSON written by scripts/bench_latency_targets.py")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = json.loads(Path(args.results).read_text())
    rows = [r for r in data["rows"] if "error" not in r]  # unreachable targets have no point
    base = rows[0]["baseline"]["top1"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    series = [("searched", "DDPG search (measured-latency reward)", "o-")]
    if "uniform_same_table_latency" in rows[0]:  # newer results: uniform bisected on measured speed, table kept too
        series += [("uniform_same_latency", "uniform, matched on measured speed", "s--"),
                   ("uniform_same_table_latency", "uniform, matched on the table's prediction", "^:")]
    else:
        series += [("uniform_same_latency", "uniform, matched on the table to the searched speedup", "s--")]
    for key, label, style in series:
        xs = [1.0] + [r[key]["speedup"] for r in rows]
        ys = [base] + [r[key]["top1"] for r in rows]
        ax.plot(xs, ys, style, label=label)
    for r in rows:
        ax.axvline(r["target_speedup"], color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("measured speedup (eager PyTorch, batch 1, 1 thread)")
    ax.set_ylabel("test top-1 before fine-tuning (%)")
    ax.set_title(f"{data['settings'].get('model', 'model')}: accuracy vs latency (grey: targets)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
