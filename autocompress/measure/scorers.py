"""Scorers: what "accuracy" means when the Evaluator scores a pruned network, chosen by name (env.scorer).

Every scorer answers in percent, higher is better, so that the reward functions (which take a fraction) and
everything that logs or ranks `top1` work unchanged:

- `top1`: classification top-1 on the held-out images.
- `episodic_return`: the network as a policy (`autocompress.measure.rollouts`), mean return over the task's
  seeded episodes, normalised as Atari's human-normalised score is: 100 * (R - R_random) / (R_unpruned -
  R_random), floored at 0, where R_random is the return of uniformly random actions on the same seeds. So 100
  is as good as the unpruned policy and 0 no better than random; the plain ratio R / R_unpruned would break on
  tasks whose returns are negative (Acrobot, Pendulum). The raw return goes into the Score's details.
  With `task.reward_measure: imitation` the same scorer instead measures how closely the network acts as the
  unpruned policy on held-out teacher states (`imitation_fit`): 100 is the teacher, 0 no better than a constant
  (continuous) or chance (discrete). The final report still plays test episodes either way.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from autocompress.config import ConfigError, EnvConfig, RLTaskConfig
from autocompress.measure.accuracy import Stop, evaluate_tensors
from autocompress.measure.rollouts import (
    PolicyBundle,
    TaskError,
    TaskSpec,
    collect_observations,
    network_policy,
    random_policy,
    run_episodes,
    task_spec,
)


@dataclass(frozen=True)
class Score:
    """One network's score: `value` in percent (higher is better) and the raw figures behind it."""

    value: float
    details: Mapping[str, float] = field(default_factory=dict)
    """Extra keys for the evaluation's info (episodic_return: return_mean, return_std, episodes)."""


class Scorer(Protocol):
    """Scores a network (the unpruned one or a pruned copy); built once per Evaluator."""

    name: str

    def score(self, model: nn.Module, stop: Stop | None = None) -> Score:
        """`stop(hits, seen)` may end a top-1 evaluation early (scorers that cannot stop early ignore it)."""
        ...


class Top1Scorer:
    """Top-1 (percent) on held-out images, in the configured evaluation runtime."""

    name = "top1"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250,
                 runtime: str = "torch") -> None:
        self.images, self.labels, self.batch_size, self.runtime = images, labels, batch_size, runtime

    def score(self, model: nn.Module, stop: Stop | None = None) -> Score:
        res = evaluate_tensors(model, self.images, self.labels, batch_size=self.batch_size, runtime=self.runtime,
                               stop=stop)
        return Score(res.top1, {"val_images_scored": res.n} if stop is not None else {})


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def clipped_actions(out: torch.Tensor, spec: TaskSpec) -> torch.Tensor:
    """Continuous outputs as the task receives them (clipped to the action bounds, as `network_policy` does)."""
    low = torch.as_tensor(spec.low, dtype=torch.float32).reshape(-1)
    high = torch.as_tensor(spec.high, dtype=torch.float32).reshape(-1)
    return torch.clamp(out.float().reshape(len(out), -1), low, high)


def imitation_fit(student_out: torch.Tensor, teacher_out: torch.Tensor, spec: TaskSpec) -> float:
    """How closely a student acts as its teacher on the same states, in [0, 1] (1 = identical). Continuous: R^2
    of the clipped actions (1 - mean squared error / the teacher's action variance, pooled over dimensions);
    discrete: agreement of the chosen actions, rescaled so that chance (1 / actions) is 0. Floored at 0."""
    if spec.low is None:
        chance = 1.0 / spec.n_outputs
        agree = float((student_out.argmax(dim=1) == teacher_out.argmax(dim=1)).float().mean())
        return max(0.0, (agree - chance) / (1.0 - chance))
    s, t = clipped_actions(student_out, spec), clipped_actions(teacher_out, spec)
    variance = float(((t - t.mean(dim=0)) ** 2).mean())
    if variance == 0.0:
        raise TaskError("imitation measure: the unpruned policy gives one and the same action on every held-out "
                        "state; use env.task.reward_measure: return.")
    return max(0.0, 1.0 - float(((s - t) ** 2).mean()) / variance)


