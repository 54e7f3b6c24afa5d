"""Errors a user can cause while pruning (bad ratios, unknown groups, unsupported layers)."""

from __future__ import annotations

from autocompress.config import AutocompressError


class PruneError(AutocompressError, ValueError):
    """A pruning request cannot be honoured; the message names the group or layer and the fix."""
