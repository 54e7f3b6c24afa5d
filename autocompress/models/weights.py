"""Loading weights from a user's file, with errors that say what does not fit and why."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.models.errors import ModelError

_MAX_KEYS_SHOWN = 5


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from `path`: a plain state_dict, or a dict holding one under 'state_dict' or 'model'."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {str(p)!r} does not exist; check the path (relative to {Path.cwd()}).")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):  # torch's text here advises weights_only=False: never that
            first = "not a PyTorch file, or it holds objects other than tensors"
        raise ModelError(
            f"weights file {str(p)!r} is not a readable PyTorch state dict ({first}); "
            "save one with torch.save(model.state_dict(), path)."
        ) from None
    return _unwrap(obj, p)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(
            f"weights file {str(path)!r} holds no state dict (a mapping of names to tensors, "
            "optionally under 'state_dict' or 'model')."
        )
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _shown(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:_MAX_KEYS_SHOWN]) + more


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Load strictly; on any mismatch raise ModelError naming the first mismatched keys."""
    own = model.state_dict()
    bad_shapes = [
        f"{k} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and own[k].shape != v.shape
    ]
    if bad_shapes:
        raise ModelError(
            f"{source} do not fit the model: shape mismatch in {_shown(bad_shapes)}. Check --model and "
            "num_classes; weights of a pruned model need its schedule applied first."
        )
    result = model.load_state_dict(dict(state_dict), strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing from the file: {_shown(result.missing_keys)}")
        if result.unexpected_keys:
            parts.append(f"not in the model: {_shown(result.unexpected_keys)}")
        raise ModelError(f"{source} do not fit the model; keys {'; '.join(parts)}. Is it the right --model?")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `path` into `model` (strict, with clear errors) and return the model."""
    load_state_dict_checked(model, read_state_dict(path), source=f"weights {str(path)!r}")
    return model
