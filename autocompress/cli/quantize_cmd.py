"""CLI: `quantize` (post-training static INT8 for ONNX Runtime, optionally of a pruned model)."""

from __future__ import annotations

import argparse
import json

from autocompress.config import DataConfig, QuantConfig, default_data_root, validate


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
    q.add_argument("--calib-images", type=int, default=128, help="training images that set activation ranges")
    q.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default="minmax")
    q.add_argument("--keep-fp32", nargs="*", default=[], metavar="LAYER", help="layers left in FP32")
    q.add_argument("--rounds", type=int, default=50, help="alternating timing pairs")
    q.add_argument("--threads", type=int, default=1, help="threads for timing")
    q.add_argument("--out", required=True, help="INT8 ONNX file to write")
    q.add_argument("--json", action="store_true", help="print the report as one JSON object")
    q.set_defaults(func=_quantize, out_kind="file")


def _quantize(args: argparse.Namespace) -> int:
    from autocompress.atomic import atomic_write
    from autocompress.config import AutocompressError
    from autocompress.data import load_data, make_loader, take_tensors
    from autocompress.measure.accuracy import evaluate
    from autocompress.quantize import int8_report, quantize_int8

    cfg = QuantConfig(calib_images=args.calib_images, calibration=args.calibration)
    validate(cfg, "quantize")
    if (args.model is None) == (args.pruned is None):
        raise AutocompressError("give either --model (with --weights) or --pruned FILE.")
    if args.rounds < 1 or args.threads < 1:
        raise AutocompressError("--rounds and --threads must be >= 1.")
    bundle = load_data(DataConfig(name=args.data, root=args.data_root or default_data_root(), val_size=0))
    model = _network(args, bundle)
    calib, _ = take_tensors(bundle.train, cfg.calib_images, seed=1)
    int8 = quantize_int8(model, calib, cfg, keep_fp32=args.keep_fp32)
    atomic_write(args.out, lambda f: f.write(int8.onnx_bytes))
    fp32_top1 = evaluate(model, make_loader(bundle.test, 500)).top1
    report = int8_report(model, int8, bundle.test, bundle.input_shape, rounds=args.rounds, threads=args.threads)
    report = {"out": args.out, "fp32_top1": fp32_top1, "int8_top1": report.pop("top1"), **report,
              "keep_fp32": sorted(args.keep_fp32)}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"INT8 {report['int8_top1']:.2f}% vs FP32 {fp32_top1:.2f}% top-1 on {report['test_images']} test "
              f"images; {report['speedup']:.2f}x faster in ONNX Runtime (batch 1, {args.threads} thread(s)); "
              f"{report['bytes'] / 1e6:.2f} MB -> {args.out}")
    return 0


def _network(args: argparse.Namespace, bundle: object):  # noqa: ANN202 (nn.Module imported lazily)
    if args.pruned:
        from autocompress.export import load_pruned

        return load_pruned(args.pruned)[0].eval()
    from autocompress.models import get_model

    return get_model(args.model, num_classes=bundle.num_classes, weights=args.weights,  # type: ignore[attr-defined]
                     in_channels=bundle.input_shape[0]).eval()  # type: ignore[attr-defined]
