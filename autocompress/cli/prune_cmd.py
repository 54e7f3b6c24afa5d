"""CLI: `schedule uniform` (a uniform-ratio schedule meeting a budget) and `apply` (prune + save; and, for a
schedule that puts layers in INT8, the INT8 ONNX Runtime model beside the pruned file; for one that zeroes
weights, a deflated file and its compressed bytes)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from autocompress.cli.latency_cmd import parse_shape
from autocompress.config import LATENCY_RUNTIMES


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name (`autocompress models`) or tv:<name>")
    p.add_argument("--weights", default=None, help="state-dict file of the unpruned model")
    p.add_argument("--data", default=None, help="dataset name: sets the input shape and number of classes (and "
                   "calibrates the INT8 export of a quantized schedule)")
    p.add_argument("--data-root", default=None, help="dataset folder (default $AUTOCOMPRESS_DATA_ROOT or ./data)")
    p.add_argument("--input-shape", type=parse_shape, default=None, metavar="C,H,W",
                   help="one input image's shape when no --data is given (default 3,32,32)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the data's, else 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `schedule` and `apply` to the CLI."""
    s = sub.add_parser("schedule", help="make a pruning schedule without a search (uniform baseline)")
    ssub = s.add_subparsers(dest="schedule_command", metavar="KIND", required=True)
    u = ssub.add_parser(
        "uniform",
        help="one prune ratio for every group, bisected to meet a MACs / params / speedup target",
        description="Bisect one prune ratio for all groups on the analytic cost model (--flops, --params) or on "
        "measured latency (--speedup) and write the schedule JSON.",
    )
    _add_model_args(u)
    target = u.add_mutually_exclusive_group(required=True)
    target.add_argument("--flops", type=float, help="keep this share of the MACs (0.5 = half)")
    target.add_argument("--params", type=float, help="keep this share of the parameters")
    target.add_argument("--speedup", type=float, help="measured speedup to reach (e.g. 2.0), timed with --runtime")
    u.add_argument("--scope", choices=("all", "internal"), default="all", help="which groups are pruned")
    u.add_argument("--round-to", type=int, default=1, help="kept channels rounded to a multiple of this")
    u.add_argument("--min-channels", type=int, default=1, help="never keep fewer channels in a group")
    u.add_argument("--max-ratio", type=float, default=0.95, help="largest prune ratio tried")
    u.add_argument("--runtime", choices=LATENCY_RUNTIMES, default="torch",
                   help="runtime timed for --speedup")
    u.add_argument("--threads", type=int, default=1, help="threads when timing (--speedup)")
    u.add_argument("--rounds", type=int, default=20, help="timed pairs per measurement (--speedup)")
    u.add_argument("--out", required=True, help="schedule JSON to write")
    u.set_defaults(func=_uniform, out_kind="file")

    a = sub.add_parser(
        "apply",
        help="prune a trained model to a schedule and save it (state dict + schedule)",
        description="Validate the schedule against the model, prune it physically and save a file that "
        "`load_pruned` / `autocompress latency --pruned` can rebuild in a fresh process. When the schedule puts "
        "layers in INT8, the INT8 ONNX Runtime model is written beside it (<out stem>.int8.onnx), calibrated "
        "on --data's training images. When it zeroes weights (a sparsity block), they are zeroed, the file is "
        "written with every entry deflated, and its compressed bytes are reported against the unpruned model's.",
    )
    _add_model_args(a)
    a.add_argument("--schedule", required=True, help="schedule JSON (from `schedule uniform` or a search)")
    a.add_argument("--criterion", choices=("l1", "l2", "bn_scale", "fpgm", "random"), default="l1",
                   help="which channels of each group are removed")
    a.add_argument("--out", required=True, help="pruned model file to write (.pt)")
    a.set_defaults(func=_apply, out_kind="file")


def _resolve(args: argparse.Namespace) -> tuple[tuple[int, int, int], int, Any]:
    """(input shape, number of classes, data bundle or None) from --data or --input-shape / --num-classes."""
    if args.data is not None:
        from autocompress.config import DataConfig, default_data_root
        from autocompress.data import load_data

        bundle = load_data(DataConfig(name=args.data, root=args.data_root or default_data_root(), val_size=0))
        classes = bundle.num_classes if args.num_classes is None else args.num_classes
        return tuple(bundle.input_shape), classes, bundle  # type: ignore[return-value]
    return args.input_shape or (3, 32, 32), 10 if args.num_classes is None else args.num_classes, None


def _build(args: argparse.Namespace) -> tuple[Any, torch.Tensor, tuple[int, int, int], int, Any]:
    """(model, example input, input shape, number of classes, data bundle or None)."""
    from autocompress.models import get_model

    shape, num_classes, bundle = _resolve(args)
    model = get_model(args.model, num_classes=num_classes, weights=args.weights, in_channels=shape[0]).eval()
    return model, torch.randn(1, *shape, generator=torch.Generator().manual_seed(0)), shape, num_classes, bundle


def _emit(args: argparse.Namespace, result: dict[str, Any], line: str) -> None:
    if args.json:
        print(json.dumps(result))
    else:
        print(line)


