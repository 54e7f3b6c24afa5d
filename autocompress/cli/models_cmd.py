"""CLI: `models` (list the model zoo and torchvision names)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add `models` to `sub`."""
    p = sub.add_parser("models", help="list the model names --model accepts",
                       description="List the zoo's model names; torchvision classification models are `tv:<name>`.")
    p.add_argument("--torchvision", action="store_true", help="also list the tv:<name> torchvision models")
    p.add_argument("--json", action="store_true", help="print one JSON object {\"models\": [...]}")
    p.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    from autocompress.models import list_models

    names = list_models(include_torchvision=args.torchvision)
    if args.json:
        print(json.dumps({"models": names}))
    else:
        print("\n".join(names))
        if not args.torchvision:
            print("tv:<name>  (any torchvision classification model; `autocompress models --torchvision` lists them)")
    return 0
