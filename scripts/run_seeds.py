"""Run one experiment config over several seeds with `autocompress.pipeline.run_experiment`; write a JSON
of per-seed summaries (best held-out reward / top-1 / MACs ratio, and the test figures with --finalize).

Each seed gets its own run folder `<out-root>/seed<k>`; a folder with a search checkpoint is resumed,
so a killed job can be restarted with the same command.

    python scripts/run_seeds.py --config experiments/quickstart.yaml --seeds 0 1 2 --episodes 20 \
        --out-root runs/qs-seeds --json runs/qs-seeds/seeds.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from plot_utils import mean_std, write_json_atomic

from autocompress.config import AutocompressError, ConfigError, load_config
from autocompress.pipeline import run_experiment, with_overrides
from autocompress.search import CHECKPOINT, machine_description


def run_seed(config: str, seed: int, episodes: int | None, out_dir: Path, finalize: bool, progress: bool) -> dict[str, Any]:
    """One seed's search (and finalize), through the package's own pipeline."""
    cfg = with_overrides(load_config(config), str(out_dir), episodes, seed)
    start = time.perf_counter()
    summary = run_experiment(cfg, resume=(out_dir / CHECKPOINT).is_file(), progress=progress, finalize_run=finalize)
    return {"seed": seed, "seconds": time.perf_counter() - start, **summary}


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of the headline figures present in every summary."""
    picks = {
        "best_val_reward": lambda s: s["best"]["reward"],
        "best_val_top1": lambda s: s["best"]["top1"],
        "best_macs_ratio": lambda s: s["best"]["macs_ratio"],
        "test_top1_before_ft": lambda s: s["pruned"]["top1_before_finetune"],
        "test_top1_after_ft": lambda s: s["pruned"]["top1"],
        "speedup": lambda s: s["pruned"]["speedup"],
    }
    out = {}
    for name, pick in picks.items():
        try:
            values = [float(pick(s)) for s in summaries]
        except (KeyError, TypeError):
            continue
        m, sd = mean_std(values)
        out[name] = {"values": values, "mean": m, "std": sd}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=None, help="override search.episodes")
    p.add_argument("--out-root", default=None, help="folder of the per-seed run folders (default runs/seeds-<name>)")
    p.add_argument("--finalize", action="store_true", help="also apply, fine-tune, test and save each best policy")
    p.add_argument("--json", default=None, help="output JSON (default <out-root>/seeds.json)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.episodes is not None and args.episodes < 1:
            raise ConfigError("--episodes must be >= 1.")
        name = load_config(args.config).name
        out_root = Path(args.out_root or f"runs/seeds-{name}")
        summaries = [run_seed(args.config, s, args.episodes, out_root / f"seed{s}", args.finalize, not args.quiet)
                     for s in args.seeds]
    except AutocompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = {
        "config": args.config,
        "episodes": args.episodes,
        "seeds": args.seeds,
        "finalize": args.finalize,
        "aggregate": aggregate(summaries),
        "per_seed": summaries,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_description(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    path = write_json_atomic(args.json or out_root / "seeds.json", out)
    for name, agg in out["aggregate"].items():
        print(f"{name:<22} {agg['mean']:.4f} +- {agg['std']:.4f}  ({', '.join(f'{v:.4g}' for v in agg['values'])})")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