def _uniform(args: argparse.Namespace) -> int:
    from autocompress.config import LatencyConfig, PruneConfig, validate
    from autocompress.pruning import Pruner, Schedule
    from autocompress.pruning.uniform import bisect_uniform_ratio

    cfg = PruneConfig(scope=args.scope, round_to=args.round_to, min_channels=args.min_channels)
    validate(cfg, "prune")
    model, example, shape, _, _ = _build(args)
    pruner = Pruner(model, example, cfg)
    cost = pruner.cost_model

    def ratios(r: float) -> dict[str, float]:
        return {g.name: r for g in pruner.groups}

    metrics: dict[str, Any] = {}
    if args.flops is not None or args.params is not None:
        kind, target = ("macs", args.flops) if args.flops is not None else ("params", args.params)
        measure = cost.macs if kind == "macs" else cost.params
        base = cost.base_macs if kind == "macs" else cost.base_params
        ratio = bisect_uniform_ratio(lambda r: measure(pruner.kept_channels(ratios(r))) / base, target,
                                     args.max_ratio, what=kind)
    else:
        from autocompress.measure.latency import LatencyMeter
        from autocompress.pruning.uniform import bisect_uniform_ratio_on_speedup

        if args.speedup < 1:
            from autocompress.pruning import PruneError

            raise PruneError(f"--speedup {args.speedup} must be >= 1 (2.0 = twice as fast).")
        kind, target = "latency", 1.0 / args.speedup
        meter = LatencyMeter(LatencyConfig(runtime=args.runtime, threads=args.threads, rounds=args.rounds), shape)

        def speedup_at(r: float) -> float:
            comparison = meter.compare(model, pruner.prune(ratios(r)))
            print(f"prune ratio {r:.3f}: speedup {comparison.speedup:.2f}x", file=sys.stderr)
            return comparison.speedup

        ratio, reached = bisect_uniform_ratio_on_speedup(speedup_at, args.speedup, args.max_ratio)
        metrics = {"speedup": reached, "runtime": args.runtime, "threads": args.threads}
    schedule = Schedule.from_pruner(pruner, ratios(ratio), args.model, budget={"kind": kind, "fraction": target},
                                    metrics=metrics)
    schedule.save(args.out)
    m = schedule.metrics
    result = {"out": args.out, "prune_ratio": ratio, "macs_ratio": m["macs_ratio"], "params_ratio": m["params_ratio"],
              "macs": m["macs"], "params": m["params"], "groups": len(pruner.groups), **metrics}
    _emit(args, result, f"uniform prune ratio {ratio:.4f} over {len(pruner.groups)} groups: "
          f"{m['macs_ratio']:.3f} of the MACs, {m['params_ratio']:.3f} of the params -> {args.out}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from autocompress.config import PruneConfig
    from autocompress.export import save_pruned
    from autocompress.measure.flops import count_macs_params
    from autocompress.pruning import Schedule, apply_schedule

    schedule = Schedule.load(args.schedule)  # validate the file before building anything
    model, example, shape, num_classes, bundle = _build(args)
    pruned = apply_schedule(model, schedule, example, PruneConfig(criterion=args.criterion))
    path = save_pruned(args.out, pruned, schedule, args.model, num_classes, shape[0], shape, deflate=schedule.sparse)
    base_macs, base_params = count_macs_params(model, example)
    macs, params = count_macs_params(pruned, example)
    result = {"out": str(path), "macs": macs, "params": params, "macs_ratio": macs / base_macs,
              "params_ratio": params / base_params}
    line = f"pruned {args.model}: {macs / base_macs:.3f} of the MACs, {params / base_params:.3f} of the params -> {path}"
    if schedule.sparse:
        result.update(_size_report(model, pruned, path))
        line = (f"sparse {args.model}: {result['nonzero_ratio']:.3f} of the parameters nonzero, compressed export "
                f"{result['compressed_bytes']:,} bytes ({result['size_ratio']:.3f} of the unpruned "
                f"{result['baseline_compressed_bytes']:,}) -> {path} ({result['file_bytes']:,} bytes, deflated)")
    if schedule.quantized:
        result["int8_onnx"] = _int8_export(args, pruned, schedule, bundle, path)
        line += f"; INT8 -> {result['int8_onnx']}" if result["int8_onnx"] else ""
    _emit(args, result, line)
    return 0


def _size_report(model: Any, pruned: Any, path: Any) -> dict[str, Any]:
    """Compressed export bytes (state dict, every archive entry deflated) of the unpruned and the sparse network,
    measured by writing and deflating both, their nonzero parameters, and the written file's size."""
    from autocompress.measure.size import compressed_bytes
    from autocompress.pruning.sparsity import nonzero_params

    size, base = compressed_bytes(pruned), compressed_bytes(model)
    nonzero, base_nonzero = nonzero_params(pruned), nonzero_params(model)
    return {"compressed_bytes": size, "baseline_compressed_bytes": base, "size_ratio": size / base,
            "nonzero_params": nonzero, "baseline_nonzero_params": base_nonzero,
            "nonzero_ratio": nonzero / base_nonzero, "file_bytes": path.stat().st_size}


def _int8_export(args: argparse.Namespace, pruned: Any, schedule: Any, bundle: Any, path: Any) -> str | None:
    """Write the INT8 model the schedule deploys beside the pruned file, calibrated on --data's training
    images (as `autocompress quantize` does); without --data, say how to make it (random images would set
    wrong ranges) and drop an older export there, which no longer matches these weights."""
    from autocompress.cli.quantize_cmd import calibration_images
    from autocompress.export import export_int8, int8_path

    out = int8_path(path)
    if bundle is None:
        stale = out.exists()
        out.unlink(missing_ok=True)
        print(f"note: {args.schedule} puts layers in INT8 but no --data was given to calibrate them"
              f"{f' (removed the stale {out})' if stale else ''}; write the INT8 export with `autocompress quantize "
              f"--pruned {path} --data DATASET --out {out}`.", file=sys.stderr)
        return None
    assert schedule.quantization is not None
    export_int8(pruned, schedule, calibration_images(bundle, schedule.quantization["calib_images"]), out)
    return str(out)
