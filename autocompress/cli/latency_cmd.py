"""`autocompress latency` (time a model, or a pruned model against its unpruned original) and
`autocompress lut build` (per-layer latency look-up table).

`latency --pruned` also takes an INT8 export (`.onnx`, from `apply --data` / `quantize` / a search run) and
times it in ONNX Runtime against the FP32 original; a pruned file whose schedule deploys in INT8 is timed
through the `.int8.onnx` beside it, since its FP32 weights are not what runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.config import LATENCY_RUNTIMES, AutocompressError, LatencyConfig, PruneConfig, validate

RUNTIME_CHOICES = LATENCY_RUNTIMES


def parse_shape(text: str) -> tuple[int, int, int]:
    """'3,32,32' -> (3, 32, 32)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W as three positive integers (e.g. 3,32,32), got {text!r}")
    return shape  # type: ignore[return-value]


def _add_timing_args(p: argparse.ArgumentParser, rounds: int) -> None:
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="torch",
                   help="torch (eager), onnxruntime (needs the onnx extra), compile (torch.compile: seconds to start)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA-event timing)")
    p.add_argument("--batch", type=int, default=1, help="images per timed call")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (1 is the least noisy on a shared machine)")
    p.add_argument("--rounds", type=int, default=rounds, help="timed calls (pairs when comparing)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")  # fmt: skip


