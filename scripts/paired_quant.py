"""Is a searched INT8 network really more accurate than INT8 alone? A paired test on the same test images.

Issue #15 asks the joint search at 2x to beat INT8 everywhere in accuracy; the two end within a few tenths of a
point, which 10,000 images cannot tell apart without a paired test. For each finished search cell named by
--cells (a bench_quantization row in --work/<model>/<cell>.json) this rebuilds the deployed network (its schedule,
fine-tuned weights and INT8 layers, as the row scored it) and INT8 PTQ of the unpruned network (as the
`int8_ptq` row made it), records per-image correctness on the test split, checks that both reproduce their rows'
top-1, and reports McNemar's exact test and a bootstrap over images. `--baseline CELL` compares with another
finished cell instead (e.g. the pruning-only search, or the same seed's `int8_ft` control). Several --work folders
(one search seed each) are pooled: McNemar per seed and a bootstrap over images of the seed-mean difference.
Run from the repository root:

    python scripts/paired_quant.py --configs experiments/resnet56-cifar10jpeg-macs50.yaml \
        --work runs/quantization-episodic --cells joint_search@2x --json docs/benchmarks/quantization_paired.json
    python scripts/paired_quant.py --configs experiments/resnet20-cifar10jpeg-macs50.yaml --work runs/quantization-zen2 \
        --cells joint_search@2x --baseline prune_search@2x --json docs/benchmarks/quantization_zen2_paired.json
    python scripts/paired_quant.py --configs experiments/resnet56-cifar10jpeg-macs50.yaml \
        --work runs/q56-zen4-seed1 runs/q56-zen4-seed2 --report docs/benchmarks/quantization_r56_zen4_seed1.json \
        --cells joint_search@2x --baseline int8_ft --json docs/benchmarks/quantization_r56_zen4_paired_control.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_joint import deployed, rebuilt_cell
from bench_quality import paired_stats, predictions
from plot_utils import run_script, write_json_atomic

from autocompress.config import QuantConfig, load_config
from autocompress.data import load_data, take_tensors
from autocompress.envs.factory import build_model
from autocompress.quantize import quantize_int8

REPRODUCED = 0.1
"""Points by which a rebuilt network's top-1 may differ from its row's: ONNX Runtime's INT8 results move by a few
images between sessions (0.01-0.06 points seen); more means the network is not the one the row scored."""


def cached(path: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
    """Per-image correctness from `path`, or made and saved there."""
    if path.is_file():
        return np.load(path)
    correct = make()
    np.save(path, correct)
    return correct


def int8_ptq_correct(cfg: Any, calib_images: int, work: Path) -> np.ndarray:
    """INT8 PTQ of the unpruned network, as bench_quantization's `int8_ptq` row makes it."""
    def make() -> np.ndarray:
        bundle = load_data(cfg.data)
        model = build_model(cfg, bundle).eval()
        source = bundle.train_eval if getattr(bundle, "train_eval", None) else bundle.train
        calib, _ = take_tensors(source, calib_images, seed=1)
        return predictions(quantize_int8(model, calib, QuantConfig(calib_images=calib_images)), bundle.test)

    (work / cfg.model.name).mkdir(parents=True, exist_ok=True)
    return cached(work / cfg.model.name / "int8_ptq.test_correct.npy", make)


def cell_files(work: Path, model: str, cell: str, longer_ft: int | None) -> tuple[Path, str]:
    """The row of a search cell (or of its --longer-ft fine-tune) and its run folder's fine-tune subfolder."""
    if longer_ft is None:
        return work / model / f"{cell}.json", "finetune"
    return work / model / "longer-ft" / f"{cell}-ft{longer_ft}.json", f"finetune-{longer_ft}ep"


