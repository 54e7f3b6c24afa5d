"""NetCompressEnv: choose a prune ratio for each channel group of a network, then be scored on it.

This module orchestrates only: grouping and physical pruning come from `autocompress.pruning`,
costs and accuracy from `autocompress.measure`, rewards from `rewards.py`, the budget wall
from `constraints.py` and the state from `features.py`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from torch import nn

from autocompress.config import DROP_ACTION, ConfigError, EnvConfig
from autocompress.envs import features
from autocompress.envs.constraints import BudgetWall
from autocompress.envs.evaluator import EnvData, Evaluator
from autocompress.envs.rewards import Outcome, get_reward
from autocompress.envs.sparse import SIZE_MARGIN


def _finite_numbers(action: Any, size: int = 1) -> list[float]:
    """The `size` finite numbers in `action`. Anything else is an agent bug: refused, not truncated to its first
    values or clipped from +-inf to a bound, which would hide the bug behind plausible episodes."""
    if size == 1:
        box = "the action space is Box(0, 1, (1,)): pass one finite number, e.g. np.array([0.3], np.float32)"
    else:
        box = (f"the action space is Box(0, 1, ({size},)): pass {size} finite numbers (prune ratio, precision), "
               "e.g. np.array([0.3, 0.9], np.float32)")
    if action is None or isinstance(action, (str, bytes)):
        raise ConfigError(f"NetCompressEnv.step: action {action!r} is not a number; {box}.")
    try:
        values = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"NetCompressEnv.step: action {action!r} is not numeric; {box}.") from None
    if values.size != size:
        raise ConfigError(f"NetCompressEnv.step: action has shape {values.shape} ({values.size} values); {box}.")
    flat = [float(v) for v in values.reshape(-1)]
    for value in flat:
        if not math.isfinite(value):
            raise ConfigError(f"NetCompressEnv.step: action {'is' if size == 1 else 'holds'} {value}; {box}.")
    return flat


class NetCompressEnv(gym.Env):
    """Learn a per-group channel-pruning policy for one network (AMC, He et al. 2018).

    ## Description
    An episode walks the network's prunable channel groups (layers coupled by residual additions or
    depthwise convolutions share one group) in network order. At each step the agent picks the share
    of the current group's channels to remove. After the last group the network is physically pruned
    (a copy; channels really removed), optionally BatchNorm-recalibrated, scored on held-out images
    and, depending on `latency_mode`, timed on the target runtime or priced by a latency look-up table.

    With `sparsity: unstructured` nothing is removed: each group's share of its conv / linear weights with the
    smallest magnitude is zeroed (`autocompress.pruning.sparsity`), and the budget is the compressed export's
    bytes (`budget_kind: size`, priced by a size table, measured each episode) or the nonzero parameters.

    ## Action Space
    `Box(0, 1, (1,), float32)`: mapped linearly to a prune ratio (share of channels removed; with sparsity
    unstructured, share of weights zeroed) in `[min_ratio, max_ratio]`, then raised by the budget wall if needed
    so that the budget can still be met by pruning every later group at `max_ratio`. The applied ratio is in
    `info["prune_ratio"]`. With `drop_blocks`, an action >= `config.DROP_ACTION` on a group that is a residual
    block's inner width removes the block (prune ratio 1.0; `pruner.droppable` lists those groups).
    Finite actions outside [0, 1] are clipped (as AMC's); NaN, +-inf, non-numbers and arrays that do not
    hold exactly one value raise ConfigError.

    ## Observation Space
    `Box(0, 1, (15,), float32)`: the current group's features (`features.FEATURE_NAMES`): index, layer
    kind, in/out channels, stride, kernel, MACs share, latency share (look-up table), whether it is
    internal to a residual block, mean and spread of the channels' L1 norms, then MACs removed so far (with
    sparsity unstructured, share of the budgeted resource removed so far), MACs still to decide, previous
    action, and the share of the budget still to cut.

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
    `timing` (seconds spent pruning, recalibrating, evaluating, timing), `cached`; with sparsity unstructured
    also `layer_sparsity`, `compressed_bytes`, `baseline_compressed_bytes`, `size_ratio`, `nonzero_params`,
    `nonzero_ratio` (and `predicted_bytes` with a size budget).

    ## Arguments
    `model`: the trained network (not modified). `data`: `EnvData`. `cfg`: `EnvConfig`.
    `model_name`: recorded in schedules. `lut`: a `LatencyLUT` for `latency_mode="lut"` or a latency budget.

    ## Version History
    * v0: initial version; `env.sparsity` (zeroed weights for size) was added later, off by default, so a
      config without it plays as before.
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
        evaluator: Evaluator | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.reward_fn = get_reward(cfg.reward, cfg.reward_kwargs)
        self.evaluator = evaluator if evaluator is not None else Evaluator(model, data, cfg, lut=lut)
        self.groups = list(self.pruner.groups)
        self.precision_choices = tuple(cfg.precisions.split("+"))
        """Precisions the action's second number picks from, in order (only "fp32": a prune-only action)."""
        self.soft_budget = cfg.budget_kind == "latency" and self.lut is None
        """A latency budget no table can price (INT8 layers): the reward enforces it, not the wall."""
        self._out_group = {spec.name: spec.out_group for spec in self.pruner.layer_specs}
        self._base_resource = self.resource({})
        self.wall = self._make_wall()
        self._static = features.static_features(self.groups, dict(self.model.named_modules()), self._latency_share())
        if self.joint:
            sens = self.evaluator.int8_group_sensitivity()
            self._static = features.with_int8_sensitivity(self._static, [sens[g.name] for g in self.groups])
        n_obs = len(features.FEATURE_NAMES) + (len(features.JOINT_NAMES) if self.joint else 0)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (n_obs,), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (2 if self.joint else 1,), np.float32)
        self._index = 0
        self._ratios: dict[str, float] = {}
        self._precision: dict[str, str] = {}
        self._prev_action = 0.0
        self._prev_precision = 0.0
        self._step_s = 0.0
        self._running = False  # an episode is in progress: reset() was called and it has not terminated
        self.defer_evaluation = False
        """True: the last step returns the schedule (info["deferred"]) with reward 0 and scores nothing; the
        caller scores it with `evaluator` (a search evaluating a batch of episodes at once)."""

    # ----------------------------------------------------------------- the evaluator's state, by its old names
    model = property(lambda self: self.evaluator.model)
    data = property(lambda self: self.evaluator.data)
    lut = property(lambda self: self.evaluator.lut)
    meter = property(lambda self: self.evaluator.meter)
    pruner = property(lambda self: self.evaluator.pruner)
    cost_model = property(lambda self: self.evaluator.cost_model)
    input_shape = property(lambda self: self.evaluator.input_shape)
    base_macs = property(lambda self: self.evaluator.base_macs)
    base_params = property(lambda self: self.evaluator.base_params)
    base_lut_ms = property(lambda self: self.evaluator.base_lut_ms)
    baseline_top1 = property(lambda self: self.evaluator.baseline_top1)
    baseline_latency_ms = property(lambda self: self.evaluator.baseline_latency_ms)
    evaluation_cache = property(lambda self: self.evaluator.cache)
    lut_feedback = property(lambda self: self.evaluator.lut_feedback)
    lut_correction = property(lambda self: self.evaluator.lut_correction)

    @property
    def joint(self) -> bool:
        """Whether each action also chooses the group's precision (env.precisions is not just "fp32")."""
        return len(self.precision_choices) > 1

    def compress(self, ratios: Mapping[str, float], timing: dict[str, float] | None = None) -> nn.Module:
        """The network pruned to `ratios` as episodes see it (`Evaluator.compress`)."""
        return self.evaluator.compress(ratios, timing)

    def evaluate_policy(self, ratios: Mapping[str, float], steps_s: float = 0.0,
                        precision: Mapping[str, str] | None = None) -> tuple[Outcome, dict[str, Any]]:
        """Outcome and info of the network pruned to `ratios`, no budget wall (`Evaluator.evaluate`)."""
        return self.evaluator.evaluate(ratios, steps_s, precision)

    def remeasure(self, ratios: Mapping[str, float], rounds: int,
                  precision: Mapping[str, str] | None = None) -> tuple[float, dict[str, Any]]:
        """Reward and info of an evaluated policy with its latency timed again (`Evaluator.remeasure`)."""
        outcome, info = self.evaluator.remeasure(ratios, rounds, precision)
        return self.reward_fn(outcome), info

    # ----------------------------------------------------------------- construction helpers
    def resource(self, ratios: Mapping[str, float]) -> float:
        """The budgeted resource (MACs, params or table-predicted ms; with zeroed weights the predicted
        compressed bytes or the nonzero params) of the network pruned to `ratios`."""
        if self.evaluator.sparse is not None:
            return self.evaluator.sparse.cost(ratios, self.cfg.budget_kind)
        kept = self.pruner.kept_channels(ratios)
        if self.cfg.budget_kind == "macs" or self.soft_budget:
            return self.cost_model.macs(kept)
        if self.cfg.budget_kind == "params":
            return self.cost_model.params(kept)
        ms = self.lut.predict_ms(kept)
        return ms if kept == self.evaluator.full_kept else ms * self.lut_correction

    def _make_wall(self) -> BudgetWall:
        base = self._base_resource
        fraction = 1.0 if self.soft_budget else self.cfg.budget  # a soft budget: no wall (MACs may stay)
        if self.evaluator.sparse is not None and self.cfg.budget_kind == "size":
            fraction *= 1.0 - SIZE_MARGIN  # predicted bytes: a reserve, so that the measured ones meet the budget
        wall = BudgetWall(self.resource, fraction * base, [g.name for g in self.groups], self.cfg.max_ratio)
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
        per_group = self.lut.group_ms(self.evaluator.full_kept)
        total = sum(per_group.values()) or 1.0
        return [per_group.get(g.name, 0.0) / total for g in self.groups]

    # ----------------------------------------------------------------- Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._index = 0
        self._ratios = {}
        self._precision = {}
        self._prev_action = 0.0
        self._prev_precision = 0.0
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
        # finite values outside [0, 1]: clipped, as AMC
        values = np.clip(_finite_numbers(action, int(self.action_space.shape[0])), 0.0, 1.0)
        lo, hi = self.cfg.min_ratio, self.cfg.max_ratio
        group = self.groups[self._index]
        ratio = self._prune_ratio(group.name, float(values[0]))
        self._ratios[group.name] = ratio
        self._prev_action = min((ratio - lo) / (hi - lo), 1.0) if hi > lo else 0.0
        info: dict[str, Any] = {"group": group.name, "prune_ratio": ratio}
        if self.joint:
            n = len(self.precision_choices)
            choice = min(int(float(values[1]) * n), n - 1)
            self._precision[group.name] = info["precision"] = self.precision_choices[choice]
            self._prev_precision = choice / (n - 1)
        self._index += 1
        terminated = self._index == len(self.groups)
        reward = 0.0
        obs = self._observe()
        self._step_s += time.perf_counter() - t0  # the env's own work: wall, features
        if terminated and self.defer_evaluation:  # a batched search scores the schedule itself, maybe elsewhere
            self._running = False
            info.update(schedule=dict(self._ratios), steps_s=self._step_s, deferred=True)
            if self.joint:
                info["precision"] = dict(self._precision)
        elif terminated:
            self._running = False
            outcome, final = self._finish()
            reward = self.reward_fn(outcome)
            info.update(final, reward=reward)
        return obs, reward, terminated, False, info

    # ----------------------------------------------------------------- internals
    def _prune_ratio(self, group: str, action: float) -> float:
        """The ratio an action in [0, 1] applies to the current group: 1.0 (the block removed) at the top end of
        a droppable group's range with env.drop_blocks, else mapped into [min_ratio, max_ratio] and raised by
        the budget wall (removing a block only lowers the cost, so the wall never needs to see it)."""
        if self.cfg.drop_blocks and action >= DROP_ACTION and group in self.pruner.droppable:
            return 1.0
        lo, hi = self.cfg.min_ratio, self.cfg.max_ratio
        return self.wall.clip(self._ratios, self._index, lo + action * (hi - lo))

    def _observe(self) -> np.ndarray:
        row = self._static[min(self._index, len(self.groups) - 1)]
        kept = self.pruner.kept_channels(self._ratios)
        layer_macs = self.cost_model.layer_macs(kept)
        undecided = {g.name for g in self.groups[self._index :]}
        to_decide = sum(m for name, m in layer_macs.items() if self._out_group.get(name) in undecided)
        current = self.resource(self._ratios)
        to_cut = max(current - self.wall.target, 0.0) / self._base_resource
        removed = 1.0 - sum(layer_macs.values()) / self.base_macs
        if self.evaluator.sparse is not None:  # zeroed weights leave the MACs whole: the budget's share instead
            removed = 1.0 - current / self._base_resource
        dynamic = [removed, to_decide / self.base_macs, self._prev_action, to_cut]
        return features.observation(row, dynamic, [self._prev_precision] if self.joint else ())

    def _finish(self) -> tuple[Outcome, dict[str, Any]]:
        precision = dict(self._precision) if self.joint else None
        return self.evaluator.evaluate(self._ratios, steps_s=self._step_s, precision=precision)

    # ----------------------------------------------------------------- conveniences
    @property
    def group_names(self) -> list[str]:
        """Exposed group names in step order."""
        return [g.name for g in self.groups]

    def prune_ratio_of(self, action: float) -> float:
        """The prune ratio an action in [0, 1] maps to before the budget wall."""
        return self.cfg.min_ratio + float(action) * (self.cfg.max_ratio - self.cfg.min_ratio)
