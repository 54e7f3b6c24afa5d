"""Benchmark the pruning engine and the cost meters (issue #3 acceptance).

Two parts:
- `--analysis` (the original benchmark): time dependency-graph analysis, copy + prune, the analytic cost
  model vs Torch-Pruning's count, for one model at a uniform 50% prune ratio.
- the suite (default): for each model and MACs target, the uniform prune ratio (bisected on the analytic
  cost model), MACs / params ratios (checked against Torch-Pruning's count on the pruned copy), the time
  of one copy + prune, the measured speedup per runtime x batch x threads (pruned vs unpruned timed in
  alternation with `LatencyMeter.compare`), and the latency look-up table's prediction error.

Speedups are ratios of models timed in alternation in the same run; absolute milliseconds drift with the
machine's load (os.getloadavg() is recorded next to every timing).

    python scripts/bench_pruning.py --shared ../shared --out docs/benchmarks/pruning.json
    python scripts/bench_pruning.py --analysis --model cifar10_resnet56
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from autocompress.atomic import atomic_write_text
from autocompress.config import LatencyConfig, PruneConfig
from autocompress.measure.flops import count_macs_params
from autocompress.measure.latency import LatencyMeter
from autocompress.measure.lut import LatencyLUT, machine_info
from autocompress.models import get_model
from autocompress.pruning import PruneError, Pruner
from autocompress.pruning.groups import analyze_model
from autocompress.pruning.uniform import bisect_uniform_ratio

SHARED_WEIGHTS = {"cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44", "cifar10_resnet56"}


def _ms(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median ms per call; clock=time.process_time gives CPU time (what an idle machine's wall time would be)."""
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    return statistics.median(times)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _csv(text: str, cast=str) -> list:
    return [cast(v) for v in text.split(",") if v.strip()]


