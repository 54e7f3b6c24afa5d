"""Issue #17's generality benchmark: transformers, modern CNNs and an LSTM pruned uniformly to half their MACs.

Per model, one cell: the uniform prune ratio that keeps --macs of the analytic MACs (what `autocompress schedule
uniform --flops 0.5` bisects), the network pruned physically to it, its MACs and params ratios, its matmul MACs by
our cost model against PyTorch's operator-level counter (torch.utils.flop_counter.FlopCounterMode, FLOPs / 2), the
attention heads kept per block (ViT, Swin), and its speedup over the unpruned network timed in alternation (batch 1,
--threads threads, medians of --rounds pairs) in eager PyTorch and in ONNX Runtime. torchvision models have random
weights (there is no internet here): MACs, params and latency do not depend on them, accuracy would.
`lstm_seq_fmnist` is trained on Fashion-MNIST by experiments/lstm-fmnist-macs50.yaml's recipe (the package's
pipeline: pretrain, a one-episode uniform search or the config's agent, fine-tune), and its row adds test top-1
before pruning and after fine-tuning on all 10,000 test images.

Resumable: each finished cell is written to --work/<model>/<method>/cell.json and skipped on a rerun; the LSTM's
pretrained weights are kept under --work/lstm_seq_fmnist/pretrain and an unfinished search resumes. The JSON is
rebuilt from every finished cell under --work. One --work holds one setting (input shape, MACs target, LSTM
recipe): a run with another setting is refused, so smoke runs belong in another folder.

    python scripts/bench_generality.py                                   # the full benchmark
    python scripts/bench_generality.py --smoke --models tv:shufflenet_v2_x1_0 lstm_seq_fmnist \\
        --work /tmp/generality --json /tmp/generality/generality.json    # a smoke test (minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from plot_utils import cpu_model, run_script, write_json_atomic

from autocompress.config import (
    ConfigError,
    ExperimentConfig,
    LatencyConfig,
    PruneConfig,
    load_config,
    shared_dir,
)
from autocompress.data import make_loader
from autocompress.measure.accuracy import evaluate
from autocompress.measure.flops import flop_counter_macs, is_attention
from autocompress.measure.latency import LatencyMeter
from autocompress.models import get_model
from autocompress.pipeline import build
from autocompress.pruning import Pruner, Schedule
from autocompress.pruning.uniform import bisect_uniform_ratio
from autocompress.search import AGENTS, BEST_SCHEDULE, CHECKPOINT, Search, machine_description
from autocompress.train import train

REPO = Path(__file__).resolve().parent.parent
LSTM = "lstm_seq_fmnist"
MODELS = ("tv:vit_b_16", "tv:swin_t", "tv:convnext_tiny", "tv:shufflenet_v2_x1_0", "tv:resnet50", "tv:mobilenet_v2",
          LSTM)
"""Default models, in the table's order (ResNet-50 and MobileNetV2 for reference)."""
RANDOM_WEIGHTS = ("random init (torchvision weights=None; no internet here): MACs, params and latency do not "
                  "depend on the weights, accuracy would, so no top-1 is reported")
CONTRACT = ("model", "macs_ratio", "params_ratio", "speedup_eager", "speedup_ort", "macs_ours", "macs_reference",
            "top1_unpruned", "top1_after_ft")
