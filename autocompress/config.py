"""Experiment configuration: frozen dataclasses, loaded from YAML with validation.

Every part of autocompress receives the slice of configuration it needs as one of these
dataclasses, passed down explicitly. This module imports nothing else of ours.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
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


LatencyRuntime = Literal["torch", "onnxruntime", "compile"]
LATENCY_RUNTIMES: tuple[str, ...] = typing.get_args(LatencyRuntime)
"""Runtimes a latency can be measured with; `autocompress.measure.latency.RUNTIMES` implements each."""


@dataclass(frozen=True)
class LatencyConfig:
    """How inference time is measured."""

    runtime: LatencyRuntime = "torch"
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
class QuantConfig:
    """Post-training static INT8 for ONNX Runtime (QDQ format: unsigned 8-bit activations, signed 8-bit
    weights, the combination x86 VNNI/AMX kernels run)."""

    calib_images: int = 128
    """Training images whose activation ranges set the quantization scales."""
    per_channel: bool = True
    """One weight scale per output channel (per tensor loses more accuracy on pruned, uneven layers)."""
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    """How activation ranges are chosen from the calibration images."""
    other_layers: Literal["int8", "fp32"] = "int8"
    """Precision of the quantizable layers no searched group owns (e.g. a ResNet's stem conv, shortcut convs,
    classifier) whenever a policy puts any layer in INT8; with every group FP32 nothing is quantized."""
    reduce_range: Literal["auto", True, False] = "auto"
    """Weights in 7 bits instead of 8. x86 CPUs without a VNNI instruction (AVX2 / AVX-512 only) multiply
    u8 x s8 pairs into saturating 16-bit sums, which 8-bit weights can overflow (ONNX Runtime's own advice:
    reduce the range there); measured on an AMD EPYC Zen 2, INT8 ResNet-20 87.58% -> 88.57% (FP32 88.50%).
    "auto": on exactly when this machine is x86 with AVX2 and no VNNI (`autocompress.quantize.reduce_range`).
    A schedule records the value its search used, so its export does not depend on the exporting machine."""


ScorerName = Literal["top1", "episodic_return"]
SCORERS: tuple[str, ...] = typing.get_args(ScorerName)
"""What "accuracy" means (env.scorer); `autocompress.measure.scorers.SCORERS` implements each (a test keeps
the two equal)."""


@dataclass(frozen=True)
class RLTaskConfig:
    """The Gymnasium task a policy network is scored on (env.scorer: episodic_return) and cloned on.

    The network maps an observation to action logits or Q-values (`action: discrete`, the action is their
    argmax) or to the action itself (`action: continuous`, clipped to the action space's bounds). Seeds:
    episode i of the search's scoring starts from reset(seed=seed + i), of the final report from
    test_seed + i, of the teacher's rollouts for behaviour cloning from train_seed + i; the three ranges
    must not overlap, so that the report is scored on episodes the search never saw.
    """

    env_id: str = "CartPole-v1"
    """Gymnasium id, e.g. CartPole-v1, Acrobot-v1, Pendulum-v1."""
    action: Literal["discrete", "continuous"] = "discrete"
    """discrete: argmax of the outputs; continuous: the outputs are the action (clipped to the bounds)."""
    episodes: int = 20
    """Seeded episodes each search evaluation plays (the reward's return is their mean)."""
    seed: int = 0
    """First seed of the search's scoring episodes."""
    max_steps: int | None = None
    """Steps after which an episode is cut (None: the task's own limit, 500 for CartPole-v1)."""
    test_episodes: int = 20
    """Episodes of the final report (before / after fine-tuning, unpruned)."""
    test_seed: int = 1_000_000
    """First seed of the final report's episodes."""
    train_seed: int = 2_000_000
    """First seed of the teacher's rollouts that behaviour cloning learns from."""
    bc_observations: int = 20_000
    """Observations collected from the unpruned policy's rollouts for behaviour cloning."""
    bc_batch_size: int = 256
    """Observations per behaviour-cloning step."""
    dagger_rounds: int = 0
    """After cloning, roll out the student this many times more, add the states it reaches (labelled by the
    teacher) and clone again (DAgger, Ross et al. 2011); 0 = plain behaviour cloning."""
    clone_restarts: int = 1
    """The final fine-tune clones the pruned policy this many times (cloning seeds a stride apart) and keeps the
    clone with the best return on the search's episodes (never the report's): a single clone's return can move
    by more than an allocation is worth (docs/BENCHMARKS.md, issue #17). The full-clone tournament judges each
    finalist the same way; 1 = one clone."""
    reward_clone_batches: int = 0
    """Score every candidate after this many behaviour-cloning steps (on the env.val_images teacher
    observations, a copy: the schedule's network itself is untouched) instead of as pruned. Cloning brings
    most allocations back to the teacher, so the return right after pruning can rank them in the opposite
    order to the fine-tuned one; 0 = score as pruned."""
    reward_clone_lr: float = 1e-3
    """Peak learning rate (AdamW, cosine to zero) of the reward's behaviour cloning."""
    reward_measure: Literal["return", "imitation"] = "return"
    """What the reward scores a (cloned) candidate by. return: the normalised mean return of the search's
    episodes. imitation: how closely its actions follow the unpruned policy's on held-out teacher states
    (continuous: R^2 of the clipped actions; discrete: action agreement above chance), in percent. Returns of a
    well-cloned policy sit at the teacher's and rank candidates by episode noise; the imitation fit does not
    saturate that way, is deterministic and plays no episodes."""
    imitation_seed: int = 3_000_000
    """First seed of the teacher's episodes whose states the imitation measure is scored on (never cloned on)."""
    imitation_observations: int = 5_000
    """Teacher states the imitation measure is scored on."""
    tournament_measure: Literal["reward", "return"] = "reward"
    """What the tournament judges its cloned finalists by: reward (the reward_measure) or return (the normalised
    mean return of the search's episodes, never the report's). With the imitation reward, return lets the
    finalists' long clones be judged by what the report measures: after a full clone, held-out imitation ranks
    policies only loosely by their return (docs/BENCHMARKS.md, issue #17)."""
    tournament_clone: Literal["short", "full"] = "short"
    """How the tournament fine-tunes each finalist before judging it. short: tournament.ft_batches cloning steps,
    doubled each round. full: the final fine-tune itself (the finetune: section, DAgger rounds included, seeded
    as the final one), so the finalist judged is the network the report will test; a short clone's ranking can
    differ from the final one's (docs/BENCHMARKS.md, issue #17). Each finalist is then cloned once."""


DROP_ACTION = 0.95
"""With env.drop_blocks, an action (in [0, 1]) at least this high removes a droppable block: the top bin of a
discrete agent, the saturated end of a continuous one."""


@dataclass(frozen=True)
class EnvConfig:
    """The compression environment: budget, action range, reward, evaluation."""

    budget_kind: Literal["macs", "params", "latency", "size"] = "macs"
    """Which resource the budget limits. size: bytes of the compressed export (the state dict with every archive
    entry deflated, `autocompress.measure.size`; sparsity unstructured only); params with sparsity unstructured:
    the nonzero parameters."""
    budget: float = 0.5
    """Fraction of the unpruned resource allowed, in (0, 1]; for latency 0.5 means a 2x speedup."""
    sparsity: Literal["structured", "unstructured"] = "structured"
    """structured: remove whole channels (smaller and faster). unstructured: zero each group's smallest-magnitude
    conv / linear weights (torch.nn.utils.prune l1_unstructured) for a smaller compressed export; no speed claim
    (dense kernels multiply the zeros). Needs budget_kind size or params."""
    min_ratio: float = 0.0
    """Smallest prune ratio (share of a group's channels removed; with sparsity unstructured, of its weights
    zeroed) an action maps to."""
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
    eval_early_stop: float = 0.0
    """0: score every val image. delta > 0: stop scoring a candidate (after each eval batch) once its reward, with
    top-1 at the Hoeffding upper bound that holds with probability 1 - delta, stays below the best reward of a
    fully scored candidate so far; its top1 is then the share right on the images scored (`val_images_scored`).
    Saves evaluation on clearly worse policies; the result then depends on the order episodes are scored in."""
    bn_recalib_batches: int = 0
    """Training batches used to re-estimate BatchNorm statistics after pruning (0 = off; a network with nothing
    removed keeps its own statistics)."""
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
    precisions: Literal["fp32", "fp32+int8"] = "fp32"
    """Per-group precision choices: "fp32" prunes only (the action is one number); "fp32+int8" makes the
    action (prune ratio, precision) and quantizes the chosen layers to static INT8 in ONNX Runtime
    (needs latency_mode: measured with latency.runtime: onnxruntime, where INT8 speed is real)."""
    quant: QuantConfig = field(default_factory=QuantConfig)
    """How INT8 layers are calibrated and quantized (precisions: fp32+int8)."""
    drop_blocks: bool = False
    """True: on a group that is the inner width of a residual block with an identity shortcut, an action of at
    least DROP_ACTION removes the whole block (prune ratio 1.0) instead of mapping to a ratio. Why: at small
    inputs INT8 kernels sit at their per-call floor, where fewer channels save little time and fewer layers save
    it all (ResNet-56 INT8 in ONNX Runtime: 2.0x whole, 3.45x without 12 of its 27 blocks)."""
    scorer: ScorerName = "top1"
    """What the reward's accuracy is: top1 (classification on held-out images) or episodic_return (mean return of
    the network as a policy in env.task, normalised so that 1 = the unpruned policy and 0 = random actions)."""
    task: RLTaskConfig | None = None
    """The Gymnasium task (scorer episodic_return only)."""


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
    exploration: Literal["uniform", "episodic"] = "uniform"
    """How epsilon's random actions are drawn (autocompress.agents.exploration): `uniform` per step, or
    `episodic`: one intensity and precision mix per episode, so light compressions get tried too."""


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
    workers: int = 1
    """Evaluations in flight at once (1: in this process, one episode at a time)."""
    batch_episodes: int | None = None
    """Episodes the agent proposes per round before it learns from them (None: as many as workers). The
    same seed and batch size give the same episodes with any number of workers."""
    backend: Literal["local", "ray"] = "local"
    """Where the evaluations run: in this process, or on Ray workers (`pip install -e ".[ray]"`)."""
    address: str | None = None
    """Ray cluster to join (e.g. "127.0.0.1:6379"); None starts a local one."""


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
    seed: int | None = None
    """Seeds the augmentation and the data order when training starts, so a run repeats. None leaves the
    caller's random state (and data order 0): the benchmarks and the tournament seed it themselves."""


@dataclass(frozen=True)
class RefineConfig:
    """Before the tournament, walk its best finalists back toward the unpruned network while they still meet
    the budget (autocompress/refine.py): the slack a discrete action grid leaves becomes accuracy."""

    finalists: int = 2
    """How many of the tournament's finalists (best reward first) are refined."""
    evaluations: int = 150
    """Most new networks scored while refining one policy."""
    rounds: int = 100
    """Timing pairs of each budget check when the budget is measured latency (the episode's timing shortlists)."""
    step: float | None = None
    """Prune-ratio step of one move (None: a tenth of max_ratio - min_ratio, one DQN bin at 11 bins)."""


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
    """Seed of the fine-tunes' augmentation (the same for every finalist; the loader seeds its own order)."""
    refine: RefineConfig | None = None
    """Give back the budget slack of the best finalists before judging them (omit to judge them as found)."""
    include_uniform: bool = False
    """Let the uniform allocation at the same budget enter as one more finalist (episode -1), so that the search
    never returns a network its own judge rates below the simple rule's; it wins ties."""
    include_sensitivity: bool = False
    """Let the sensitivity analysis's allocation at the same budget (the `sensitivity` method's, with
    search.episodes evaluations for its probes) enter as one more finalist (episode -2): on a base that never saw
    val it ties the searches after fine-tuning (docs/BENCHMARKS.md), so a user may want the search to weigh it
    too. Costs that analysis's evaluations (about a quarter of a 300-episode ResNet-20 search)."""


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
            raise ConfigError(f"{where}: {_short(value)} is not one of {', '.join(map(repr, choices))}.")
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_short(value)}.")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}.")
        return value
    if inner is float:
        return _coerce_number(value, where)
    if inner is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}.")
        return value
    if origin in (Mapping, dict) or inner in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of name: number, got {_short(value)}.")
        _check_keys(value, where, "a name such as w or lam")
        return {k: _coerce_number(v, f"{where}.{k}") for k, v in value.items()}
    return value


