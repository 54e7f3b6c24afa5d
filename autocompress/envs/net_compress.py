"""NetCompressEnv: choose a prune ratio for each channel group of a network, then be scored on it.

This module orchestrates only: grouping and physical pruning come from `autocompress.pruning`,
costs and accuracy from `autocompress.measure`, rewards from `rewards.py`, the budget wall
from `constraints.py` and the state from `features.py`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from autocompress.config import ConfigError, EnvConfig
from autocompress.envs import features
from autocompress.envs.constraints import BudgetWall
from autocompress.envs.rewards import LATENCY_REWARDS, Outcome, get_reward
from autocompress.measure.accuracy import evaluate_tensors
from autocompress.measure.latency import LatencyMeter
from autocompress.pruning import Pruner, recalibrate_bn


def _one_finite_number(action: Any) -> float:
    """The one finite number in `action`. Anything else is an agent bug: refused, not truncated to its first
    value or clipped from +-inf to a bound, which would hide the bug behind plausible episodes."""
    box = "the action space is Box(0, 1, (1,)): pass one finite number, e.g. np.array([0.3], np.float32)"
    if action is None or isinstance(action, (str, bytes)):
        raise ConfigError(f"NetCompressEnv.step: action {action!r} is not a number; {box}.")
    try:
        values = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"NetCompressEnv.step: action {action!r} is not numeric; {box}.") from None
    if values.size != 1:
        raise ConfigError(f"NetCompressEnv.step: action has shape {values.shape} ({values.size} values); {box}.")
    value = float(values.reshape(-1)[0])
    if not math.isfinite(value):
        raise ConfigError(f"NetCompressEnv.step: action is {value}; {box}.")
    return value


def _cache_key(kept: Mapping[str, int]) -> tuple[int, ...]:
    """Evaluation-cache key: kept channels in group-name order (equal networks, equal keys)."""
    return tuple(kept[name] for name in sorted(kept))


CORRECTION_RANGE = (0.5, 2.0)
"""Bounds of the measured/predicted latency correction: beyond them the table is wrong, not just biased."""


@dataclass
class EnvData:
    """The tensors an environment scores policies on, preloaded once."""

    val_images: torch.Tensor
    """Held-out images (never the test split) for the reward's accuracy."""
    val_labels: torch.Tensor
    calib_images: torch.Tensor | None = None
    """Training images for BatchNorm recalibration and least-squares reconstruction."""


