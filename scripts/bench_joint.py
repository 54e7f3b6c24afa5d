"""One search cell of issue #15's table (used by bench_quantization.py --searches): search at a measured ONNX
Runtime speedup target, choose on val, fine-tune in FP32, quantize the INT8 layers, report on test.

The three methods differ only in what the action may choose, so they share agent, episodes, seed, reward,
tournament and fine-tune recipe (the --joint-config's):
- prune_search: FP32 channel pruning; the latency budget is a hard wall priced by the latency look-up table
  and corrected by measured timings (the strongest pruning-only search this project has);
- quant_search: FP32 or INT8 per group, nothing pruned (max_ratio 0), HAQ-like;
- joint_search: prune ratio and precision per group.
A control (CONTROLS, bench_quantization --controls) is a cell with a fixed schedule instead of a search.
A cell is written to --work/<model>/<method>@<T>x.json when finished; its search and fine-tune resume from
their checkpoints after a kill.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from bench_quality import search_cell
from plot_utils import cpu_model, write_json_atomic

from autocompress.atomic import atomic_write_text
from autocompress.config import ConfigError, ExperimentConfig, LatencyConfig, dump_config, load_config
from autocompress.data import make_loader
from autocompress.export import quant_config
from autocompress.measure.accuracy import evaluate
from autocompress.measure.latency import LatencyMeter
from autocompress.pipeline import build
from autocompress.pruning import Schedule
from autocompress.quantize import cpu_int8_flags, int8_report, quantize_layers
from autocompress.search import quantization_block
from autocompress.train import train

CONTROLS = ("int8_ft",)
"""Cells with no search: a fixed schedule through the search cells' own fine-tune and INT8 recipe. `int8_ft` is
every group INT8, nothing pruned: INT8 alone given the fine-tune every searched network gets, the control that
tells how much of a search's lead over INT8 alone (PTQ, not fine-tuned) is the fine-tune's."""


def cell_name(method: str, target: float | None) -> str:
    """A cell's row and run-folder stem: `joint_search@2x`, or the bare name of a control (no target)."""
    return method if target is None else f"{method}@{target:g}x"


def cell_config(base: ExperimentConfig, joint: ExperimentConfig, method: str, target: float | None, run_dir: Path,
                episodes: int | None, ft_epochs: int, seed: int) -> ExperimentConfig:
    """`base`'s model and data with `joint`'s search settings, restricted to what `method` may choose."""
    env = joint.env if target is None else replace(joint.env, budget=1.0 / target)
    if method == "prune_search":
        # FP32 under a latency budget: a look-up table walls the episode, and it cannot price removed blocks
        env = replace(env, precisions="fp32", lut_path=str(run_dir.parent / "lut.json"), drop_blocks=False)
    elif method in ("quant_search", *CONTROLS):
        env = replace(env, min_ratio=0.0, max_ratio=0.0)
    search = replace(joint.search, seed=seed, out_dir=str(run_dir), episodes=episodes or joint.search.episodes)
    return replace(joint, name=cell_name(method, target), model=base.model, data=base.data, env=env, search=search,
                   finetune=replace(base.finetune or joint.finetune, epochs=ft_epochs), pretrain=None)


def deployed(model: torch.nn.Module, schedule: Schedule, calib: torch.Tensor) -> torch.nn.Module:
    """The network as it ships: INT8 layers quantized when the schedule says so."""
    if not schedule.quantized:
        return model.eval()
    return quantize_layers(model.eval(), calib, schedule.layer_precision(), quant_config(schedule))


REACH = (("env.prune.scope: all", "lut-all.json", lambda env: replace(env, prune=replace(env.prune, scope="all"))),
         ("env.max_ratio: 0.9", "lut-all-0.9.json", lambda env: replace(env, max_ratio=max(env.max_ratio, 0.9))),
         ("env.prune.min_channels: 8", "lut-all-0.9-min8.json",
          lambda env: replace(env, prune=replace(env.prune, min_channels=min(env.prune.min_channels, 8)))))
"""What a cell may widen, in order, when the latency table says its target is out of reach: every group
prunable (ResNet-20's pruning-only 2x needs it), then up to 90% of a group, then groups down to 8 channels
(the joint configs' 16-channel floor is for INT8 kernels; ResNet-56's pruning-only 2x in FP32 needs all three)."""