def analysis(model_name: str, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """The original engine timing: analysis, Pruner init, copy + prune, cost model vs counting."""
    model = get_model(model_name).eval()
    x = torch.randn(1, *shape)
    pruner = Pruner(model, x)
    ratios = {g.name: 0.5 for g in pruner.groups}
    kept = pruner.kept_channels(ratios)
    pruned = pruner.prune(ratios)
    return {
        "model": model_name,
        "groups": len(pruner.groups),
        "analyze_ms": _ms(lambda: analyze_model(model, x), max(3, repeats // 5)),
        "pruner_init_ms": _ms(lambda: Pruner(model, x), max(3, repeats // 5)),
        "copy_prune_ms": _ms(lambda: pruner.prune(ratios), repeats),
        "cost_model_ms": _ms(lambda: pruner.cost_model.macs(kept), repeats * 50),
        "torch_pruning_count_ms": _ms(lambda: count_macs_params(pruned, x), repeats),
        "threads": 1,
    }


def _model(name: str, shared: Path) -> tuple[torch.nn.Module, str]:
    weights = shared / "models" / f"{name}.pth"
    if name in SHARED_WEIGHTS and weights.is_file():
        return get_model(name, weights=weights).eval(), str(weights)
    return get_model(name).eval(), "random init (latency and MACs do not depend on the weights)"


def _variant(model: torch.nn.Module, x: torch.Tensor, target: float, round_to: int, repeats: int) -> dict[str, Any]:
    """Uniform ratio meeting `target` of the MACs, the pruned copy, and its costs."""
    pruner = Pruner(model, x, PruneConfig(round_to=round_to))
    cost = pruner.cost_model

    def ratios(r: float) -> dict[str, float]:
        return {g.name: r for g in pruner.groups}

    ratio = bisect_uniform_ratio(lambda r: cost.macs(pruner.kept_channels(ratios(r))) / cost.base_macs, target)
    kept = pruner.kept_channels(ratios(ratio))
    pruned = pruner.prune(ratios(ratio))
    macs, params = count_macs_params(pruned, x)
    base_macs, base_params = count_macs_params(model, x)
    row = {
        "target_macs": target,
        "round_to": round_to,
        "groups": len(pruner.groups),
        "prune_ratio": ratio,
        "macs_ratio": macs / base_macs,
        "params_ratio": params / base_params,
        "macs_target_rel_error": (macs / base_macs - target) / target,
        "cost_model_equals_count": cost.macs(kept) == macs and cost.params(kept) == params,
        "copy_prune_ms": _ms(lambda: pruner.prune(ratios(ratio)), repeats),
        "copy_prune_cpu_ms": _ms(lambda: pruner.prune(ratios(ratio)), repeats, time.process_time),
        "copy_prune_load": _load(),
    }
    return {"row": row, "kept": kept, "pruned": pruned, "specs": pruner.layer_specs}


def _speedups(model, pruned, shape, runtimes, batches, threads, rounds, rounds_large) -> list[dict[str, Any]]:
    out = []
    for runtime in runtimes:
        for batch in batches:
            for n_threads in threads:
                r = rounds if batch == 1 else rounds_large
                cfg = LatencyConfig(runtime=runtime, threads=n_threads, batch_size=batch, rounds=r,
                                    warmup=5 if batch == 1 else 2)
                t0 = time.perf_counter()
                cmp = LatencyMeter(cfg, shape).compare(model, pruned)
                out.append({"runtime": runtime, "batch": batch, "threads": n_threads, "rounds": r,
                            "speedup": round(cmp.speedup, 4), "spread": round(cmp.spread, 4),
                            "baseline_ms": round(cmp.baseline_ms, 4), "pruned_ms": round(cmp.latency_ms, 4),
                            "wall_s": round(time.perf_counter() - t0, 2), "load": _load()})
                _log(f"    {runtime:11s} batch {batch:3d} threads {n_threads}: speedup {cmp.speedup:.3f}x "
                     f"(spread {cmp.spread:.3f}, base {cmp.baseline_ms:.2f} ms) load {_load()[0]}")
    return out


def _lut_error(model, variants, shape, runtime, rounds) -> dict[str, Any]:
    """Table timed at exactly the variants' kept counts (+ full): the error of the additive model itself."""
    cfg = LatencyConfig(runtime=runtime, threads=1, batch_size=1, rounds=rounds)
    choices: dict[str, set[int]] = {}
    for v in variants:
        for g, k in v["kept"].items():
            choices.setdefault(g, set()).add(int(k))
    t0 = time.perf_counter()
    lut = LatencyLUT.build(variants[0]["specs"], shape, cfg, {g: sorted(c) for g, c in choices.items()},
                           model=model, progress=False)
    build_s = time.perf_counter() - t0
    report = lut.prediction_error([(v["kept"], v["pruned"]) for v in variants], LatencyMeter(cfg, shape), model)
    rows = [{"target_macs": v["row"]["target_macs"], "round_to": v["row"]["round_to"],
             **{k: round(val, 4) for k, val in r.items()}} for v, r in zip(variants, report.rows, strict=True)]
    return {"runtime": runtime, "threads": 1, "batch": 1, "grid": "kept counts of the variants + full",
            "build_s": round(build_s, 1), "speedup_mean_abs_rel_error": report.speedup_mean_abs_rel_error,
            "latency_mean_abs_rel_error": report.mean_abs_rel_error, "rows": rows, "load": _load()}


def suite(args: argparse.Namespace) -> dict[str, Any]:
    shape = tuple(_csv(args.input_shape, int))
    x = torch.randn(1, *shape)
    extra: dict[str, list[int]] = {}
    for item in args.extra_round_to:
        name, r = item.split(":")
        extra.setdefault(name, []).append(int(r))
    results = []
    for name in _csv(args.models):
        model, weights = _model(name, Path(args.shared))
        _log(f"{name} ({weights})")
        variants, skipped = [], []
        for target in _csv(args.targets, float):
            for round_to in [*_csv(args.round_to, int), *extra.get(name, [])]:
                try:
                    v = _variant(model, x, target, round_to, args.repeats)
                except PruneError as exc:
                    _log(f"  target {target} round_to {round_to}: {exc}")
                    skipped.append({"target_macs": target, "round_to": round_to, "error": str(exc)})
                    continue
                row = v["row"]
                _log(f"  target {target} round_to {round_to}: prune ratio {row['prune_ratio']:.4f}, MACs "
                     f"{row['macs_ratio']:.4f}, params {row['params_ratio']:.4f}, copy+prune {row['copy_prune_ms']:.1f} ms")
                runtimes = _csv(args.runtimes) if round_to in _csv(args.round_to, int) else _csv(args.extra_runtimes)
                row["speedups"] = _speedups(model, v["pruned"], shape, runtimes, _csv(args.batches, int),
                                            _csv(args.threads, int), args.rounds, args.rounds_large)
                variants.append(v)
        luts = []
        lut_models = _csv(args.lut_models)
        for runtime in _csv(args.lut_runtimes) if (not lut_models or name in lut_models) and variants else []:
            _log(f"  LUT {runtime}...")
            luts.append(_lut_error(model, variants, shape, runtime, args.rounds))
            _log(f"    speedup |error| mean {luts[-1]['speedup_mean_abs_rel_error']:.3f} (built in {luts[-1]['build_s']} s)")
        results.append({"model": name, "weights": weights, "variants": [v["row"] for v in variants],
                        "skipped": skipped, "lut": luts})
    return {"results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analysis", action="store_true", help="only the original engine timing of --model")
    parser.add_argument("--model", default="cifar10_resnet56", help="model of --analysis")
    parser.add_argument("--models", default="cifar10_resnet56,mobilenetv2_cifar,vgg16_bn_cifar")
    parser.add_argument("--shared", default="../shared", help="folder with models/<name>.pth (shared ResNets)")
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--targets", default="0.5,0.25", help="MACs fractions kept")
    parser.add_argument("--round-to", default="1", help="round_to values timed for every model")
    parser.add_argument("--extra-round-to", action="append", default=[], metavar="MODEL:R",
                        help="extra round_to variant for one model, timed with --extra-runtimes (repeatable)")
    parser.add_argument("--extra-runtimes", default="onnxruntime")
    parser.add_argument("--runtimes", default="torch,onnxruntime")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=20, help="alternating pairs at batch 1")
    parser.add_argument("--rounds-large", type=int, default=6, help="alternating pairs at batch > 1")
    parser.add_argument("--lut-runtimes", default="torch,onnxruntime", help="'' to skip the look-up table")
    parser.add_argument("--lut-models", default="", help="models that get a look-up table ('' = all)")
    parser.add_argument("--repeats", type=int, default=20, help="copy + prune repetitions")
    parser.add_argument("--out", default=None, help="write the JSON here (atomically)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.analysis:
        print(json.dumps(analysis(args.model, tuple(_csv(args.input_shape, int)), args.repeats), indent=2))
        return
    t0 = time.perf_counter()
    load_before = _load()
    result = suite(args)
    argv = " ".join(sys.argv[1:])
    result = {
        "command": f"python scripts/bench_pruning.py {argv}".strip(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": {**machine_info(), "cores": os.cpu_count(), "platform": platform.platform()},
        "load_before": load_before,
        "load_after": _load(),
        "wall_s": round(time.perf_counter() - t0, 1),
        **result,
    }
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
        _log(f"wrote {args.out}")
    print(text)


if __name__ == "__main__":
    main()
