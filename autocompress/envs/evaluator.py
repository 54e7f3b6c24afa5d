"""The Evaluator: one object that turns a pruning schedule into a scored `Outcome`.

It owns what scoring needs: the unpruned network, the held-out and calibration tensors, the Pruner and
its cost model, the latency meter or look-up table, and the cache of evaluated networks. The Gymnasium
env (`NetCompressEnv`) is a thin shell over it (features, action -> ratio, budget wall, reward); the search,
the pipeline, the baselines and the scripts ask it for scores, and a remote worker can build one from a
config in a fresh process (`autocompress.envs.factory.build_evaluator`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.config import ConfigError, EnvConfig
from autocompress.envs.rewards import LATENCY_REWARDS, Outcome, get_reward
from autocompress.envs.sparse import SparseCompressor
from autocompress.measure.accuracy import Stop
from autocompress.measure.latency import LatencyMeter
from autocompress.measure.scorers import Score, get_scorer
from autocompress.pruning import Pruner, recalibrate_bn
from autocompress.quantize import layer_precision, quantize_int8, quantize_layers

CORRECTION_RANGE = (0.5, 2.0)
"""Bounds of the measured/predicted latency correction: beyond them the table is wrong, not just biased."""


def cache_key(kept: Mapping[str, int], precision: Mapping[str, str] | None = None) -> tuple[Any, ...]:
    """Evaluation-cache key: kept channels in group-name order (equal networks, equal keys), then the groups
    in INT8 if any (an all-FP32 policy has the key it had before precisions existed)."""
    key: tuple[Any, ...] = tuple(kept[name] for name in sorted(kept))
    int8 = tuple(sorted(g for g, p in (precision or {}).items() if p == "int8"))
    return key + (("int8", *int8),) if int8 else key


@dataclass
class EnvData:
    """The tensors an environment scores policies on, preloaded once."""

    val_images: torch.Tensor
    """Held-out images (never the test split) for the reward's accuracy; for a policy (scorer episodic_return)
    observations the unpruned policy visited, which size the network's input (N, *obs_shape)."""
    val_labels: torch.Tensor
    calib_images: torch.Tensor | None = None
    """Training images (or observations) for BatchNorm recalibration and least-squares reconstruction."""


def check_inputs(data: EnvData, cfg: EnvConfig, lut: Any | None) -> None:
    """Refuse data and settings no evaluation could work with, before any expensive step."""
    if data.val_images.ndim < 2 or len(data.val_images) == 0:
        raise ConfigError("env: the validation set is empty; the reward needs held-out images (data.val_size > 0).")
    if len(data.val_images) != len(data.val_labels):
        raise ConfigError("env: validation images and labels differ in number.")
    needs_calib = cfg.bn_recalib_batches > 0 or cfg.prune.reconstruct
    if needs_calib and (data.calib_images is None or len(data.calib_images) == 0):
        raise ConfigError("env: BatchNorm recalibration / reconstruction needs calibration images (EnvData.calib_images).")
    needs_lut = cfg.latency_mode == "lut" or (cfg.budget_kind == "latency" and cfg.precisions == "fp32")
    if needs_lut and lut is None:
        raise ConfigError("env: latency_mode 'lut' and latency budgets need a latency look-up table (env.lut_path).")
    if cfg.reward in LATENCY_REWARDS and cfg.latency_mode == "flops":
        raise ConfigError(f"env.reward {cfg.reward!r} needs latency: set env.latency_mode to 'lut' or 'measured'.")
    if cfg.precisions != "fp32" and (data.calib_images is None or len(data.calib_images) == 0):
        raise ConfigError("env: INT8 layers are calibrated on training images; EnvData.calib_images is empty.")
    if cfg.precisions != "fp32" and cfg.budget_kind == "latency" and cfg.reward not in LATENCY_REWARDS:
        raise ConfigError(
            f"env.reward {cfg.reward!r}: with precisions {cfg.precisions!r} no look-up table can price INT8, so "
            "the latency budget is enforced by the reward alone; use reward acc_latency (e.g. reward_kwargs: "
            "{beta: -4.0}) or acc_latency_linear."
        )