def _add_model_args(p: argparse.ArgumentParser, model_required: bool) -> None:
    p.add_argument("--model", required=model_required, help="zoo name (`autocompress models`) or tv:<name>")
    p.add_argument("--weights", default=None, help="state-dict file (latency does not depend on it)")
    p.add_argument("--input-shape", type=parse_shape, default=None, metavar="C,H,W",
                   help="one input image's shape (default: the pruned file's, else 3,32,32)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the pruned file's, else 10)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    """Add `latency` and `lut` to the CLI."""
    p = sub.add_parser(
        "latency",
        help="time a model; with --pruned, a pruned model against its unpruned original (alternating)",
        description="Time a model. With --pruned, the pruned model and the unpruned one are timed in "
        "alternation and the speedup is the median per-pair ratio (stable on a busy machine; absolute "
        "milliseconds drift).",
    )
    _add_model_args(p, model_required=False)
    p.add_argument("--pruned", default=None,
                   help="a pruned model saved by autocompress (load_pruned), or an INT8 export (.onnx) timed in "
                   "ONNX Runtime against the FP32 original")
    _add_timing_args(p, rounds=20)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run_latency)

    lut = sub.add_parser("lut", help="per-layer latency look-up table")
    lsub = lut.add_subparsers(dest="lut_command", metavar="ACTION", required=True)
    b = lsub.add_parser("build", help="time every conv/linear layer over a grid of channel counts",
                        description="Build a latency look-up table for a model (same runtime/threads/batch "
                        "as it will be used with) and save it as JSON.")  # fmt: skip
    _add_model_args(b, model_required=True)
    b.add_argument("--out", required=True, help="where to write the table (JSON)")
    b.add_argument("--choices", type=int, default=8, help="kept-channel counts timed per group")
    b.add_argument("--round-to", type=int, default=1,
                   help="time kept counts that are multiples of this (use the pruning's round_to, e.g. 8)")
    b.add_argument("--scope", choices=("all", "internal"), default="all", help="which groups can be pruned")
    b.add_argument("--calibrate-ratio", type=float, default=0.5,
                   help="uniform prune ratio of the second calibration point (0: calibrate on the unpruned "
                   "model only)")  # fmt: skip
    _add_timing_args(b, rounds=20)
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    b.set_defaults(func=run_lut_build, out_kind="file")

    c = lsub.add_parser("check", help="prediction error of a table against whole-model timing",
                        description="Prune the model to random per-group ratios (seeded), time each pruned copy "
                        "against the unpruned model with the table's settings, and compare with the table's "
                        "predicted latency and speedup.")
    _add_model_args(c, model_required=True)
    c.add_argument("--lut", required=True, help="the table (JSON) to check")
    c.add_argument("--samples", type=int, default=5, help="pruned models to time")
    c.add_argument("--max-ratio", type=float, default=0.8, help="largest random prune ratio per group")
    c.add_argument("--round-to", type=int, default=1, help="kept counts rounded to multiples of this")
    c.add_argument("--scope", choices=("all", "internal"), default="all", help="which groups are pruned")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--rounds", type=int, default=None, help="timed pairs per sample (default: the table's)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    c.set_defaults(func=run_lut_check)  # fmt: skip


def _latency_config(args: argparse.Namespace) -> LatencyConfig:
    cfg = LatencyConfig(runtime=args.runtime, device=args.device, threads=args.threads, batch_size=args.batch,
                        warmup=args.warmup, rounds=args.rounds)  # fmt: skip
    validate(cfg, "latency")
    return cfg


def _pruned_spec(path: str) -> dict[str, Any]:
    """The model spec (zoo name, classes, input channels, input shape) a pruned-model file records."""
    try:
        from autocompress.export import read_pruned
    except ImportError:  # older export module: only the schedule's model name is known
        return {}
    spec = read_pruned(path).get("model")
    return dict(spec) if isinstance(spec, dict) else {}


def _load_models(args: argparse.Namespace) -> tuple[nn.Module, nn.Module | None, str, tuple[int, int, int]]:
    """(unpruned model, pruned model or None, model name, input shape); the pruned file's spec fills gaps.

    The pruned model is an INT8 ONNX Runtime model (`OrtModule`) when --pruned is an .onnx export, or a
    pruned file whose schedule deploys in INT8 (then the export beside it is timed).
    """
    from autocompress.models import get_model

    pruned = None
    name, shape, classes = args.model, args.input_shape, args.num_classes
    if args.pruned is not None:
        pruned, spec = _pruned_and_spec(args.pruned)
        recorded = spec.get("name")
        if name is not None and recorded and recorded != name:
            raise AutocompressError(
                f"--model {name!r} does not match the model {recorded!r} that {args.pruned} was pruned from; "
                "drop --model or pass the right one."
            )
        name = name or recorded
        shape = shape or (tuple(spec["input_shape"]) if spec.get("input_shape") else None)
        classes = classes or spec.get("num_classes")
    if name is None:
        what = "the FP32 original to time the INT8 export against" if _is_onnx(args.pruned) else "the model"
        raise AutocompressError(f"give --model NAME ({what}), or --pruned FILE.pt, which records the model name.")
    shape = shape or (3, 32, 32)
    base = get_model(name, num_classes=classes or 10, weights=args.weights, in_channels=shape[0])
    return base, pruned, name, shape


def _is_onnx(path: str | None) -> bool:
    return path is not None and path.lower().endswith(".onnx")


def _pruned_and_spec(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model --pruned names and what it records (zoo name, input shape, classes)."""
    from autocompress.export import INT8_SUFFIX, int8_path, load_pruned

    if _is_onnx(path):
        pt = Path(path[: -len(INT8_SUFFIX)] + ".pt") if path.endswith(INT8_SUFFIX) else None
        spec = _pruned_spec(str(pt)) if pt is not None and pt.is_file() else {}
        model, onnx_spec = _onnx_model(Path(path))
        return model, {**onnx_spec, **spec}
    pruned, schedule = load_pruned(path)
    spec = {"name": schedule.model_name, **_pruned_spec(path)}
    if not schedule.quantized:
        return pruned, spec
    beside = int8_path(path)
    if not beside.is_file():
        raise AutocompressError(
            f"{path}: its schedule puts layers in INT8, so its FP32 weights are not what deploys, and no INT8 "
            f"export is beside it; pass the .onnx export (`--pruned {beside}`, written by `autocompress apply "
            f"--data DATASET` or `autocompress quantize --pruned {path} --data DATASET --out {beside}`)."
        )
    print(f"{path}: its schedule deploys in INT8; timing the export beside it, {beside}", file=sys.stderr)
    return _onnx_model(beside)[0], spec


def _onnx_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(ONNX Runtime model, {"input_shape", "num_classes"} read from the graph's fixed sizes)."""
    from autocompress.quantize import OrtModule

    if not path.is_file():
        raise AutocompressError(f"ONNX file {str(path)!r} does not exist.")
    blob = path.read_bytes()
    try:
        import onnx

        graph = onnx.load_from_string(blob).graph
    except ImportError:
        raise AutocompressError("timing an .onnx export needs the onnx extra: "
                                "pip install 'autocompress[onnx]'.") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise AutocompressError(f"{path}: not a readable ONNX model ({type(exc).__name__}); pass the .int8.onnx "
                                "written by `autocompress apply --data` or `autocompress quantize`.") from None
    if not graph.input or not graph.output:
        raise AutocompressError(f"{path}: the ONNX graph has no input or output; it is not a network export.")
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (graph.input[0], graph.output[0])]
    spec: dict[str, Any] = {}
    if len(dims[0]) == 4 and min(dims[0][1:]) > 0:
        spec["input_shape"] = dims[0][1:]
    if len(dims[1]) == 2 and dims[1][1] > 0:
        spec["num_classes"] = dims[1][1]
    return OrtModule(blob), spec


def _zoo_model(args: argparse.Namespace, shape: tuple[int, int, int]) -> nn.Module:
    from autocompress.models import get_model

    model = get_model(args.model, num_classes=args.num_classes or 10, weights=args.weights, in_channels=shape[0])
    return model.eval()


def _macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    from autocompress.measure.flops import count_macs_params

    return count_macs_params(model, torch.zeros(1, *shape))[0]


def run_latency(args: argparse.Namespace) -> int:
    """Handler of `autocompress latency`."""
    from autocompress.measure.latency import LatencyMeter

    cfg = _latency_config(args)
    base, pruned, name, shape = _load_models(args)
    int8 = isinstance(getattr(pruned, "onnx_bytes", None), bytes)
    if int8:  # an ONNX Runtime model runs, and is timed, only there
        if cfg.device != "cpu":
            raise AutocompressError("an INT8 ONNX export runs in ONNX Runtime on the CPU; drop --device.")
        cfg = replace(cfg, runtime="onnxruntime")
    meter = LatencyMeter(cfg, shape)
    print(f"timing {name} ({cfg.runtime}, {cfg.threads} thread(s), batch {cfg.batch_size})...", file=sys.stderr)
    result: dict[str, Any] = {"model": name}
    if pruned is None:
        stats = meter.measure(base)
        result.update(latency_ms=stats.median_ms, baseline_ms=stats.median_ms, speedup=1.0, spread=None,
                      p10_ms=stats.p10_ms, p90_ms=stats.p90_ms, cv=stats.cv, n=stats.n, macs_ratio=1.0)  # fmt: skip
    else:
        cmp = meter.compare(base, pruned)
        macs_ratio = None if int8 else _macs(pruned, shape) / max(_macs(base, shape), 1)  # no MACs count for ONNX
        result.update(latency_ms=cmp.latency_ms, baseline_ms=cmp.baseline_ms, speedup=cmp.speedup,
                      spread=cmp.spread, n=cmp.n, macs_ratio=macs_ratio)  # fmt: skip
        if int8:
            result.update(int8=True, bytes=pruned.nbytes)  # type: ignore[union-attr]
    result.update(runtime=cfg.runtime, device=cfg.device, threads=cfg.threads, batch=cfg.batch_size)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:12s} {v:.4g}" if isinstance(v, float) else f"{k:12s} {v}")
    return 0


