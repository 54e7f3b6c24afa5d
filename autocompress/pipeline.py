"""The whole job of `autocompress search`: search, then apply the best schedule, fine-tune, test, save.

`run_experiment` builds data, model and environment once from the config, runs the search
(`autocompress.search.Search`) and hands the best policy to `finalize`, which prints and writes
a baseline-vs-pruned summary. A schedule that puts layers in INT8 is deployed as INT8_RECIPE says: the pruned
network is fine-tuned in FP32, then quantized with ranges calibrated on training images.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.atomic import atomic_write_text
from autocompress.config import AutocompressError, ExperimentConfig, dump_config, validate
from autocompress.data import DataBundle, make_loader, take_tensors
from autocompress.envs import NetCompressEnv
from autocompress.envs.factory import build_env_and_data
from autocompress.export import export_int8, export_onnx, export_torchscript, int8_path, save_pruned
from autocompress.measure.accuracy import evaluate
from autocompress.measure.flops import count_macs_params
from autocompress.measure.latency import LatencyMeter
from autocompress.measure.rollouts import PolicyBundle
from autocompress.measure.scorers import EpisodicReturnScorer, mean_std
from autocompress.measure.size import compressed_bytes
from autocompress.pruning import Schedule
from autocompress.pruning.sparsity import nonzero_params, remove_masks
from autocompress.rl_finetune import PolicyJudge, final_clone
from autocompress.search import (
    BEST_SCHEDULE,
    CHECKPOINT,
    ENTRANTS,
    ONE_EPISODE,
    Search,
    SearchResult,
    best_schedule,
    entrant_rules,
    episodes_meeting_target,
    latency_target,
    lock_run_folder,
    tournament_entrants,
)
from autocompress.tournament import ClassificationJudge, Judge, run_tournament
from autocompress.train import train

INT8_RECIPE = "fp32 fine-tune, then post-training static INT8 calibration"
"""How a quantized schedule is deployed (quantization-aware fine-tuning is not done)."""
SIZE_EXPORT = "state dict, torch.save archive with every entry deflated (zlib level 9)"
"""What the compressed bytes of zeroed-weight schedules measure (`autocompress.measure.size`)."""


def with_overrides(cfg: ExperimentConfig, out_dir: str | None, episodes: int | None, seed: int | None) -> ExperimentConfig:
    """The config with the command line's overrides applied."""
    search = cfg.search
    if out_dir is not None:
        search = replace(search, out_dir=str(out_dir))
    if episodes is not None:
        search = replace(search, episodes=int(episodes))
    if seed is not None:
        search = replace(search, seed=int(seed))
    validate(search, "search")  # --episodes 0 or a bad seed fails here, not after pretraining
    return replace(cfg, search=search)


def build(cfg: ExperimentConfig, progress: bool = True) -> tuple[NetCompressEnv, DataBundle]:
    """Data, model (pretrained if the config says so) and environment for one experiment (each built once)."""
    return build_env_and_data(cfg, progress)


def run_experiment(cfg: ExperimentConfig, resume: bool = False, progress: bool = True, finalize_run: bool = True) -> dict[str, Any]:
    """Search, then (unless told not to) apply, fine-tune, test and save. Returns the summary."""
    if cfg.search.torch_threads is not None:
        torch.set_num_threads(cfg.search.torch_threads)
    run_dir = Path(cfg.search.out_dir)
    lock = lock_run_folder(run_dir)  # also checks the folder, before pretraining writes baseline.pt into it
    try:
        if not resume and not (run_dir / CHECKPOINT).exists():  # a run killed while pretraining can be resumed
            atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        env, bundle = build(cfg, progress)
    except BaseException:
        lock.release()
        raise
    _say(progress, f"{cfg.model.name}: {len(env.groups)} prunable groups, {baseline_line(env)}")
    _say(progress, plan(cfg, bundle, finalize_run))
    with Search(cfg, env, run_dir, resume=resume, lock=lock) as search:  # the folder stays ours to the end
        result = search.run(progress=progress)
        if cfg.tournament is not None and cfg.search.agent not in ONE_EPISODE:
            result = choose_by_tournament(cfg, env, bundle, result, progress)
        summary: dict[str, Any] = {"run_dir": str(result.run_dir), "episodes": result.episodes,
                                   "best": _plain_best(result)}
        if finalize_run:
            summary.update(finalize(cfg, env, bundle, result, progress=progress))
        atomic_write_text(result.run_dir / "summary.json", json.dumps(summary, indent=2, default=float))
    return summary


