"""Fine-tuning a pruned policy: behaviour cloning from the unpruned policy on the states it visits.

A pruned policy has no labels to be trained on, but its unpruned teacher says what to do in any state. The
teacher plays seeded episodes of the task (`RLTaskConfig.train_seed`, never the seeds the search or the
report score on); the student learns to give the teacher's outputs on those observations: cross-entropy on
the teacher's action (blended with distillation on its logits when `distill` is on) for discrete actions,
mean squared error for continuous ones. A student that strays from the teacher's states meets states it
never learned; `dagger_rounds` adds the states the student reaches itself, labelled by the teacher (DAgger,
Ross et al. 2011), and clones again.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.config import RLTaskConfig, TrainConfig
from autocompress.measure.rollouts import PolicyBundle, TaskSpec, collect_observations, network_policy
from autocompress.train import TrainError, distillation_loss

DAGGER_SEED_STRIDE = 10_000
"""Round r of DAgger plays the student from train_seed + r * this (the teacher's own rollouts use round 0)."""


def clone_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, action: str, cfg: TrainConfig) -> torch.Tensor:
    """How far the student's outputs are from the teacher's (see the module docstring)."""
    if action == "continuous":
        return F.mse_loss(student_out.float(), teacher_out.float())
    ce = F.cross_entropy(student_out.float(), teacher_out.argmax(dim=1))
    if not cfg.distill:
        return ce
    kd = distillation_loss(student_out, teacher_out, cfg.distill_temperature)
    return (1.0 - cfg.distill_alpha) * ce + cfg.distill_alpha * kd


def action_agreement(student: nn.Module, teacher: nn.Module, observations: torch.Tensor, action: str) -> float:
    """Discrete: the share of observations where both choose the same action; continuous: minus the mean
    squared difference of their actions (so that, either way, higher means closer to the teacher)."""
    with torch.no_grad():
        s, t = student.eval()(observations).float(), teacher.eval()(observations).float()
    if action == "continuous":
        return -float(F.mse_loss(s, t))
    return float((s.argmax(dim=1) == t.argmax(dim=1)).float().mean())


