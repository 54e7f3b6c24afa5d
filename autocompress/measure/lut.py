"""A per-layer latency look-up table: measured once, then summed in microseconds per query.

Timing a whole pruned network inside a search costs tens of milliseconds per candidate and is noisy;
the table times each conv / linear layer standalone over a grid of kept (input, output) channel counts,
and predicts a network's latency as the sum of its layers' latencies, interpolated bilinearly at the
kept counts, scaled, plus a constant for everything else. Scale and constant are calibrated on whole
models: the unpruned one and, when given, one pruned copy (two points fix both; with only the unpruned
model the scale stays 1). Standalone layer timings do not add up exactly to the same layers inside the
network (per-call overheads, caches), and that mismatch grows with pruning: on ResNet-56 in eager PyTorch a
one-point table over-predicts the speedup of pruned networks by 6-8%.

Choice: a conv directly followed by its BatchNorm (and an activation) is timed as one Conv+BN+ReLU block.
ONNX Runtime fuses the three into one kernel, so the block is what it runs; in eager PyTorch BN and ReLU
are separate per-channel ops whose cost scales with the kept channels, so timing them with the conv
keeps that cost out of the constant (which must not depend on the channel counts).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.atomic import atomic_write_text
from autocompress.config import AutocompressError, LatencyConfig, to_dict
from autocompress.measure.latency import (
    RUNTIMES,
    LatencyMeter,
    check_input_shape,
    time_round_robin,
    torch_threads,
)
from autocompress.progress import progress as progress_bar

LUT_FORMAT = "autocompress.latency_lut"
LUT_VERSION = 1
DEFAULT_CHOICES = 8
TIMED_KINDS = ("conv", "linear")


MIN_PREDICTED_MS = 1e-6
"""The smallest latency a table predicts (ms): positive, so that every predicted speedup is finite and > 0."""


class LUTError(AutocompressError):
    """A look-up table cannot be built, loaded or queried as asked."""


@dataclass(frozen=True)
class PredictionReport:
    """How far the table's predictions are from whole-model measurements."""

    n: int
    mean_abs_rel_error: float
    """Mean of |predicted - measured| / measured over the samples (absolute latency)."""
    max_abs_rel_error: float
    speedup_mean_abs_rel_error: float | None
    """Same for the speedup against the baseline (None without a baseline): the ratio the env uses."""
    rows: list[dict[str, float]]


