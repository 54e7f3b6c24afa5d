"""Training and fine-tuning: SGD with momentum, cosine learning rate per step, label smoothing,
optional knowledge distillation from a teacher, fp16 AMP on CUDA or bf16 autocast on the CPU, channels-last
convolutions, and an atomic checkpoint each epoch."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.config import AutocompressError, TrainConfig
from autocompress.data import DataBundle, make_loader
from autocompress.measure.accuracy import evaluate, resolve_device
from autocompress.progress import progress as progress_bar

CHECKPOINT_NAME = "checkpoint.pt"


class TrainError(AutocompressError, RuntimeError):
    """Training cannot go on (e.g. the loss diverged); the message says what to change."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, then os.replace: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the user's usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: KL(teacher || student) at temperature T, scaled by T^2 to keep gradient size."""
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    q = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean", log_target=True) * (t * t)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for this device and config, or None for plain fp32."""
    if device.type == "cuda" and cfg.amp:
        return torch.float16
    if device.type == "cpu" and cfg.cpu_bf16:
        if not cpu_has_native_bf16():
            warnings.warn("cpu_bf16 is on but this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 is emulated "
                          "and training will likely be slower than fp32; turn cpu_bf16 off.", stacklevel=3)
        return torch.bfloat16
    return None


@contextmanager
def memory_format(modules: list[nn.Module], channels_last: bool) -> Iterator[None]:
    """Hold `modules` in channels-last layout for the block, then hand them back contiguous, so that
    what follows (export, latency timing, the user's own code) sees the layout it expects."""
    if not channels_last:
        yield
        return
    for m in modules:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in modules:
            m.to(memory_format=torch.contiguous_format)


def _forward(model: nn.Module, x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """model(x), with the one failure channels-last brings to a user's model named, with its fix."""
    try:
        return model(x)
    except RuntimeError as exc:
        if cfg.channels_last and "view size is not compatible" in str(exc):
            raise TrainError("the model calls .view() on a feature map, which fails in channels-last layout; "
                             "use .flatten()/.reshape() in its forward, or train with channels_last: false "
                             "(in the config's pretrain/finetune section).") from exc
        raise


def _cosine(total_steps: int) -> Any:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def train(
    model: nn.Module,
    bundle: DataBundle,
    cfg: TrainConfig,
    teacher: nn.Module | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> list[dict[str, float]]:
    """Train `model` in place on bundle.train; evaluate on bundle.val after each epoch.

    Returns one dict per epoch (epoch, lr, train_loss, train_top1, val_top1, val_top5, val_loss, seconds).
    With `out_dir`, `checkpoint.pt` (model, optimizer, scheduler, RNG, epoch, history) is rewritten atomically
    each epoch; its 'model' entry loads with `get_model(..., weights=path)`. With `resume`, a checkpoint
    already there continues where it stopped (same data order as an uninterrupted run), so an hour-long
    fine-tune killed at epoch 20 of 30 costs one epoch, not twenty.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    distill = teacher is not None and cfg.distill
    if distill:
        assert teacher is not None
        teacher.to(device).eval()
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)  # the augmentation draws from the global generator
    loader = make_loader(bundle.train, bundle.batch_size, shuffle=True, num_workers=bundle.num_workers,
                         seed=cfg.seed or 0)
    steps = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(cfg.epochs * steps))
    amp_dtype = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    history: list[dict[str, float]] = []
    if resume and out_dir is not None:
        history = _resume(Path(out_dir) / CHECKPOINT_NAME, cfg, model, optimizer, scheduler, loader.generator)
    with memory_format([model] + ([teacher] if distill and teacher is not None else []), cfg.channels_last):
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            start = time.perf_counter()
            record = _epoch(model, teacher if distill else None, loader, steps, optimizer, scheduler, scaler,
                            amp_dtype, cfg, device, epoch, progress)
            if len(bundle.val) > 0:  # type: ignore[arg-type]
                val_loader = make_loader(bundle.val, bundle.batch_size, num_workers=bundle.num_workers)
                res = evaluate(model, val_loader, device, max_batches=cfg.max_batches)
                record.update(val_top1=res.top1, val_top5=res.top5, val_loss=res.loss)
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            if progress:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
                print(f"epoch {epoch}/{cfg.epochs}: {shown}", file=sys.stderr)
            if out_dir is not None:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch, "epochs": cfg.epochs,
                         "history": history, "rng": torch.get_rng_state(),
                         "loader_rng": loader.generator.get_state() if loader.generator is not None else None}
                save_atomic(state, Path(out_dir) / CHECKPOINT_NAME)
    return history


def _resume(path: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, loader_rng: torch.Generator | None) -> list[dict[str, float]]:
    """Load a per-epoch checkpoint into model, optimizer, scheduler and both RNGs (augmentation, data
    order); the finished epochs' history.

    A checkpoint from a run with another epoch count is refused: its cosine schedule is not this one."""
    if not path.is_file():
        return []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise TrainError(f"cannot resume from {path} ({type(exc).__name__}); delete it to start the "
                         "fine-tune again.") from None
    if state.get("epochs") != cfg.epochs:
        raise TrainError(f"{path} is from a {state.get('epochs', 'unknown')}-epoch run, this one has "
                         f"{cfg.epochs} epochs; delete it or train into another folder.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if loader_rng is not None and state.get("loader_rng") is not None:
        loader_rng.set_state(state["loader_rng"])
    print(f"resuming from {path}: epoch {state['epoch']}/{cfg.epochs} done", file=sys.stderr)
    return list(state["history"])


def _epoch(
    model: nn.Module,
    teacher: nn.Module | None,
    loader: Any,
    steps: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over `loader` (at most `steps` batches); the epoch's record so far."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = progress_bar(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False,
                       dynamic_ncols=True)
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = _forward(model, x, cfg)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                kd = distillation_loss(logits, t_logits, cfg.distill_temperature)
                loss = (1.0 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
        if not torch.isfinite(loss):
            bar.close()
            raise TrainError(f"the loss became {loss.item()} in epoch {epoch}, batch {i}; lower the learning "
                             f"rate (now {cfg.lr}) or check the weights and data.")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.item() * y.shape[0]
        correct += int((logits.argmax(1) == y).sum())
        seen += int(y.shape[0])
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", top1=f"{100.0 * correct / seen:.1f}", refresh=False)
        bar.update(1)  # after the postfix, so a line printed by this update shows this step's figures
    bar.close()
    return {
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": 100.0 * correct / max(seen, 1),
    }
