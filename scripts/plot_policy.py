"""Plot the best policies of one or more search runs: per-group prune ratios as bars.

AMC's figures show the learned policy as a bar per layer; the shape (which layers the agent spares,
which it thins) is the interesting result, so this draws the same picture from a run folder's
`best_schedule.json` (read with `Schedule.load`, so a malformed file gives its clear error).

    python scripts/plot_policy.py runs/h7-quickstart runs/h7-r20 --out-dir docs/benchmarks
    python scripts/plot_policy.py runs/a runs/b --name compare   # one figure, one panel per run

Bars: requested prune ratio (share of channels removed); dots: the ratio actually applied after
rounding (1 - channels_after / channels_before), which differs where round_to / min_channels bite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from autocompress.pruning import Schedule

BEST_SCHEDULE = "best_schedule.json"


def load_schedule(path: Path) -> Schedule:
    """A run folder (its best_schedule.json) or a schedule JSON file."""
    return Schedule.load(path / BEST_SCHEDULE if path.is_dir() else path)


def _title(label: str, schedule: Schedule) -> str:
    m = schedule.metrics
    parts = [f"{label}: {schedule.model_name}"]
    if isinstance(m.get("top1"), (int, float)):
        parts.append(f"top-1 {m['top1']:.2f}% (base {m.get('baseline_top1', float('nan')):.2f}%)")
    if isinstance(m.get("macs_ratio"), (int, float)):
        parts.append(f"MACs {m['macs_ratio']:.3f}")
    if isinstance(m.get("episode"), int):
        parts.append(f"episode {m['episode']}")
    return ", ".join(parts)


def _draw(ax, label: str, schedule: Schedule) -> None:
    names = [g.name for g in schedule.groups]
    requested = [g.prune_ratio for g in schedule.groups]
    applied = [1.0 - g.channels_after / g.channels_before for g in schedule.groups]
    xs = range(len(names))
    ax.bar(xs, requested, width=0.7, color="#4c72b0", label="prune ratio (requested)")
    ax.plot(xs, applied, "o", color="#dd8452", markersize=4, label="applied after rounding")
    ax.axhline(1.0, color="0.8", linewidth=0.8)
    ax.set_xticks(list(xs))
    # Channels kept/before under each name: the policy in the units a deployment sees.
    ax.set_xticklabels([f"{n} {g.channels_after}/{g.channels_before}" for n, g in zip(names, schedule.groups, strict=True)],
                       rotation=90, fontsize=6)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 1.25)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("prune ratio")
    ax.set_title(_title(label, schedule), fontsize=8)
    ax.legend(fontsize=6, loc="upper center", ncol=2, frameon=False)


def _save_png(fig, path: Path) -> Path:
    """savefig to a temp file in the same folder, then os.replace (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; docs are for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def plot(runs: list[tuple[str, Schedule]], path: Path) -> Path:
    """One panel per run, stacked; width grows with the number of groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widest = max(len(s.groups) for _, s in runs)
    fig, axes = plt.subplots(len(runs), 1, figsize=(max(6.0, 0.28 * widest + 1.5), 3.6 * len(runs)), squeeze=False)
    for ax, (label, schedule) in zip(axes[:, 0], runs, strict=True):
        _draw(ax, label, schedule)
    fig.tight_layout()
    try:
        return _save_png(fig, path)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with best_schedule.json) or schedule JSON files")
    p.add_argument("--out-dir", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--name", help="one combined figure policy_<name>.png; default: one figure per run, named after it")
    args = p.parse_args(argv)
    try:
        loaded = [(r.stem if r.is_file() else r.name, load_schedule(r)) for r in args.runs]
    except Exception as exc:  # ScheduleError names the file and the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = [(args.name, loaded)] if args.name else [(label, [(label, s)]) for label, s in loaded]
    for name, runs in jobs:
        out = plot(runs, args.out_dir / f"policy_{name}.png")
        print(f"wrote {out} ({out.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