"""The issue's row keys; the rows carry more (method, heads, timing details, the schedule)."""
CELL = "cell.json"
SETTINGS = "settings.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"tv:<name> or {LSTM}")
    p.add_argument("--macs", type=float, default=0.5, help="share of the MACs kept")
    p.add_argument("--input-shape", default="3,224,224", help="C,H,W of the torchvision models")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs of the torchvision models")
    p.add_argument("--round-to", type=int, default=1, help="kept channels rounded to a multiple of this (tv models)")
    p.add_argument("--rounds", type=int, default=30, help="alternating timing pairs per runtime")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls of each model before timing")
    p.add_argument("--threads", type=int, default=1, help="threads of the timed runtimes")
    p.add_argument("--train-threads", type=int, default=2, help="torch threads for pruning, counting and training")
    p.add_argument("--lstm-config", default=str(REPO / "experiments/lstm-fmnist-macs50.yaml"))
    p.add_argument("--lstm-methods", nargs="+", default=["uniform"], choices=list(AGENTS),
                   help="LSTM rows: uniform, and/or the config's search agent (e.g. ddpg)")
    p.add_argument("--lstm-epochs", type=int, default=None, help="LSTM pretrain epochs (default: the config's)")
    p.add_argument("--lstm-ft-epochs", type=int, default=None, help="LSTM fine-tune epochs (default: the config's)")
    p.add_argument("--lstm-max-batches", type=int, default=None, help="cap batches per LSTM epoch (smoke runs)")
    p.add_argument("--lstm-episodes", type=int, default=None, help="LSTM search episodes (default: the config's)")
    p.add_argument("--data-root", default=str(shared_dir() / "data"),
                   help="folder holding FashionMNIST/ (default $AUTOCOMPRESS_SHARED/data, else ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes: LSTM 1 pretrain + 1 fine-tune epoch of 10 batches, 3 timing rounds, 1 warm-up")
    p.add_argument("--work", default=str(REPO / "runs/generality"))
    p.add_argument("--json", default=str(REPO / "docs/benchmarks/generality.json"))
    p.add_argument("--report-only", action="store_true", help="run nothing: rebuild the JSON from finished cells")
    args = p.parse_args(argv)
    if args.smoke:
        args.lstm_epochs, args.lstm_ft_epochs = args.lstm_epochs or 1, args.lstm_ft_epochs or 1
        args.lstm_max_batches = args.lstm_max_batches or 10
        args.rounds, args.warmup = min(args.rounds, 3), min(args.warmup, 1)
    args.shape = tuple(int(v) for v in args.input_shape.split(","))
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def speedups(model: torch.nn.Module, pruned: torch.nn.Module, shape: tuple[int, ...],
             args: argparse.Namespace) -> dict[str, Any]:
    """Speedup over the unpruned network per runtime, timed in alternation at batch 1 (LatencyMeter.compare);
    the CPU and the load average go with every timing, since absolute times drift with the machine's load."""
    out: dict[str, Any] = {"cpu": cpu_model(), "timing_threads": args.threads, "timing_rounds": args.rounds}
    for runtime, key in (("torch", "eager"), ("onnxruntime", "ort")):
        cfg = LatencyConfig(runtime=runtime, threads=args.threads, batch_size=1, rounds=args.rounds,
                            warmup=args.warmup)
        start = time.perf_counter()
        cmp = LatencyMeter(cfg, shape).compare(model, pruned)
        out.update({f"speedup_{key}": cmp.speedup, f"speedup_{key}_spread": cmp.spread,
                    f"baseline_ms_{key}": cmp.baseline_ms, f"pruned_ms_{key}": cmp.latency_ms,
                    f"timing_{key}_s": time.perf_counter() - start, f"loadavg_{key}": os.getloadavg()[0]})
        log(f"  {runtime}: {cmp.speedup:.2f}x (spread {cmp.spread:.3f}, unpruned {cmp.baseline_ms:.1f} ms)")
    return out


def heads_per_block(model: torch.nn.Module) -> list[int] | None:
    """Attention heads of each attention layer in module order (ViT: one per encoder block); None without any."""
    heads = [int(m.num_heads) for m in model.modules() if is_attention(m)]
    return heads or None