def cell_correct(row_path: Path, ft_dir: str = "finetune") -> np.ndarray:
    """The search cell's network as deployed: fine-tuned weights, INT8 layers calibrated as in the row."""
    row = json.loads(row_path.read_text())
    run_dir = Path(row["run_dir"])

    def make() -> np.ndarray:
        _, env, bundle, schedule, pruned = rebuilt_cell(run_dir)
        state = torch.load(run_dir / ft_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        pruned.load_state_dict(state)
        return predictions(deployed(pruned, schedule, env.evaluator.data.calib_images), bundle.test)

    suffix = "" if ft_dir == "finetune" else "-" + ft_dir.removeprefix("finetune-")
    return cached(run_dir / f"test_correct_deployed{suffix}.npy", make)


def check(name: str, correct: np.ndarray, row: dict[str, Any]) -> None:
    top1 = 100.0 * float(correct.mean())
    if abs(top1 - row["top1_after_ft"]) > REPRODUCED:
        sys.exit(f"paired_quant: {name} rebuilt scores {top1:.2f}% but its row says {row['top1_after_ft']:.2f}%; "
                 "it is not the network the row scored (weights or cell files changed since): re-run that row.")


def baseline_correct(cfg: Any, args: argparse.Namespace, work: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(per-image correctness, row) of what the cells are compared with: INT8 PTQ of the unpruned network
    (`--baseline int8_ptq`, its row from --report) or another finished cell of `work` (e.g. the int8_ft control
    of the same seed)."""
    if args.baseline == "int8_ptq":
        ptq_row = next((r for r in json.loads(Path(args.report).read_text())["details"]
                        if r["model"] == cfg.model.name and r["method"] == "int8_ptq"), None)
        if ptq_row is None:
            sys.exit(f"paired_quant: {args.report} has no int8_ptq row for {cfg.model.name}; run bench_quantization "
                     "--methods int8_ptq first.")
        # one network whatever the folder: made and cached once, in the first --work folder
        ptq = int8_ptq_correct(cfg, args.calib, Path(args.work[0]))
        check("int8_ptq", ptq, ptq_row)
        return ptq, ptq_row
    return finished_cell(cfg, args, work, args.baseline)


def finished_cell(cfg: Any, args: argparse.Namespace, work: Path,
                  cell: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(per-image correctness, row) of a finished search cell; None (with a message) if it has not finished."""
    row_path, ft_dir = cell_files(work, cfg.model.name, cell, args.longer_ft)
    if not row_path.is_file():
        print(f"{cfg.model.name} {cell}: not finished ({row_path} missing), skipped", file=sys.stderr)
        return None
    row = json.loads(row_path.read_text())
    if not (Path(row["run_dir"]) / ft_dir / "checkpoint.pt").is_file():
        sys.exit(f"paired_quant: {row_path} names {row['run_dir']}, which has no {ft_dir}/checkpoint.pt; "
                 "point --work at the folder whose cells are on this machine.")
    correct = cell_correct(row_path, ft_dir)
    check(cell, correct, row)
    return correct, row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", required=True, help="experiment YAMLs (model, weights, data)")
    p.add_argument("--work", nargs="+", default=["runs/quantization-episodic"],
                   help="where the search cells' rows are; several folders (one search seed each) are pooled")
    p.add_argument("--report", default="docs/benchmarks/quantization.json", help="bench_quantization's report, "
                   "for the int8_ptq rows")
    p.add_argument("--cells", nargs="+", default=["joint_search@2x"])
    p.add_argument("--baseline", default="int8_ptq", help="what the cells are compared with: int8_ptq (INT8 "
                   "alone) or another cell of --work, e.g. prune_search@2x")
    p.add_argument("--calib", type=int, default=128, help="calibration images of the int8_ptq row")
    p.add_argument("--longer-ft", type=int, default=None, metavar="E",
                   help="test the cells' --longer-ft E fine-tunes (bench_quantization --longer-ft) instead")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    if args.baseline == "int8_ptq" and not Path(args.report).is_file():
        sys.exit(f"paired_quant: --report {args.report} not found; give bench_quantization's report JSON.")
    tests = []
    for path in args.configs:
        cfg = load_config(path)
        for cell in args.cells:
            pairs = [pair for work in map(Path, args.work) if (pair := seed_pair(cfg, args, work, cell))]
            if pairs:
                tests.append(paired_test(cfg.model.name, cell, pairs, args.baseline))
    write_json_atomic(Path(args.json), {"tests": tests, "command": " ".join(["python", *sys.argv])})


Found = tuple[np.ndarray, dict[str, Any]]


def seed_pair(cfg: Any, args: argparse.Namespace, work: Path, cell: str) -> tuple[Found, Found] | None:
    """(the cell's, the baseline's) correctness and rows in one --work folder; None if the cell has not finished."""
    found = finished_cell(cfg, args, work, cell)
    if found is None:
        return None
    base = baseline_correct(cfg, args, work)
    if base is None:
        sys.exit(f"paired_quant: --baseline {args.baseline} has not finished for {cfg.model.name} in {work}.")
    return found, base


def paired_test(model: str, cell: str, pairs: list[tuple[Found, Found]], baseline: str) -> dict[str, Any]:
    """McNemar per search seed and an image bootstrap of the seed-mean difference (one pair: the plain paired
    test) between a cell's networks and the baseline's, printed and returned."""
    a = {int(row.get("seed", 0)): (correct, row) for (correct, row), _ in pairs}
    b = {int(found[1].get("seed", 0)): base for found, base in pairs}
    if len(a) < len(pairs):
        sys.exit(f"paired_quant: the --work folders hold {cell} of one seed twice; give one folder per seed.")
    per_seed = [{"seed": s, "a_top1": a[s][1]["top1_after_ft"], "a_speedup": a[s][1]["speedup_measured"],
                 "b_top1": b[s][1]["top1_after_ft"], "b_speedup": b[s][1]["speedup_measured"],
                 "a_top1_rebuilt": 100.0 * float(a[s][0].mean()), "b_top1_rebuilt": 100.0 * float(b[s][0].mean())}
                for s in a]
    t = {"model": model, "a": cell, "ft_epochs": next(iter(a.values()))[1].get("ft_epochs"), "seeds": list(a),
         **{k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0] if k != "seed"},
         "b": baseline, "test_images": int(len(next(iter(b.values()))[0])), "per_seed": per_seed,
         **paired_stats({s: v[0] for s, v in a.items()}, {s: v[0] for s, v in b.items()})}
    mcnemar = ", ".join(f"seed {s} {v['p']:.3g}" for s, v in t["mcnemar_per_seed"].items())
    print(f"{model} {cell} {t['a_top1']:.2f}% @ {t['a_speedup']:.2f}x vs {baseline} {t['b_top1']:.2f}% "
          f"@ {t['b_speedup']:.2f}x (seeds {t['seeds']}): {t['mean_diff_points']:+.2f} points (95% CI "
          f"{t['bootstrap_ci95_points'][0]:+.2f}..{t['bootstrap_ci95_points'][1]:+.2f}, bootstrap p "
          f"{t['bootstrap_p']:.3g}); McNemar {mcnemar}")
    return t


if __name__ == "__main__":
    run_script(main)