def _short(value: Any, limit: int = 80) -> str:
    """repr of a bad value, cut short so that a huge one does not flood the one-line error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({type(value).__name__})"


def _coerce_number(value: Any, where: str) -> float:
    """A finite float: NaN and infinities pass every later `<` check unnoticed or poison training."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = ""
        if isinstance(value, str) and _looks_numeric(value):
            hint = f" (YAML reads {value} as text: write it with a dot, e.g. 1.0e-4)"
        raise ConfigError(f"{where}: expected a number, got {_short(value)}{hint}.")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{where}: {_short(value)} is too large for a number.") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value} is not a finite number; give a real value (no .nan or .inf).")
    return number


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_keys(data: Mapping[Any, Any], where: str, expected: str) -> None:
    """Mapping keys must be strings: YAML turns `1:`, `yes:` or `~:` into int, bool or None keys."""
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(
                f"{_label(where)}: key {_short(key)} is {type(key).__name__}, not {expected}; "
                "quote it if you meant the text."
            )


def _label(where: str) -> str:
    """`where` for a message about a mapping itself: the top level's "file.yaml:" loses its colon."""
    return where[:-1] if where.endswith(":") else where


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    valid = ", ".join(fields)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{_label(where)}: expected a mapping of keys to values (key: value lines), "
            f"got {type(data).__name__} {_short(data, 40)}; valid keys are {valid}."
        )
    _check_keys(data, where, "a field name")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_label(where)}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are {valid}."
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


