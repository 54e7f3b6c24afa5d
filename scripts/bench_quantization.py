"""INT8 against FP32 and pruning in ONNX Runtime: issue #15's table.

For each config (its model, adapted weights and data; `cifar10_jpeg` for the issue's table) and method:
- `fp32`: the unpruned network exported to ONNX (the reference every speedup is measured against);
- `int8_ptq`: post-training static INT8 of the whole network (`autocompress.quantize.quantize_int8`,
  QDQ, per-channel weights, `--calib` training images), no fine-tuning.
- `--searches` cells, each a search at a measured ONNX Runtime speedup target (same agent, episodes, seed
  and fine-tune recipe for all; chosen on val by the config's tournament, reported on test):
  `prune_search@T` (FP32 channel pruning, the latency table's wall corrected by measured timings),
  `quant_search@T` (per-group FP32/INT8 only: max_ratio 0) and `joint_search@T` (prune ratio and precision
  per group; the `--joint-config`'s soft latency target). The chosen network is fine-tuned in FP32, then its
  INT8 layers are calibrated and quantized (`pipeline.INT8_RECIPE`).
- `--controls int8_ft`: no search; INT8 everywhere, nothing pruned, through that same fine-tune and INT8 recipe
  (the joint config's, `--seed`), so a search's lead over `int8_ptq` can be told from the fine-tune's.
Each row: top-1 on every test image, the ONNX Runtime speedup over FP32 (batch 1, one thread, pairs timed
in alternation), model bytes, the CPU and its INT8 flags. Finished rows are kept in `--work/<model>/<method>.json`
and skipped on a rerun; the JSON is rebuilt from all of them.

    python scripts/bench_quantization.py --configs experiments/resnet20-cifar10jpeg-macs50.yaml \
        experiments/resnet56-cifar10jpeg-macs50.yaml --methods fp32 int8_ptq --json docs/benchmarks/quantization.json
    python scripts/bench_quantization.py --configs experiments/resnet20-cifar10jpeg-macs50.yaml --methods \
        --searches joint_search@2 prune_search@2 quant_search@2 joint_search@3 joint_search@4 \
        --joint-config experiments/resnet20-cifar10jpeg-int8-joint.yaml --json docs/benchmarks/quantization.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bench_joint import CONTROLS, longer_ft_row, retime_search_row, search_row, write_retimed
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import QuantConfig, load_config
from autocompress.data import load_data, take_tensors
from autocompress.envs.factory import build_model
from autocompress.pruning import Schedule, apply_schedule
from autocompress.quantize import cpu_int8_flags, int8_report, int8_sensitivity, quantize_int8, reduce_range

METHODS = ("fp32", "int8_ptq")
SEARCH_METHODS = ("prune_search", "quant_search", "joint_search")
ROW_KEYS = ("model", "method", "target_speedup", "speedup_measured", "bytes", "test_images", "top1_before_ft",
            "top1_after_ft", "cpu")
PRUNED_METHODS = ("pruned_fp32", "pruned_int8_ptq")
"""Extra rows (not the issue's methods): a bench_quality cell's searched, fine-tuned network, as it is and after
INT8 PTQ; reported under `extra_rows`, since no joint search made them."""


def run_row(cfg: Any, method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    path = work / cfg.model.name / f"{method}.json"
    if path.is_file():
        return json.loads(path.read_text())
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    start = time.perf_counter()
    candidate = model
    if method == "int8_ptq":
        calib, _ = take_tensors(bundle.train_eval if getattr(bundle, "train_eval", None) else bundle.train,
                                args.calib, seed=1)
        candidate = quantize_int8(model, calib, QuantConfig(calib_images=args.calib))
    quant_s = time.perf_counter() - start
    report = int8_report(model, candidate, bundle.test, bundle.input_shape, rounds=args.rounds)
    row = {
        "model": cfg.model.name, "method": method, "target_speedup": None,
        "speedup_measured": 1.0 if method == "fp32" else report["speedup"],
        "speedup_spread": 0.0 if method == "fp32" else report["speedup_spread"],
        "bytes": report["bytes"], "test_images": report["test_images"],
        "top1_before_ft": report["top1"], "top1_after_ft": report["top1"],  # no fine-tune in these rows
        "finetune": "none", "search_s": 0.0, "ft_s": 0.0, "quantize_s": quant_s,
        "reduce_range": method == "int8_ptq" and reduce_range(QuantConfig(calib_images=args.calib)),
        "latency_ms": report["latency_ms"], "fp32_latency_ms": report["fp32_latency_ms"],
        "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no INT8 flags found'})",
        "timing_loadavg": os.getloadavg()[0], "weights": cfg.model.weights,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json_atomic(path, row)
    return row


def pruned_rows(cfg: Any, cell_dir: Path, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The fine-tuned network of a bench_quality cell (its schedule + fine-tune checkpoint), FP32 and INT8."""
    cell = json.loads((cell_dir / "cell.json").read_text())
    out, todo = [], []
    for method in PRUNED_METHODS:
        path = work / cfg.model.name / f"{method}-{cell['method']}-seed{cell['seed']}.json"
        (out.append(json.loads(path.read_text())) if path.is_file() else todo.append((method, path)))
    if not todo:
        return out
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    example, _ = take_tensors(bundle.test, 1)
    pruned = apply_schedule(model, Schedule.load(cell_dir / "best_schedule.json"), example, cfg.env.prune)
    pruned.load_state_dict(torch.load(cell_dir / "finetune" / "checkpoint.pt", map_location="cpu",
                                      weights_only=True)["model"])
    pruned.eval()
    for method, path in todo:
        start = time.perf_counter()
        candidate = pruned
        if method == "pruned_int8_ptq":
            calib, _ = take_tensors(bundle.train, args.calib, seed=1)
            candidate = quantize_int8(pruned, calib, QuantConfig(calib_images=args.calib))
        report = int8_report(model, candidate, bundle.test, bundle.input_shape, rounds=args.rounds)
        row = {"model": cfg.model.name, "method": method, "from": f"{cell['method']} seed {cell['seed']}, "
               f"{cell['macs_ratio']:.3f} MACs, {cell['ft_epochs']} FT epochs (bench_quality cell)",
               "speedup_measured": report["speedup"], "speedup_spread": report["speedup_spread"],
               "bytes": report["bytes"], "test_images": report["test_images"], "top1": report["top1"],
               "top1_cell_after_ft": cell["top1_after_ft"], "quantize_s": time.perf_counter() - start,
               "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags())})", "timing_loadavg": os.getloadavg()[0],
               "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        write_json_atomic(path, row)
        out.append(row)
    return out


def retime_ptq_row(cfg: Any, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The int8_ptq row's speedup timed again (same calibration images, so the same INT8 model)."""
    row = json.loads(path.read_text())
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    calib, _ = take_tensors(bundle.train_eval if getattr(bundle, "train_eval", None) else bundle.train,
                            args.calib, seed=1)
    int8 = quantize_int8(model, calib, QuantConfig(calib_images=args.calib))
    return write_retimed(path, row, model, int8, bundle.input_shape, args.rounds)


def retime(args: argparse.Namespace, work: Path) -> None:
    """Every finished INT8 and search row timed again: run it on a quiet machine."""
    for cfg in map(load_config, args.configs):
        for path in sorted((work / cfg.model.name).glob("*.json")):
            method = path.stem.partition("@")[0]
            if method == "int8_ptq":
                row = retime_ptq_row(cfg, path, args)
            elif method in SEARCH_METHODS + CONTROLS:
                row = retime_search_row(path, args.rounds)
            else:
                continue
            print(f"{row['model']:18} {path.stem:18} speedup {row['speedup_first_timing']:.2f}x (load "
                  f"{row['first_timing_loadavg'] or 0:.1f}) -> {row['speedup_measured']:.2f}x (load "
                  f"{row['timing_loadavg']:.1f})", file=sys.stderr)


def sensitivity(cfg: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Per layer: only that layer in INT8, scored on 1,000 val images (`quantize.int8_sensitivity`)."""
    path = work / cfg.model.name / "int8_sensitivity.json"
    if path.is_file():
        return json.loads(path.read_text())
    bundle = load_data(cfg.data)
    model = build_model(cfg, bundle).eval()
    calib, _ = take_tensors(bundle.train, args.calib, seed=1)
    x, y = take_tensors(bundle.val, 1000, seed=0)
    start = time.perf_counter()
    layers = int8_sensitivity(model, calib, x, y, QuantConfig(calib_images=args.calib))
    result = {"model": cfg.model.name, "val_images": len(x), "seconds": time.perf_counter() - start,
              "layers": layers, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_json_atomic(path, result)
    return result


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", required=True, help="experiment YAMLs (model, weights, data)")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--calib", type=int, default=128, help="calibration images from the training split")
    p.add_argument("--rounds", type=int, default=100, help="alternating timing pairs")
    p.add_argument("--threads", type=int, default=1, help="torch threads for evaluation")
    p.add_argument("--pruned-cells", nargs="*", default=[],
                   help="bench_quality cell folders (same model as the first config): their fine-tuned networks "
                        "in FP32 and INT8, as extra rows")
    p.add_argument("--sensitivity", action="store_true",
                   help="also each layer's INT8 sensitivity (only that layer quantized) on 1,000 val images")
    p.add_argument("--searches", nargs="*", default=[], metavar="METHOD@T",
                   help=f"search cells: one of {', '.join(SEARCH_METHODS)}, @ the target ONNX Runtime speedup")
    p.add_argument("--controls", nargs="*", default=[], choices=CONTROLS,
                   help="cells with no search, through the --searches cells' fine-tune and INT8 recipe: int8_ft "
                        "(INT8 everywhere, nothing pruned), reported under control_rows")
    p.add_argument("--joint-config", default="experiments/resnet20-cifar10jpeg-int8-joint.yaml",
                   help="search settings of the --searches cells (agent, episodes, reward, tournament)")
    p.add_argument("--episodes", type=int, default=None, help="override the search episodes")
    p.add_argument("--ft-epochs", type=int, default=3, help="fine-tune epochs of every searched network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/quantization")
    p.add_argument("--json", required=True)
    p.add_argument("--longer-ft", type=int, default=None, metavar="E",
                   help="run no search: fine-tune the finished --searches cells' networks for E epochs instead, "
                        "reported under longer_ft_rows")
    p.add_argument("--retime", action="store_true",
                   help="run nothing new: time every finished INT8 and search row again (on a quiet machine), "
                        "then rebuild the JSON")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.longer_ft is not None and args.longer_ft < 1:
        raise SystemExit(f"--longer-ft: {args.longer_ft} epochs; give a number of fine-tune epochs >= 1.")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.retime:
        retime(args, work)
        args.methods, args.searches, args.controls = [], [], []
    for path in args.configs:
        cfg = load_config(path)
        for method in args.methods:
            row = run_row(cfg, method, args, work)
            print(f"{row['model']:18} {row['method']:9} top-1 {row['top1_after_ft']:.2f}  "
                  f"speedup {row['speedup_measured']:.2f}x  {row['bytes'] / 1e6:.2f} MB", file=sys.stderr)
    for cell in args.searches:
        method, _, target = cell.partition("@")
        if method not in SEARCH_METHODS or not target:
            raise SystemExit(f"--searches: {cell!r} is not METHOD@SPEEDUP with METHOD in {SEARCH_METHODS}")
        for path in args.configs:
            if args.longer_ft:
                row = longer_ft(load_config(path), cell, float(target), args, work)
                print(f"{row['model']:18} {cell:16} {args.longer_ft} FT epochs: top-1 {row['top1_after_ft']:.2f}  "
                      f"speedup {row['speedup_measured']:.2f}x", file=sys.stderr)
                continue
            row = search_row(load_config(path), load_config(args.joint_config), method, float(target), args, work)
            print(f"{row['model']:18} {cell:16} top-1 {row['top1_before_ft']:.2f} -> {row['top1_after_ft']:.2f}  "
                  f"speedup {row['speedup_measured']:.2f}x  {row['bytes'] / 1e6:.2f} MB", file=sys.stderr)
    for method in args.controls:
        for path in args.configs:
            row = search_row(load_config(path), load_config(args.joint_config), method, None, args, work)
            print(f"{row['model']:18} {method:16} top-1 {row['top1_before_ft']:.2f} -> {row['top1_after_ft']:.2f}  "
                  f"speedup {row['speedup_measured']:.2f}x  {row['bytes'] / 1e6:.2f} MB", file=sys.stderr)
    for path in args.configs if args.sensitivity else ():
        worst = sorted(sensitivity(load_config(path), args, work)["layers"].items(),
                       key=lambda kv: -kv[1]["logit_error"])[:3]
        print("most INT8-sensitive: " + ", ".join(f"{n} ({v['logit_error']:.3f})" for n, v in worst), file=sys.stderr)
    for cell_dir in args.pruned_cells:
        for row in pruned_rows(load_config(args.configs[0]), Path(cell_dir), args, work):
            print(f"{row['model']:18} {row['method']:16} top-1 {row['top1']:.2f}  speedup "
                  f"{row['speedup_measured']:.2f}x  {row['bytes'] / 1e6:.2f} MB  ({row['from']})", file=sys.stderr)
    write_report(args, work)


def longer_ft(cfg: Any, cell: str, target: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The finished cell's network with a longer fine-tune (bench_joint.longer_ft_row)."""
    method = cell.partition("@")[0]
    path = work / cfg.model.name / f"{method}@{target:g}x.json"
    if not path.is_file():
        raise SystemExit(f"--longer-ft: cell {cell} of {cfg.model.name} has not finished ({path} is missing); "
                         "run it first without --longer-ft.")
    return longer_ft_row(path, args.longer_ft, args.rounds)


def merged(previous: list[dict[str, Any]], found: list[dict[str, Any]], key: Any) -> list[dict[str, Any]]:
    """`found` plus the earlier report's entries that nothing in `found` replaces (by `key`): a --work folder
    lost between sittings does not take its rows out of the report."""
    have = {key(r) for r in found}
    return found + [r for r in previous if key(r) not in have]


def write_report(args: argparse.Namespace, work: Path) -> None:
    """The JSON from every finished row in `work`, and the rows of an existing --json that `work` lacks."""
    old = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    found = [json.loads(q.read_text()) for q in sorted(work.glob("*/*.json"))]
    rows = merged(old.get("details", []), [r for r in found if r.get("method") in METHODS + SEARCH_METHODS],
                  lambda r: (r["model"], r["method"], r["target_speedup"]))
    rows.sort(key=lambda r: (r["model"], r["method"], r["target_speedup"] or 0.0))
    extra = merged(old.get("extra_rows", []), [r for r in found if r.get("method") in PRUNED_METHODS],
                   lambda r: (r["model"], r["method"], r["from"]))
    sens = merged([r for r in old.get("int8_sensitivity", []) if "val_images" in r],  # not the stray LUTs of old
                  [json.loads(q.read_text()) for q in sorted(work.glob("*/int8_sensitivity.json"))],
                  lambda r: r["model"])
    controls = merged(old.get("control_rows", []), [r for r in found if r.get("method") in CONTROLS],
                      lambda r: (r["model"], r["method"], r["seed"]))
    longer = merged(old.get("longer_ft_rows", []), [json.loads(q.read_text()) for q in sorted(work.glob("*/longer-ft/*.json"))],
                    lambda r: (r["model"], r["method"], r["target_speedup"], r["ft_epochs"]))
    write_json_atomic(args.json, {
        "rows": [{k: r[k] for k in ROW_KEYS} for r in rows],  # exactly issue #15's shape
        "details": rows,
        "extra_rows": extra,
        "control_rows": controls,
        "int8_sensitivity": sens,
        "longer_ft_rows": longer,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "note": "speedup: ONNX Runtime, batch 1, 1 thread, median of per-pair ratios against the FP32 network "
                "timed in alternation; fp32/int8_ptq rows are not fine-tuned (top-1 before = after); search rows "
                "are fine-tuned in FP32 (distilled from the unpruned network), then INT8 layers calibrated and "
                "quantized (post-training; no quantization-aware training).",
    })


if __name__ == "__main__":
    run_script(main)