def machine_info() -> dict[str, str]:
    """What the timings depend on besides the settings: CPU model and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "system": platform.system(), "torch": torch.__version__}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def default_choices(full: int, n: int = DEFAULT_CHOICES, round_to: int = 1) -> list[int]:
    """`n` evenly spaced kept counts from full/n to full (deduplicated, full count included), rounded to
    multiples of `round_to`: with the Pruner's `round_to`, its kept counts then fall on grid points, so the
    table sees the kernel-speed steps at multiples of 8 that interpolation between points would miss."""
    step = max(1, round_to)
    return sorted({min(full, max(step, round(full * k / n / step) * step)) for k in range(1, n + 1)} | {full})


def _spec_key(s: Any) -> list[Any]:
    return [
        s.name, s.kind, s.in_channels, s.out_channels, s.in_group, s.out_group, list(s.kernel_size),
        list(s.stride), s.conv_groups, list(s.input_hw), list(s.output_hw), bool(s.has_bias), s.in_expand,
    ]  # fmt: skip


def specs_hash(layer_specs: Sequence[Any]) -> str:
    """Identity of a network's layer structure (names, shapes, groups) for checking a table fits a model."""
    text = json.dumps([_spec_key(s) for s in layer_specs], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_sizes(layer_specs: Sequence[Any]) -> dict[str, int]:
    """Unpruned channel count of every prune group named by the specs."""
    sizes: dict[str, int] = {}
    for s in layer_specs:
        if s.out_group is not None:
            sizes.setdefault(s.out_group, s.out_channels)
        if s.in_group is not None:
            sizes.setdefault(s.in_group, s.in_channels)
    return sizes


def _padding(in_size: int, out_size: int, k: int, s: int) -> int:
    """The padding that maps in_size to out_size (dilation 1); LayerSpec records sizes, not padding."""
    for p in range(k + 1):
        if (in_size + 2 * p - k) // s + 1 == out_size:
            return p
    return k // 2


def _block_flags(specs: Sequence[Any], i: int, functional_acts: bool) -> tuple[bool, bool]:
    """Whether conv i is followed by its BatchNorm and then an activation (same channel count).

    Activations called as functions (F.relu, as in the CIFAR ResNets) leave no spec; when a network has
    no activation module at all, a conv followed by BN is assumed to be followed by an activation too.
    """
    s = specs[i]
    bn = act = False
    j = i + 1
    if j < len(specs) and specs[j].kind == "bn" and specs[j].out_channels == s.out_channels:
        bn, j = True, j + 1
    if j < len(specs) and specs[j].kind == "act" and specs[j].out_channels == s.out_channels:
        act = True
    return bn, act or (bn and functional_acts)


def _untimed(s: Any) -> str | None:
    """What a layer is when the table cannot time it (recurrent, attention, a Linear at every token), else None."""
    if s.kind in ("recurrent", "attention"):
        return s.kind
    if s.kind == "linear" and s.output_hw[0] * s.output_hw[1] > 1:
        return "a Linear applied at every token or pixel"
    return None


def _round_to_groups(choices: Iterable[int], g: int, full: int) -> list[int]:
    return sorted({min(full, max(g, round(c / g) * g)) for c in choices} | {full})


class _Layer:
    """One timed layer: its grid and table, compiled for fast interpolation."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.name: str = entry["name"]
        self.in_group: str | None = entry["in_group"]
        self.out_group: str | None = entry["out_group"]
        self.tied: bool = entry["tied"]
        self.xs: list[int] = entry["in_choices"]
        self.ys: list[int] = entry["out_choices"]
        self.ms: list[list[float]] = entry["ms"]

    @staticmethod
    def _locate(grid: list[int], v: float) -> tuple[int, int, float]:
        """Neighbouring grid indices and weight of the upper one (clamped at the ends)."""
        if len(grid) == 1 or v <= grid[0]:
            return 0, 0, 0.0
        if v >= grid[-1]:
            n = len(grid) - 1
            return n, n, 0.0
        hi = bisect.bisect_left(grid, v)
        lo = hi - 1
        return lo, hi, (v - grid[lo]) / (grid[hi] - grid[lo])

    def predict(self, kept: Mapping[str, int]) -> float:
        out_c = kept.get(self.out_group, self.ys[-1]) if self.out_group is not None else self.ys[-1]
        in_c = out_c if self.tied else (kept.get(self.in_group, self.xs[-1]) if self.in_group else self.xs[-1])
        i0, i1, a = self._locate(self.xs, in_c)
        j0, j1, b = self._locate(self.ys, out_c)
        ms = self.ms
        top = ms[i0][j0] * (1 - b) + ms[i0][j1] * b
        bottom = ms[i1][j0] * (1 - b) + ms[i1][j1] * b
        return top * (1 - a) + bottom * a


def _build_module(entry: dict[str, Any], cin: int, cout: int) -> tuple[nn.Module, tuple[int, int, int]]:
    """The standalone module timed for one grid point, and its (C, H, W) input shape."""
    if entry["kind"] == "linear":
        module = nn.Sequential(nn.Flatten(), nn.Linear(cin * entry["in_expand"], cout, bias=entry["has_bias"]))
        return module, (cin * entry["in_expand"], 1, 1)
    (kh, kw), (sh, sw) = entry["kernel_size"], entry["stride"]
    (ih, iw), (oh, ow) = entry["input_hw"], entry["output_hw"]
    groups = cout if entry["tied"] else entry["conv_groups"]
    layers: list[nn.Module] = [
        nn.Conv2d(
            cin, cout, (kh, kw), (sh, sw),
            padding=(_padding(ih, oh, kh, sh), _padding(iw, ow, kw, sw)),
            groups=groups, bias=entry["has_bias"],
        )
    ]  # fmt: skip
    if entry["bn"]:
        layers.append(nn.BatchNorm2d(cout))
    if entry["act"]:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval(), (cin, ih, iw)


def _check_buildable(layer_specs: Sequence[Any], cfg: LatencyConfig) -> None:
    """Refuse, in a second, a table that could not be timed or would leave out most of the cost."""
    if RUNTIMES[cfg.runtime].compiles_per_shape:
        raise LUTError("runtime 'compile' recompiles for every grid point (seconds each); build the table with "
                       "'torch' or 'onnxruntime'.")
    untimed = [(s.name, why) for s in layer_specs if (why := _untimed(s))]
    if untimed:  # the table times conv / linear layers only
        raise LUTError(f"layer {untimed[0][0]!r} is {untimed[0][1]} and the latency table cannot time it yet; "
                       "use latency_mode flops or measured.")


def _full_width_layers(entries: Sequence[Mapping[str, Any]],
                       cfg: LatencyConfig) -> tuple[list[tuple[LatencyMeter, nn.Module]], list[int]]:
    """One full-width module (and its meter) per distinct layer shape, and how often each shape occurs."""
    items: list[tuple[LatencyMeter, nn.Module]] = []
    counts: list[int] = []
    index: dict[str, int] = {}
    for e in entries:
        key = _shape_key(e)
        if key not in index:
            module, shape_in = _build_module(e, e["in_choices"][-1] if not e["tied"] else e["out_choices"][-1],
                                             e["out_choices"][-1])  # fmt: skip
            index[key] = len(items)
            items.append((LatencyMeter(cfg, shape_in), module))
            counts.append(0)
        counts[index[key]] += 1
    return items, counts


def _shape_key(entry: dict[str, Any]) -> str:
    keys = ("kind", "kernel_size", "stride", "conv_groups", "input_hw", "output_hw", "has_bias", "in_expand",
            "tied", "bn", "act", "in_choices", "out_choices")  # fmt: skip
    return json.dumps([entry[k] for k in keys])


class LatencyLUT:
    """Per-layer latency table of one network, for one runtime / device / thread count / batch size.

    Build with `LatencyLUT.build`, query with `predict_ms(kept)` (kept output channels per prune group;
    groups not named stay whole). Absolute milliseconds drift with the machine's load: use ratios
    (`predict_ms(kept) / predict_ms({})`) for budgets, and `prediction_error` to check it against reality.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self._layers = [_Layer(e) for e in data["layers"]]
        self.groups: dict[str, int] = dict(data["groups"])
        self.const_ms: float = float(data["const_ms"])
        self.scale: float = float(data.get("scale", 1.0))

    # ---- building -----------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        layer_specs: Sequence[Any],
        input_shape: Sequence[int],
        cfg: LatencyConfig,
        channel_choices: Mapping[str, Sequence[int]] | None = None,
        *,
        model: nn.Module | None = None,
        model_name: str | None = None,
        pruned: tuple[Mapping[str, int], nn.Module] | None = None,
        n_choices: int = DEFAULT_CHOICES,
        round_to: int = 1,
        progress: bool = True,
    ) -> LatencyLUT:
        """Time every conv / linear layer of `layer_specs` over a grid of kept channel counts.

        `channel_choices` maps a group name to the kept counts to time (the full count is always added);
        other groups get `n_choices` evenly spaced counts, multiples of `round_to` (pass the
        PruneConfig's). Layers of identical shape and grid are timed
        once. With `model` (the unpruned network the specs describe), the constant for the untimed rest
        of the network is calibrated on it, and with `pruned` (kept channels per group, a pruned copy of
        `model` with those counts) the scale as well; otherwise the constant is 0 until `calibrate`.
        """
        _check_buildable(layer_specs, cfg)
        input_shape = check_input_shape(input_shape)
        sizes = group_sizes(layer_specs)
        grids = cls._grids(sizes, channel_choices, n_choices, round_to)
        entries = cls._entries(layer_specs, sizes, grids)
        if not entries:
            raise LUTError("the layer specs contain no conv or linear layer to time.")
        t0 = time.perf_counter()
        cls._time_entries(entries, cfg, progress)
        data = {
            "format": LUT_FORMAT,
            "version": LUT_VERSION,
            "model_name": model_name,
            "specs_hash": specs_hash(layer_specs),
            "input_shape": list(input_shape),
            "latency": to_dict(cfg),
            "machine": machine_info(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_s": 0.0,
            "groups": sizes,
            "const_ms": 0.0,
            "scale": 1.0,
            "calibration": None,
            "layers": entries,
        }
        lut = cls(data)
        if model is not None:
            lut.calibrate(model, pruned=pruned)
        data["build_s"] = round(time.perf_counter() - t0, 3)
        return lut

    @staticmethod
    def _grids(
        sizes: Mapping[str, int], channel_choices: Mapping[str, Sequence[int]] | None, n: int, round_to: int
    ) -> dict[str, list[int]]:
        choices = dict(channel_choices or {})
        unknown = sorted(set(choices) - set(sizes))
        if unknown:
            raise LUTError(f"channel_choices names unknown group(s) {unknown}; known groups: {sorted(sizes)}.")
        grids = {}
        for g, full in sizes.items():
            given = choices.get(g)
            if given is None:
                grids[g] = default_choices(full, n, round_to)
                continue
            bad = [c for c in given if not (isinstance(c, int) and 1 <= c <= full)]
            if bad:
                raise LUTError(f"channel_choices[{g!r}]: {bad} outside 1..{full} (the group's channel count).")
            grids[g] = sorted(set(given) | {full})
        return grids

    @staticmethod
    def _entries(
        specs: Sequence[Any], sizes: Mapping[str, int], grids: Mapping[str, list[int]]
    ) -> list[dict[str, Any]]:
        entries = []
        functional_acts = not any(s.kind == "act" for s in specs)
        for i, s in enumerate(specs):
            if s.kind not in TIMED_KINDS:
                continue
            tied = s.kind == "conv" and s.conv_groups > 1 and s.conv_groups == s.in_channels == s.out_channels
            out_choices = grids[s.out_group] if s.out_group is not None else [s.out_channels]
            if tied:
                in_choices = [s.in_channels]  # follows the output count; one row
            else:
                in_choices = grids[s.in_group] if s.in_group is not None else [s.in_channels]
                if s.kind == "conv" and s.conv_groups > 1:
                    g = s.conv_groups
                    in_choices = _round_to_groups(in_choices, g, s.in_channels)
                    out_choices = _round_to_groups(out_choices, g, s.out_channels)
            bn, act = _block_flags(specs, i, functional_acts) if s.kind == "conv" else (False, False)
            entries.append(
                {
                    "name": s.name, "kind": s.kind, "in_group": None if tied else s.in_group,
                    "out_group": s.out_group, "tied": tied, "kernel_size": list(s.kernel_size),
                    "stride": list(s.stride), "conv_groups": s.conv_groups, "input_hw": list(s.input_hw),
                    "output_hw": list(s.output_hw), "has_bias": bool(s.has_bias), "in_expand": s.in_expand,
                    "bn": bn, "act": act, "in_choices": list(in_choices), "out_choices": list(out_choices),
                }
            )  # fmt: skip
        return entries

    @staticmethod
    def _time_entries(entries: list[dict[str, Any]], cfg: LatencyConfig, progress: bool) -> None:
        """Fill each entry's `ms` table; layers with the same shape and grid share one timing."""
        unique: dict[str, list[list[float]]] = {}
        todo = {}
        for e in entries:
            todo.setdefault(_shape_key(e), e)
        points = sum(len(e["in_choices"]) * len(e["out_choices"]) for e in todo.values())
        bar = progress_bar(total=points, desc="latency LUT", unit="pt", disable=not progress, leave=False)
        with torch_threads(cfg.threads):
            for key, e in todo.items():
                table = []
                for cin in e["in_choices"]:
                    row = []
                    for cout in e["out_choices"]:
                        module, shape = _build_module(e, cout if e["tied"] else cin, cout)
                        times = LatencyMeter(cfg, shape).time_calls(module)
                        row.append(round(statistics.median(times), 6))
                        bar.update(1)
                    table.append(row)
                unique[key] = table
        bar.close()
        for e in entries:
            e["ms"] = unique[_shape_key(e)]

    # ---- calibration and queries ---------------------------------------------------------------------------
    def calibrate(
        self,
        model: nn.Module,
        rounds: int | None = None,
        pruned: tuple[Mapping[str, int], nn.Module] | None = None,
    ) -> float:
        """Fit `predict_ms = const + scale * sum(table's layers)` to whole-model timings; returns the constant.

        The unpruned model (and the `pruned` copy: its kept channels per group and the pruned network) are
        timed in round-robin with the full-width layer modules, so all see the same machine load. Each
        model's time is expressed in table units as its per-round ratio to the layers' sum (median) times the
        table's full-width sum, which stays consistent with the table even if the machine's speed drifted
        since it was timed. One model fixes the constant (scale 1); two fix both. A fit whose scale is not
        positive (the pruned copy timed no faster than the unpruned one) falls back to the one-point constant.
        """
        cfg = self.latency_config
        rounds = max(cfg.rounds, 20) if rounds is None else rounds
        shape = tuple(self.data["input_shape"])
        items: list[tuple[LatencyMeter, nn.Module]] = [(LatencyMeter(cfg, shape), model)]
        if pruned is not None:
            self._check_kept(pruned[0])
            items.append((LatencyMeter(cfg, shape), pruned[1]))
        first_layer = len(items)
        layer_items, counts = _full_width_layers(self.data["layers"], cfg)
        times = time_round_robin(items + layer_items, rounds)
        layer_t = [sum(c * times[k + first_layer][r] for k, c in enumerate(counts)) for r in range(rounds)]

        def in_table_units(model_t: list[float]) -> float:
            return statistics.median(m / max(s, 1e-9) for m, s in zip(model_t, layer_t, strict=True)) * table_ms

        table_ms = sum(layer.predict({}) for layer in self._layers)
        full_ms = in_table_units(times[0])
        scale, const = 1.0, full_ms - table_ms
        calibration: dict[str, Any] = {}
        if pruned is not None:
            pruned_table = sum(layer.predict(pruned[0]) for layer in self._layers)
            pruned_ms = in_table_units(times[1])
            calibration.update(pruned_ms=round(pruned_ms, 6), pruned_layers_ms=round(pruned_table, 6),
                               pruned_kept=dict(pruned[0]))  # fmt: skip
            fit_scale = (full_ms - pruned_ms) / max(table_ms - pruned_table, 1e-9)
            # a negative constant is fine: standalone calls can cost more than inside the network
            calibration["two_point"] = table_ms - pruned_table > 1e-3 * table_ms and fit_scale > 0
            if calibration["two_point"]:
                scale, const = fit_scale, full_ms - fit_scale * table_ms
        self.scale, self.const_ms = round(scale, 6), round(const, 6)
        self.data["scale"], self.data["const_ms"] = self.scale, self.const_ms
        self.data["calibration"] = {
            "model_ms": round(full_ms, 6),
            "model_ms_now": round(statistics.median(times[0]), 6),
            "layers_ms": round(table_ms, 6),
            "layers_ms_now": round(statistics.median(layer_t), 6),
            "model_to_layers": round(full_ms / table_ms, 4),
            "rounds": rounds,
            **calibration,
        }
        return self.const_ms

    @property
    def latency_config(self) -> LatencyConfig:
        """The settings the table was timed with."""
        return LatencyConfig(**self.data["latency"])

    def _check_kept(self, kept: Mapping[str, int]) -> None:
        for g in kept:
            if g not in self.groups:
                raise LUTError(
                    f"group {g!r} is not in this latency table (it has {len(self.groups)} groups, e.g. "
                    f"{sorted(self.groups)[:3]}); rebuild it for this model with `autocompress lut build`."
                )

    def layer_ms(self, kept: Mapping[str, int]) -> dict[str, float]:
        """Predicted latency of each timed layer (ms, the calibrated scale applied) at the kept channel counts."""
        self._check_kept(kept)
        return {layer.name: self.scale * layer.predict(kept) for layer in self._layers}

    def group_ms(self, kept: Mapping[str, int]) -> dict[str, float]:
        """Predicted latency (ms) per prune group: each layer counts for the group of its output channels
        (its input group when its outputs are fixed, e.g. the classifier); the constant is not included."""
        self._check_kept(kept)
        out: dict[str, float] = dict.fromkeys(self.groups, 0.0)
        for layer in self._layers:
            owner = layer.out_group if layer.out_group is not None else layer.in_group
            if owner is not None:
                out[owner] += self.scale * layer.predict(kept)
        return out

    def predict_ms(self, kept: Mapping[str, int]) -> float:
        """Predicted latency (ms per call of `batch_size` images) with `kept` output channels per group, floored
        at MIN_PREDICTED_MS: the fitted constant may be negative, and a table of microsecond layers timed under
        load can extrapolate a heavily pruned network below zero, which no reward or speedup can use."""
        self._check_kept(kept)
        return max(MIN_PREDICTED_MS, self.const_ms + self.scale * sum(layer.predict(kept) for layer in self._layers))

    def prediction_error(
        self,
        samples: Iterable[tuple[Mapping[str, int], nn.Module]],
        meter: LatencyMeter,
        baseline: nn.Module | None = None,
    ) -> PredictionReport:
        """Compare predictions with whole-model measurements of (kept, pruned model) samples.

        With `baseline` (the unpruned model), each sample is also timed against it in alternation and
        the predicted speedup `predict_ms({}) / predict_ms(kept)` is compared with the measured one.
        """
        if to_dict(meter.cfg) != self.data["latency"]:
            raise LUTError(
                f"the meter's settings {to_dict(meter.cfg)} differ from the table's {self.data['latency']}."
            )
        rows = []
        full_ms = self.predict_ms({})
        for kept, model in samples:
            predicted = self.predict_ms(kept)
            row = {"predicted_ms": predicted}
            if baseline is not None:
                cmp = meter.compare(baseline, model)
                row.update(measured_ms=cmp.latency_ms, measured_speedup=cmp.speedup,
                           predicted_speedup=full_ms / predicted)  # fmt: skip
            else:
                row["measured_ms"] = meter.measure(model).median_ms
            row["rel_error"] = (predicted - row["measured_ms"]) / row["measured_ms"]
            rows.append(row)
        if not rows:
            raise LUTError("prediction_error needs at least one (kept, model) sample.")
        errs = [abs(r["rel_error"]) for r in rows]
        sp = None
        if baseline is not None:
            sp = statistics.fmean(
                abs(r["predicted_speedup"] - r["measured_speedup"]) / r["measured_speedup"] for r in rows
            )
        return PredictionReport(len(rows), statistics.fmean(errs), max(errs), sp, rows)

    # ---- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON atomically (temp file in the same folder, then rename)."""
        return atomic_write_text(path, json.dumps(self.data, indent=1))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        layer_specs: Sequence[Any] | None = None,
        cfg: LatencyConfig | None = None,
        input_shape: Sequence[int] | None = None,
        allow_other_machine: bool = False,
    ) -> LatencyLUT:
        """Read a table; with `layer_specs` / `cfg` / `input_shape`, check it was built for them."""
        path = Path(path)
        if not path.is_file():
            raise LUTError(f"latency table {str(path)!r} does not exist; build it with `autocompress lut build`.")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LUTError(f"{path}: not a latency table (invalid JSON: {exc}).") from None
        if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
            raise LUTError(f"{path}: not an autocompress latency table (no format {LUT_FORMAT!r}).")
        if data.get("version") != LUT_VERSION:
            raise LUTError(
                f"{path}: table version {data.get('version')} is not supported (expected {LUT_VERSION}); rebuild it."
            )
        try:
            lut = cls(data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise LUTError(f"{path}: damaged latency table ({type(exc).__name__}: {exc}); rebuild it.") from None
        lut.check_compatible(layer_specs, cfg, input_shape, allow_other_machine, where=str(path))
        return lut

    def check_compatible(
        self,
        layer_specs: Sequence[Any] | None = None,
        cfg: LatencyConfig | None = None,
        input_shape: Sequence[int] | None = None,
        allow_other_machine: bool = False,
        where: str = "latency table",
    ) -> None:
        """Raise LUTError naming the mismatch if the table was built for another model, settings or machine."""
        fix = "rebuild it with `autocompress lut build` for this model and these settings."
        if layer_specs is not None and specs_hash(layer_specs) != self.data["specs_hash"]:
            ours = {e["name"]: (e["in_choices"][-1], e["out_choices"][-1]) for e in self.data["layers"]}
            theirs = {s.name: (s.in_channels, s.out_channels) for s in layer_specs if s.kind in TIMED_KINDS}
            diff = sorted(set(ours.items()) ^ set(theirs.items()))[:4]
            name = self.data.get("model_name") or "another model"
            raise LUTError(
                f"{where} was built for {name} (different layers, e.g. {diff or 'groups/shapes differ'}); {fix}"
            )
        if cfg is not None:
            theirs, ours = to_dict(cfg), self.data["latency"]
            diff = {k: (ours.get(k), v) for k, v in theirs.items() if k not in ("warmup", "rounds") and ours.get(k) != v}
            if diff:
                text = ", ".join(f"{k}: table {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
                raise LUTError(f"{where} was timed with other settings ({text}); {fix}")
        if input_shape is not None and list(input_shape) != self.data["input_shape"]:
            raise LUTError(f"{where} was built for input shape {self.data['input_shape']}, not {list(input_shape)}; {fix}")
        if not allow_other_machine and self.data["machine"].get("cpu") != machine_info()["cpu"]:
            raise LUTError(
                f"{where} was timed on another CPU ({self.data['machine'].get('cpu')!r}); latency does not transfer "
                f"between machines: {fix}"
            )

    @classmethod
    def load_or_build(
        cls,
        path: str | os.PathLike[str],
        layer_specs: Sequence[Any],
        input_shape: Sequence[int],
        cfg: LatencyConfig,
        model: nn.Module | None = None,
        **build_kwargs: Any,
    ) -> LatencyLUT:
        """The table at `path` if it fits (checked), else build it (calibrated on `model`) and save it there."""
        if Path(path).is_file():
            return cls.load(path, layer_specs, cfg, input_shape)
        lut = cls.build(layer_specs, input_shape, cfg, model=model, **build_kwargs)
        lut.save(path)
        return lut
