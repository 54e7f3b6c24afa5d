"""Why do searched schedules fine-tune better? Kept parameters against top-1 after fine-tuning (issue #14).

At a fixed MACs budget a schedule can still keep very different numbers of weights: thinning the early,
high-resolution layers costs many MACs per weight, the late ones few. This reads the schedules that
`scripts/bench_quality.py` recorded (each report's `details`), counts each pruned network's parameters with the
package's own analytic cost model (Torch-Pruning's dependency graph gives the groups), and reports, per report
(one fine-tune recipe each), Kendall's tau of the kept-parameter share and of the search's val reward against
the top-1 after fine-tuning. Descriptive only: nothing here chooses a schedule.

    python scripts/quality_capacity.py docs/benchmarks/quality.json docs/benchmarks/quality_ft30.json \\
        --json docs/benchmarks/quality_capacity.json --plot docs/benchmarks/quality_capacity.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from plot_utils import cpu_model, run_script, write_json_atomic
from scipy.stats import kendalltau

from autocompress.config import AutocompressError
from autocompress.models import get_model
from autocompress.pruning import Pruner

INPUT = {"cifar10_resnet20": (3, 32, 32), "cifar10_resnet56": (3, 32, 32)}
"""Input shape of each model the quality benchmark runs (the cost model needs one example)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, help="bench_quality.py JSON reports (their `details` rows)")
    p.add_argument("--model", default="cifar10_resnet20", choices=sorted(INPUT))
    p.add_argument("--json", type=Path, default=None, help="write the per-report figures here")
    p.add_argument("--plot", type=Path, default=None, help="top-1 after fine-tuning against kept parameters")
    return p.parse_args(argv)


def param_share(pruner: Pruner, ratios: Mapping[str, float]) -> float:
    """Parameters of the network pruned to `ratios` over the unpruned network's (analytic, exact for convs)."""
    cost = pruner.cost_model
    full = {g.name: g.channels for g in pruner.all_groups}
    return cost.params(pruner.kept_channels(ratios)) / cost.params(full)


def report_rows(path: Path, model: str) -> list[dict[str, Any]]:
    """The report's finished rows of `model` that carry a schedule, one per (method, seed)."""
    try:
        details = json.loads(path.read_text()).get("details") or []
    except (OSError, ValueError) as exc:
        raise AutocompressError(f"cannot read {path}: {exc}; give a bench_quality.py JSON report.") from exc
    rows = {(r["method"], r["seed"]): r for r in details
            if r.get("model") == model and r.get("schedule") and r.get("top1_after_ft") is not None}
    if len(rows) < 3:
        raise AutocompressError(f"{path} has {len(rows)} finished {model} rows with a schedule; need >= 3.")
    return sorted(rows.values(), key=lambda r: (r["method"], r["seed"]))


def _tau(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    res = kendalltau(x, y)
    return {"tau": float(res.statistic), "p": float(res.pvalue)}


def analyse(path: Path, rows: list[dict[str, Any]], pruner: Pruner) -> dict[str, Any]:
    """Per-row parameter share and the two rank correlations against top-1 after fine-tuning."""
    out = [{"method": r["method"], "seed": r["seed"], "macs_ratio": r["macs_ratio"],
            "params_ratio": param_share(pruner, r["schedule"]), "val_reward_top1": r.get("val_reward_top1"),
            "top1_after_ft": r["top1_after_ft"]} for r in rows]
    after = [r["top1_after_ft"] for r in out]
    res = {"report": str(path), "ft_epochs": sorted({r["ft_epochs"] for r in rows}),
           "ft_lr": sorted({r["ft_lr"] for r in rows if "ft_lr" in r}), "n": len(out),
           "params_vs_after_ft": _tau([r["params_ratio"] for r in out], after), "rows": out}
    if all(r["val_reward_top1"] is not None for r in out):
        res["reward_vs_after_ft"] = _tau([r["val_reward_top1"] for r in out], after)
    return res


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per report: top-1 after fine-tuning against the kept-parameter share, a colour per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False, sharey=True)
    methods = sorted({r["method"] for res in results for r in res["rows"]})
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    for ax, res in zip(axes[0], results, strict=True):
        for m in methods:
            pts = [(r["params_ratio"], r["top1_after_ft"]) for r in res["rows"] if r["method"] == m]
            if pts:
                ax.scatter(*zip(*pts, strict=True), color=colours[m], label=m, s=28)
        t = res["params_vs_after_ft"]
        ax.set_title(f"{Path(res['report']).stem}: {res['ft_epochs']} epochs\ntau {t['tau']:+.2f} (p {t['p']:.2g})",
                     fontsize=9)
        ax.set_xlabel("kept parameters (share)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 after fine-tuning (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    pruner = Pruner(get_model(args.model), torch.zeros(1, *INPUT[args.model]))
    results = [analyse(p, report_rows(p, args.model), pruner) for p in args.reports]
    for res in results:
        line = f"{res['report']}: {res['n']} rows, FT {res['ft_epochs']} epochs; kept params vs top-1 after FT: "
        line += "tau {tau:+.2f} (p {p:.2g})".format(**res["params_vs_after_ft"])
        if "reward_vs_after_ft" in res:
            line += "; val reward vs top-1 after FT: tau {tau:+.2f} (p {p:.2g})".format(**res["reward_vs_after_ft"])
        print(line)
    if args.json:
        write_json_atomic(args.json, {"model": args.model, "results": results, "cpu": cpu_model(),
                                      "command": "python scripts/quality_capacity.py " + " ".join(argv or [])})
    if args.plot:
        plot(results, args.plot)
    return results


if __name__ == "__main__":
    run_script(main)