MAX_SEED = 2**32 - 1
"""Largest seed accepted: numpy and torch both take it, and `seed + 1` still fits torch's generator."""
MAX_REPLAY_SIZE = 10_000_000
"""Replay buffers are allocated up front; a search stores episodes x layers transitions (AMC keeps 2,000)."""
MAX_HIDDEN = 4096
"""Agent networks hold hidden x hidden matrices, four of them for DDPG (AMC uses 300)."""
MAX_BINS = 1000
"""DQN's output layer has one unit per bin; ratios closer than 0.001 apart prune the same channels."""
MAX_THREADS = 1024
"""Most threads or loader processes accepted; a larger count is a typo that would exhaust the machine."""
MAX_UPDATES_PER_STEP = 1000
"""Most gradient updates per transition (AMC uses 1); more only stalls the search."""
_TRAIN_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_LATENCY_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def _check_seed(seed: int, where: str) -> None:
    _check(0 <= seed <= MAX_SEED, where, f"{seed} must be in [0, {MAX_SEED}] (numpy and torch seeds).")


def _check_count(value: int, where: str, low: int, high: int, note: str = "") -> None:
    """An integer in [low, high]; the upper bounds stop typos that would allocate or spawn without end."""
    _check(low <= value <= high, where, f"{value} must be in [{low}, {high}]{f' ({note})' if note else ''}.")


