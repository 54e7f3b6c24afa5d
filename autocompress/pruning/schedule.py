"""A pruning schedule: per-group channel counts for one model, as versioned JSON.

The schedule is the search's product and the deployment's input, so it names the model it was made for
(zoo name + a structure hash of the unpruned network), lists every group with its member layers and its
channels before/after, and carries the budget and the measured metrics. Loading validates everything and
fails with a message that names the offending groups and says how to fix them.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.atomic import atomic_write_text
from autocompress.config import AutocompressError, read_capped

FORMAT = "autocompress.schedule"
VERSION = 5
"""Newest version. 2 added the optional "quantization" block (per-layer precision), 3 the optional "sparsity"
block (per-layer share of weights zeroed), 4 removed residual blocks (a group with 0 channels after and
prune_ratio 1.0: the block it is the inner width of goes), 5 the quantization block's optional "reduce_range":
true (7-bit weights, for CPUs without VNNI). A file is written with the lowest version that holds it (3 only with
a sparsity block, 4 only with a removed block, 5 only with reduce_range), so that earlier readers keep reading
every schedule they can apply and refuse the others by their version, which says what to do better than an
unknown key; version 1 files (every layer FP32), 2, 3 and 4 files still load."""
READABLE_VERSIONS = (1, 2, 3, 4, 5)
_TOP_KEYS = {"format", "version", "model", "groups", "budget", "metrics", "quantization", "sparsity"}
_QUANT_KEYS = {"layers", "calib_images", "per_channel", "calibration"}
_QUANT_OPTIONAL = {"reduce_range"}
_SPARSITY_KEYS = {"method", "groups", "layers"}
SPARSITY_METHODS = ("l1_unstructured",)
_PRECISIONS = ("fp32", "int8")
_CALIBRATIONS = ("minmax", "entropy", "percentile")
_GROUP_KEYS = {"name", "members", "channels_before", "channels_after", "prune_ratio"}
MAX_BYTES = 64 * 1024 * 1024
"""Largest schedule file read: a real one is kilobytes; anything near this is not a schedule."""
MAX_DEPTH = 32
"""Deepest nesting allowed inside 'budget' / 'metrics' (json.dumps recurses; a deep one could not be saved)."""
MAX_CHANNELS = 2**31 - 1
"""No layer has more channels; a bound also keeps the ratio/channel check exact in floating point."""


class ScheduleError(AutocompressError, ValueError):
    """A schedule file is malformed or does not fit the model; the message names the groups and the fix."""


@dataclass(frozen=True)
class GroupEntry:
    """One prune group of the schedule."""

    name: str
    members: tuple[str, ...]
    channels_before: int
    channels_after: int
    prune_ratio: float
    """Share of the group's channels removed, as requested (channels_after is what was applied)."""


