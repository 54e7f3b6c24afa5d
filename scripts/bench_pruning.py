"""Time the pruning machinery: dependency-graph analysis, copy + prune, analytic cost model vs counting.

Usage: python scripts/bench_pruning.py [--model cifar10_resnet56] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from autocompress.measure.flops import count_macs_params
from autocompress.models import get_model
from autocompress.pruning import Pruner
from autocompress.pruning.groups import analyze_model


def _ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar10_resnet56")
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = get_model(args.model).eval()
    x = torch.randn(1, *(int(v) for v in args.input_shape.split(",")))
    pruner = Pruner(model, x)
    ratios = {g.name: 0.5 for g in pruner.groups}
    kept = pruner.kept_channels(ratios)
    pruned = pruner.prune(ratios)
    result = {
        "model": args.model,
        "groups": len(pruner.groups),
        "analyze_ms": _ms(lambda: analyze_model(model, x), max(3, args.repeats // 5)),
        "pruner_init_ms": _ms(lambda: Pruner(model, x), max(3, args.repeats // 5)),
        "copy_prune_ms": _ms(lambda: pruner.prune(ratios), args.repeats),
        "cost_model_ms": _ms(lambda: pruner.cost_model.macs(kept), args.repeats * 50),
        "torch_pruning_count_ms": _ms(lambda: count_macs_params(pruned, x), args.repeats),
        "threads": 1,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
