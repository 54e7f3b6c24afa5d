"""Save and reload pruned networks; export them to TorchScript and ONNX.

A pruned model is stored as its state_dict plus the schedule and the model spec (zoo name, classes, input
channels, input shape), not as a pickled module: `load_pruned` rebuilds the architecture from the zoo,
prunes it to the schedule's channel counts and loads the weights strictly, so files stay loadable across
code changes and never execute pickled code. A schedule that puts layers in INT8 deploys as an ONNX Runtime
model instead: `export_int8` writes it as `<stem>.int8.onnx` beside the pruned file (`int8_path`).
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.atomic import atomic_torch_save, atomic_write
from autocompress.config import AutocompressError, PruneConfig, QuantConfig
from autocompress.measure.latency import mha_fastpath_off
from autocompress.measure.size import save_deflated
from autocompress.pruning import Schedule, apply_schedule

FORMAT = "autocompress.pruned_model"
VERSION = 1
INT8_SUFFIX = ".int8.onnx"
"""The INT8 export of `<stem>.pt` is `<stem>.int8.onnx` in the same folder (see `int8_path`)."""
MAX_INPUT_ELEMENTS = 2**26
"""Largest recorded input (elements of one image): `load_pruned` allocates an example of that size."""
_RESAVE = "the file is damaged or was not written by autocompress; save it again with `autocompress apply`."


class ExportError(AutocompressError):
    """A pruned-model file is unreadable or an export target is unavailable; the message says the fix."""


def save_pruned(
    path: str | os.PathLike[str],
    model: nn.Module,
    schedule: Schedule,
    model_name: str,
    num_classes: int,
    in_channels: int,
    input_shape: Sequence[int],
    deflate: bool = False,
) -> Path:
    """One atomic torch.save of {format, version, schedule JSON, state_dict, model spec}. `deflate` compresses
    every archive entry (`autocompress.measure.size.save_deflated`: the zeros of a sparse network shrink to
    almost nothing); `load_pruned` and `torch.load` read either file."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "schedule": schedule.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": {
            "name": model_name,
            "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "input_shape": [int(s) for s in input_shape],
        },
    }
    if deflate:
        return save_deflated(payload, path)
    return atomic_torch_save(path, payload)


