"""Experiment configuration: frozen dataclasses, loaded from YAML with validation.

Every part of autocompress receives the slice of configuration it needs as one of these
dataclasses, passed down explicitly. This module imports nothing else of ours.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SHARED_ENV_VAR = "AUTOCOMPRESS_SHARED"
DATA_ROOT_ENV_VAR = "AUTOCOMPRESS_DATA_ROOT"


class AutocompressError(Exception):
    """Base of every error a user can cause; the CLI prints its message without a traceback."""


class ConfigError(AutocompressError, ValueError):
    """A configuration value is malformed; the message names the field and the fix."""


def default_data_root() -> str:
    """The data root: $AUTOCOMPRESS_DATA_ROOT, else ./data."""
    return os.environ.get(DATA_ROOT_ENV_VAR, "./data")


def shared_dir() -> Path:
    """The read-only shared folder (datasets, pretrained weights): $AUTOCOMPRESS_SHARED, else ../shared."""
    return Path(os.environ.get(SHARED_ENV_VAR, "../shared"))


@dataclass(frozen=True)
class ModelConfig:
    """Which network to compress."""

    name: str = "tiny_cnn"
    """Zoo name (`autocompress models` lists them) or `tv:<torchvision name>`."""
    num_classes: int = 10
    """Classifier outputs."""
    in_channels: int = 3
    """Input image channels (1 for Fashion-MNIST)."""
    weights: str | None = None
    """Path to a state_dict (.pth) or an autocompress checkpoint; None keeps the random init."""


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split and loaded."""

    name: str = "digits"
    """digits (embedded, no download), cifar10, cifar100, fashion_mnist, cifar10_subset, cifar10_jpeg,
    imagefolder."""
    root: str = field(default_factory=default_data_root)
    """Folder the dataset lives in ($AUTOCOMPRESS_DATA_ROOT, else ./data)."""
    val_size: int = 5000
    """Images carved from the training set as the held-out validation split (AMC uses 5,000)."""
    batch_size: int = 128
    """Batch size of the train / eval loaders."""
    num_workers: int = 0
    """DataLoader worker processes."""
    augment: bool = True
    """Standard augmentation (random crop + flip where it makes sense) on the training split."""
    seed: int = 0
    """Seed of the train/val split."""
    image_size: int | None = None
    """imagefolder only: resize + centre-crop (random-resized-crop when training) to this size; None keeps
    the images' native size (they must then share one size)."""


@dataclass(frozen=True)
class PruneConfig:
    """How a per-group prune ratio becomes a physically smaller network."""

    scope: Literal["all", "internal"] = "all"
    """all: every prunable group; internal: only channels inside residual blocks (AMC's ResNet choice)."""
    criterion: Literal["l1", "l2", "bn_scale", "fpgm", "random"] = "l1"
    """Which channels go."""
    round_to: int = 1
    """Kept channel counts are rounded to a multiple of this (8 keeps ONNX Runtime's fast kernels)."""
    min_channels: int = 1
    """Never keep fewer channels than this in a group."""
    reconstruct: bool = False
    """Refit the next layer by least squares on sampled feature maps (He et al. 2017), as AMC does."""
    reconstruct_samples: int = 400
    """Images used for least-squares reconstruction."""


@dataclass(frozen=True)
class LatencyConfig:
    """How inference time is measured."""

    runtime: Literal["torch", "onnxruntime", "compile"] = "torch"
    """torch (eager), onnxruntime (needs the `onnx` extra) or compile (torch.compile; slow to start)."""
    device: str = "cpu"
    """cpu or cuda (CUDA-event timing)."""
    threads: int = 1
    """Intra-op threads; 1 gave a coefficient of variation ~0.03 here, 2 gave 0.1-0.8."""
    batch_size: int = 1
    """Images per timed call."""
    warmup: int = 5
    """Untimed calls before timing."""
    rounds: int = 20
    """Timed calls (interleaved with the baseline when comparing)."""