@dataclass
class Schedule:
    """Per-group channel counts for one model, with its budget and measured metrics."""

    model_name: str
    structure_hash: str
    groups: list[GroupEntry]
    budget: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    """None: every layer FP32. Else {"layers": {layer name: "fp32" | "int8"}, "calib_images": int,
    "per_channel": bool, "calibration": "minmax" | "entropy" | "percentile"[, "reduce_range": true]}: the ONNX
    Runtime static INT8 export to deploy (see `autocompress.quantize.quantize_layers`); reduce_range absent means
    8-bit weights."""
    sparsity: dict[str, Any] | None = None
    """None: no weight is zeroed. Else {"method": "l1_unstructured", "groups": {group: sparsity}, "layers":
    {layer: sparsity}}: each layer's smallest-magnitude weights zeroed (`autocompress.pruning.sparsity`); the
    groups' values are the search's per-group choice, the layers' what `apply_schedule` applies."""

    @property
    def version(self) -> int:
        """The format version this schedule needs (see VERSION)."""
        if self.quantization and self.quantization.get("reduce_range"):
            return 5
        if self.dropped_groups():
            return 4
        return 3 if self.sparsity else 2

    def dropped_groups(self) -> list[str]:
        """Groups whose residual block the schedule removes (0 channels after)."""
        return [g.name for g in self.groups if g.channels_after == 0]

    @property
    def sparse(self) -> bool:
        """Whether deploying this schedule zeroes any weight."""
        return bool(self.sparsity)

    def layer_sparsity(self) -> dict[str, float]:
        """Layer -> share of its weights zeroed ({} when the schedule zeroes none)."""
        return dict(self.sparsity["layers"]) if self.sparsity else {}

    def group_sparsity(self) -> dict[str, float]:
        """Group -> the sparsity the search chose for it ({} when the schedule zeroes none)."""
        return dict(self.sparsity["groups"]) if self.sparsity else {}

    def layer_precision(self) -> dict[str, str]:
        """Quantizable layer -> "fp32" | "int8" ({} when the schedule does not quantize)."""
        return dict(self.quantization["layers"]) if self.quantization else {}

    @property
    def quantized(self) -> bool:
        """Whether deploying this schedule quantizes any layer to INT8."""
        return any(p == "int8" for p in self.layer_precision().values())

    def prune_ratios(self) -> dict[str, float]:
        """group name -> prune ratio (share of channels removed)."""
        return {g.name: g.prune_ratio for g in self.groups}

    def kept_channels(self) -> dict[str, int]:
        """group name -> channels kept (what `apply_schedule` builds)."""
        return {g.name: g.channels_after for g in self.groups}

    @classmethod
    def from_pruner(
        cls,
        pruner: Any,
        prune_ratios: Mapping[str, float],
        model_name: str,
        budget: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        quantization: Mapping[str, Any] | None = None,
        sparsity: Mapping[str, Any] | None = None,
    ) -> Schedule:
        """The schedule `pruner.prune(prune_ratios)` applies, covering every group of the model.

        Analytic `macs`/`params` (and their ratios to the unpruned model) are filled in unless given.
        `quantization` / `sparsity` (the blocks, see the fields) are kept only when they quantize / zero a layer.
        """
        kept = pruner.kept_channels(prune_ratios)
        entries = [
            GroupEntry(
                name=g.name,
                members=tuple(g.members),
                channels_before=g.channels,
                channels_after=int(kept[g.name]),
                prune_ratio=float(prune_ratios.get(g.name, 0.0)),
            )
            for g in pruner.all_groups
        ]
        cost = pruner.cost_model
        auto = {
            "macs": cost.macs(kept),
            "params": cost.params(kept),
            "macs_ratio": cost.macs(kept) / cost.base_macs,
            "params_ratio": cost.params(kept) / cost.base_params,
        }
        return cls(
            model_name=model_name,
            structure_hash=pruner.structure_hash,
            groups=entries,
            budget=dict(budget or {}),
            metrics={**auto, **dict(metrics or {})},
            quantization=_quantization(quantization, "schedule") if quantization else None,
            sparsity=_sparsity(sparsity, "schedule") if sparsity else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "model": {"name": self.model_name, "structure_hash": self.structure_hash},
            "groups": [
                {
                    "name": g.name,
                    "members": list(g.members),
                    "channels_before": g.channels_before,
                    "channels_after": g.channels_after,
                    "prune_ratio": g.prune_ratio,
                }
                for g in self.groups
            ],
            "budget": self.budget,
            "metrics": self.metrics,
            **({"quantization": self.quantization} if self.quantization else {}),
            **({"sparsity": self.sparsity} if self.sparsity else {}),
        }

    def to_json(self) -> str:
        try:
            return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=_plain)
        except ValueError as exc:
            raise ScheduleError(f"schedule has a value JSON cannot hold ({exc}); metrics must be finite.") from None
        except RecursionError:
            raise ScheduleError("schedule budget/metrics are nested too deeply to save; keep them flat.") from None

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "schedule") -> Schedule:
        """Parse and validate schedule JSON; any problem -> ScheduleError naming `source`."""
        if isinstance(text, (str, bytes)) and len(text) > MAX_BYTES:
            raise ScheduleError(f"{source}: {len(text)} characters is larger than any schedule ({_TOO_BIG}).")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8-sig")  # UTF-8 only (json.loads would guess UTF-16/32); a BOM is fine
            except UnicodeDecodeError as exc:
                raise ScheduleError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); {_NOT_TEXT}") from None
        try:
            data = json.loads(text)
        except RecursionError:
            raise ScheduleError(f"{source}: JSON nested too deeply to read; {_NOT_TEXT}") from None
        except (ValueError, TypeError) as exc:  # JSONDecodeError, and int literals over Python's digit limit
            raise ScheduleError(f"{source}: not valid JSON ({exc}).") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "schedule") -> Schedule:
        if not isinstance(data, dict):
            raise ScheduleError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        if data.get("format") != FORMAT:
            raise ScheduleError(
                f"{source}: 'format' is {data.get('format')!r}, not {FORMAT!r}; this is not an autocompress "
                "schedule (write one with `autocompress schedule` or `autocompress search`)."
            )
        version = data.get("version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise ScheduleError(
                f"{source}: schedule version {version!r} is not supported; this autocompress reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Re-export the schedule with this version."
            )
        if version == 1 and "quantization" in data:
            raise ScheduleError(f"{source}: 'quantization' needs schedule version 2; set \"version\": 2.")
        if version < 3 and "sparsity" in data:
            raise ScheduleError(f"{source}: 'sparsity' needs schedule version 3; set \"version\": 3.")
        if version < 5 and isinstance(data.get("quantization"), Mapping) and "reduce_range" in data["quantization"]:
            raise ScheduleError(f"{source}: quantization.reduce_range needs schedule version 5; set \"version\": 5.")
        missing = sorted({"model", "groups"} - set(data))
        unknown = sorted(set(data) - _TOP_KEYS)
        if missing or unknown:
            raise ScheduleError(
                f"{source}: missing key(s) {missing} / unknown key(s) {unknown}; a schedule has {sorted(_TOP_KEYS)}."
            )
        model = data["model"]
        if not (isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("structure_hash"), str)):
            raise ScheduleError(f"{source}: 'model' must be {{\"name\": str, \"structure_hash\": str}}.")
        for key in ("budget", "metrics"):
            if not isinstance(data.get(key, {}), dict):
                raise ScheduleError(f"{source}: {key!r} must be a JSON object.")
            if _depth(data.get(key, {}), MAX_DEPTH) > MAX_DEPTH:
                raise ScheduleError(f"{source}: {key!r} is nested more than {MAX_DEPTH} levels deep; keep it flat.")
        groups = data["groups"]
        if not isinstance(groups, list) or not groups:
            raise ScheduleError(f"{source}: 'groups' must be a non-empty list of group entries.")
        entries = [_entry(g, i, source) for i, g in enumerate(groups)]
        gone = [e.name for e in entries if e.channels_after == 0]
        if gone and version < 4:
            raise ScheduleError(f"{source}: group(s) {_few(gone)} keep 0 channels (their residual blocks removed), "
                                "which needs schedule version 4; set \"version\": 4.")
        dupes = sorted(n for n, c in Counter(e.name for e in entries).items() if c > 1)  # linear: 100k+ groups
        if dupes:
            more = f" and {len(dupes) - 6} more" if len(dupes) > 6 else ""
            raise ScheduleError(f"{source}: group(s) {dupes[:6]}{more} appear more than once; keep one entry per group.")
        quant, sparse = data.get("quantization"), data.get("sparsity")
        sparse = _sparsity(sparse, source) if sparse is not None else None
        strangers = sorted(set(sparse["groups"]) - {e.name for e in entries}) if sparse else []
        if strangers:
            raise ScheduleError(f"{source}: sparsity.groups names {_few(strangers)}, which are not in 'groups'.")
        return cls(model["name"], model["structure_hash"], entries, dict(data.get("budget", {})),
                   dict(data.get("metrics", {})), _quantization(quant, source) if quant is not None else None, sparse)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically (a temp file in the same folder, then rename)."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schedule:
        """Read and validate a schedule file (at most MAX_BYTES, so a wrong path cannot eat memory)."""
        path = Path(path)
        if not path.is_file():
            raise ScheduleError(f"schedule file {str(path)!r} does not exist.")
        try:
            raw = read_capped(path, MAX_BYTES)
        except OSError as exc:
            raise ScheduleError(f"schedule file {str(path)!r} cannot be read ({exc.strerror or exc}).") from None
        if raw is None:
            raise ScheduleError(f"{path}: larger than {MAX_BYTES // 2**20} MB, far beyond any schedule ({_TOO_BIG}).")
        return cls.from_json(raw, str(path))