def _check_unit(value: float, where: str, *, open_low: bool = False, open_high: bool = False) -> None:
    """value in [0, 1], with either end excluded on request; the message shows the interval."""
    ok = (value > 0 if open_low else value >= 0) and (value < 1 if open_high else value <= 1)
    interval = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
    _check(ok, where, f"{value} must be in {interval}.")


def _check_finite_fields(obj: Any, where: str) -> None:
    """Directly built configs (the CLI's) skip from_dict's number check; NaN passes no range check anyway."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}.{f.name}: {value} is not a finite number; give a real value.")


def _validate_env(obj: EnvConfig, where: str) -> None:
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
    _check(0 <= obj.eval_early_stop < 1, f"{where}.eval_early_stop", "must be in [0, 1) (0 = off; e.g. 0.001).")
    _check(obj.bn_recalib_batch_size >= 1, f"{where}.bn_recalib_batch_size", "must be >= 1.")
    _check(obj.lut_feedback >= 0, f"{where}.lut_feedback", "must be >= 0 (0 turns the correction off).")
    for key, value in obj.reward_kwargs.items():
        _check(math.isfinite(value), f"{where}.reward_kwargs.{key}", f"{value} is not a finite number.")
    if obj.budget_kind == "latency" and obj.latency_mode == "flops":
        raise ConfigError(
            f"{where}.latency_mode: a latency budget needs latency_mode 'lut' or 'measured', not 'flops'."
        )
    _check(obj.scorer != "episodic_return" or obj.task is not None, f"{where}.task",
           "scorer episodic_return needs the Gymnasium task (env.task: {env_id: CartPole-v1}).")
    _check(obj.scorer == "episodic_return" or obj.task is None, f"{where}.task",
           f"only scorer episodic_return plays a task; remove env.task or set env.scorer (now {obj.scorer!r}).")
    _check(obj.scorer == "top1" or obj.eval_runtime == "torch", f"{where}.eval_runtime",
           "a policy plays its episodes in eager PyTorch; with scorer episodic_return use eval_runtime: torch.")
    _check(obj.scorer == "top1" or obj.precisions == "fp32", f"{where}.precisions",
           "INT8 choices are scored on images; with scorer episodic_return use precisions: fp32.")
    if obj.precisions != "fp32" and (obj.latency_mode != "measured" or obj.latency.runtime != "onnxruntime"):
        raise ConfigError(
            f"{where}.precisions: {obj.precisions!r} needs latency_mode: measured and latency.runtime: onnxruntime "
            "(INT8 speed is only known by timing the quantized model where it runs)."
        )
    _check(not obj.drop_blocks or (obj.latency_mode != "lut" and (obj.budget_kind != "latency" or obj.precisions != "fp32")),
           f"{where}.drop_blocks", "a latency look-up table prices channel counts, not removed blocks; use it with a "
           "macs or params budget, or with precisions fp32+int8 (every episode timed).")
    _check(not obj.drop_blocks or obj.sparsity == "structured", f"{where}.drop_blocks",
           "sparsity unstructured keeps every layer; set drop_blocks false.")
    _check(obj.budget_kind != "size" or obj.sparsity == "unstructured", f"{where}.budget_kind",
           "size budgets zeroed weights (env.sparsity: unstructured); channel pruning budgets macs, params or latency.")
    if obj.sparsity == "unstructured":
        _validate_unstructured(obj, where)


def _validate_unstructured(obj: EnvConfig, where: str) -> None:
    """What zeroing single weights cannot be combined with: it buys size, not speed, and has no channels."""
    _check(obj.budget_kind in ("size", "params"), f"{where}.budget_kind",
           f"{obj.budget_kind!r} with sparsity unstructured: zeroed weights make a network smaller, not faster "
           "(dense kernels multiply the zeros); use budget_kind size (compressed bytes) or params (nonzero).")
    _check(obj.precisions == "fp32", f"{where}.precisions",
           "sparsity unstructured searches FP32 weights only; use precisions: fp32 (or sparsity: structured).")
    _check(obj.latency_mode != "lut", f"{where}.latency_mode",
           "a latency look-up table prices channel counts, not zeroed weights; use flops (no timing) or measured.")
    _check(obj.scorer == "top1", f"{where}.scorer",
           "sparsity unstructured is scored on images; use scorer: top1 (or sparsity: structured for a policy).")
    _check(obj.prune.criterion == "l1", f"{where}.prune.criterion",
           f"{obj.prune.criterion!r} ranks channels; sparsity unstructured zeroes the smallest |w| (criterion: l1).")
    _check(not obj.prune.reconstruct, f"{where}.prune.reconstruct",
           "least-squares reconstruction refits layers after channel removal; set it false with sparsity unstructured.")
    _check(obj.prune.round_to == 1, f"{where}.prune.round_to",
           "rounds kept channel counts, and sparsity unstructured keeps every channel; remove it (or set 1).")


def _validate_task(obj: RLTaskConfig, where: str) -> None:
    _check(bool(obj.env_id.strip()), f"{where}.env_id", "must name a Gymnasium task, e.g. CartPole-v1.")
    _check_count(obj.episodes, f"{where}.episodes", 1, 100_000)
    _check_count(obj.test_episodes, f"{where}.test_episodes", 1, 100_000)
    _check(obj.max_steps is None or obj.max_steps >= 1, f"{where}.max_steps", "must be >= 1 (or null).")
    _check_count(obj.bc_observations, f"{where}.bc_observations", 1, 10_000_000, "held in memory")
    _check_count(obj.bc_batch_size, f"{where}.bc_batch_size", 1, 1_000_000)
    _check_count(obj.dagger_rounds, f"{where}.dagger_rounds", 0, 100)
    _check_count(obj.clone_restarts, f"{where}.clone_restarts", 1, 100)
    _check_count(obj.reward_clone_batches, f"{where}.reward_clone_batches", 0, 1_000_000)
    _check(obj.reward_clone_lr > 0, f"{where}.reward_clone_lr", "must be > 0 (AdamW's peak learning rate).")
    _check_count(obj.imitation_observations, f"{where}.imitation_observations", 1, 10_000_000, "held in memory")
    ranges = [(obj.seed, obj.episodes, "seed"), (obj.test_seed, obj.test_episodes, "test_seed"),
              (obj.train_seed, MAX_TASK_EPISODES, "train_seed")]
    if obj.reward_measure == "imitation":
        ranges.append((obj.imitation_seed, MAX_TASK_EPISODES, "imitation_seed"))
    ranges.sort()
    for (lo, n, name), (hi, _, other) in zip(ranges[:-1], ranges[1:], strict=True):
        _check(lo + n <= hi, f"{where}.{name}", f"its episodes overlap those from {other} ({hi}); space the seeds "
               "apart so the report is scored on episodes the search never saw.")
    for seed, n, name in ranges:
        _check_seed(seed + n, f"{where}.{name}")


MAX_TASK_EPISODES = 100_000
"""Seeds reserved for the teacher's rollouts (from train_seed): no collection plays more episodes."""


