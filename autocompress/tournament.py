"""Choose what is best *after fine-tuning*: a successive-halving tournament over a search's leading policies.

A search ranks policies by their held-out accuracy right after pruning (plus BatchNorm recalibration), but a
user deploys the fine-tuned network, and the two rankings disagree (docs/BENCHMARKS.md measures how much).
Here the top `finalists` distinct policies of the search each get a short fine-tune (distilled from the
unpruned network, the same data order and augmentation for all) and are scored on the val split (never on test); the better
half goes on with a fine-tune twice as long, until one is left. With `tournament.refine`, the best finalists first
give back the budget slack they left (autocompress/refine.py). Results are written to `tournament.json`,
and a finished tournament is read back rather than run again.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Subset

from autocompress.atomic import atomic_write_text
from autocompress.config import TournamentConfig, TrainConfig
from autocompress.data import DataBundle, take_tensors
from autocompress.measure.accuracy import evaluate_tensors
from autocompress.refine import refine_entrants
from autocompress.train import train

TOURNAMENT = "tournament.json"


def short_finetune(model: nn.Module, bundle: DataBundle, batches: int, lr: float, teacher: nn.Module | None,
                   seed: int) -> nn.Module:
    """Fine-tune `model` in place for `batches` training batches (cosine to zero), seeded augmentation."""
    steps_per_epoch = -(-len(bundle.train) // bundle.batch_size)
    epochs = -(-batches // steps_per_epoch)  # more batches than one epoch holds: one cosine over several
    cfg = TrainConfig(epochs=epochs, lr=lr, max_batches=-(-batches // epochs), distill=teacher is not None)
    no_val = replace(bundle, val=Subset(bundle.val, []))  # scoring is the caller's, on its own images
    torch.manual_seed(seed)  # augmentation draws from the global generator
    train(model, no_val, cfg, teacher=teacher, progress=False)
    return model.eval()


def leaders(records: list[dict[str, Any]], network_key: Callable[..., Hashable], count: int) -> list[dict[str, Any]]:
    """The `count` best-reward records whose networks differ (`network_key(schedule, precision)`: the
    evaluator's "same network", e.g. `Evaluator.network_key`)."""
    seen: set[Hashable] = set()
    out = []
    for rec in sorted(records, key=lambda r: (-r["reward"], r["episode"])):
        key = network_key(rec["schedule"], rec.get("precision"))
        if key not in seen:
            seen.add(key)
            out.append(rec)
            if len(out) == count:
                break
    return out


class Judge(Protocol):
    """Scores one policy after a short fine-tune of `batches` batches (higher is better); `scored_on` says on
    what, for the result file."""

    scored_on: dict[str, Any]
    label: str

    def __call__(self, schedule: Mapping[str, float], batches: int,
                 precision: Mapping[str, str] | None = None) -> float: ...

    def effort(self, batches: int) -> str:
        """What one judgement fine-tunes, in words, for the progress lines."""
        ...


class ClassificationJudge:
    """Val top-1 after a short fine-tune, of the network as it would be deployed (INT8 layers quantized
    after the FP32 fine-tune, as the final pipeline does; zeroed weights held at zero through it)."""

    def __init__(self, cfg: TournamentConfig, env: Any, bundle: DataBundle) -> None:
        self.cfg, self.env, self.bundle = cfg, env, bundle
        self.val = take_tensors(bundle.val, cfg.val_images, seed=cfg.seed)
        self.scored_on = {"val_images": int(len(self.val[1]))}
        self.label = "val top-1"

    def __call__(self, schedule: Mapping[str, float], batches: int,
                 precision: Mapping[str, str] | None = None) -> float:
        model = self.env.evaluator.compress(schedule, keep_masks=True)
        teacher = self.env.model if self.cfg.distill else None
        short_finetune(model, self.bundle, batches, self.cfg.lr, teacher, self.cfg.seed)
        model = self.env.evaluator.deployable(model, precision)
        return float(evaluate_tensors(model, self.val[0], self.val[1], batch_size=self.env.cfg.eval_batch_size).top1)

    def effort(self, batches: int) -> str:
        return f"{batches} batches"


def run_tournament(cfg: TournamentConfig, env: Any, bundle: Any, run_dir: Path, progress: bool = True,
                   judge: Judge | None = None, eligible: Collection[int] | None = None,
                   extra: Callable[[], Sequence[dict[str, Any]]] = tuple) -> dict[str, Any]:
    """Successive halving over the search's leaders; the winner's history record and every round's scores.
    `judge` scores each finalist (default: val top-1 after a short distilled fine-tune on `bundle`);
    `eligible` (episodes), when given, is where the finalists come from: e.g. those that met a latency target;
    `extra()` records (e.g. the uniform allocation) enter beside the leaders unless one of them is the same network;
    it is called only when the tournament runs (a finished one is read back, and a rule's analysis takes minutes)."""
    path = Path(run_dir) / TOURNAMENT
    if path.is_file():
        done = json.loads(path.read_text())
        settings, defaults = asdict(cfg), asdict(TournamentConfig())
        stored = done.get("config", {})  # settings added since it ran count as their defaults
        if {k: stored.get(k, defaults[k]) for k in settings} == settings:
            return done
        if progress:
            print(f"tournament: {path} was run with other tournament settings; running it again", file=sys.stderr)
    start = time.perf_counter()
    records = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    if eligible is not None:
        records = [r for r in records if r["episode"] in set(eligible)]
    alive = leaders(records, env.evaluator.network_key, cfg.finalists)
    if cfg.refine is not None:
        alive = refine_entrants(alive, env, cfg.refine, Path(run_dir), progress)
    seen = {env.evaluator.network_key(r["schedule"], r.get("precision")) for r in alive}
    alive += [r for r in extra() if env.evaluator.network_key(r["schedule"], r.get("precision")) not in seen]
    judge = ClassificationJudge(cfg, env, bundle) if judge is None else judge
    rounds, batches, scores = [], cfg.ft_batches, [float("nan")]
    while len(alive) > 1:
        scores = []
        for i, rec in enumerate(alive):
            scores.append(judge(rec["schedule"], batches, rec.get("precision")))
            if progress:
                print(f"tournament: {len(alive)} left, {judge.effort(batches)}, policy {i + 1}/{len(alive)} (episode "
                      f"{rec['episode']}, reward {rec['reward']:.4f}): {judge.label} {scores[-1]:.2f}%", file=sys.stderr)
        rounds.append({"ft_batches": batches, "episodes": [r["episode"] for r in alive],
                       "rewards": [r["reward"] for r in alive], "val_top1": scores})
        order = sorted(range(len(alive)), key=lambda i: (-scores[i], alive[i]["episode"]))
        alive, scores = [alive[i] for i in order[: (len(alive) + 1) // 2]], [scores[i] for i in order]
        batches *= 2
    result = {"winner": alive[0], "winner_val_top1": scores[0] if rounds else None,  # a lone finalist: unjudged
              **judge.scored_on, "rounds": rounds,
              "eligible": None if eligible is None else sorted(eligible),
              "config": asdict(cfg), "seconds": time.perf_counter() - start}  # what a resumed cell adds up
    atomic_write_text(path, json.dumps(result, indent=1, default=float))
    return result