_NOT_TEXT = "this is not a schedule file (write one with `autocompress schedule` or `autocompress search`)."
_TOO_BIG = "check the path; write a schedule with `autocompress schedule` or `autocompress search`"


def _depth(x: Any, cap: int) -> int:
    """Nesting depth of JSON containers in `x`, counted no further than cap + 1 (so it is cheap on deep input)."""
    if cap < 0 or not isinstance(x, (dict, list)):
        return 0
    children = x.values() if isinstance(x, dict) else x
    return 1 + max((_depth(c, cap - 1) for c in children), default=0)


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _quantization(q: Any, source: str) -> dict[str, Any] | None:
    """A validated copy of a "quantization" block; None when it quantizes nothing."""
    where = f"{source}: quantization"
    if not isinstance(q, Mapping) or not _QUANT_KEYS <= set(q) <= _QUANT_KEYS | _QUANT_OPTIONAL:
        raise ScheduleError(f"{where} must be an object with the keys {sorted(_QUANT_KEYS)} (and optionally "
                            f"{sorted(_QUANT_OPTIONAL)}).")
    layers = q["layers"]
    if not isinstance(layers, Mapping) or not all(isinstance(k, str) and k for k in layers):
        raise ScheduleError(f"{where}.layers must map layer names to \"fp32\" or \"int8\".")
    bad = sorted(k for k, v in layers.items() if v not in _PRECISIONS)
    if bad:
        raise ScheduleError(f"{where}.layers: {_few(bad)} have a precision other than \"fp32\" or \"int8\".")
    n = q["calib_images"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
        raise ScheduleError(f"{where}.calib_images must be an integer in [1, 100000], got {n!r}.")
    if not isinstance(q["per_channel"], bool):
        raise ScheduleError(f"{where}.per_channel must be true or false.")
    if q["calibration"] not in _CALIBRATIONS:
        raise ScheduleError(f"{where}.calibration must be one of {', '.join(_CALIBRATIONS)}.")
    if not isinstance(q.get("reduce_range", False), bool):
        raise ScheduleError(f"{where}.reduce_range must be true or false.")
    if not any(v == "int8" for v in layers.values()):
        return None
    block = {"layers": dict(layers), "calib_images": n, "per_channel": q["per_channel"], "calibration": q["calibration"]}
    return {**block, "reduce_range": True} if q.get("reduce_range") else block


def _shares(values: Any, where: str) -> dict[str, float]:
    """A mapping of names to sparsities in [0, 1), checked."""
    if not isinstance(values, Mapping) or not all(isinstance(k, str) and k for k in values):
        raise ScheduleError(f"{where} must map names to sparsities (shares of weights zeroed, in [0, 1)).")
    bad = sorted(k for k, v in values.items()
                 if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or not 0 <= v < 1)
    if bad:
        raise ScheduleError(f"{where}: {_few(bad)} have a sparsity outside [0, 1) (share of weights zeroed).")
    return {k: float(v) for k, v in values.items()}


def _sparsity(block: Any, source: str) -> dict[str, Any] | None:
    """A validated copy of a "sparsity" block; None when it zeroes nothing."""
    where = f"{source}: sparsity"
    if not isinstance(block, Mapping) or set(block) != _SPARSITY_KEYS:
        raise ScheduleError(f"{where} must be an object with exactly the keys {sorted(_SPARSITY_KEYS)}.")
    if block["method"] not in SPARSITY_METHODS:
        raise ScheduleError(f"{where}.method {block['method']!r} is not one of {', '.join(SPARSITY_METHODS)}.")
    groups, layers = _shares(block["groups"], f"{where}.groups"), _shares(block["layers"], f"{where}.layers")
    if not any(v > 0 for v in layers.values()):
        return None
    return {"method": block["method"], "groups": groups, "layers": layers}


def _entry(g: Any, i: int, source: str) -> GroupEntry:
    where = f"{source}: groups[{i}]"
    if not isinstance(g, dict):
        raise ScheduleError(f"{where} must be an object with keys {sorted(_GROUP_KEYS)}.")
    name = g.get("name")
    if isinstance(name, str):
        where = f"{source}: group {name!r}"
    if set(g) != _GROUP_KEYS:
        raise ScheduleError(
            f"{where}: missing {sorted(_GROUP_KEYS - set(g))} / unknown {sorted(set(g) - _GROUP_KEYS)} key(s); "
            f"each group entry has exactly {sorted(_GROUP_KEYS)}."
        )
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"{where}: 'name' must be a non-empty string (the group's root layer).")
    members = g["members"]
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise ScheduleError(f"{where}: 'members' must be a list of layer names.")
    before, after, ratio = g["channels_before"], g["channels_after"], g["prune_ratio"]
    for key, v, low in (("channels_before", before, 1), ("channels_after", after, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= MAX_CHANNELS:
            raise ScheduleError(f"{where}: {key!r} must be an integer in [{low}, {MAX_CHANNELS}], got {v!r}.")
    if after > before:
        raise ScheduleError(f"{where}: channels_after {after} > channels_before {before}; a group cannot grow.")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 <= ratio <= 1:
        raise ScheduleError(
            f"{where}: prune_ratio {ratio!r} must be a number in [0, 1] (share of channels removed; 1 removes the "
            "residual block the group is the inner width of)."
        )
    if (after == 0) != (ratio == 1):
        raise ScheduleError(f"{where}: prune_ratio {ratio!r} with channels_after {after}: a removed block has both "
                            "prune_ratio 1 and channels_after 0, any other group neither; fix one of them.")
    _check_ratio_matches(where, before, after, float(ratio))
    return GroupEntry(name, tuple(members), before, after, float(ratio))


def _check_ratio_matches(where: str, before: int, after: int, ratio: float) -> None:
    """Refuse a prune_ratio that no pruning config turns into channels_after.

    The pipeline prunes by ratio, `apply_schedule` by channel count: if they disagree, the two build
    different networks. The schedule does not record round_to / min_channels, so only what holds for
    every setting is checked (as `kept_count` computes it): a ratio that removes no channel keeps the group
    whole, and rounding to any multiple R keeps max(R, keep - R/2) >= 2/3 of the unrounded count `keep`;
    min_channels only raises it.
    """
    keep = math.floor(before * (1.0 - ratio) + 0.5)  # kept_count before rounding
    if keep >= before and after != before:
        raise ScheduleError(
            f"{where}: prune_ratio {ratio!r} removes none of the {before} channels but channels_after is {after}; "
            "fix one of them (re-export the schedule with `autocompress schedule`, or edit prune_ratio to "
            f"{1 - after / before:.6g})."
        )
    if keep < before and 3 * after < 2 * keep:
        raise ScheduleError(
            f"{where}: prune_ratio {ratio!r} keeps about {keep} of {before} channels, but channels_after is {after} "
            f"(no rounding goes below {math.ceil(2 * keep / 3)}); fix one of them (re-export the schedule with "
            f"`autocompress schedule`, or edit prune_ratio to {1 - after / before:.6g})."
        )


def check_fits(schedule: Schedule, pruner: Any) -> None:
    """Raise ScheduleError unless `schedule` was made for the model behind `pruner`."""
    model_groups = {g.name: g for g in pruner.all_groups}
    unknown = [e.name for e in schedule.groups if e.name not in model_groups]
    missing = [n for n in model_groups if n not in {e.name for e in schedule.groups}]
    resized = [
        f"{e.name} ({e.channels_before} channels in the schedule, {model_groups[e.name].channels} in the model)"
        for e in schedule.groups
        if e.name in model_groups and e.channels_before != model_groups[e.name].channels
    ]
    if unknown or missing or resized:
        parts = []
        if unknown:
            parts.append(f"groups not in this model: {_few(unknown)}")
        if missing:
            parts.append(f"model groups missing from the schedule: {_few(missing)}")
        if resized:
            parts.append(f"groups of another size: {_few(resized)}")
        raise ScheduleError(
            f"schedule for {schedule.model_name!r} does not fit this model ({'; '.join(parts)}); "
            "apply it to the model it was made for, or make a new one with `autocompress schedule`."
        )
    blockless = [name for name in schedule.dropped_groups() if name not in getattr(pruner, "droppable", {})]
    if blockless:
        raise ScheduleError(
            f"schedule for {schedule.model_name!r} removes group(s) {_few(blockless)} whole, but in this model they are "
            "not the inner width of a residual block with an identity shortcut; apply it to the model it was made for."
        )
    sparse_layers = {s.name for s in pruner.layer_specs if s.kind in ("conv", "linear")}
    strangers = sorted(set(schedule.layer_sparsity()) - sparse_layers)
    if strangers:
        raise ScheduleError(
            f"schedule for {schedule.model_name!r} zeroes weights of layers this model has no conv or linear "
            f"layer for: {_few(strangers)}; apply it to the model it was made for."
        )
    if schedule.structure_hash != pruner.structure_hash:
        raise ScheduleError(
            f"schedule was made for a model with structure hash {schedule.structure_hash}, this model has "
            f"{pruner.structure_hash} (same groups, different layers elsewhere, e.g. the number of classes or "
            "input channels); apply it to the model it was made for."
        )


def _few(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")