def plan(cfg: ExperimentConfig, bundle: DataBundle | PolicyBundle, finalize_run: bool) -> str:
    """What the run will do, in units whose cost the user can judge before it starts (fine-tuning dominates
    short searches: 10 epochs of a ResNet take far longer than 5 episodes)."""
    policy = isinstance(bundle, PolicyBundle)
    scored = f"{cfg.env.val_images} val images"
    if policy:
        task = cfg.env.task
        scored = (f"{task.imitation_observations} held-out teacher states" if task.reward_measure == "imitation"
                  else f"{task.episodes} task episodes")
        if task.reward_clone_batches:
            scored += f" after {task.reward_clone_batches} cloning steps"
    steps = [f"search {cfg.search.episodes} episodes ({scored} each)"]
    if cfg.tournament is not None and cfg.search.agent not in ONE_EPISODE:
        t = cfg.tournament
        refined = f", the best {t.refine.finalists} first refined to the budget" if t.refine is not None else ""
        full = policy and cfg.env.task.tournament_clone == "full"
        each = "the final fine-tune" if full else f"{t.ft_batches}+ fine-tune batches"
        steps.append(f"tournament of {t.finalists} policies ({each} each{refined})")
    if finalize_run and cfg.finetune is not None and cfg.finetune.epochs > 0 and policy:
        best_of = (f", best of {cfg.env.task.clone_restarts} clones on the search's episodes"
                   if cfg.env.task.clone_restarts > 1 else "")
        steps.append(f"behaviour cloning {cfg.finetune.epochs} epochs on {len(bundle.observations)} observations "
                     f"(+{cfg.env.task.dagger_rounds} DAgger rounds{best_of}), then {cfg.env.task.test_episodes} "
                     "test episodes")
    elif finalize_run and cfg.finetune is not None and cfg.finetune.epochs > 0:
        per_epoch = -(-len(bundle.train) // cfg.data.batch_size)
        if cfg.finetune.max_batches:
            per_epoch = min(per_epoch, cfg.finetune.max_batches)
        steps.append(f"fine-tune {cfg.finetune.epochs} epochs x {per_epoch} batches, then test "
                     "(--no-finalize stops after the search)")
    return "plan: " + "; ".join(steps)


def baseline_line(env: NetCompressEnv) -> str:
    """The unpruned network's score, in the scorer's terms."""
    scorer = env.evaluator.scorer
    if isinstance(scorer, EpisodicReturnScorer):
        return (f"unpruned return {scorer.reference_return:.2f} (random actions {scorer.random_return:.2f}) over "
                f"{scorer.task.episodes} {scorer.task.env_id} episodes")
    line = f"baseline val top-1 {env.baseline_top1:.2f}%"
    sparse = env.evaluator.sparse
    return line + (f", compressed export {sparse.base_bytes / 1e3:.1f} kB" if sparse is not None else "")


def choose_by_tournament(cfg: ExperimentConfig, env: NetCompressEnv, bundle: DataBundle | PolicyBundle,
                         result: SearchResult, progress: bool = True) -> SearchResult:
    """The search's leaders, short-fine-tuned and scored on val; the winner becomes the best schedule. A policy's
    short fine-tune is behaviour cloning, scored on the search's episodes."""
    assert cfg.tournament is not None
    judge: Judge
    if isinstance(bundle, PolicyBundle):
        judge = PolicyJudge(env, bundle, cfg.tournament.lr, cfg.tournament.seed, cfg.finetune, cfg.search.seed)
    else:
        judge = ClassificationJudge(cfg.tournament, env, bundle)
    rules = entrant_rules(cfg)
    plus = "".join(f" and the {name} allocation" for name in rules)
    _say(progress, f"tournament: the {cfg.tournament.finalists} leading policies{plus}, each judged by {judge.label} "
                   f"after {judge.effort(cfg.tournament.ft_batches)}")
    eligible = episodes_meeting_target(result.run_dir, latency_target(cfg))
    if eligible is not None:
        _say(progress, f"tournament: only among the {len(eligible)} re-timed policies that met the "
                       f"{latency_target(cfg):.2f}x target")

    def extra() -> list[dict[str, Any]]:
        if "sensitivity" in rules:
            _say(progress, "tournament: running the sensitivity analysis for its entrant")
        return tournament_entrants(cfg, env)

    outcome = run_tournament(cfg.tournament, env, bundle, result.run_dir, progress, judge=judge, eligible=eligible,
                             extra=extra)
    winner = outcome["winner"]
    rule = next((name for name in ENTRANTS if winner.get(name)), None)
    if rule is not None:
        _say(progress, f"tournament: the {rule} allocation won; the search found nothing its judge rates higher")
    _, info = env.evaluator.evaluate(winner["schedule"], precision=winner.get("precision"))
    best = {**{k: v for k, v in info.items() if k not in ("group", "prune_ratio", "cached")},
            "episode": winner["episode"], "reward": winner["reward"]}
    if outcome["winner_val_top1"] is not None:
        best["tournament_val_top1"] = outcome["winner_val_top1"]
    if winner.get("refine"):
        best["refine"] = winner["refine"]
    if rule is not None:
        best[rule] = True
    best_schedule(env, cfg, best).save(result.run_dir / BEST_SCHEDULE)
    return replace(result, best=best)


def finalize(cfg: ExperimentConfig, env: NetCompressEnv, bundle: DataBundle | PolicyBundle, result: SearchResult,
             progress: bool = True) -> dict[str, Any]:
    """Apply the best schedule to the network, fine-tune, evaluate on the test split (a policy: on the test
    episodes), save, summarise."""
    if isinstance(bundle, PolicyBundle):
        return finalize_policy(cfg, env, bundle, result, progress)
    run_dir = result.run_dir
    schedule = Schedule.load(run_dir / BEST_SCHEDULE)
    ratios = schedule.group_sparsity() if env.evaluator.sparse is not None else schedule.prune_ratios()
    pruned = env.evaluator.compress(ratios, keep_masks=True)  # zeroed weights stay zero through the fine-tune
    test_loader = make_loader(bundle.test, batch_size=cfg.data.batch_size)
    before_ft = evaluate(pruned, test_loader).top1
    if cfg.finetune is not None and cfg.finetune.epochs > 0:
        _say(progress, f"fine-tuning the pruned network for {cfg.finetune.epochs} epoch(s) "
                       f"({'distilled from the unpruned network' if cfg.finetune.distill else 'labels only'})")
        teacher = env.model if cfg.finetune.distill else None
        train(pruned, bundle, cfg.finetune, teacher=teacher, out_dir=run_dir / "finetune", progress=progress)
    remove_masks(pruned).eval()
    base_eval = evaluate(env.model, test_loader)
    pruned_eval = evaluate(pruned, test_loader)
    example = env.data.val_images[:1]
    base_macs, base_params = count_macs_params(env.model, example)
    macs, params = count_macs_params(pruned, example)
    latency = LatencyMeter(cfg.env.latency, env.input_shape).compare(env.model, pruned)
    artefacts = _save_artefacts(cfg, run_dir, pruned, schedule, bundle, example)
    int8 = None
    if schedule.quantized:
        int8 = deploy_int8(cfg, env, bundle, pruned, schedule, run_dir, pruned_eval.top1, progress)
    summary = {
        "baseline": {"top1": base_eval.top1, "macs": base_macs, "params": base_params, "latency_ms": latency.baseline_ms},
        "pruned": {
            "top1_before_finetune": before_ft,
            "top1": pruned_eval.top1,
            "macs": macs,
            "params": params,
            "latency_ms": latency.latency_ms,
            "speedup": latency.speedup,
            "speedup_spread": latency.spread,
        },
        "latency": {"runtime": cfg.env.latency.runtime, "threads": cfg.env.latency.threads,
                    "batch_size": cfg.env.latency.batch_size, "device": cfg.env.latency.device},
        "artefacts": artefacts,
    }
    if int8 is not None:
        summary["int8"] = int8
        artefacts["int8_onnx"] = int8["onnx"]
    if env.evaluator.sparse is not None:
        summary["size"] = size_summary(env, pruned, Path(artefacts["pruned_model"]))
    if progress:
        print(summary_table(summary), file=sys.stderr)
    return summary


def size_summary(env: NetCompressEnv, pruned: nn.Module, saved: Path) -> dict[str, Any]:
    """Zeroed weights (env.sparsity unstructured): the fine-tuned network's compressed export against the
    unpruned one's, measured by writing and deflating both (`autocompress.measure.size`), and the saved file."""
    sparse = env.evaluator.sparse
    assert sparse is not None
    size = compressed_bytes(pruned)
    nonzero, base_nonzero = nonzero_params(pruned), sparse.weights.base_nonzero
    return {"compressed_bytes": size, "baseline_compressed_bytes": sparse.base_bytes,
            "size_ratio": size / sparse.base_bytes, "nonzero_params": nonzero,
            "baseline_nonzero_params": base_nonzero, "nonzero_ratio": nonzero / base_nonzero,
            "file_bytes": saved.stat().st_size, "export": SIZE_EXPORT}


def finalize_policy(cfg: ExperimentConfig, env: NetCompressEnv, bundle: PolicyBundle, result: SearchResult,
                    progress: bool = True) -> dict[str, Any]:
    """`finalize` for a policy: prune to the best schedule, behaviour-clone it from the unpruned policy, and
    report mean return over the task's test episodes (seeds the search never played) before and after."""
    run_dir, task = result.run_dir, bundle.task
    schedule = Schedule.load(run_dir / BEST_SCHEDULE)
    pruned = env.evaluator.compress(schedule.prune_ratios())
    scorer = env.evaluator.scorer

    def test(model: nn.Module) -> tuple[float, float]:
        return mean_std(scorer.returns(model, task.test_seed, task.test_episodes))

    before = test(pruned)
    history: list[dict[str, Any]] = []
    restarts: dict[str, Any] = {}
    if cfg.finetune is not None and cfg.finetune.epochs > 0:
        _say(progress, f"behaviour cloning the pruned policy from the unpruned one for {cfg.finetune.epochs} epoch(s)"
                       + (f", best of {task.clone_restarts} clones" if task.clone_restarts > 1 else ""))
        clone = final_clone(env, bundle, schedule.prune_ratios(), cfg.finetune, cfg.search.seed, progress)
        pruned, history = clone.model, clone.history
        if clone.restart_returns:
            restarts = {"returns": clone.restart_returns, "kept_seed": clone.seed,
                        "scored_on_episodes": task.episodes}
    pruned.eval()
    (base_mean, base_std), (mean, std) = test(env.model), test(pruned)
    example = env.data.val_images[:1]
    base_macs, base_params = count_macs_params(env.model, example)
    macs, params = count_macs_params(pruned, example)
    latency = LatencyMeter(cfg.env.latency, env.input_shape).compare(env.model, pruned)
    summary = {
        "task": {"env_id": task.env_id, "test_episodes": task.test_episodes, "test_seed": task.test_seed},
        "baseline": {"return_mean": base_mean, "return_std": base_std, "macs": base_macs, "params": base_params,
                     "latency_ms": latency.baseline_ms},
        "pruned": {"return_mean_before_finetune": before[0], "return_std_before_finetune": before[1],
                   "return_mean": mean, "return_std": std, "macs": macs, "params": params,
                   "latency_ms": latency.latency_ms, "speedup": latency.speedup, "speedup_spread": latency.spread},
        "finetune": {"method": "behaviour cloning" + (" + DAgger" if task.dagger_rounds else ""), "history": history,
                     **({"restarts": restarts} if restarts else {})},
        "latency": {"runtime": cfg.env.latency.runtime, "threads": cfg.env.latency.threads,
                    "batch_size": cfg.env.latency.batch_size, "device": cfg.env.latency.device},
        "artefacts": _save_artefacts(cfg, run_dir, pruned, schedule, bundle, example),
    }
    if progress:
        print(policy_summary_table(summary), file=sys.stderr)
    return summary


def policy_summary_table(summary: dict[str, Any]) -> str:
    """Unpruned vs pruned policy, as a small text table."""
    b, p, t = summary["baseline"], summary["pruned"], summary["task"]
    rows = [
        (f"return ({t['test_episodes']} ep.)", f"{b['return_mean']:.1f} ± {b['return_std']:.1f}",
         f"{p['return_mean']:.1f} ± {p['return_std']:.1f}"),
        ("  before fine-tune", "", f"{p['return_mean_before_finetune']:.1f} ± {p['return_std_before_finetune']:.1f}"),
        ("MACs (K)", f"{b['macs'] / 1e3:.1f}", f"{p['macs'] / 1e3:.1f} ({p['macs'] / b['macs']:.3f}x)"),
        ("latency (ms)", f"{b['latency_ms']:.4f}", f"{p['latency_ms']:.4f}"),
        ("speedup", "1.00x", f"{p['speedup']:.2f}x (spread {p['speedup_spread']:.3f})"),
    ]
    head = f"{t['env_id']:<20}{'unpruned':>16}{'pruned':>28}"
    return "\n".join([head, "-" * len(head)] + [f"{a:<20}{b_:>16}{c:>28}" for a, b_, c in rows])


def _save_artefacts(cfg: ExperimentConfig, run_dir: Path, pruned: nn.Module, schedule: Schedule,
                    bundle: DataBundle | PolicyBundle, example: torch.Tensor) -> dict[str, str]:
    out = {"schedule": str(run_dir / BEST_SCHEDULE)}
    path = run_dir / "pruned_model.pt"
    save_pruned(path, pruned, schedule, cfg.model.name, bundle.num_classes, bundle.input_shape[0], bundle.input_shape,
                deflate=schedule.sparse)
    out["pruned_model"] = str(path)
    out["torchscript"] = str(export_torchscript(pruned, run_dir / "pruned_model.ts", example))
    try:
        out["onnx"] = str(export_onnx(pruned, run_dir / "pruned_model.onnx", example))
    except AutocompressError as exc:  # the onnx extra is optional
        out["onnx"] = f"skipped: {exc}"
    return out


def calibration_images(cfg: ExperimentConfig, bundle: DataBundle, n: int) -> torch.Tensor:
    """The first `n` training images the environment calibrates on (same split, seed and order as
    `build_env_data`; un-augmented for in-memory datasets), so the deployed ranges match the search's."""
    source = getattr(bundle, "train_eval", None) or bundle.train
    return take_tensors(source, n, seed=cfg.data.seed + 1)[0]


def deploy_int8(cfg: ExperimentConfig, env: NetCompressEnv, bundle: DataBundle, pruned: nn.Module,
                schedule: Schedule, run_dir: Path, fp32_top1: float, progress: bool = True) -> dict[str, Any]:
    """The fine-tuned FP32 network quantized as `schedule` says (INT8_RECIPE), written beside the pruned
    model, scored on test and timed in ONNX Runtime (where INT8 runs) against the unpruned network."""
    block = schedule.quantization
    assert block is not None
    _say(progress, f"quantizing to INT8 ({INT8_RECIPE}; {block['calib_images']} training images, "
                   f"{block['calibration']} ranges)")
    calib = calibration_images(cfg, bundle, block["calib_images"])
    path = int8_path(run_dir / "pruned_model.pt")
    model = export_int8(pruned, schedule, calib, path)
    precision = getattr(model, "precision", schedule.layer_precision())  # every quantizable layer, listed or not
    n_int8 = sum(p == "int8" for p in precision.values())
    top1 = evaluate(model, make_loader(bundle.test, batch_size=cfg.data.batch_size)).top1
    timing = replace(cfg.env.latency, runtime="onnxruntime", device="cpu")
    cmp = LatencyMeter(timing, env.input_shape).compare(env.model, model)
    return {"recipe": INT8_RECIPE, "top1": top1, "fp32_top1": fp32_top1, "latency_ms": cmp.latency_ms,
            "baseline_ms": cmp.baseline_ms, "speedup": cmp.speedup, "speedup_spread": cmp.spread,
            "runtime": "onnxruntime", "threads": timing.threads, "batch_size": timing.batch_size,
            "int8_layers": n_int8, "fp32_layers": len(precision) - n_int8, "calib_images": len(calib),
            "calibration": block["calibration"], "per_channel": block["per_channel"],
            "reduce_range": bool(block.get("reduce_range", False)),
            "bytes": path.stat().st_size, "onnx": str(path)}


def summary_table(summary: dict[str, Any]) -> str:
    """Baseline vs pruned, as a small text table."""
    b, p = summary["baseline"], summary["pruned"]
    rows = [
        ("test top-1 (%)", f"{b['top1']:.2f}", f"{p['top1']:.2f}"),
        ("  before fine-tune", "", f"{p['top1_before_finetune']:.2f}"),
        ("MACs (M)", f"{b['macs'] / 1e6:.2f}", f"{p['macs'] / 1e6:.2f} ({p['macs'] / b['macs']:.3f}x)"),
        ("params (K)", f"{b['params'] / 1e3:.1f}", f"{p['params'] / 1e3:.1f} ({p['params'] / b['params']:.3f}x)"),
        ("latency (ms)", f"{b['latency_ms']:.3f}", f"{p['latency_ms']:.3f}"),
        ("speedup", "1.00x", f"{p['speedup']:.2f}x (spread {p['speedup_spread']:.3f})"),
    ]
    z = summary.get("size")
    if z is not None:
        rows += [("compressed (kB)", f"{z['baseline_compressed_bytes'] / 1e3:.1f}",
                  f"{z['compressed_bytes'] / 1e3:.1f} ({z['size_ratio']:.3f}x)"),
                 ("nonzero params (K)", f"{z['baseline_nonzero_params'] / 1e3:.1f}",
                  f"{z['nonzero_params'] / 1e3:.1f} ({z['nonzero_ratio']:.3f}x)")]
    q = summary.get("int8")
    if q is not None:
        rows += [("INT8 test top-1 (%)", "", f"{q['top1']:.2f} (FP32 {q['fp32_top1']:.2f})"),
                 ("INT8 speedup", "1.00x", f"{q['speedup']:.2f}x (spread {q['speedup_spread']:.3f})")]
    lat = summary["latency"]
    head = f"{'':<20}{'baseline':>14}{'pruned':>28}"
    lines = [head, "-" * len(head)] + [f"{a:<20}{b_:>14}{c:>28}" for a, b_, c in rows]
    lines.append(f"latency: {lat['runtime']}, {lat['threads']} thread(s), batch {lat['batch_size']}, {lat['device']}")
    if q is not None:
        lines.append(f"INT8: {q['recipe']}; {q['int8_layers']} INT8 / {q['fp32_layers']} FP32 layers, timed in "
                     f"{q['runtime']} ({q['threads']} thread(s), batch {q['batch_size']}) -> {q['onnx']}")
    return "\n".join(lines)


def _plain_best(result: SearchResult) -> dict[str, Any]:
    keep = ("episode", "reward", "top1", "latency_ms", "speedup", "macs_ratio", "params_ratio", "schedule")
    extra = ("compressed_bytes", "size_ratio", "nonzero_ratio", "refine", *ENTRANTS)  # zeroed weights; refined or rule winners
    return {**{k: result.best.get(k) for k in keep}, **{k: result.best[k] for k in extra if k in result.best}}


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr)
