"""Search checkpoints that are safe to load: a checksummed container around tensors and JSON.

A run folder is something people share, so resuming one must not be able to run code: nothing here
unpickles arbitrary objects. Tensors (agent weights, optimiser and replay state) go through
`torch.load(weights_only=True)`, everything else is JSON. A SHA-256 over the payload is checked before
anything is parsed, so a flipped bit or a truncated copy is refused instead of resuming with wrong state.

Layout: the line `autocompress-checkpoint`, one JSON header line (version, payload bytes, sha256), then
the payload: a `torch.save` of `{"tensors": ..., "meta": <JSON text>}`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress.atomic import atomic_write
from autocompress.config import AutocompressError

MAGIC = b"autocompress-checkpoint\n"
VERSION = 2
_MAX_HEADER = 4096


class CheckpointError(AutocompressError, ValueError):
    """A checkpoint that cannot be trusted or read; the message says why and what to do."""


def save(path: str | os.PathLike[str], tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write `tensors` (anything `weights_only` loading accepts) and JSON-able `meta` to `path` atomically."""
    buf = io.BytesIO()
    torch.save({"tensors": tensors, "meta": json.dumps(meta, default=_plain)}, buf)
    payload = buf.getvalue()
    header = {"version": VERSION, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    blob = MAGIC + json.dumps(header).encode("ascii") + b"\n" + payload
    return atomic_write(path, lambda f: f.write(blob))


def load(path: str | os.PathLike[str], legacy_classes: Iterable[type] = ()) -> tuple[int, dict[str, Any], Any]:
    """(version, tensors, meta) of a checkpoint, verified before it is parsed.

    A version-1 file (a plain `torch.save` of one dict, written before this format) is still read, with
    `weights_only=True` and only `legacy_classes` allowed besides tensors and builtins; it has no checksum,
    so it comes back as (1, whole dict, None).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}.") from None
    if data.startswith(MAGIC):
        return VERSION, *_load_v2(path, data[len(MAGIC):])
    if data.startswith(b"PK\x03\x04") and zipfile.is_zipfile(io.BytesIO(data)):
        with torch.serialization.safe_globals(list(legacy_classes)):
            state = _load_restricted(path, data)
        return 1, state, None
    raise CheckpointError(f"{path} is not an autocompress search checkpoint.")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (agents' actions end up in schedules) as the Python values they hold."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"a checkpoint cannot hold {type(value).__name__}")


def _load_v2(path: Path, rest: bytes) -> tuple[dict[str, Any], Any]:
    line, sep, payload = rest[:_MAX_HEADER].partition(b"\n")
    try:
        header = json.loads(line) if sep else None
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or not {"version", "bytes", "sha256"} <= header.keys():
        raise CheckpointError(f"{path}: the checkpoint header is damaged; start a new run.")
    if header["version"] != VERSION:
        raise CheckpointError(f"{path}: checkpoint format {header['version']} is not known to this version of "
                              f"autocompress (it reads {VERSION}); upgrade autocompress or start a new run.")
    payload = rest[len(line) + 1:]
    if len(payload) != header["bytes"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CheckpointError(f"{path} is damaged (its checksum does not match: truncated or altered); "
                              "start a new run or restore the file.")
    state = _load_restricted(path, payload)
    if not isinstance(state, dict) or not isinstance(state.get("meta"), str):
        raise CheckpointError(f"{path} is not an autocompress search checkpoint.")
    return state.get("tensors", {}), json.loads(state["meta"])


def _load_restricted(path: Path, data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign pickle is refused here, before any of its code can run
        raise CheckpointError(f"{path} is unreadable or holds objects that are not allowed in a checkpoint "
                              f"({type(exc).__name__}); it was not loaded. Start a new run.") from None