def build_reachable(cfg: ExperimentConfig, label: str, work: Path) -> tuple[ExperimentConfig, Any, Any]:
    """`build(cfg)`, widened step by step (REACH) while the table calls the target unreachable."""
    widenings = iter(REACH)
    while True:
        try:
            return (cfg, *build(cfg))
        except ConfigError as exc:
            step = next(widenings, None)
            if "unreachable" not in str(exc) or step is None:
                raise
            name, lut, widen = step
            print(f"{label}: {exc} -> {name}", file=sys.stderr)
            cfg = replace(cfg, env=replace(widen(cfg.env), lut_path=str(work / lut)))


def fixed_cell(cfg: ExperimentConfig, env: Any, run_dir: Path) -> tuple[dict[str, Any], float]:
    """A control's "search" (CONTROLS): none. Its schedule and config saved as a search's would be, so the
    rest of the cell (fine-tune, INT8, re-timing, paired tests) treats it like any other."""
    layers = env.evaluator.layer_precision({g.name: "int8" for g in env.pruner.groups})
    schedule = Schedule.from_pruner(env.pruner, {}, cfg.model.name, quantization=quantization_block(cfg, layers))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    schedule.save(run_dir / "best_schedule.json")
    return {"macs_ratio": 1.0, "top1": None, "speedup": None}, 0.0