class NetCompressEnv(gym.Env):
    """Learn a per-group channel-pruning policy for one network (AMC, He et al. 2018).

    ## Description
    An episode walks the network's prunable channel groups (layers coupled by residual additions or
    depthwise convolutions share one group) in network order. At each step the agent picks the share
    of the current group's channels to remove. After the last group the network is physically pruned
    (a copy; channels really removed), optionally BatchNorm-recalibrated, scored on held-out images
    and, depending on `latency_mode`, timed on the target runtime or priced by a latency look-up table.

    ## Action Space
    `Box(0, 1, (1,), float32)`: mapped linearly to a prune ratio (share of channels removed) in
    `[min_ratio, max_ratio]`, then raised by the budget wall if needed so that the budget can still be
    met by pruning every later group at `max_ratio`. The applied ratio is in `info["prune_ratio"]`.
    Finite actions outside [0, 1] are clipped (as AMC's); NaN, +-inf, non-numbers and arrays that do not
    hold exactly one value raise ConfigError.

    ## Observation Space
    `Box(0, 1, (15,), float32)`: the current group's features (`features.FEATURE_NAMES`): index, layer
    kind, in/out channels, stride, kernel, MACs share, latency share (look-up table), whether it is
    internal to a residual block, mean and spread of the channels' L1 norms, then MACs removed so far,
    MACs still to decide, previous action, and the share of the budget still to cut.

    ## Rewards
    0 until the last step; then the configured reward function (`rewards.REWARDS`) of the outcome:
    `acc` (accuracy; the budget wall enforces the budget), `acc_flops_log`, `acc_latency`,
    `acc_latency_linear`.

    ## Starting State
    The first group, nothing pruned. The network and data are fixed; `reset(seed=...)` seeds the
    env's random generator (used by the `random` channel criterion).

    ## Episode End
    Terminated after the last group; never truncated. `step()` before `reset()` or after termination raises
    ConfigError. The final `info` holds `schedule` (group ->
    prune ratio), `top1`, `latency_ms`, `speedup`, `macs`, `macs_ratio`, `params`, `params_ratio`,
    `timing` (seconds spent pruning, recalibrating, evaluating, timing), `cached`.

    ## Arguments
    `model`: the trained network (not modified). `data`: `EnvData`. `cfg`: `EnvConfig`.
    `model_name`: recorded in schedules. `lut`: a `LatencyLUT` for `latency_mode="lut"` or a latency budget.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        model: nn.Module,
        data: EnvData,
        cfg: EnvConfig,
        *,
        model_name: str = "model",
        lut: Any | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.model = model.eval()
        self.data = data
        self._check_inputs(data, cfg, lut)
        self.input_shape = tuple(data.val_images.shape[1:])
        self.reward_fn = get_reward(cfg.reward, cfg.reward_kwargs)
        self.pruner = Pruner(self.model, data.val_images[:1], cfg.prune)
        self.groups = list(self.pruner.groups)
        self.cost_model = self.pruner.cost_model
        self._out_group = {spec.name: spec.out_group for spec in self.pruner.layer_specs}
        self.lut = lut
        self.meter = None
        if cfg.latency_mode == "measured":
            self.meter = LatencyMeter(cfg.latency, self.input_shape)
        self._full_kept = self.pruner.kept_channels({})
        self.base_macs = self.cost_model.macs(self._full_kept)
        self.base_params = self.cost_model.params(self._full_kept)
        self.base_lut_ms = lut.predict_ms(self._full_kept) if lut is not None else None
        # measured / predicted latency ratios of past episodes (latency budget, measured mode); saved in
        # search checkpoints. Their recent median corrects the table's predictions inside the wall.
        self.lut_feedback: list[float] = []
        self._feedback_on = cfg.budget_kind == "latency" and cfg.latency_mode == "measured" and cfg.lut_feedback > 0
        self._base_resource = self.resource({})
        self.wall = self._make_wall()
        self.baseline_top1 = self._evaluate(self.model)
        self.baseline_latency_ms = self.meter.measure(self.model).median_ms if self.meter else self.base_lut_ms
        self._static = features.static_features(self.groups, dict(self.model.named_modules()), self._latency_share())
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(features.FEATURE_NAMES),), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        # kept channels -> (outcome, info): identical policies are not re-evaluated; saved in search checkpoints.
        self.evaluation_cache: dict[tuple[int, ...], tuple[Outcome, dict[str, Any]]] = {}
        self._index = 0
        self._ratios: dict[str, float] = {}
        self._prev_action = 0.0
        self._step_s = 0.0
        self._running = False  # an episode is in progress: reset() was called and it has not terminated

    # ----------------------------------------------------------------- construction helpers
    @staticmethod
    def _check_inputs(data: EnvData, cfg: EnvConfig, lut: Any | None) -> None:
        if data.val_images.ndim != 4 or len(data.val_images) == 0:
            raise ConfigError("env: the validation set is empty; the reward needs held-out images (data.val_size > 0).")
        if len(data.val_images) != len(data.val_labels):
            raise ConfigError("env: validation images and labels differ in number.")
        needs_calib = cfg.bn_recalib_batches > 0 or cfg.prune.reconstruct
        if needs_calib and (data.calib_images is None or len(data.calib_images) == 0):
            raise ConfigError("env: BatchNorm recalibration / reconstruction needs calibration images (EnvData.calib_images).")
        needs_lut = cfg.latency_mode == "lut" or cfg.budget_kind == "latency"
        if needs_lut and lut is None:
            raise ConfigError("env: latency_mode 'lut' and latency budgets need a latency look-up table (env.lut_path).")
        if cfg.reward in LATENCY_REWARDS and cfg.latency_mode == "flops":
            raise ConfigError(f"env.reward {cfg.reward!r} needs latency: set env.latency_mode to 'lut' or 'measured'.")

    def resource(self, ratios: Mapping[str, float]) -> float:
        """The budgeted resource (MACs, params or table-predicted ms) of the network pruned to `ratios`."""
        kept = self.pruner.kept_channels(ratios)
        if self.cfg.budget_kind == "macs":
            return self.cost_model.macs(kept)
        if self.cfg.budget_kind == "params":
            return self.cost_model.params(kept)
        ms = self.lut.predict_ms(kept)
        return ms if kept == self._full_kept else ms * self.lut_correction

    @property
    def lut_correction(self) -> float:
        """Factor applied to the table's predicted latency of pruned networks in the budget wall (1 = none)."""
        if not self._feedback_on or not self.lut_feedback:
            return 1.0
        median = statistics.median(self.lut_feedback[-self.cfg.lut_feedback :])
        return min(max(median, CORRECTION_RANGE[0]), CORRECTION_RANGE[1])

    def _make_wall(self) -> BudgetWall:
        base = self._base_resource
        wall = BudgetWall(self.resource, self.cfg.budget * base, [g.name for g in self.groups], self.cfg.max_ratio)
        if not wall.reachable():
            floor = self.resource(dict.fromkeys(wall.order, self.cfg.max_ratio)) / base
            raise ConfigError(
                f"env.budget {self.cfg.budget} of {self.cfg.budget_kind} is unreachable: pruning every exposed group "
                f"at max_ratio {self.cfg.max_ratio} still leaves {floor:.3f}. Raise env.budget or env.max_ratio, "
                "or expose more groups (env.prune.scope: all)."
            )
        return wall

    def _latency_share(self) -> list[float] | None:
        if self.lut is None or not hasattr(self.lut, "group_ms"):
            return None
        per_group = self.lut.group_ms(self._full_kept)
        total = sum(per_group.values()) or 1.0
        return [per_group.get(g.name, 0.0) / total for g in self.groups]

    # ----------------------------------------------------------------- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._index = 0
        self._ratios = {}
        self._prev_action = 0.0
        self._step_s = 0.0
        self._running = True
        return self._observe(), {"group": self.groups[0].name}

    def step(self, action):
        t0 = time.perf_counter()
        if not self._running:
            raise ConfigError(
                "NetCompressEnv.step: no episode in progress (step() before the first reset(), or after the "
                "episode terminated); call reset() to start one."
            )
        a = float(np.clip(_one_finite_number(action), 0.0, 1.0))  # finite values outside [0, 1]: clipped, as AMC
        lo, hi = self.cfg.min_ratio, self.cfg.max_ratio
        group = self.groups[self._index]
        ratio = self.wall.clip(self._ratios, self._index, lo + a * (hi - lo))
        self._ratios[group.name] = ratio
        self._prev_action = (ratio - lo) / (hi - lo) if hi > lo else 0.0
        self._index += 1
        terminated = self._index == len(self.groups)
        info: dict[str, Any] = {"group": group.name, "prune_ratio": ratio}
        reward = 0.0
        obs = self._observe()
        self._step_s += time.perf_counter() - t0  # the env's own work: wall, features
        if terminated:
            self._running = False
            outcome, final = self._finish()
            reward = self.reward_fn(outcome)
            info.update(final, reward=reward)
        return obs, reward, terminated, False, info

    # ----------------------------------------------------------------- internals
    def _observe(self) -> np.ndarray:
        row = self._static[min(self._index, len(self.groups) - 1)]
        kept = self.pruner.kept_channels(self._ratios)
        layer_macs = self.cost_model.layer_macs(kept)
        undecided = {g.name for g in self.groups[self._index :]}
        to_decide = sum(m for name, m in layer_macs.items() if self._out_group.get(name) in undecided)
        current = self.resource(self._ratios)
        to_cut = max(current - self.wall.target, 0.0) / self._base_resource
        removed = 1.0 - sum(layer_macs.values()) / self.base_macs
        return features.observation(row, [removed, to_decide / self.base_macs, self._prev_action, to_cut])

    def _evaluate(self, model: nn.Module) -> float:
        res = evaluate_tensors(model, self.data.val_images, self.data.val_labels, batch_size=self.cfg.eval_batch_size,
                               runtime=self.cfg.eval_runtime)
        return res.top1

    def _finish(self) -> tuple[Outcome, dict[str, Any]]:
        return self.evaluate_policy(self._ratios, steps_s=self._step_s)

    def compress(self, ratios: Mapping[str, float], timing: dict[str, float] | None = None) -> nn.Module:
        """The network pruned to `ratios` exactly as episodes see it (reconstruction and BatchNorm
        recalibration as configured), before any fine-tuning; seconds spent go into `timing`."""
        timing = {} if timing is None else timing
        t = time.perf_counter()
        calib = self.data.calib_images if self.cfg.prune.reconstruct else None
        pruned = self.pruner.prune(dict(ratios), calib)
        timing["prune_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.cfg.bn_recalib_batches > 0:
            n = self.cfg.bn_recalib_batches * self.cfg.bn_recalib_batch_size
            recalibrate_bn(pruned, self.data.calib_images[:n], self.cfg.bn_recalib_batch_size)
        timing["recalib_s"] = time.perf_counter() - t
        return pruned.eval()

    def evaluate_policy(self, ratios: Mapping[str, float], steps_s: float = 0.0) -> tuple[Outcome, dict[str, Any]]:
        """Outcome and info of the network pruned to `ratios` (any groups, no budget wall), cached by kept
        channels. Episodes end here; baselines that probe single groups (sensitivity analysis) call it directly."""
        ratios = dict(ratios)
        kept = self.pruner.kept_channels(ratios)
        key = _cache_key(kept)
        if key in self.evaluation_cache:
            outcome, info = self.evaluation_cache[key]
            return outcome, {**info, "cached": True, "schedule": ratios}
        timing = {"steps_s": steps_s}
        pruned = self.compress(ratios, timing)
        t = time.perf_counter()
        top1 = self._evaluate(pruned)
        timing["eval_s"] = time.perf_counter() - t
        t = time.perf_counter()
        latency_ms, speedup, baseline_ms = self._latency(pruned, kept)
        timing["latency_s"] = time.perf_counter() - t
        timing["total_s"] = sum(timing.values())
        correction = self.lut_correction
        if self._feedback_on and speedup:
            predicted_ratio = self.lut.predict_ms(kept) / self.base_lut_ms
            self.lut_feedback.append((1.0 / speedup) / predicted_ratio)
        macs, params = self.cost_model.macs(kept), self.cost_model.params(kept)
        outcome = Outcome(
            top1=top1 / 100.0,
            macs=macs,
            macs_ratio=macs / self.base_macs,
            params_ratio=params / self.base_params,
            latency_ratio=None if speedup is None else 1.0 / speedup,
            budget=self.cfg.budget,
        )
        info = {
            "schedule": ratios,
            "kept_channels": kept,
            "top1": top1,
            "baseline_top1": self.baseline_top1,
            "latency_ms": latency_ms,
            "baseline_latency_ms": baseline_ms,
            "speedup": speedup,
            "macs": macs,
            "macs_ratio": outcome.macs_ratio,
            "params": params,
            "params_ratio": outcome.params_ratio,
            "timing": timing,
            "cached": False,
            **({"lut_correction": correction} if self._feedback_on else {}),
        }
        self.evaluation_cache[key] = (outcome, info)
        return outcome, info

    def _latency(self, pruned: nn.Module, kept: Mapping[str, int]) -> tuple[float | None, float | None, float | None]:
        if self.cfg.latency_mode == "measured":
            cmp = self.meter.compare(self.model, pruned)
            return cmp.latency_ms, cmp.speedup, cmp.baseline_ms
        if self.cfg.latency_mode == "lut":
            ms = self.lut.predict_ms(kept)
            return ms, self.base_lut_ms / ms, self.base_lut_ms
        return None, None, None

    def remeasure(self, ratios: Mapping[str, float], rounds: int) -> tuple[float, dict[str, Any]]:
        """Reward and info of an evaluated policy with its latency timed again over `rounds` pairs.

        The best of many episodes scored on noisy timings is, on average, one whose timing was lucky (the
        winner's curse): a search keeps the policy that measured fastest, not the one that is. Re-timing the
        leading candidates longer before choosing removes most of that bias. The new figures replace the
        cached ones, so later episodes that reach the same channel counts see them too.
        """
        if self.meter is None:
            raise ConfigError("remeasure needs env.latency_mode: measured.")
        kept = self.pruner.kept_channels(ratios)
        key = _cache_key(kept)
        if key not in self.evaluation_cache:
            raise ValueError("remeasure: this policy was not evaluated by the env (play it as an episode first).")
        outcome, info = self.evaluation_cache[key]
        calib = self.data.calib_images if self.cfg.prune.reconstruct else None
        pruned = self.pruner.prune(dict(ratios), calib)
        meter = LatencyMeter(dataclasses.replace(self.cfg.latency, rounds=rounds), self.input_shape)
        cmp = meter.compare(self.model, pruned)
        outcome = dataclasses.replace(outcome, latency_ratio=1.0 / cmp.speedup)
        info = {**info, "latency_ms": cmp.latency_ms, "baseline_latency_ms": cmp.baseline_ms, "speedup": cmp.speedup,
                "speedup_in_episode": info.get("speedup_in_episode", info["speedup"]), "remeasured_rounds": rounds}
        self.evaluation_cache[key] = (outcome, info)
        return self.reward_fn(outcome), {**info, "schedule": dict(ratios)}

    # ----------------------------------------------------------------- conveniences
    @property
    def group_names(self) -> list[str]:
        """Exposed group names in step order."""
        return [g.name for g in self.groups]

    def prune_ratio_of(self, action: float) -> float:
        """The prune ratio an action in [0, 1] maps to before the budget wall."""
        return self.cfg.min_ratio + float(action) * (self.cfg.max_ratio - self.cfg.min_ratio)
