"""Build a NetCompressEnv from an experiment config: model, data tensors and latency table.

This is the one place in `envs` that reaches for the model zoo and the datasets, so that
`gymnasium.make("autocompress/NetCompress-v0", config=...)` works from a YAML path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from autocompress.config import ConfigError, ExperimentConfig, load_config, validate_tree


def resolve_config(config: ExperimentConfig | str | os.PathLike[str] | Mapping[str, Any]) -> ExperimentConfig:
    """An ExperimentConfig from a config object, a YAML path or a mapping; anything else is a ConfigError
    (gymnasium.make passes `config=` through unchecked)."""
    if isinstance(config, ExperimentConfig):
        return config
    if not isinstance(config, (str, os.PathLike, Mapping)):
        raise ConfigError(
            "config=: expected an ExperimentConfig, a YAML path (str or os.PathLike) or a mapping, "
            f"got {type(config).__name__}."
        )
    return load_config(config)


def build_env_data(cfg: ExperimentConfig, bundle: Any) -> Any:
    """Preload the held-out images and, when needed, calibration images from the training split."""
    from autocompress.data import take_tensors
    from autocompress.envs.net_compress import EnvData

    if len(bundle.val) == 0:
        raise ConfigError("data.val_size is 0: the environment needs held-out validation images.")
    val_x, val_y = take_tensors(bundle.val, cfg.env.val_images, seed=cfg.data.seed)
    n_calib = cfg.env.bn_recalib_batches * cfg.env.bn_recalib_batch_size
    if cfg.env.prune.reconstruct:
        n_calib = max(n_calib, cfg.env.prune.reconstruct_samples)
    calib_x = None
    if n_calib > 0:
        source = getattr(bundle, "train_eval", None) or bundle.train
        calib_x, _ = take_tensors(source, n_calib, seed=cfg.data.seed + 1)
    return EnvData(val_images=val_x, val_labels=val_y, calib_images=calib_x)


def build_model(cfg: ExperimentConfig, bundle: Any) -> torch.nn.Module:
    """The zoo model sized for the dataset (classes and input channels come from the data)."""
    from autocompress.models import get_model

    return get_model(
        cfg.model.name,
        num_classes=bundle.num_classes,
        weights=cfg.model.weights,
        in_channels=bundle.input_shape[0],
    )


def load_or_build_lut(cfg: ExperimentConfig, model: torch.nn.Module, example: torch.Tensor) -> Any | None:
    """The latency look-up table the config needs (loaded from env.lut_path, else built and saved there).

    None with INT8 choices (env.precisions): an FP32 table cannot price them, so their latency budget is soft
    (enforced by the latency reward on measured timings).
    """
    env = cfg.env
    if env.latency_mode != "lut" and (env.budget_kind != "latency" or env.precisions != "fp32"):
        return None
    from autocompress.measure.lut import LatencyLUT
    from autocompress.pruning import Pruner

    pruner = Pruner(model, example, env.prune)
    shape = tuple(example.shape[1:])
    # The grid holds the channel counts the pruner can produce (round_to); the table's scale and constant
    # are calibrated on the unpruned model and on a uniformly pruned copy (a second point in the middle of
    # the range the search explores), so that predicted speedups hold for pruned networks too.
    options = {"model": model, "round_to": env.prune.round_to, "model_name": cfg.model.name,
               "pruned": calibration_point(pruner, min(CALIBRATION_RATIO, env.max_ratio))}  # fmt: skip
    if env.lut_path:
        return LatencyLUT.load_or_build(Path(env.lut_path), pruner.layer_specs, shape, env.latency, **options)
    return LatencyLUT.build(pruner.layer_specs, shape, env.latency, **options)


CALIBRATION_RATIO = 0.5
"""Uniform prune ratio of the second calibration point of latency tables."""


def calibration_point(pruner: Any, ratio: float = CALIBRATION_RATIO) -> tuple[dict[str, int], torch.nn.Module] | None:
    """(kept channels, pruned copy) of a uniform prune at `ratio`: the table's second calibration point."""
    if ratio <= 0:
        return None
    ratios = {g.name: ratio for g in pruner.groups}
    return pruner.kept_channels(ratios), pruner.prune(ratios)


def pretrained_model(cfg: ExperimentConfig, model: torch.nn.Module, bundle: Any, progress: bool) -> torch.nn.Module:
    """Train the unpruned network once (config `pretrain`), kept as <out_dir>/baseline.pt for resumes and reruns.

    Without it a config without `model.weights` would search over a randomly initialised network.
    """
    from autocompress.atomic import atomic_torch_save
    from autocompress.train import train

    path = Path(cfg.search.out_dir) / "baseline.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    if progress:
        print(f"training the baseline {cfg.model.name} on {cfg.data.name} for {cfg.pretrain.epochs} epoch(s) "
              f"(config pretrain:; kept in {path})", file=sys.stderr)
    train(model, bundle, cfg.pretrain, progress=progress)
    atomic_torch_save(path, model.state_dict())
    return model.eval()