def _validate_prune(obj: PruneConfig, where: str) -> None:
    _check(obj.round_to >= 1, f"{where}.round_to", "must be >= 1.")
    _check(obj.min_channels >= 1, f"{where}.min_channels", "must be >= 1.")
    _check(obj.reconstruct_samples > 0, f"{where}.reconstruct_samples", "must be > 0.")


def _validate_latency(obj: LatencyConfig, where: str) -> None:
    device_ok = bool(_LATENCY_DEVICE.fullmatch(obj.device))
    _check(device_ok, f"{where}.device", f"{obj.device!r}: use cpu or cuda.")
    _check_count(obj.threads, f"{where}.threads", 1, MAX_THREADS)
    _check(obj.batch_size >= 1, f"{where}.batch_size", "must be >= 1.")
    _check(obj.rounds >= 1, f"{where}.rounds", "must be >= 1.")
    _check(obj.warmup >= 0, f"{where}.warmup", "must be >= 0.")


def _validate_model(obj: ModelConfig, where: str) -> None:
    _check(obj.num_classes >= 1, f"{where}.num_classes", "must be >= 1.")
    _check(obj.in_channels >= 1, f"{where}.in_channels", "must be >= 1 (3 for RGB, 1 for grey images).")


def _validate_data(obj: DataConfig, where: str) -> None:
    _check(obj.val_size >= 0, f"{where}.val_size", "must be >= 0.")
    _check(obj.batch_size >= 1, f"{where}.batch_size", "must be >= 1.")
    _check_count(obj.num_workers, f"{where}.num_workers", 0, MAX_THREADS, "0 loads in the main process")
    _check_seed(obj.seed, f"{where}.seed")
    _check(obj.image_size is None or obj.image_size >= 8, f"{where}.image_size", "must be >= 8 (or null).")


