"""CLI commands (placeholder until its owner adds them)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to `sub`."""
