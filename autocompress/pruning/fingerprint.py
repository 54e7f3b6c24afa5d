"""A model's structure fingerprint: schedules name the network they were made for by it."""

from __future__ import annotations

import hashlib
import json

from torch import nn


def structure_hash(model: nn.Module) -> str:
    """A short, process-stable hash of module names, types and parameter/buffer shapes."""
    parts = []
    for name, m in model.named_modules():
        tensors = [
            (k, list(v.shape))
            for k, v in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
            if v is not None
        ]
        parts.append([name, type(m).__name__, tensors])
    blob = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