def _validate_search(obj: SearchConfig, where: str) -> None:
    _check(obj.episodes >= 1, f"{where}.episodes", "must be >= 1.")
    _check_seed(obj.seed, f"{where}.seed")
    if obj.torch_threads is not None:
        _check_count(obj.torch_threads, f"{where}.torch_threads", 1, MAX_THREADS, "null: torch's default")
    _check(obj.checkpoint_every >= 1, f"{where}.checkpoint_every", "must be >= 1.")
    _check_count(obj.workers, f"{where}.workers", 1, MAX_THREADS, "1: in this process")
    if obj.batch_episodes is not None:
        _check_count(obj.batch_episodes, f"{where}.batch_episodes", 1, 10_000, "null: as many as workers")
    _check(obj.backend == "ray" or obj.workers == 1, f"{where}.workers",
           f"{obj.workers} workers need backend: ray (the local backend evaluates in this process).")


def _validate_learner(obj: DDPGConfig | DQNConfig, where: str) -> None:
    """What DDPG and DQN share: network width, replay, discount, warm-up and reward baseline."""
    _check_count(obj.hidden, f"{where}.hidden", 1, MAX_HIDDEN, "AMC uses 300")
    _check(obj.batch_size >= 1, f"{where}.batch_size", "must be >= 1.")
    _check_count(obj.replay_size, f"{where}.replay_size", 1, MAX_REPLAY_SIZE, "allocated up front")
    _check(
        obj.batch_size <= obj.replay_size,
        f"{where}.batch_size",
        f"{obj.batch_size} > replay_size {obj.replay_size}: the agent would never learn; lower batch_size.",
    )
    _check_unit(obj.discount, f"{where}.discount")
    _check(obj.warmup_episodes >= 0, f"{where}.warmup_episodes", "must be >= 0.")
    _check_count(obj.updates_per_step, f"{where}.updates_per_step", 1, MAX_UPDATES_PER_STEP, "AMC uses 1")
    _check_unit(obj.baseline_decay, f"{where}.baseline_decay")


