"""CLI: `search` (the main job), `export-schedule` and `finetune`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from autocompress.config import (
    SEARCH_METHODS,
    AutocompressError,
    DataConfig,
    PruneConfig,
    TrainConfig,
    load_config,
    validate,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="learn a per-layer pruning policy (RL), then prune, fine-tune, test and save",
                       description="Run an experiment: search with the configured agent, export the best schedule, "
                                   "apply it, fine-tune if configured, evaluate on the test split and save the model.")
    p.add_argument("config", nargs="?", help="experiment YAML (see experiments/); optional with --resume DIR")
    p.add_argument("--out", help="run folder (default: the config's search.out_dir)")
    p.add_argument("--episodes", type=int, help="number of episodes (overrides search.episodes)")
    p.add_argument("--seed", type=int, help="seed (overrides search.seed)")
    p.add_argument("--agent", choices=SEARCH_METHODS, help="overrides search.agent")
    p.add_argument("--threads", type=int, help="torch intra-op threads (overrides search.torch_threads)")
    p.add_argument("--workers", type=int, help="evaluations in flight (overrides search.workers; > 1 needs ray)")
    p.add_argument("--batch-episodes", type=int, help="episodes per round (overrides search.batch_episodes)")
    p.add_argument("--backend", choices=("local", "ray"), help="where episodes are scored (search.backend)")
    p.add_argument("--address", help="Ray cluster to join, e.g. 127.0.0.1:6379 (search.address)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue a killed search in DIR (or in --out / the config's out_dir)")
    p.add_argument("--no-finalize", action="store_true", help="stop after the search (no apply / fine-tune / test)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    p.set_defaults(func=_search, out_kind="folder")

    e = sub.add_parser("export-schedule", help="copy a run's best schedule to a JSON file (validated)")
    e.add_argument("run_dir", help="a search run folder")
    e.add_argument("--out", required=True, help="where to write the schedule JSON")
    e.set_defaults(func=_export_schedule, out_kind="file")

    f = sub.add_parser("finetune", help="apply a schedule to a trained network, fine-tune it, test it and save it")
    f.add_argument("--model", required=True)
    f.add_argument("--weights", help="weights of the unpruned network")
    f.add_argument("--schedule", required=True, help="schedule JSON (from search or `schedule uniform`)")
    f.add_argument("--data", default="digits")
    f.add_argument("--data-root", help="dataset folder (default $AUTOCOMPRESS_DATA_ROOT or ./data)")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--lr", type=float, default=0.01)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--max-batches", type=int, help="cap batches per epoch (quick runs)")
    f.add_argument("--distill", action="store_true", help="distil from the unpruned network")
    f.add_argument("--seed", type=int, default=0, help="seed of the augmentation and data order (runs repeat)")
    f.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU: 1.5-3x faster on CPUs with AVX512-BF16 or AMX (off: fp32)")
    f.add_argument("--criterion", default="l1", help="which channels go: l1, l2, bn_scale, fpgm, random")
    f.add_argument("--recalib-batches", type=int, default=4,
                   help="training batches to re-estimate BatchNorm statistics after pruning (0 = off)")
    f.add_argument("--out", required=True, help="output folder (pruned_model.pt + schedule)")
    f.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoints/checkpoint.pt where an interrupted run (same --epochs) stopped")
    f.add_argument("--json", action="store_true", help="print the result as one JSON object")
    f.set_defaults(func=_finetune, out_kind="folder")


def _search(args: argparse.Namespace) -> int:
    from autocompress.pipeline import run_experiment, with_overrides

    run_dir = args.resume if isinstance(args.resume, str) else None
    config = args.config or (str(Path(run_dir) / "config.yaml") if run_dir else None)
    if config is None:
        raise AutocompressError("give an experiment config (e.g. experiments/quickstart.yaml) or --resume RUN_DIR.")
    cfg = with_overrides(load_config(config), run_dir or args.out, args.episodes, args.seed)
    if args.agent:
        cfg = replace(cfg, search=replace(cfg.search, agent=args.agent))
    if args.threads is not None:
        if args.threads < 1:
            raise AutocompressError(f"--threads must be >= 1, got {args.threads}.")
        cfg = replace(cfg, search=replace(cfg.search, torch_threads=args.threads))
    overrides = {k: v for k, v in (("workers", args.workers), ("batch_episodes", args.batch_episodes),
                                   ("backend", args.backend), ("address", args.address)) if v is not None}
    if overrides:
        cfg = replace(cfg, search=replace(cfg.search, **overrides))
        validate(cfg.search, "search")
    summary = run_experiment(cfg, resume=bool(args.resume), progress=not args.quiet, finalize_run=not args.no_finalize)
    print(json.dumps(summary, indent=2, default=float))
    return 0


def _export_schedule(args: argparse.Namespace) -> int:
    from autocompress.pruning import Schedule
    from autocompress.search import BEST_SCHEDULE

    src = Path(args.run_dir) / BEST_SCHEDULE
    if not src.is_file():
        raise AutocompressError(f"{src} not found: is {args.run_dir} a search run folder with at least one episode?")
    Schedule.load(src).save(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from autocompress.data import load_data, make_loader, take_tensors
    from autocompress.export import save_pruned
    from autocompress.measure.accuracy import evaluate
    from autocompress.models import get_model
    from autocompress.pruning import Schedule, apply_schedule, recalibrate_bn
    from autocompress.pruning.sparsity import freeze_zeros, remove_masks
    from autocompress.train import train

    data_cfg = DataConfig(name=args.data, batch_size=args.batch_size, val_size=0)  # fine-tune on all training images
    if args.data_root:
        data_cfg = replace(data_cfg, root=args.data_root)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, distill=args.distill, max_batches=args.max_batches,
                      cpu_bf16=args.cpu_bf16, seed=args.seed)
    validate(data_cfg, "data")
    validate(cfg, "finetune")  # before loading anything: a bad number fails in a second
    if args.recalib_batches < 0:
        raise AutocompressError(f"--recalib-batches must be >= 0, got {args.recalib_batches}.")
    bundle = load_data(data_cfg)
    model = get_model(args.model, num_classes=bundle.num_classes, weights=args.weights, in_channels=bundle.input_shape[0])
    schedule = Schedule.load(args.schedule)
    example, _ = take_tensors(bundle.test, 1)
    pruned = apply_schedule(model, schedule, example, PruneConfig(criterion=args.criterion))
    freeze_zeros(pruned, schedule.layer_sparsity())  # a sparse schedule's zeros stay zero through the fine-tune
    if args.recalib_batches > 0:
        calib, _ = take_tensors(bundle.train, args.recalib_batches * args.batch_size, seed=1)
        recalibrate_bn(pruned, calib, args.batch_size)
    loader = make_loader(bundle.test, batch_size=args.batch_size)
    before = evaluate(pruned, loader).top1
    train(pruned, bundle, cfg, teacher=model if args.distill else None, out_dir=Path(args.out) / "checkpoints",
          resume=args.resume)
    after = evaluate(remove_masks(pruned), loader)
    path = Path(args.out) / "pruned_model.pt"
    save_pruned(path, pruned, schedule, args.model, bundle.num_classes, bundle.input_shape[0], bundle.input_shape,
                deflate=schedule.sparse)
    result = {"top1_before": before, "top1": after.top1, "top5": after.top5, "pruned_model": str(path)}
    line = f"test top-1 {before:.2f}% -> {after.top1:.2f}% ; saved {path}"
    if schedule.quantized:  # what deploys is the INT8 model: write it and score it too
        result.update(_int8_result(pruned, schedule, bundle, path, loader))
        line += f"; INT8 top-1 {result['top1_int8']:.2f}% -> {result['int8_onnx']}"
    print(json.dumps(result) if args.json else line)
    return 0


def _int8_result(pruned: Any, schedule: Any, bundle: Any, path: Path, loader: Any) -> dict[str, Any]:
    """The fine-tuned network quantized where the schedule says (calibrated on training images, as
    `autocompress quantize` does), written beside the FP32 file and scored on test."""
    from autocompress.cli.quantize_cmd import calibration_images
    from autocompress.export import export_int8, int8_path
    from autocompress.measure.accuracy import evaluate

    out = int8_path(path)
    int8 = export_int8(pruned, schedule, calibration_images(bundle, schedule.quantization["calib_images"]), out)
    return {"top1_int8": evaluate(int8, loader).top1, "int8_onnx": str(out)}