@dataclass(frozen=True)
class EnvConfig:
    """The compression environment: budget, action range, reward, evaluation."""

    budget_kind: Literal["macs", "params", "latency"] = "macs"
    """Which resource the budget limits."""
    budget: float = 0.5
    """Fraction of the unpruned resource allowed, in (0, 1]; for latency 0.5 means a 2x speedup."""
    min_ratio: float = 0.0
    """Smallest prune ratio (share of a group's channels removed) an action maps to."""
    max_ratio: float = 0.8
    """Largest prune ratio an action maps to; must be < 1."""
    reward: str = "acc"
    """Reward function by name: acc, acc_flops_log, acc_latency, acc_latency_linear."""
    reward_kwargs: Mapping[str, float] = field(default_factory=dict)
    """Extra arguments of the reward function (e.g. w, lam)."""
    latency_mode: Literal["flops", "lut", "measured"] = "flops"
    """flops: no timing (reproducible); lut: predicted from the look-up table; measured: timed each episode."""
    val_images: int = 1000
    """Held-out validation images scored at the end of each episode (preloaded as tensors)."""
    eval_batch_size: int = 250
    """Batch size when scoring the validation images."""
    eval_runtime: Literal["torch", "onnxruntime"] = "torch"
    """Score candidates in eager PyTorch, or in ONNX Runtime (`onnx` extra; 8-40% less CPU per evaluation here)."""
    bn_recalib_batches: int = 0
    """Training batches used to re-estimate BatchNorm statistics after pruning (0 = off)."""
    bn_recalib_batch_size: int = 128
    """Images per BatchNorm recalibration batch."""
    prune: PruneConfig = field(default_factory=PruneConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    lut_path: str | None = None
    """Latency look-up table JSON (built and saved there if missing) for latency_mode=lut."""
    lut_feedback: int = 20
    """Latency budget with latency_mode=measured: the wall multiplies the table's predicted latency by the
    median ratio of measured to predicted latency over the last this-many measured episodes, so the budget
    holds for what is measured, not for what the table predicts (0: trust the table)."""


@dataclass(frozen=True)
class DDPGConfig:
    """DDPG as in AMC (He et al. 2018); defaults are the paper's."""

    hidden: int = 300
    lr_actor: float = 1e-4
    """Keep it at 1e-4 for searches past ~100 episodes: at 1e-3 with 4 updates per step the actor runs to the
    sigmoid's edge (every ratio at max_ratio) after ~30 learning episodes on ResNet-56 (docs/BENCHMARKS.md)."""
    lr_critic: float = 1e-3
    tau: float = 0.01
    """Soft target update rate."""
    batch_size: int = 64
    warmup_episodes: int = 100
    """Episodes of uniformly random actions before learning starts."""
    noise_sigma: float = 0.5
    """Initial std of the truncated-normal exploration noise."""
    noise_decay: float = 0.95
    """Noise sigma multiplied by this after each episode past warm-up."""
    discount: float = 1.0
    replay_size: int = 2000
    """Transitions kept in the replay buffer."""
    baseline_decay: float = 0.95
    """Moving average of the final reward, subtracted from it (variance reduction)."""
    updates_per_step: int = 1
    """Gradient updates per transition collected (AMC: one per step)."""


@dataclass(frozen=True)
class DQNConfig:
    """DQN over discrete prune-ratio bins, with double-DQN targets."""

    bins: int = 11
    hidden: int = 300
    lr: float = 1e-3
    batch_size: int = 64
    discount: float = 1.0
    replay_size: int = 5000
    warmup_episodes: int = 50
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_episodes: int = 200
    """Episodes over which epsilon falls linearly after warm-up."""
    target_update_steps: int = 100
    """Gradient steps between hard target-network copies."""
    double: bool = True
    updates_per_step: int = 1
    baseline_decay: float = 0.95


SearchMethod = Literal["ddpg", "dqn", "random", "uniform", "global", "sensitivity"]
SEARCH_METHODS: tuple[str, ...] = typing.get_args(SearchMethod)
"""The names `search.agent` accepts (autocompress.search.AGENTS maps each to its builder)."""


@dataclass(frozen=True)
class SearchConfig:
    """The search loop joining env and agent."""

    agent: SearchMethod = "ddpg"
    """ddpg, dqn (learning agents); random, uniform, global (one global channel ranking cut to the budget),
    sensitivity (per-group sensitivity analysis + greedy allocation, as AIMET): the baselines."""
    episodes: int = 300
    seed: int = 0
    out_dir: str = "runs/experiment"
    """Run folder (TensorBoard events, best_schedule.json, checkpoints)."""
    checkpoint_every: int = 10
    """Episodes between checkpoints."""
    torch_threads: int | None = None
    """Intra-op threads for evaluation and training; None keeps torch's default (all cores). On a busy shared
    machine 1 thread was ~4x faster than 2 here."""


@dataclass(frozen=True)
class TrainConfig:
    """Training or fine-tuning: SGD + cosine schedule."""

    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    distill: bool = False
    """Distil from the unpruned network (fine-tuning) or from `teacher` (training)."""
    distill_alpha: float = 0.5
    """Weight of the distillation loss against the label loss."""
    distill_temperature: float = 4.0
    amp: bool = True
    """fp16 mixed precision with loss scaling when on a GPU (the CPU's is `cpu_bf16`)."""
    cpu_bf16: bool = False
    """bf16 autocast when training on the CPU: 1.5-3x faster steps where the CPU has native bf16 (AVX512-BF16,
    AMX; measured in docs/BENCHMARKS.md), slower on tiny models and on CPUs without it, hence off by default."""
    channels_last: bool = True
    """Train in NHWC memory format (oneDNN's and cuDNN's fast convolution layout; same fp32 arithmetic). The
    model, and the teacher, are handed back in the default layout."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    max_batches: int | None = None
    """Cap on batches per epoch (quick runs); None = the whole split."""


@dataclass(frozen=True)
class TournamentConfig:
    """After the search: the leading distinct policies each get a short fine-tune and are scored on the
    held-out val split; successive halving keeps the better half and doubles the fine-tune each round. The
    search then returns what is best after fine-tuning, not what scores best right after pruning."""

    finalists: int = 8
    """Distinct policies (by kept channels) taken from the search's best rewards."""
    ft_batches: int = 100
    """Training batches of the first round's fine-tune; each later round doubles it."""
    lr: float = 0.01
    """Peak learning rate of each short fine-tune (cosine to zero within it)."""
    distill: bool = True
    """Distil from the unpruned network during the short fine-tunes."""
    val_images: int | None = None
    """Val-split images each finalist is scored on (None: the whole val split)."""
    seed: int = 0
    """Seed of the fine-tunes' data order (the same for every finalist)."""


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: everything `autocompress search` needs, resolved."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    ddpg: DDPGConfig = field(default_factory=DDPGConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    pretrain: TrainConfig | None = None
    """Train the network before the search when it has no weights (the quickstart); saved in the run folder."""
    finetune: TrainConfig | None = None
    """Fine-tune the pruned network after the search (omit to skip)."""
    tournament: TournamentConfig | None = None
    """Choose among the search's leading policies by short fine-tunes on val (omit to keep the best reward)."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check one YAML value against its annotated type; raise ConfigError naming `where`."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: null is not allowed here; give a value or remove the key for the default.")
    if _is_dataclass_type(inner):
        return from_dict(inner, value, where)
    origin = typing.get_origin(inner)
    if origin is Literal:
        choices = typing.get_args(inner)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}.")
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}.")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}.")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}.")
        return value
    if origin in (Mapping, dict) or inner in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of name: number, got {value!r}.")
        out = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}.{k}: expected a number, got {v!r}.")
            out[str(k)] = float(v)
        return out
    return value


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are {', '.join(fields)}."
        )
    sep = " " if where.endswith(":") else "."
    kwargs = {name: _coerce(value, hints[name], f"{where}{sep}{name}") for name, value in data.items()}
    obj = cls(**kwargs)
    validate(obj, where)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain data (for YAML, JSON and TensorBoard hparams)."""
    out = dataclasses.asdict(obj)

    def plain(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(out)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def validate(obj: Any, where: str = "config") -> None:
    """Cross-field checks that types alone cannot express."""
    if isinstance(obj, EnvConfig):
        _check(0 < obj.budget <= 1, f"{where}.budget", f"{obj.budget} is outside (0, 1]; 0.5 keeps half.")
        _check(0 <= obj.min_ratio < 1, f"{where}.min_ratio", f"{obj.min_ratio} must be in [0, 1).")
        _check(0 <= obj.max_ratio < 1, f"{where}.max_ratio", f"{obj.max_ratio} must be in [0, 1).")
        _check(
            obj.min_ratio <= obj.max_ratio,
            f"{where}.min_ratio",
            f"min_ratio {obj.min_ratio} > max_ratio {obj.max_ratio}; swap them.",
        )
        _check(obj.val_images > 0, f"{where}.val_images", "must be > 0: the reward needs held-out images.")
        _check(obj.eval_batch_size > 0, f"{where}.eval_batch_size", "must be > 0.")
        _check(obj.bn_recalib_batches >= 0, f"{where}.bn_recalib_batches", "must be >= 0.")
        _check(obj.lut_feedback >= 0, f"{where}.lut_feedback", "must be >= 0 (0 turns the correction off).")
        if obj.budget_kind == "latency" and obj.latency_mode == "flops":
            raise ConfigError(
                f"{where}.latency_mode: a latency budget needs latency_mode 'lut' or 'measured', not 'flops'."
            )
    elif isinstance(obj, PruneConfig):
        _check(obj.round_to >= 1, f"{where}.round_to", "must be >= 1.")
        _check(obj.min_channels >= 1, f"{where}.min_channels", "must be >= 1.")
        _check(obj.reconstruct_samples > 0, f"{where}.reconstruct_samples", "must be > 0.")
    elif isinstance(obj, LatencyConfig):
        _check(obj.threads >= 1, f"{where}.threads", "must be >= 1.")
        _check(obj.batch_size >= 1, f"{where}.batch_size", "must be >= 1.")
        _check(obj.rounds >= 1, f"{where}.rounds", "must be >= 1.")
        _check(obj.warmup >= 0, f"{where}.warmup", "must be >= 0.")
    elif isinstance(obj, DataConfig):
        _check(obj.val_size >= 0, f"{where}.val_size", "must be >= 0.")
        _check(obj.batch_size >= 1, f"{where}.batch_size", "must be >= 1.")
        _check(obj.image_size is None or obj.image_size >= 8, f"{where}.image_size", "must be >= 8 (or null).")
    elif isinstance(obj, SearchConfig):
        _check(obj.episodes >= 1, f"{where}.episodes", "must be >= 1.")
        _check(obj.torch_threads is None or obj.torch_threads >= 1, f"{where}.torch_threads", "must be >= 1.")
        _check(obj.checkpoint_every >= 1, f"{where}.checkpoint_every", "must be >= 1.")
    elif isinstance(obj, DQNConfig):
        _check(obj.bins >= 2, f"{where}.bins", "must be >= 2.")
    elif isinstance(obj, TournamentConfig):
        _check(obj.finalists >= 1, f"{where}.finalists", "must be >= 1.")
        _check(obj.ft_batches >= 1, f"{where}.ft_batches", "must be >= 1.")
        _check(obj.lr > 0, f"{where}.lr", "must be > 0.")
        _check(obj.val_images is None or obj.val_images >= 1, f"{where}.val_images", "must be >= 1 (or null).")
    elif isinstance(obj, TrainConfig):
        _check(obj.epochs >= 0, f"{where}.epochs", "must be >= 0.")
        _check(obj.lr > 0, f"{where}.lr", "must be > 0.")
        _check(0 <= obj.distill_alpha <= 1, f"{where}.distill_alpha", "must be in [0, 1].")


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> ExperimentConfig:
    """Load and validate an experiment from a YAML path or a mapping."""
    if isinstance(source, Mapping):
        return from_dict(ExperimentConfig, source, "config")
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; see experiments/ for examples.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).") from None
    return from_dict(ExperimentConfig, data, f"{path}:")


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML (written into every run folder)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