def _validate_ddpg(obj: DDPGConfig, where: str) -> None:
    _validate_learner(obj, where)
    _check(obj.lr_actor > 0, f"{where}.lr_actor", "must be > 0.")
    _check(obj.lr_critic > 0, f"{where}.lr_critic", "must be > 0.")
    _check_unit(obj.tau, f"{where}.tau", open_low=True)
    _check(obj.noise_sigma >= 0, f"{where}.noise_sigma", "must be >= 0 (0 turns exploration noise off).")
    _check_unit(obj.noise_decay, f"{where}.noise_decay")


def _validate_dqn(obj: DQNConfig, where: str) -> None:
    _validate_learner(obj, where)
    _check_count(obj.bins, f"{where}.bins", 2, MAX_BINS)
    _check(obj.lr > 0, f"{where}.lr", "must be > 0.")
    _check_unit(obj.epsilon_start, f"{where}.epsilon_start")
    _check_unit(obj.epsilon_end, f"{where}.epsilon_end")
    _check(obj.epsilon_decay_episodes >= 0, f"{where}.epsilon_decay_episodes", "must be >= 0.")
    _check(obj.target_update_steps >= 1, f"{where}.target_update_steps", "must be >= 1.")


def _validate_tournament(obj: TournamentConfig, where: str) -> None:
    _check(obj.finalists >= 1, f"{where}.finalists", "must be >= 1.")
    _check(obj.ft_batches >= 1, f"{where}.ft_batches", "must be >= 1.")
    _check(obj.lr > 0, f"{where}.lr", "must be > 0.")
    _check(obj.val_images is None or obj.val_images >= 1, f"{where}.val_images", "must be >= 1 (or null).")
    _check_seed(obj.seed, f"{where}.seed")


def _validate_refine(obj: RefineConfig, where: str) -> None:
    _check(obj.finalists >= 1, f"{where}.finalists", "must be >= 1.")
    _check(obj.evaluations >= 1, f"{where}.evaluations", "must be >= 1.")
    _check(obj.rounds >= 5, f"{where}.rounds", "must be >= 5 (a median of fewer pairs is noise).")
    _check(obj.step is None or 0.0 < obj.step <= 1.0, f"{where}.step", "must be in (0, 1] (or null).")


def _validate_experiment(obj: ExperimentConfig, where: str) -> None:
    refine = obj.tournament is not None and obj.tournament.refine is not None
    _check(not refine or obj.env.sparsity == "structured", f"{where}.tournament.refine",
           "walks back channel pruning and precision; with env.sparsity unstructured remove it.")
    full_clone = obj.env.task is not None and obj.env.task.tournament_clone == "full"
    _check(not full_clone or obj.finetune is not None, f"{where}.env.task.tournament_clone",
           "full judges finalists after the finetune: section's recipe; add a finetune: section or use short.")
    sensitivity = obj.tournament is not None and obj.tournament.include_sensitivity
    _check(not sensitivity or obj.env.precisions == "fp32", f"{where}.tournament.include_sensitivity",
           "the sensitivity analysis allocates prune ratios only; with env.precisions fp32+int8 set it to false.")


def _validate_quant(obj: QuantConfig, where: str) -> None:
    _check(1 <= obj.calib_images <= 100_000, f"{where}.calib_images", "must be in [1, 100000].")
    # Literal["auto", True, False] also admits 1 and 0 (1 == True): only the three spelled values are meant
    _check(obj.reduce_range == "auto" or isinstance(obj.reduce_range, bool), f"{where}.reduce_range",
           "must be auto, true or false.")


def _validate_train(obj: TrainConfig, where: str) -> None:
    _check(obj.epochs >= 0, f"{where}.epochs", "must be >= 0.")
    _check(obj.lr > 0, f"{where}.lr", "must be > 0.")
    _check_unit(obj.momentum, f"{where}.momentum", open_high=True)
    _check(obj.weight_decay >= 0, f"{where}.weight_decay", "must be >= 0.")
    _check_unit(obj.label_smoothing, f"{where}.label_smoothing", open_high=True)
    _check_unit(obj.distill_alpha, f"{where}.distill_alpha")
    _check(obj.distill_temperature > 0, f"{where}.distill_temperature", "must be > 0.")
    _check(obj.max_batches is None or obj.max_batches >= 1, f"{where}.max_batches", "must be >= 1 (or null).")
    _check(obj.seed is None or obj.seed >= 0, f"{where}.seed", "must be >= 0 (or null).")
    device_ok = bool(_TRAIN_DEVICE.fullmatch(obj.device))
    _check(device_ok, f"{where}.device", f"{obj.device!r}: use auto, cpu or cuda.")


