"""Shared fixtures: the read-only ../shared folder (skipped with a reason where absent)."""

from __future__ import annotations

import os
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


# Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine extra threads
# oversubscribe the cores (we saw 20x slowdowns); tests that measure threads set them explicitly.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

# Ray (tests/test_parallel.py) must bind 127.0.0.1 only, never the machine's external interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
