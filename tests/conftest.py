"""Shared fixtures: the read-only ../shared folder (skipped with a reason where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autocompress.config import shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (or $AUTOCOMPRESS_SHARED); tests needing it skip on a user's machine without it."""
    path = shared_dir()
    if not (path / "models").is_dir():
        pytest.skip(f"shared folder not found at {path.resolve()} (set AUTOCOMPRESS_SHARED)")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