_VALIDATORS: dict[type, Callable[[Any, str], None]] = {
    EnvConfig: _validate_env,
    PruneConfig: _validate_prune,
    LatencyConfig: _validate_latency,
    ModelConfig: _validate_model,
    DataConfig: _validate_data,
    SearchConfig: _validate_search,
    DDPGConfig: _validate_ddpg,
    DQNConfig: _validate_dqn,
    TournamentConfig: _validate_tournament,
    RefineConfig: _validate_refine,
    ExperimentConfig: _validate_experiment,
    TrainConfig: _validate_train,
    QuantConfig: _validate_quant,
    RLTaskConfig: _validate_task,
}


def validate(obj: Any, where: str = "config") -> None:
    """Range and cross-field checks that types alone cannot express."""
    for cls, check in _VALIDATORS.items():
        if isinstance(obj, cls):
            _check_finite_fields(obj, where)
            check(obj, where)
            return


def validate_tree(obj: Any, where: str = "") -> None:
    """`validate` on a config and every config nested in it, innermost first: what `from_dict` checks while
    reading YAML, for configs assembled in code (`dataclasses.replace`), so that a combination a YAML file
    could not express never runs a search whose saved config.yaml would then refuse to load."""
    for item in dataclasses.fields(obj):
        value = getattr(obj, item.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_tree(value, f"{where}.{item.name}" if where else item.name)
    validate(obj, where or "config")


MAX_CONFIG_BYTES = 1_000_000
"""Largest config file read; real ones are a few kB, so anything bigger is the wrong file."""
MAX_YAML_DEPTH = 20
"""Deepest YAML nesting accepted; configs nest four levels (env: prune: round_to: 8)."""


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses what no config needs and what can blow up: aliases (the 'billion laughs'
    bomb), nesting deeper than MAX_YAML_DEPTH (RecursionError) and duplicate keys (silently last-wins)."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.name = name
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"{self.name}: {_line(event.start_mark)}: YAML aliases (*{event.anchor}) are not allowed in "
                "configs; write the value out in full."
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{self.name}: {_line(mark)}: nested more than {MAX_YAML_DEPTH} levels deep; configs nest "
                    "a few levels (env: prune: round_to: 8), check the brackets and indentation."
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable: SafeLoader's own error says so
                continue
            if first is not key_node:
                raise ConfigError(
                    f"{self.name}: {_line(key_node.start_mark)}: duplicate key {_short(key)} (first at line "
                    f"{first.start_mark.line + 1}); YAML would keep only the last, so delete one of them."
                )
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses int strings of more than 4,300 digits
            raise ConfigError(f"{self.name}: {_line(node.start_mark)}: integer too long.") from None


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def read_capped(path: Path, limit: int) -> bytes | None:
    """A user file's bytes, or None when it is larger than `limit` (never read further: a wrong path to a
    huge file must not fill the memory). OSError passes through for the caller's own message."""
    with Path(path).open("rb") as f:
        raw = f.read(limit + 1)
    return None if len(raw) > limit else raw


def _read_yaml(path: Path) -> Any:
    """Parse one config file: size-capped, UTF-8, through _ConfigLoader; every failure is a ConfigError."""
    try:
        raw = read_capped(path, MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc}).") from None
    if raw is None:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes; is this really an experiment config?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8."
        ) from None
    try:
        loader = _ConfigLoader(text, str(path))  # the reader refuses control characters already here
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())}).") from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())}).") from None
    finally:
        loader.dispose()


def load_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> ExperimentConfig:
    """Load and validate an experiment from a YAML path or a mapping."""
    if isinstance(source, Mapping):
        return from_dict(ExperimentConfig, source, "config")
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            f"config: expected a YAML path (str or os.PathLike) or a mapping, got {type(source).__name__}."
        )
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"config {str(path)!r} is a folder; give a YAML file (see experiments/).")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; see experiments/ for examples.")
    data = _read_yaml(path)
    if data is None:  # an empty file (or only comments): every default
        data = {}
    return from_dict(ExperimentConfig, data, f"{path}:")


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML (written into every run folder)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