def policy_model(cfg: ExperimentConfig, spec: Any, progress: bool) -> torch.nn.Module:
    """The policy network sized for the task (observation size in, one output per action or action
    dimension), with its trained weights; classifier pretraining does not apply to it."""
    from autocompress.models import get_model

    if cfg.pretrain is not None:
        raise ConfigError("pretrain: trains classifiers on images; a policy (env.scorer: episodic_return) comes "
                          "trained: give model.weights (e.g. from scripts/bench_rl_policy.py).")
    if len(spec.obs_shape) != 1:
        raise ConfigError(f"env.task.env_id {cfg.env.task.env_id!r}: observations of shape {spec.obs_shape}; "
                          "only flat (1-D) observations are supported.")
    if cfg.model.weights is None and progress:
        print(f"warning: {cfg.model.name} has no model.weights; the policy is randomly initialised", file=sys.stderr)
    model = get_model(cfg.model.name, num_classes=spec.n_outputs, weights=cfg.model.weights,
                      in_channels=spec.obs_shape[0])
    return model.eval()


def build_policy_data(cfg: ExperimentConfig, model: torch.nn.Module, spec: Any) -> tuple[Any, Any]:
    """(EnvData, PolicyBundle): the observations the unpruned policy visits from task.train_seed size the
    network's input, calibrate BatchNorm / reconstruction if asked, and are behaviour cloning's data."""
    from autocompress.envs.evaluator import EnvData
    from autocompress.measure.rollouts import PolicyBundle, collect_observations, network_policy

    task = cfg.env.task
    n_calib = cfg.env.bn_recalib_batches * cfg.env.bn_recalib_batch_size
    if cfg.env.prune.reconstruct:
        n_calib = max(n_calib, cfg.env.prune.reconstruct_samples)
    obs = collect_observations(network_policy(model, spec), task, max(task.bc_observations, cfg.env.val_images,
                                                                     n_calib), task.train_seed)
    with torch.no_grad():
        out = model(obs[: cfg.env.val_images])
    labels = out.argmax(dim=1) if task.action == "discrete" else torch.zeros(len(out), dtype=torch.long)
    data = EnvData(val_images=obs[: cfg.env.val_images], val_labels=labels,
                   calib_images=obs[:n_calib] if n_calib > 0 else None)
    return data, PolicyBundle(task, spec, obs[: task.bc_observations])


def build_policy_env(cfg: ExperimentConfig, progress: bool = True) -> tuple[Any, Any]:
    """(NetCompressEnv, PolicyBundle) of a policy experiment (env.scorer: episodic_return)."""
    from autocompress.envs.evaluator import Evaluator
    from autocompress.envs.net_compress import NetCompressEnv
    from autocompress.measure.rollouts import task_spec

    spec = task_spec(cfg.env.task)
    torch.manual_seed(cfg.search.seed)
    model = policy_model(cfg, spec, progress)
    data, bundle = build_policy_data(cfg, model, spec)
    lut = load_or_build_lut(cfg, model, data.val_images[:1])
    evaluator = Evaluator(model, data, cfg.env, lut=lut)
    return NetCompressEnv(model, data, cfg.env, model_name=cfg.model.name, lut=lut, evaluator=evaluator), bundle


def build_image_env(cfg: ExperimentConfig, progress: bool = True) -> tuple[Any, Any]:
    """(NetCompressEnv, DataBundle) of a classifier: data, model (pretrained as configured), LUT, env."""
    from autocompress.data import load_data
    from autocompress.envs.evaluator import Evaluator
    from autocompress.envs.net_compress import NetCompressEnv

    bundle = load_data(cfg.data)
    torch.manual_seed(cfg.search.seed)  # the same config always starts from the same network
    model = build_model(cfg, bundle)
    if cfg.pretrain is not None and cfg.model.weights is None:
        model = pretrained_model(cfg, model, bundle, progress)
    elif cfg.model.weights is None and progress:
        print(f"warning: {cfg.model.name} has no model.weights and no pretrain: section; the search runs on a "
              "randomly initialised network", file=sys.stderr)
    data = build_env_data(cfg, bundle)
    lut = load_or_build_lut(cfg, model, data.val_images[:1])
    evaluator = Evaluator(model, data, cfg.env, lut=lut)
    return NetCompressEnv(model, data, cfg.env, model_name=cfg.model.name, lut=lut, evaluator=evaluator), bundle


ENV_BUILDERS = {"top1": build_image_env, "episodic_return": build_policy_env}
"""How an experiment's env is built, by env.scorer: what is scored decides what data and model it needs."""


def build_env_and_data(cfg: ExperimentConfig, progress: bool = True) -> tuple[Any, Any]:
    """(NetCompressEnv, bundle) of one experiment: a DataBundle for classifiers, a PolicyBundle (task, spaces,
    the unpruned policy's observations) for policies."""
    validate_tree(cfg)  # a config assembled in code is checked like one read from YAML, before any work
    try:
        builder = ENV_BUILDERS[cfg.env.scorer]
    except KeyError:
        raise ConfigError(f"env.scorer: unknown scorer {cfg.env.scorer!r}; choose one of "
                          f"{', '.join(ENV_BUILDERS)}.") from None
    return builder(cfg, progress)


def build_evaluator(config: ExperimentConfig | str | os.PathLike[str] | Mapping[str, Any],
                    progress: bool = False) -> Any:
    """The Evaluator of an experiment, built from its config alone (what a worker in a fresh process needs):
    the same data, model (pretrained as configured), tensors and latency table as the search's env."""
    return build_env_and_data(resolve_config(config), progress)[0].evaluator


def build_env(config: ExperimentConfig | str | os.PathLike[str] | Mapping[str, Any]) -> Any:
    """Entry point of `autocompress/NetCompress-v0`: everything from one experiment config, the baseline
    trained first when the config has `pretrain:` and no weights (as `autocompress search` does)."""
    return build_env_and_data(resolve_config(config))[0]