class Evaluator:
    """Schedule (group -> prune ratio) in, `Outcome` + info out: prune, recalibrate, score, time, cache.

    `cfg` is the env's config (pruning, recalibration, scorer, evaluation runtime, latency mode and budget);
    `lut` a `LatencyLUT` for `latency_mode="lut"` or a latency budget. What "accuracy" means is the scorer's
    (`autocompress.measure.scorers`): top-1 on the held-out images, or a policy's normalised episodic return;
    either way `top1` in info is a percent (higher is better) and `Outcome.top1` that fraction.
    With `cfg.sparsity` unstructured a schedule's values are sparsities (shares of each group's conv / linear
    weights zeroed, `sparse`), no channel is removed, and info adds the measured compressed bytes.
    """

    def __init__(self, model: nn.Module, data: EnvData, cfg: EnvConfig, *, lut: Any | None = None) -> None:
        check_inputs(data, cfg, lut)
        self.cfg = cfg
        self.model = model.eval()
        self.data = data
        self.lut = lut
        self.input_shape = tuple(data.val_images.shape[1:])
        self.pruner = Pruner(self.model, data.val_images[:1], cfg.prune)
        self.cost_model = self.pruner.cost_model
        self.meter = LatencyMeter(cfg.latency, self.input_shape) if cfg.latency_mode == "measured" else None
        self.full_kept = self.pruner.kept_channels({})
        self.sparse = (SparseCompressor(self.model, self.pruner, size_table=cfg.budget_kind == "size")
                       if cfg.sparsity == "unstructured" else None)
        """Zeroed weights instead of removed channels (env.sparsity unstructured), else None."""
        self.base_macs = self.cost_model.macs(self.full_kept)
        self.base_params = self.cost_model.params(self.full_kept)
        self.base_lut_ms = lut.predict_ms(self.full_kept) if lut is not None else None
        # measured / predicted latency ratios of past evaluations (latency budget, measured mode); saved in
        # search checkpoints. Their recent median corrects the table's predictions inside the env's wall.
        self.lut_feedback: list[float] = []
        self.feedback_on = (cfg.budget_kind == "latency" and cfg.latency_mode == "measured" and cfg.lut_feedback > 0
                            and lut is not None)
        # kept channels -> (outcome, info): identical networks are not re-evaluated; saved in search checkpoints.
        self.cache: dict[tuple[int, ...], tuple[Outcome, dict[str, Any]]] = {}
        self.reward_fn = get_reward(cfg.reward, cfg.reward_kwargs)  # early stopping compares rewards
        self._best_reward: float | None = None
        self.scorer = get_scorer(cfg, self.model, data.val_images, data.val_labels)
        self.baseline_top1 = self.accuracy(self.model)
        self.baseline_latency_ms = self.meter.measure(self.model).median_ms if self.meter else self.base_lut_ms

    def score(self, model: nn.Module, stop: Stop | None = None) -> Score:
        """`model`'s score with the configured scorer: percent (higher is better) and the raw figures."""
        return self.scorer.score(model, stop)

    def accuracy(self, model: nn.Module) -> float:
        """The score in percent: top-1 on the held-out images, or the policy's normalised return."""
        return self.score(model).value

    @property
    def lut_correction(self) -> float:
        """Factor applied to the table's predicted latency of pruned networks (1 = none)."""
        if not self.feedback_on or not self.lut_feedback:
            return 1.0
        median = statistics.median(self.lut_feedback[-self.cfg.lut_feedback :])
        return min(max(median, CORRECTION_RANGE[0]), CORRECTION_RANGE[1])

    def kept_channels(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Channels each group keeps under `ratios` (all of them when the values are sparsities)."""
        return dict(self.full_kept) if self.sparse is not None else self.pruner.kept_channels(ratios)

    def network_key(self, ratios: Mapping[str, float], precision: Mapping[str, str] | None = None) -> tuple[Any, ...]:
        """The evaluation-cache key of the network `ratios` (and `precision`) make: equal networks, equal keys."""
        if self.sparse is not None:
            return cache_key(self.full_kept) + (self.sparse.key(ratios),)
        return cache_key(self.pruner.kept_channels(ratios), precision)

    def _shrink(self, ratios: Mapping[str, float], calib: torch.Tensor | None = None,
                keep_masks: bool = False) -> nn.Module:
        """A copy of the network with channels removed, or weights zeroed (env.sparsity unstructured)."""
        if self.sparse is not None:
            return self.sparse.apply(self.model, ratios, keep_masks)
        return self.pruner.prune(dict(ratios), calib)

    def compress(self, ratios: Mapping[str, float], timing: dict[str, float] | None = None,
                 keep_masks: bool = False) -> nn.Module:
        """The network pruned to `ratios` exactly as episodes see it (reconstruction and BatchNorm
        recalibration as configured; no recalibration when nothing is removed), before any fine-tuning; seconds
        spent go into `timing`. With `keep_masks` zeroed weights stay zero through a fine-tune (env.sparsity
        unstructured; see `SparseCompressor.apply`)."""
        timing = {} if timing is None else timing
        t = time.perf_counter()
        calib = self.data.calib_images if self.cfg.prune.reconstruct else None
        pruned = self._shrink(ratios, calib, keep_masks)
        timing["prune_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.cfg.bn_recalib_batches > 0 and not self._unchanged(ratios):
            n = self.cfg.bn_recalib_batches * self.cfg.bn_recalib_batch_size
            recalibrate_bn(pruned, self.data.calib_images[:n], self.cfg.bn_recalib_batch_size)
        timing["recalib_s"] = time.perf_counter() - t
        return pruned.eval()

    def _unchanged(self, ratios: Mapping[str, float]) -> bool:
        """Whether `ratios` remove nothing. Such a network keeps the statistics its weights were trained with:
        re-estimating them on a few hundred clean training images cost the adapted CIFAR-10 (JPEG) ResNet-20
        4.7 val points (92.6 -> 87.9), which the quantization-only search then paid in every episode."""
        if self.sparse is not None:
            return all(float(r) == 0.0 for r in ratios.values())
        return self.pruner.kept_channels(ratios) == self.full_kept

    def layer_precision(self, precision: Mapping[str, str] | None) -> dict[str, str]:
        """Quantizable layer -> precision for a per-group choice ({} when nothing is INT8)."""
        if not precision or all(p == "fp32" for p in precision.values()):
            return {}
        return layer_precision(self.pruner.layer_specs, precision, self.cfg.quant.other_layers)

    def int8_group_sensitivity(self, images: int = 256) -> dict[str, float]:
        """Per searched group: relative logit error of the unpruned network with only that group's layers in
        INT8 (HAQ's per-layer sensitivity, a feature of the joint action), on held-out images. One
        quantization per group, so it is computed once per env."""
        x = self.data.val_images[:images]
        with torch.no_grad():
            ref = self.model(x)
        out = {}
        for g in self.pruner.groups:
            mine = layer_precision(self.pruner.layer_specs, {g.name: "int8"}, "fp32")
            layers = [name for name, p in mine.items() if p == "int8"]
            if not layers:  # nothing quantizable in this group: INT8 changes nothing
                out[g.name] = 0.0
                continue
            q = quantize_int8(self.model, self.data.calib_images, self.cfg.quant, only=layers)
            out[g.name] = float((q(x) - ref).norm() / ref.norm().clamp_min(1e-12))
        return out

    def deployable(self, pruned: nn.Module, precision: Mapping[str, str] | None,
                   timing: dict[str, float] | None = None) -> nn.Module:
        """`pruned` as it will run: with INT8 layers quantized (an ONNX Runtime model) when `precision`
        (group -> "fp32" | "int8") puts any layer in INT8; seconds spent go into timing["quantize_s"]."""
        layers = self.layer_precision(precision)
        if not layers:
            return pruned
        t = time.perf_counter()
        model = quantize_layers(pruned, self.data.calib_images, layers, self.cfg.quant)
        if timing is not None:
            timing["quantize_s"] = time.perf_counter() - t
        return model

    def evaluate(self, ratios: Mapping[str, float], steps_s: float = 0.0,
                 precision: Mapping[str, str] | None = None) -> tuple[Outcome, dict[str, Any]]:
        """Outcome and info of the network pruned to `ratios` (any groups, no budget wall) with the groups'
        layers in `precision` (default all FP32), cached by the network they make (`network_key`). Episodes end here;
        baselines that probe single groups (sensitivity analysis) call it directly."""
        ratios = dict(ratios)
        kept = self.kept_channels(ratios)
        key = self.network_key(ratios, precision)
        if key in self.cache:
            outcome, info = self.cache[key]
            return outcome, {**info, "cached": True, "schedule": ratios}
        timing = {"steps_s": steps_s}
        pruned = self.deployable(self.compress(ratios, timing), precision, timing)
        outcome, costs = self._costs(pruned, ratios, kept, timing)
        t = time.perf_counter()
        stop = self._stopper(outcome)
        score = self.score(pruned, stop)
        top1 = score.value
        timing["eval_s"] = time.perf_counter() - t
        timing["total_s"] = sum(timing.values())
        outcome = dataclasses.replace(outcome, top1=top1 / 100.0)
        stopped = stop is not None and score.details.get("val_images_scored", 0) < len(self.data.val_labels)
        info = {
            "schedule": ratios,
            "kept_channels": kept,
            "top1": top1,
            "baseline_top1": self.baseline_top1,
            **costs,
            "timing": timing,
            "cached": False,
            **(self._precision_info(precision, pruned) if self.cfg.precisions != "fp32" else {}),
            **score.details,
            **({"early_stopped": stopped, "val_images_scored": score.details.get(
                "val_images_scored", len(self.data.val_labels))} if self.cfg.eval_early_stop else {}),
        }
        if self.cfg.eval_early_stop and not stopped:
            self._best_reward = max(self._best(), self.reward_fn(outcome))
        self.cache[key] = (outcome, info)
        return outcome, info

    def _costs(self, pruned: nn.Module, ratios: Mapping[str, float], kept: Mapping[str, int],
               timing: dict[str, float]) -> tuple[Outcome, dict[str, Any]]:
        """The Outcome before scoring (latency first: an early-stopped evaluation needs the reward's other parts)
        and the cost figures for info: latency, MACs, params and, for zeroed weights, the measured bytes."""
        t = time.perf_counter()
        latency_ms, speedup, baseline_ms = self._latency(pruned, kept)
        timing["latency_s"] = time.perf_counter() - t
        correction = self.lut_correction
        self._record_feedback(kept, speedup)
        size = self.sparse.measure(pruned, ratios) if self.sparse is not None else {}
        if size:
            timing["size_s"] = size.pop("size_s")
        macs, params = self.cost_model.macs(kept), self.cost_model.params(kept)
        outcome = Outcome(top1=0.0, macs=macs, macs_ratio=macs / self.base_macs, params_ratio=params / self.base_params,
                          latency_ratio=None if speedup is None else 1.0 / speedup, budget=self.cfg.budget,
                          size_ratio=size.get("size_ratio"))
        costs = {"latency_ms": latency_ms, "baseline_latency_ms": baseline_ms, "speedup": speedup, "macs": macs,
                 "macs_ratio": outcome.macs_ratio, "params": params, "params_ratio": outcome.params_ratio,
                 **({"lut_correction": correction} if self.feedback_on else {}), **size}
        return outcome, costs

    def _best(self) -> float:
        """Best reward of a fully scored evaluation so far (from the cache after a resume); -inf if none."""
        if self._best_reward is None:
            full = [self.reward_fn(o) for o, info in self.cache.values() if not info.get("early_stopped")]
            self._best_reward = max(full, default=float("-inf"))
        return self._best_reward

    def _stopper(self, outcome: Outcome) -> Stop | None:
        """With env.eval_early_stop = delta: a stop rule that ends scoring once even the (1 - delta) Hoeffding
        upper bound of top-1 gives a reward below the best so far (every reward grows with accuracy)."""
        delta = self.cfg.eval_early_stop
        best = self._best() if delta else float("-inf")
        if not delta or best == float("-inf") or self.cfg.scorer != "top1":
            return None
        slack = math.log(1.0 / delta) / 2.0

        def stop(hits: int, seen: int) -> bool:
            upper = min(1.0, hits / seen + math.sqrt(slack / seen))
            return self.reward_fn(dataclasses.replace(outcome, top1=upper)) < best

        return stop

    def _precision_info(self, precision: Mapping[str, str] | None, model: nn.Module) -> dict[str, Any]:
        deployed = getattr(model, "precision", None)  # an INT8 model lists the layers it has (removed blocks: none)
        layers = dict(deployed) if isinstance(deployed, Mapping) else self.layer_precision(precision)
        return {"precision": {g.name: (precision or {}).get(g.name, "fp32") for g in self.pruner.groups},
                "layer_precision": layers, "int8_layers": sum(p == "int8" for p in layers.values()),
                "bytes": getattr(model, "nbytes", None)}

    def _record_feedback(self, kept: Mapping[str, int], speedup: float | None) -> None:
        """Measured / table-predicted latency of one network, for the table's correction (latency budgets)."""
        if self.feedback_on and speedup:
            self.lut_feedback.append((1.0 / speedup) / (self.lut.predict_ms(kept) / self.base_lut_ms))

    def with_measured_latency(self, ratios: Mapping[str, float], outcome: Outcome, info: dict[str, Any],
                              precision: Mapping[str, str] | None = None) -> tuple[Outcome, dict[str, Any]]:
        """An outcome scored elsewhere (a worker that only measured accuracy), timed here against the unpruned
        network, so that timings never overlap each other (INT8 layers are quantized again here: the same
        calibration images give the same model)."""
        kept = self.kept_channels(ratios)
        t = time.perf_counter()
        model = self.deployable(self._shrink(ratios), precision)
        latency_ms, speedup, baseline_ms = self._latency(model, kept)
        correction = self.lut_correction
        self._record_feedback(kept, speedup)
        timing = {**info.get("timing", {}), "latency_s": time.perf_counter() - t}
        info = {**info, "latency_ms": latency_ms, "baseline_latency_ms": baseline_ms, "speedup": speedup,
                "timing": timing, **({"lut_correction": correction} if self.feedback_on else {})}
        return dataclasses.replace(outcome, latency_ratio=None if speedup is None else 1.0 / speedup), info

    def evaluate_batch(self, schedules: Sequence[Mapping[str, float]],
                       precisions: Sequence[Mapping[str, str] | None] = ()) -> list[tuple[Outcome, dict[str, Any]]]:
        """Several schedules, scored in order (what a parallel backend distributes)."""
        precs = list(precisions) or [None] * len(schedules)
        return [self.evaluate(s, precision=p) for s, p in zip(schedules, precs, strict=True)]

    def _latency(self, pruned: nn.Module, kept: Mapping[str, int]) -> tuple[float | None, float | None, float | None]:
        if self.cfg.latency_mode == "measured":
            cmp = self.meter.compare(self.model, pruned)
            return cmp.latency_ms, cmp.speedup, cmp.baseline_ms
        if self.cfg.latency_mode == "lut":
            ms = self.lut.predict_ms(kept)
            return ms, self.base_lut_ms / ms, self.base_lut_ms
        return None, None, None

    def remeasure(self, ratios: Mapping[str, float], rounds: int,
                  precision: Mapping[str, str] | None = None) -> tuple[Outcome, dict[str, Any]]:
        """Outcome and info of an evaluated policy with its latency timed again over `rounds` pairs.

        The best of many episodes scored on noisy timings is, on average, one whose timing was lucky (the
        winner's curse): a search keeps the policy that measured fastest, not the one that is. Re-timing the
        leading candidates longer before choosing removes most of that bias. The new figures replace the
        cached ones, so later episodes that reach the same channel counts see them too.
        """
        if self.meter is None:
            raise ConfigError("remeasure needs env.latency_mode: measured.")
        key = self.network_key(ratios, precision)
        if key not in self.cache:
            raise ValueError("remeasure: this policy was not evaluated (play it as an episode first).")
        outcome, info = self.cache[key]
        calib = self.data.calib_images if self.cfg.prune.reconstruct else None
        pruned = self.deployable(self._shrink(ratios, calib), precision)
        meter = LatencyMeter(dataclasses.replace(self.cfg.latency, rounds=rounds), self.input_shape)
        cmp = meter.compare(self.model, pruned)
        outcome = dataclasses.replace(outcome, latency_ratio=1.0 / cmp.speedup)
        info = {**info, "latency_ms": cmp.latency_ms, "baseline_latency_ms": cmp.baseline_ms, "speedup": cmp.speedup,
                "speedup_in_episode": info.get("speedup_in_episode", info["speedup"]), "remeasured_rounds": rounds}
        self.cache[key] = (outcome, info)
        return outcome, {**info, "schedule": dict(ratios)}