def _clone(student: nn.Module, teacher_out: torch.Tensor, observations: torch.Tensor, cfg: TrainConfig,
           task: RLTaskConfig, seed: int) -> list[dict[str, float]]:
    """Epochs of shuffled mini-batches (AdamW, cosine to zero); one record per epoch."""
    per_epoch = math.ceil(len(observations) / task.bc_batch_size)
    steps = per_epoch if cfg.max_batches is None else min(per_epoch, cfg.max_batches)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(cfg.epochs * steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    history = []
    student.train()
    for epoch in range(1, cfg.epochs + 1):
        order, loss_sum = torch.randperm(len(observations), generator=gen), 0.0
        for i in range(steps):
            idx = order[i * task.bc_batch_size : (i + 1) * task.bc_batch_size]
            loss = clone_loss(student(observations[idx]), teacher_out[idx], task.action, cfg)
            if not torch.isfinite(loss):
                raise TrainError(f"behaviour cloning: the loss became {loss.item()} in epoch {epoch}; lower "
                                 f"finetune.lr (now {cfg.lr}).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        history.append({"epoch": epoch, "loss": loss_sum / max(steps, 1), "observations": len(observations)})
    return history


def behaviour_clone(student: nn.Module, teacher: nn.Module, observations: torch.Tensor, cfg: TrainConfig,
                    task: RLTaskConfig, spec: TaskSpec, progress: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """Train `student` in place to act as `teacher` does on `observations` (then on DAgger rounds' states):
    `cfg.epochs` epochs of `task.bc_batch_size` observations per step (at most `cfg.max_batches`), AdamW at
    peak learning rate `cfg.lr` with `cfg.weight_decay`, on the CPU (policy MLPs are small). Returns one
    record per epoch with the round, the loss and, at each round's end, the action agreement."""
    teacher.eval()
    history: list[dict[str, Any]] = []
    obs = observations.float()
    for rnd in range(task.dagger_rounds + 1):
        if rnd > 0:  # the states the student reaches now, labelled by the teacher
            mine = collect_observations(network_policy(student, spec), task, len(observations),
                                        task.train_seed + rnd * DAGGER_SEED_STRIDE)
            obs = torch.cat([obs, mine.float()])
        with torch.no_grad():
            teacher_out = teacher(obs)
        records = _clone(student, teacher_out, obs, cfg, task, seed + rnd)
        records[-1]["agreement"] = action_agreement(student, teacher, observations.float(), task.action)
        history += [{"round": rnd, **r} for r in records]
        if progress and records:
            print(f"behaviour cloning round {rnd}: loss {records[-1]['loss']:.4f}, agreement with the teacher "
                  f"{records[-1]['agreement']:.4f} on {len(obs)} observations", file=sys.stderr)
    return history


def short_clone(model: nn.Module, teacher: nn.Module, bundle: PolicyBundle, batches: int, lr: float,
                seed: int) -> nn.Module:
    """Behaviour-clone `model` in place for `batches` steps (cosine to zero): the tournament's short fine-tune."""
    per_epoch = math.ceil(len(bundle.observations) / bundle.task.bc_batch_size)
    epochs = math.ceil(batches / per_epoch)
    cfg = TrainConfig(epochs=epochs, lr=lr, max_batches=math.ceil(batches / epochs), distill=False,
                      weight_decay=0.0)
    no_dagger = replace(bundle.task, dagger_rounds=0)
    behaviour_clone(model, teacher, bundle.observations, cfg, no_dagger, bundle.spec, seed=seed)
    return model.eval()


RESTART_SEED_STRIDE = 1_000
"""Restart k of the final fine-tune clones under seed + k * this (inside one clone, DAgger round r takes seed + r)."""


@dataclass
class FinalClone:
    """The kept clone of the final fine-tune, with its history and, when it had restarts, every restart's
    normalised return on the search's episodes (what chose it)."""

    model: nn.Module
    history: list[dict[str, Any]]
    seed: int
    restart_returns: list[float] = field(default_factory=list)

    @property
    def best_return(self) -> float | None:
        return max(self.restart_returns) if self.restart_returns else None


def final_clone(env: Any, bundle: PolicyBundle, schedule: Mapping[str, float], cfg: TrainConfig,
                seed: int, progress: bool = False) -> FinalClone:
    """The network pruned to `schedule` as episodes see it, behaviour-cloned with the final recipe `cfg` (DAgger
    rounds included) under `seed`, in eval mode: what the report tests when `seed` is the search's. With
    task.clone_restarts K > 1, K clones (seeds a stride apart) and the one with the best return on the search's
    episodes is kept; the report's test episodes are never looked at."""
    restarts = bundle.task.clone_restarts
    kept: FinalClone | None = None
    scores: list[float] = []  # each restart's normalised return on the search's episodes
    for k in range(restarts):
        model = env.evaluator.compress(schedule)
        clone_seed = seed + k * RESTART_SEED_STRIDE
        history = behaviour_clone(model, env.model, bundle.observations, cfg, bundle.task, bundle.spec,
                                  progress=progress, seed=clone_seed)
        model.eval()
        if restarts == 1:
            return FinalClone(model, history, clone_seed)
        score = float(env.evaluator.scorer.return_score(model).value)
        if progress:
            print(f"behaviour cloning restart {k + 1}/{restarts} (seed {clone_seed}): normalised return {score:.2f}% "
                  "on the search's episodes", file=sys.stderr)
        if not scores or score > max(scores):
            kept = FinalClone(model, history, clone_seed)
        scores.append(score)
    assert kept is not None
    kept.restart_returns = scores
    return kept


class PolicyJudge:
    """The tournament's judge for policies: a behaviour-cloning fine-tune (short, or the final one with
    task.tournament_clone full), then the evaluator's score (task.tournament_measure: the normalised return on the
    search's episodes, or the imitation fit on held-out states; never the report's episodes)."""

    def __init__(self, env: Any, bundle: PolicyBundle, lr: float, seed: int,
                 final: TrainConfig | None = None, final_seed: int = 0) -> None:
        self.env, self.bundle, self.lr, self.seed = env, bundle, lr, seed
        self.final, self.final_seed = final, final_seed
        if bundle.task.tournament_clone == "full" and final is None:
            raise TrainError("env.task.tournament_clone: full needs a finetune: section (the recipe it judges after); "
                             "add one or use tournament_clone: short.")
        self._full_scores: dict[tuple[tuple[str, float], ...], float] = {}
        self.by_return = bundle.task.reward_measure == "return" or bundle.task.tournament_measure == "return"
        if self.by_return:
            self.scored_on = {"episodes": bundle.task.episodes}
            self.label = "normalised return"
        else:
            self.scored_on = {"imitation_observations": bundle.task.imitation_observations}
            self.label = "imitation fit"

    def __call__(self, schedule: Mapping[str, float], batches: int, precision: Mapping[str, str] | None = None) -> float:
        """The score after `batches` cloning steps on top of those the reward already spends on every candidate
        (task.reward_clone_batches), so that a round never judges on less fine-tuning than the search ranked by."""
        if self.bundle.task.tournament_clone == "full":
            return self._full(schedule)
        model = self.env.evaluator.compress(schedule)
        total = batches + self.bundle.task.reward_clone_batches
        short_clone(model, self.env.model, self.bundle, total, self.lr, self.seed)
        return self._score(model)

    def effort(self, batches: int) -> str:
        return "the final fine-tune" if self.bundle.task.tournament_clone == "full" else f"{batches} batches"

    def _score(self, model: nn.Module) -> float:
        scorer = self.env.evaluator.scorer  # cloned by the caller, not again by the scorer
        return float((scorer.return_score(model) if self.by_return else scorer.score_as_is(model)).value)

    def _full(self, schedule: Mapping[str, float]) -> float:
        """The score after the final fine-tune's own recipe and seed (deterministic, so each finalist is cloned
        once and a later round reuses its score)."""
        key = tuple(sorted(schedule.items()))
        if key not in self._full_scores:
            assert self.final is not None  # checked in __init__
            clone = final_clone(self.env, self.bundle, schedule, self.final, self.final_seed)
            known = clone.best_return if self.by_return else None  # restarts were chosen by this very score
            self._full_scores[key] = self._score(clone.model) if known is None else known
        return self._full_scores[key]