class EpisodicReturnScorer:
    """Mean return over `task.episodes` seeded episodes (from `task.seed`), normalised between random actions
    (0) and `reference`, the unpruned policy (100). With `task.reward_clone_batches`, a copy of each network
    is first behaviour-cloned from `reference` on `observations` (the teacher's states), so that the search
    ranks allocations by what fine-tuning can make of them rather than by the damage pruning did. With
    `task.reward_measure: imitation` a network is scored by `imitation_fit` on held-out teacher states instead."""

    name = "episodic_return"

    def __init__(self, task: RLTaskConfig, reference: nn.Module, observations: torch.Tensor | None = None) -> None:
        if task.reward_clone_batches and (observations is None or len(observations) == 0):
            raise ConfigError("env.task.reward_clone_batches: the reward's behaviour cloning needs the teacher's "
                              "observations (env.val_images > 0).")
        self.task, self.reference, self.observations = task, reference, observations
        self.spec = task_spec(task)
        random_returns = run_episodes(random_policy(self.spec, task.seed), task, task.seed, task.episodes).returns
        self.random_return = statistics.fmean(random_returns)
        self.reference_return = statistics.fmean(self.returns(reference))
        if self.reference_return <= self.random_return:
            raise TaskError(
                f"{task.env_id}: the unpruned policy's mean return {self.reference_return:.2f} is no better than "
                f"random actions' {self.random_return:.2f} over {task.episodes} episodes; give trained weights "
                "(model.weights) and check env.task.action."
            )
        self.heldout: torch.Tensor | None = None
        if task.reward_measure == "imitation":  # teacher states from seeds nothing else plays
            self.heldout = collect_observations(network_policy(reference, self.spec), task,
                                                task.imitation_observations, task.imitation_seed).float()
            with torch.no_grad():
                self.heldout_teacher = reference.eval()(self.heldout).float()

    def returns(self, model: nn.Module, first_seed: int | None = None, episodes: int | None = None) -> list[float]:
        """Returns of `model`'s deterministic policy over seeded episodes (default: the search's)."""
        seed = self.task.seed if first_seed is None else first_seed
        n = self.task.episodes if episodes is None else episodes
        return run_episodes(network_policy(model, self.spec), self.task, seed, n).returns

    def normalise(self, mean_return: float) -> float:
        """Percent of the way from random actions (0) to the unpruned policy (100), floored at 0."""
        span = self.reference_return - self.random_return
        return max(0.0, 100.0 * (mean_return - self.random_return) / span)

    def score(self, model: nn.Module, stop: Stop | None = None) -> Score:
        if self.task.reward_clone_batches:
            # training sits above measurement, so it is imported on use rather than at module level
            from autocompress.rl_finetune import short_clone

            bundle = PolicyBundle(self.task, self.spec, self.observations)
            model = short_clone(copy.deepcopy(model), self.reference, bundle, self.task.reward_clone_batches,
                                self.task.reward_clone_lr, self.task.seed)
        return self.score_as_is(model)

    def score_as_is(self, model: nn.Module) -> Score:
        """The score of `model` exactly as given (no reward cloning): for judges that fine-tuned it already."""
        if self.heldout is not None:
            with torch.no_grad():
                fit = imitation_fit(model.eval()(self.heldout), self.heldout_teacher, self.spec)
            return Score(100.0 * fit, {"imitation": fit, "imitation_observations": len(self.heldout)})
        return self.return_score(model)

    def return_score(self, model: nn.Module) -> Score:
        """The normalised mean return of `model` exactly as given over the search's episodes, whatever the
        reward measure."""
        mean, std = mean_std(self.returns(model))
        details = {"return_mean": mean, "return_std": std, "episodes": self.task.episodes,
                   "baseline_return": self.reference_return, "random_return": self.random_return}
        return Score(self.normalise(mean), details)


ScorerBuilder = Callable[[EnvConfig, nn.Module, torch.Tensor, torch.Tensor], Scorer]


def _top1(cfg: EnvConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Scorer:
    return Top1Scorer(images, labels, cfg.eval_batch_size, cfg.eval_runtime)


def _episodic_return(cfg: EnvConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Scorer:
    if cfg.task is None:
        raise ConfigError("env.task: scorer episodic_return needs the Gymnasium task (env.task: {env_id: ...}).")
    return EpisodicReturnScorer(cfg.task, model, images)


SCORERS: dict[str, ScorerBuilder] = {"top1": _top1, "episodic_return": _episodic_return}
"""Scorers by name: (env config, unpruned model, held-out inputs, labels) -> Scorer (config.SCORERS lists the
same names for the config; a test keeps them equal)."""


def get_scorer(cfg: EnvConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Scorer:
    """The scorer `cfg.scorer` names, built for `model`; an unknown name lists the known ones."""
    try:
        builder = SCORERS[cfg.scorer]
    except KeyError:
        raise ConfigError(f"env.scorer: unknown scorer {cfg.scorer!r}; choose one of {', '.join(SCORERS)}.") from None
    return builder(cfg, model, images, labels)
