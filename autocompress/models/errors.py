"""The models package's error type."""

from __future__ import annotations

from autocompress.config import AutocompressError


class ModelError(AutocompressError, ValueError):
    """An unknown model name, or weights that are missing, corrupt or do not fit the model."""
