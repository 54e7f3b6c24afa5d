"""CLI: `quantize` (post-training static INT8 for ONNX Runtime, optionally of a pruned model).

A pruned model whose schedule has a "quantization" block is quantized as the schedule says (its FP32 layers
and calibration settings), unless --keep-fp32 / --calib-images / --calibration / --reduce-range override them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from autocompress.config import DataConfig, QuantConfig, default_data_root, validate

REDUCE_RANGE = {"auto": "auto", "on": True, "off": False}
"""--reduce-range's words -> QuantConfig.reduce_range."""
CALIB_SEED = 1
"""Seed of the permutation whose first images calibrate (the same images for `quantize` and `apply`)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `quantize` to the CLI."""
    q = sub.add_parser(
        "quantize", help="static INT8 for ONNX Runtime, scored and timed against FP32",
        description="Quantize the network (or a pruned one, --pruned) to INT8 with ONNX Runtime (QDQ, per-channel "
                    "weights, ranges calibrated on training images), write the .onnx, and report top-1 on the "
                    "test split, the measured speedup over the FP32 input (batch 1, alternation) and the size.")
    q.add_argument("--model", help="zoo name of the unpruned network (with --weights); not needed with --pruned")
    q.add_argument("--weights", help="state-dict file of the unpruned network")
    q.add_argument("--pruned", help="a pruned model file from `apply` / `finetune` / a search run")
    q.add_argument("--data", required=True, help="dataset for calibration (train) and scoring (test)")
    q.add_argument("--data-root", help="dataset folder (default $AUTOCOMPRESS_DATA_ROOT or ./data)")
    q.add_argument("--calib-images", type=int, default=None,
                   help="training images that set activation ranges (default: the schedule's, else 128)")
    q.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default=None,
                   help="how ranges are chosen (default: the schedule's, else minmax)")
    q.add_argument("--reduce-range", choices=tuple(REDUCE_RANGE), default=None,
                   help="7-bit weights: auto (on for x86 CPUs without VNNI, where 8-bit ones saturate), on or off "
                        "(default: the schedule's, else auto)")
    q.add_argument("--keep-fp32", nargs="*", default=None, metavar="LAYER",
                   help="layers left in FP32 (default: the pruned schedule's FP32 layers, else none)")
    q.add_argument("--rounds", type=int, default=50, help="alternating timing pairs")
    q.add_argument("--threads", type=int, default=1, help="threads for timing")
    q.add_argument("--out", required=True, help="INT8 ONNX file to write")
    q.add_argument("--json", action="store_true", help="print the report as one JSON object")
    q.set_defaults(func=_quantize, out_kind="file")


def calibration_images(bundle: Any, n: int) -> torch.Tensor:
    """The first `n` images of a seeded permutation of the training split (un-augmented in-memory data)."""
    from autocompress.data import take_tensors

    return take_tensors(bundle.train, n, seed=CALIB_SEED)[0]


def _plan(args: argparse.Namespace, schedule: Any) -> tuple[QuantConfig, list[str]]:
    """(settings, layers kept FP32): the command line's, else the pruned schedule's block, else defaults."""
    from autocompress.export import quant_config

    base = quant_config(schedule) if schedule is not None and schedule.quantized else QuantConfig()
    cfg = QuantConfig(calib_images=base.calib_images if args.calib_images is None else args.calib_images,
                      calibration=args.calibration or base.calibration, per_channel=base.per_channel,
                      reduce_range=base.reduce_range if args.reduce_range is None else REDUCE_RANGE[args.reduce_range])
    validate(cfg, "quantize")
    keep = args.keep_fp32
    if keep is None:
        precision = schedule.layer_precision() if schedule is not None else {}
        keep = [name for name, p in precision.items() if p == "fp32"]
    return cfg, list(keep)


def _quantize(args: argparse.Namespace) -> int:
    from autocompress.atomic import atomic_write
    from autocompress.config import AutocompressError
    from autocompress.data import load_data, make_loader
    from autocompress.measure.accuracy import evaluate
    from autocompress.quantize import int8_report, quantize_int8, reduce_range

    if (args.model is None) == (args.pruned is None):
        raise AutocompressError("give either --model (with --weights) or --pruned FILE.")
    if args.rounds < 1 or args.threads < 1:
        raise AutocompressError("--rounds and --threads must be >= 1.")
    if args.calib_images is not None:  # a bad count fails before the data is loaded
        validate(QuantConfig(calib_images=args.calib_images), "quantize")
    bundle = load_data(DataConfig(name=args.data, root=args.data_root or default_data_root(), val_size=0))
    model, schedule = _network(args, bundle)
    cfg, keep = _plan(args, schedule)
    int8 = quantize_int8(model, calibration_images(bundle, cfg.calib_images), cfg, keep_fp32=keep)
    atomic_write(args.out, lambda f: f.write(int8.onnx_bytes))
    fp32_top1 = evaluate(model, make_loader(bundle.test, 500)).top1
    report = int8_report(model, int8, bundle.test, bundle.input_shape, rounds=args.rounds, threads=args.threads)
    report = {"out": args.out, "fp32_top1": fp32_top1, "int8_top1": report.pop("top1"), **report,
              "keep_fp32": sorted(keep), "reduce_range": reduce_range(cfg)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"INT8 {report['int8_top1']:.2f}% vs FP32 {fp32_top1:.2f}% top-1 on {report['test_images']} test "
              f"images; {report['speedup']:.2f}x faster in ONNX Runtime (batch 1, {args.threads} thread(s)); "
              f"{report['bytes'] / 1e6:.2f} MB{' (7-bit weights)' if report['reduce_range'] else ''} -> {args.out}")
    return 0


def _network(args: argparse.Namespace, bundle: Any) -> tuple[torch.nn.Module, Any]:
    """(FP32 network, its pruning schedule or None for an unpruned --model)."""
    if args.pruned:
        from autocompress.export import load_pruned

        model, schedule = load_pruned(args.pruned)
        return model.eval(), schedule
    from autocompress.models import get_model

    model = get_model(args.model, num_classes=bundle.num_classes, weights=args.weights,
                      in_channels=bundle.input_shape[0])
    return model.eval(), None
