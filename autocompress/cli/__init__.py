"""The command line: the only code that reads argv.

Each subcommand lives in a module of this package with a `register(subparsers)` function that
adds its parser and sets `func` (a callable taking the parsed namespace and returning an exit code).
Handlers turn the namespace into config dataclasses at once; nothing deeper sees argparse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from autocompress import __version__
from autocompress.config import AutocompressError
from autocompress.paths import WRITE_ERRNOS, ensure_writable

# Order is the order of `autocompress --help`.
_MODULES = ("models_cmd", "train_cmd", "prune_cmd", "latency_cmd", "search_cmd", "quantize_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocompress",
        description="Learn per-layer channel pruning with RL against measured latency (AMC).",
    )
    parser.add_argument("--version", action="version", version=f"autocompress {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in _MODULES:
        importlib.import_module(f"autocompress.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `autocompress` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "out", None) and getattr(args, "out_kind", None):
            ensure_writable(args.out, folder=args.out_kind == "folder")  # fail now, not after the work
        return int(args.func(args) or 0)
    except AutocompressError as exc:
        print(f"autocompress {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"autocompress {args.command}: error: cannot write{where}: {exc.strerror or exc}; free space or "
              "choose another --out (files already saved were not touched).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autocompress {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