def costs(pruner: Pruner, kept: dict[str, int], model: torch.nn.Module, pruned: torch.nn.Module,
          x: torch.Tensor) -> dict[str, Any]:
    """MACs (analytic, Torch-Pruning's convention) and params (counted on the real networks) ratios, and our
    matmul MACs against PyTorch's FlopCounterMode on the unpruned and the pruned network."""
    cost = pruner.cost_model
    params, base_params = (sum(p.numel() for p in m.parameters()) for m in (pruned, model))
    start = time.perf_counter()
    ref, ref_unpruned = flop_counter_macs(pruned, x), flop_counter_macs(model, x)
    return {"macs_ratio": cost.macs(kept) / cost.base_macs, "params_ratio": params / base_params,
            "macs_ours": int(cost.matmul_macs(kept)), "macs_reference": int(ref),
            "macs_ours_unpruned": int(cost.matmul_macs({})), "macs_reference_unpruned": int(ref_unpruned),
            "macs_total": int(cost.macs(kept)), "macs_total_unpruned": int(cost.base_macs),
            "params": int(params), "params_unpruned": int(base_params),
            "params_cost_model_matches": cost.params(kept) == params, "flop_counter_s": time.perf_counter() - start,
            "macs_counter": "torch.utils.flop_counter.FlopCounterMode, FLOPs / 2 (conv, linear, recurrent and "
                            "attention matmuls), one image"}


def uniform_schedule(name: str, pruner: Pruner, target: float) -> tuple[float, Schedule]:
    """The smallest uniform prune ratio keeping at most `target` of the analytic MACs, as `autocompress
    schedule uniform --flops` bisects it, and its schedule."""
    cost = pruner.cost_model

    def ratios(r: float) -> dict[str, float]:
        return {g.name: r for g in pruner.groups}

    ratio = bisect_uniform_ratio(lambda r: cost.macs(pruner.kept_channels(ratios(r))) / cost.base_macs, target,
                                 what="MACs")
    return ratio, Schedule.from_pruner(pruner, ratios(ratio), name, budget={"kind": "macs", "fraction": target})


