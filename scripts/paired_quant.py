"""Is a searched INT8 network really more accurate than INT8 alone? A paired test on the same test images.

Issue #15 asks the joint search at 2x to beat INT8 everywhere in accuracy; the two end within a few tenths of a
point, which 10,000 images cannot tell apart without a paired test. For each finished search cell named by
--cells (a bench_quantization row in --work/<model>/<cell>.json) this rebuilds the deployed network (its schedule,
fine-tuned weights and INT8 layers, as the row scored it) and INT8 PTQ of the unpruned network (as the
`int8_ptq` row made it), records per-image correctness on the test split, checks that both reproduce their rows'
top-1, and reports McNemar's exact test and a bootstrap over images. Run from the repository root:

    python scripts/paired_quant.py --configs experiments/resnet56-cifar10jpeg-macs50.yaml \
        --work runs/quantization-episodic --cells joint_search@2x --json docs/benchmarks/quantization_paired.json
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", required=True, help="experiment YAMLs (model, weights, data)")
    p.add_argument("--work", default="runs/quantization-episodic", help="where the search cells' rows are")
    p.add_argument("--report", default="docs/benchmarks/quantization.json", help="bench_quantization's report, "
                   "for the int8_ptq rows")
    p.add_argument("--cells", nargs="+", default=["joint_search@2x"])
    p.add_argument("--calib", type=int, default=128, help="calibration images of the int8_ptq row")
    p.add_argument("--longer-ft", type=int, default=None, metavar="E",
                   help="test the cells' --longer-ft E fine-tunes (bench_quantization --longer-ft) instead")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    if not Path(args.report).is_file():
        sys.exit(f"paired_quant: --report {args.report} not found; give bench_quantization's report JSON.")
    tests = []
    for path in args.configs:
        cfg = load_config(path)
        ptq_row = next((r for r in json.loads(Path(args.report).read_text())["details"]
                        if r["model"] == cfg.model.name and r["method"] == "int8_ptq"), None)
        if ptq_row is None:
            sys.exit(f"paired_quant: {args.report} has no int8_ptq row for {cfg.model.name}; run bench_quantization "
                     "--methods int8_ptq first.")
        ptq = int8_ptq_correct(cfg, args.calib, Path(args.work))
        check("int8_ptq", ptq, ptq_row)
        for cell in args.cells:
            row_path, ft_dir = cell_files(Path(args.work), cfg.model.name, cell, args.longer_ft)
            if not row_path.is_file():
                print(f"{cfg.model.name} {cell}: not finished ({row_path} missing), skipped", file=sys.stderr)
                continue
            row = json.loads(row_path.read_text())
            if not (Path(row["run_dir"]) / ft_dir / "checkpoint.pt").is_file():
                sys.exit(f"paired_quant: {row_path} names {row['run_dir']}, which has no {ft_dir}/checkpoint.pt; "
                         "point --work at the folder whose cells are on this machine.")
            searched = cell_correct(row_path, ft_dir)
            check(cell, searched, row)
            stats = paired_stats({0: searched}, {0: ptq})
            tests.append({"model": cfg.model.name, "a": cell, "ft_epochs": row.get("ft_epochs"), "a_top1": row["top1_after_ft"],
                          "a_speedup": row["speedup_measured"], "b": "int8_ptq", "b_top1": ptq_row["top1_after_ft"],
                          "b_speedup": ptq_row["speedup_measured"], "test_images": int(len(ptq)),
                          "a_top1_rebuilt": 100.0 * float(searched.mean()), "b_top1_rebuilt": 100.0 * float(ptq.mean()),
                          **stats})
            t = tests[-1]
            print(f"{t['model']} {cell} {t['a_top1']:.2f}% @ {t['a_speedup']:.2f}x vs int8_ptq {t['b_top1']:.2f}% "
                  f"@ {t['b_speedup']:.2f}x: {t['mean_diff_points']:+.2f} points (95% CI "
                  f"{t['bootstrap_ci95_points'][0]:+.2f}..{t['bootstrap_ci95_points'][1]:+.2f}), McNemar p "
                  f"{t['mcnemar_per_seed']['0']['p']:.3g}")
    write_json_atomic(Path(args.json), {"tests": tests, "command": " ".join(["python", *sys.argv])})


if __name__ == "__main__":
    run_script(main)