def run_lut_build(args: argparse.Namespace) -> int:
    """Handler of `autocompress lut build`."""
    from autocompress.envs.factory import calibration_point
    from autocompress.measure.lut import LatencyLUT
    from autocompress.pruning import Pruner

    cfg = _latency_config(args)
    if args.choices < 1:
        raise AutocompressError(f"--choices must be >= 1, got {args.choices}.")
    if not 0 <= args.calibrate_ratio < 1:
        raise AutocompressError(f"--calibrate-ratio must be in [0, 1), got {args.calibrate_ratio}.")
    shape = args.input_shape or (3, 32, 32)
    model = _zoo_model(args, shape)
    pruner = Pruner(model, torch.zeros(1, *shape), PruneConfig(scope=args.scope, round_to=args.round_to))
    t0 = time.perf_counter()
    lut = LatencyLUT.build(pruner.layer_specs, shape, cfg, model=model, model_name=args.model,
                           pruned=calibration_point(pruner, args.calibrate_ratio),
                           n_choices=args.choices, round_to=args.round_to, progress=True)  # fmt: skip
    path = lut.save(args.out)
    layers = lut.data["layers"]
    result = {
        "out": str(path),
        "model": args.model,
        "build_s": round(time.perf_counter() - t0, 2),
        "layers": len(layers),
        "groups": len(lut.groups),
        "grid_points": sum(len(e["in_choices"]) * len(e["out_choices"]) for e in layers),
        "model_ms": lut.data["calibration"]["model_ms"],
        "const_ms": lut.const_ms,
        "scale": lut.scale,
        "runtime": cfg.runtime,
        "threads": cfg.threads,
        "batch": cfg.batch_size,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:12s} {v}")
    return 0


def run_lut_check(args: argparse.Namespace) -> int:
    """Handler of `autocompress lut check`."""
    import dataclasses

    import numpy as np

    from autocompress.measure.latency import LatencyMeter
    from autocompress.measure.lut import LatencyLUT
    from autocompress.pruning import Pruner

    if args.samples < 1 or not 0 < args.max_ratio < 1:
        raise AutocompressError("--samples must be >= 1 and --max-ratio in (0, 1).")
    shape = args.input_shape or (3, 32, 32)
    model = _zoo_model(args, shape)
    pcfg = PruneConfig(scope=args.scope, round_to=args.round_to)
    validate(pcfg, "prune")
    pruner = Pruner(model, torch.zeros(1, *shape), pcfg)
    lut = LatencyLUT.load(args.lut, pruner.layer_specs, input_shape=shape)
    cfg = lut.latency_config
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
        validate(cfg, "latency")
    rng = np.random.default_rng(args.seed)
    samples = []
    for i in range(args.samples):
        ratios = {g.name: (args.max_ratio / 2 if i == 0 else float(rng.uniform(0, args.max_ratio)))
                  for g in pruner.groups}  # fmt: skip
        samples.append((pruner.kept_channels(ratios), pruner.prune(ratios)))
    print(f"timing {len(samples)} pruned {args.model} against the unpruned one ({cfg.runtime})...", file=sys.stderr)
    report = lut.prediction_error(samples, LatencyMeter(cfg, shape), baseline=model)
    result = {"lut": args.lut, "model": args.model, **dataclasses.asdict(report)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"samples {report.n}: |error| of latency mean {report.mean_abs_rel_error:.1%}, max "
              f"{report.max_abs_rel_error:.1%}; |error| of speedup mean {report.speedup_mean_abs_rel_error:.1%}")
        for r in report.rows:
            print(f"  predicted {r['predicted_speedup']:.3f}x measured {r['measured_speedup']:.3f}x")
    return 0