def read_pruned(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of a pruned-model file, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"pruned model file {str(path)!r} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError):  # torch's text here advises weights_only=False: never that
            first = "not a PyTorch file, or it holds objects other than tensors and plain data"
        raise ExportError(
            f"{path}: not a readable pruned model file ({first}); save one with `autocompress apply`."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ExportError(
            f"{path}: not an autocompress pruned model (no format {FORMAT!r}); save one with `autocompress apply`."
        )
    if payload.get("version") != VERSION:
        raise ExportError(f"{path}: pruned model version {payload.get('version')!r}; this autocompress reads {VERSION}.")
    _check_payload(payload, path)
    return payload


def _check_payload(payload: dict[str, Any], path: Path) -> None:
    """Check every field `load_pruned` uses, so a damaged file fails here, not as a KeyError deep inside."""
    missing = sorted({"schedule", "state_dict", "model"} - set(payload))
    if missing:
        raise ExportError(f"{path}: pruned model file lacks {missing}; {_RESAVE}")
    if not isinstance(payload["schedule"], str):
        raise ExportError(f"{path}: 'schedule' is {type(payload['schedule']).__name__}, not schedule JSON text; {_RESAVE}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ExportError(f"{path}: 'state_dict' is not a mapping of names to tensors; {_RESAVE}")
    spec = payload["model"]
    if not isinstance(spec, dict):
        raise ExportError(f"{path}: 'model' is {type(spec).__name__}, not the model spec; {_RESAVE}")
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise ExportError(f"{path}: model spec 'name' is {spec.get('name')!r}, not a zoo model name; {_RESAVE}")
    weights = sum(v.numel() for v in state.values())
    for key in ("num_classes", "in_channels"):
        if not _positive_int(spec.get(key)):
            raise ExportError(f"{path}: model spec {key!r} is {spec.get(key)!r}, not a positive integer; {_RESAVE}")
        if spec[key] > weights:  # the classifier / first layer holds at least one weight per class / channel
            raise ExportError(f"{path}: model spec {key!r} {spec[key]} exceeds the {weights} weights stored; {_RESAVE}")
    shape = spec.get("input_shape")
    if not (isinstance(shape, list) and all(_positive_int(s) for s in shape)):
        raise ExportError(f"{path}: model spec 'input_shape' is {shape!r}, not a list of positive sizes; {_RESAVE}")
    if len(shape) not in (1, 3) or shape[0] != spec["in_channels"]:  # an image, or a policy's observation
        raise ExportError(
            f"{path}: model spec 'input_shape' {shape} must be [in_channels {spec['in_channels']}, height, width] "
            f"(or [in_channels] for a vector input); {_RESAVE}"
        )
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ExportError(
            f"{path}: model spec 'input_shape' {shape} has {math.prod(shape)} elements, more than any image "
            f"(limit {MAX_INPUT_ELEMENTS}); {_RESAVE}"
        )


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def load_pruned(path: str | os.PathLike[str]) -> tuple[nn.Module, Schedule]:
    """Rebuild a pruned model saved by `save_pruned` (fresh process safe): zoo model -> schedule -> weights."""
    from autocompress.models import get_model, load_state_dict_checked

    payload = read_pruned(path)
    spec = payload["model"]
    schedule = Schedule.from_json(payload["schedule"], f"{path} (schedule)")
    model = get_model(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"])
    example = torch.zeros(1, *spec["input_shape"])
    pruned = apply_schedule(model, schedule, example, PruneConfig())
    load_state_dict_checked(pruned, payload["state_dict"], source=str(path))
    return pruned.eval(), schedule


def export_torchscript(model: nn.Module, path: str | os.PathLike[str], example: torch.Tensor) -> Path:
    """Trace `model` (eval mode) and save it atomically as TorchScript."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still the portable format
            traced = torch.jit.trace(model, example)
            return atomic_write(path, lambda f: torch.jit.save(traced, f))
    finally:
        model.train(was_training)


def export_onnx(model: nn.Module, path: str | os.PathLike[str], example: torch.Tensor) -> Path:
    """Export to ONNX with the TorchScript-based exporter (dynamo=False: ~0.2 s instead of seconds)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install 'autocompress[onnx]'.") from None
    import io

    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with torch.no_grad(), mha_fastpath_off():
            torch.onnx.export(
                model,
                (example,),
                buf,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def int8_path(pruned_path: str | os.PathLike[str]) -> Path:
    """Where the INT8 export of a pruned-model file lives: `p.pt` -> `p.int8.onnx` beside it, so that
    `autocompress latency --pruned p.pt` finds the model that really deploys."""
    path = Path(pruned_path)
    return path.with_name(path.stem + INT8_SUFFIX)


def quant_config(schedule: Schedule) -> QuantConfig:
    """The calibration settings a schedule's "quantization" block records (what the search measured)."""
    block = schedule.quantization
    if block is None:
        raise ExportError("the schedule quantizes no layer; there is no INT8 model to export.")
    return QuantConfig(calib_images=block["calib_images"], per_channel=block["per_channel"],
                       calibration=block["calibration"], reduce_range=bool(block.get("reduce_range", False)))


def export_int8(model: nn.Module, schedule: Schedule, calib_images: torch.Tensor,
                path: str | os.PathLike[str]) -> nn.Module:
    """`model` (already pruned to `schedule`) in static INT8 where the schedule says, calibrated on
    `calib_images` (training images; the first calib_images of them are used), written atomically to `path`.

    Returns the ONNX Runtime model (`autocompress.quantize.OrtModule`) so callers can score and time it.
    """
    from autocompress.quantize import quantize_layers

    int8 = quantize_layers(model.eval(), calib_images, schedule.layer_precision(), quant_config(schedule))
    blob = getattr(int8, "onnx_bytes", None)
    if not isinstance(blob, bytes):
        raise ExportError("the schedule quantizes no layer; there is no INT8 model to export.")
    atomic_write(path, lambda f: f.write(blob))
    return int8