def search_row(base: ExperimentConfig, joint: ExperimentConfig, method: str, target: float | None,
               args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """A search cell's row (or a control's: `target` None), from its file if it has finished."""
    name = cell_name(method, target)
    path = work / base.model.name / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    run_dir = work / base.model.name / f"{name}-seed{args.seed}"
    cfg = cell_config(base, joint, method, target, run_dir, args.episodes, args.ft_epochs, args.seed)
    cfg, env, bundle = build_reachable(cfg, name, run_dir.parent)
    if method in CONTROLS:
        best, search_s = fixed_cell(cfg, env, run_dir)
    else:
        best, search_s = search_cell(cfg, env, bundle, run_dir)
    schedule = Schedule.load(run_dir / "best_schedule.json")
    calib = env.evaluator.data.calib_images  # what the search calibrated its INT8 candidates on
    pruned = env.evaluator.compress(schedule.prune_ratios())
    before = evaluate(deployed(pruned, schedule, calib), make_loader(bundle.test, 500)).top1
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    train(pruned, bundle, cfg.finetune, teacher=env.model, out_dir=run_dir / "finetune")
    ft_s = time.perf_counter() - start
    report = int8_report(env.model, deployed(pruned, schedule, calib), bundle.test, bundle.input_shape,
                         rounds=args.rounds)
    precision = schedule.layer_precision()
    row = {
        "model": cfg.model.name, "method": method, "target_speedup": target,
        "speedup_measured": report["speedup"], "speedup_spread": report["speedup_spread"],
        "bytes": report["bytes"], "test_images": report["test_images"],
        "top1_before_ft": before, "top1_after_ft": report["top1"],
        "cpu": f"{cpu_model()} ({', '.join(cpu_int8_flags()) or 'no INT8 flags found'})",
        "finetune": f"{cfg.finetune.epochs} epochs FP32, distilled; then INT8 calibration (post-training)",
        "search_s": search_s, "ft_s": ft_s, "episodes": 0 if method in CONTROLS else cfg.search.episodes,
        "agent": None if method in CONTROLS else cfg.search.agent,
        "seed": args.seed, "prune_scope": cfg.env.prune.scope, "macs_ratio": best["macs_ratio"], "val_top1_in_search": best["top1"],
        "val_speedup_in_search": best.get("speedup"), "tournament_val_top1": best.get("tournament_val_top1"),
        "int8_layers": sum(p == "int8" for p in precision.values()), "layers": len(precision) or None,
        "blocks_removed": len(schedule.dropped_groups()), "joint_config": args.joint_config,
        "reduce_range": bool((schedule.quantization or {}).get("reduce_range", False)),
        "schedule": schedule.prune_ratios(), "layer_precision": precision, "latency_ms": report["latency_ms"],
        "fp32_latency_ms": report["fp32_latency_ms"], "timing_loadavg": os.getloadavg()[0],
        "run_dir": str(run_dir), "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_json_atomic(path, row)
    return row


def rebuilt_cell(run_dir: Path) -> tuple[ExperimentConfig, Any, Any, Schedule, torch.nn.Module]:
    """A finished cell's config, env, data, chosen schedule and its pruned network (before fine-tuning)."""
    cfg = load_config(run_dir / "config.yaml")
    env, bundle = build(cfg)
    schedule = Schedule.load(run_dir / "best_schedule.json")
    return cfg, env, bundle, schedule, env.evaluator.compress(schedule.prune_ratios())


def retime_search_row(path: Path, rounds: int) -> dict[str, Any]:
    """A finished search row's speedup timed again (on a quieter machine than the search's), from its saved
    config, schedule and fine-tuned weights; the first timing is kept as `speedup_first_timing`."""
    row = json.loads(path.read_text())
    run_dir = Path(row["run_dir"])
    cfg, env, _, schedule, pruned = rebuilt_cell(run_dir)
    state = torch.load(run_dir / "finetune" / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    pruned.load_state_dict(state)
    candidate = deployed(pruned, schedule, env.evaluator.data.calib_images)
    return write_retimed(path, row, env.model.eval(), candidate, env.evaluator.input_shape, rounds)


def longer_ft_row(path: Path, epochs: int, rounds: int) -> dict[str, Any]:
    """A finished search row's network fine-tuned for `epochs` instead of the cell's epochs (same schedule, the
    recipe otherwise unchanged), scored and timed like the cell. Written to <cell folder>/longer-ft/<row>-ft<E>.json
    (outside the cells the report reads as rows); the fine-tune resumes from its checkpoint after a kill."""
    out = path.parent / "longer-ft" / f"{path.stem}-ft{epochs}.json"
    if out.is_file():
        return json.loads(out.read_text())
    row = json.loads(path.read_text())
    run_dir = Path(row["run_dir"])
    cfg, env, bundle, schedule, pruned = rebuilt_cell(run_dir)
    torch.manual_seed(row["seed"])
    start = time.perf_counter()
    train(pruned, bundle, replace(cfg.finetune, epochs=epochs), teacher=env.model,
          out_dir=run_dir / f"finetune-{epochs}ep")
    ft_s = time.perf_counter() - start
    report = int8_report(env.model, deployed(pruned, schedule, env.evaluator.data.calib_images), bundle.test,
                         bundle.input_shape, rounds=rounds)
    new = {**row, "speedup_measured": report["speedup"], "speedup_spread": report["speedup_spread"],
           "bytes": report["bytes"], "top1_after_ft": report["top1"], "ft_s": ft_s, "ft_epochs": epochs,
           "finetune": f"{epochs} epochs FP32, distilled; then INT8 calibration (post-training)",
           "latency_ms": report["latency_ms"], "fp32_latency_ms": report["fp32_latency_ms"],
           "timing_loadavg": os.getloadavg()[0], "from_row": str(path),
           "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_json_atomic(out, new)
    return new


def write_retimed(path: Path, row: dict[str, Any], fp32: torch.nn.Module, candidate: torch.nn.Module,
                  input_shape: tuple[int, ...], rounds: int) -> dict[str, Any]:
    """`row` with `candidate` timed again against `fp32` (ORT, batch 1, one thread, alternation), written to
    `path`; the first timing stays as `speedup_first_timing`."""
    cmp = LatencyMeter(LatencyConfig(runtime="onnxruntime", threads=1, rounds=rounds, warmup=10),
                       input_shape).compare(fp32, candidate)
    row.setdefault("speedup_first_timing", row["speedup_measured"])
    row.setdefault("first_timing_loadavg", row.get("timing_loadavg"))
    row.update(speedup_measured=cmp.speedup, speedup_spread=cmp.spread, latency_ms=cmp.latency_ms,
               fp32_latency_ms=cmp.baseline_ms, timing_loadavg=os.getloadavg()[0],
               retimed=dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    write_json_atomic(path, row)
    return row