def tv_cell(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """A torchvision model (random weights) pruned uniformly: costs, heads and speedups."""
    torch.manual_seed(args.seed)
    model = get_model(name, num_classes=args.num_classes, in_channels=args.shape[0]).eval()
    x = torch.randn(1, *args.shape, generator=torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    pruner = Pruner(model, x, PruneConfig(round_to=args.round_to))
    graph_s = time.perf_counter() - start
    ratio, schedule = uniform_schedule(name, pruner, args.macs)
    schedule.save(folder / "schedule.json")
    ratios = schedule.prune_ratios()
    kept = pruner.kept_channels(ratios)
    start = time.perf_counter()
    pruned = pruner.prune(ratios).eval()
    prune_s = time.perf_counter() - start
    row = {"model": name, "method": "uniform", "weights": RANDOM_WEIGHTS, **costs(pruner, kept, model, pruned, x)}
    log(f"  {len(pruner.groups)} groups (graph {graph_s:.1f} s), prune ratio {ratio:.4f}: MACs "
        f"{row['macs_ratio']:.4f}, params {row['params_ratio']:.4f}, ours/FlopCounterMode "
        f"{row['macs_ours'] / row['macs_reference']:.4f}")
    row.update(speedups(model, pruned, args.shape, args))
    row.update({"top1_unpruned": None, "top1_after_ft": None, "heads_per_block": heads_per_block(pruned),
                "heads_per_block_unpruned": heads_per_block(model), "input_shape": list(args.shape),
                "num_classes": args.num_classes, "round_to": args.round_to, "groups": len(pruner.groups),
                "prune_ratio": ratio, "kept_channels": kept, "schedule": ratios, "graph_s": graph_s,
                "prune_s": prune_s})
    return row


def lstm_config(args: argparse.Namespace) -> ExperimentConfig:
    """The LSTM experiment with this run's sizes; the pretrain lands in --work/lstm_seq_fmnist/pretrain."""
    cfg = load_config(args.lstm_config)
    if cfg.pretrain is None or cfg.finetune is None:
        raise ConfigError(f"{args.lstm_config}: the benchmark needs pretrain and finetune sections.")

    def sized(train_cfg: Any, epochs: int | None) -> Any:
        return replace(train_cfg, epochs=epochs or train_cfg.epochs,
                       max_batches=args.lstm_max_batches or train_cfg.max_batches)

    search = replace(cfg.search, seed=args.seed, out_dir=str(Path(args.work) / LSTM / "pretrain"),
                     episodes=args.lstm_episodes or cfg.search.episodes)
    return replace(cfg, data=replace(cfg.data, root=args.data_root), env=replace(cfg.env, budget=args.macs),
                   pretrain=sized(cfg.pretrain, args.lstm_epochs), finetune=sized(cfg.finetune, args.lstm_ft_epochs),
                   search=search)


def lstm_cell(cfg: ExperimentConfig, env: Any, bundle: Any, method: str, args: argparse.Namespace,
              folder: Path) -> dict[str, Any]:
    """Search (uniform: one episode) to the MACs budget, fine-tune by the config's recipe, test on every test
    image; the same costs and speedups as the other models."""
    cfg = replace(cfg, search=replace(cfg.search, agent=method, out_dir=str(folder)))
    test = make_loader(bundle.test, 500)
    top1_unpruned = evaluate(env.model, test).top1
    start = time.perf_counter()
    with Search(cfg, env, folder, resume=(folder / CHECKPOINT).is_file()) as search:
        search.run(progress=True)
    search_s = time.perf_counter() - start
    schedule = Schedule.load(folder / BEST_SCHEDULE)
    pruned = env.evaluator.compress(schedule.prune_ratios())
    top1_before = evaluate(pruned, test).top1
    torch.manual_seed(args.seed)  # the fine-tune's augmentation (the loader seeds its own order)
    start = time.perf_counter()
    history = train(pruned, bundle, cfg.finetune, teacher=env.model if cfg.finetune.distill else None,
                    out_dir=folder / "finetune")
    ft_s = time.perf_counter() - start
    pruned.eval()
    top1_after = evaluate(pruned, test).top1
    x = torch.randn(1, *env.input_shape, generator=torch.Generator().manual_seed(args.seed))
    kept = env.pruner.kept_channels(schedule.prune_ratios())
    row = {"model": LSTM, "method": method, "weights": f"trained here on Fashion-MNIST ({args.lstm_config})",
           **costs(env.pruner, kept, env.model, pruned, x)}
    row.update(speedups(env.model, pruned, tuple(env.input_shape), args))
    row.update({"top1_unpruned": top1_unpruned, "top1_before_ft": top1_before, "top1_after_ft": top1_after,
                "top1_drop_points": top1_unpruned - top1_after, "test_images": len(bundle.test),
                "heads_per_block": None, "heads_per_block_unpruned": None, "input_shape": list(env.input_shape),
                "round_to": cfg.env.prune.round_to, "groups": len(env.groups), "kept_channels": kept,
                "schedule": schedule.prune_ratios(), "pretrain_epochs": cfg.pretrain.epochs,
                "ft_epochs": cfg.finetune.epochs, "max_batches": cfg.finetune.max_batches,
                "search_episodes": 1 if method == "uniform" else cfg.search.episodes, "search_s": search_s,
                "ft_s": ft_s, "val_top1_after_ft": history[-1].get("val_top1") if history else None})
    return row


def finish(folder: Path, start: float, row: dict[str, Any]) -> dict[str, Any]:
    """Stamp a finished cell and write it atomically (it is what a rerun skips)."""
    row.update(wall_s=time.perf_counter() - start, machine=machine_description(),
               date=dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    write_json_atomic(folder / CELL, row)
    print(table([row]).splitlines()[-1], file=sys.stderr)
    return row


def run_lstm(args: argparse.Namespace, work: Path) -> None:
    """The LSTM's cells; data and the pretrained network are built only when a cell is missing."""
    todo = [m for m in args.lstm_methods if not (work / LSTM / m / CELL).is_file()]
    if not todo:
        return
    cfg = lstm_config(args)
    start = time.perf_counter()
    env, bundle = build(cfg, progress=True)  # trains the unpruned LSTM once (kept as pretrain/baseline.pt)
    log(f"{LSTM}: data and pretrained network ready in {time.perf_counter() - start:.0f} s")
    for method in todo:
        log(f"== {LSTM} {method}")
        start = time.perf_counter()
        folder = work / LSTM / method
        finish(folder, start, lstm_cell(cfg, env, bundle, method, args, folder))


def check_settings(args: argparse.Namespace, work: Path) -> None:
    """One --work holds one setting: cells made with another would be mixed into one table."""
    settings = {"macs": args.macs, "input_shape": list(args.shape), "num_classes": args.num_classes,
                "round_to": args.round_to, "seed": args.seed, "lstm_config": args.lstm_config,
                "lstm_epochs": args.lstm_epochs, "lstm_ft_epochs": args.lstm_ft_epochs,
                "lstm_max_batches": args.lstm_max_batches, "lstm_episodes": args.lstm_episodes}
    path = work / SETTINGS
    if path.is_file() and json.loads(path.read_text()) != settings:
        raise ConfigError(f"{work} holds cells made with other settings ({path}: {path.read_text().strip()}); "
                          "give another --work or delete that folder.")
    write_json_atomic(path, settings)


def collect(work: Path) -> list[dict[str, Any]]:
    """Every finished cell under `work`, in MODELS order (others after, by name)."""
    rows = [json.loads(p.read_text()) for p in work.glob(f"*/*/{CELL}")]
    order = {m: i for i, m in enumerate(MODELS)}
    return sorted(rows, key=lambda r: (order.get(r["model"], len(order)), r["model"], r["method"]))


def table(rows: list[dict[str, Any]]) -> str:
    def top1(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = (f"{'model':<24}{'method':<9}{'MACs':>7}{'params':>8}{'eager':>8}{'ORT':>8}{'MACs ours':>15}"
            f"{'FlopCounter':>15}{'unpruned':>9}{'after FT':>9}  heads kept per block")
    lines = [head, "-" * len(head)]
    for r in rows:
        heads = " ".join(map(str, r["heads_per_block"])) if r.get("heads_per_block") else "-"
        lines.append(f"{r['model']:<24}{r['method']:<9}{r['macs_ratio']:>7.3f}{r['params_ratio']:>8.3f}"
                     f"{r['speedup_eager']:>7.2f}x{r['speedup_ort']:>7.2f}x{r['macs_ours']:>15,}"
                     f"{r['macs_reference']:>15,}{top1(r['top1_unpruned']):>9}{top1(r['top1_after_ft']):>9}  {heads}")
    return "\n".join(lines)


def write_report(args: argparse.Namespace, work: Path) -> None:
    rows = collect(work)
    for r in rows:
        missing = [k for k in CONTRACT if k not in r]
        assert not missing, f"{r['model']}: cell lacks {missing}"
    result = {
        "rows": [{k: r[k] for k in CONTRACT} | {k: v for k, v in r.items() if k not in CONTRACT} for r in rows],
        "weights": RANDOM_WEIGHTS + f"; {LSTM} trained here on Fashion-MNIST",
        "settings": json.loads((work / SETTINGS).read_text()) if (work / SETTINGS).is_file() else None,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {"description": machine_description(), "cpu": cpu_model(), "cores": os.cpu_count()},
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json_atomic(args.json, result)
    log(f"wrote {args.json}")
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.work)
    if not args.report_only:
        torch.set_num_threads(args.train_threads)
        check_settings(args, work)
        for name in args.models:
            if name == LSTM:
                run_lstm(args, work)
                continue
            folder = work / name.replace(":", "_") / "uniform"
            if (folder / CELL).is_file():
                log(f"== {name}: done ({folder / CELL})")
                continue
            log(f"== {name}")
            start = time.perf_counter()
            finish(folder, start, tv_cell(name, args, folder))
    write_report(args, work)


if __name__ == "__main__":
    run_script(main)
