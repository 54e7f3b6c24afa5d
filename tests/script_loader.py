"""Import a benchmark script from scripts/ as a module, for the tests that check a script's own functions."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@cache
def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as module `autocompress_script_<name>` (imported once; the scripts import their
    siblings such as plot_utils, so scripts/ goes on the path, and dataclasses look their module up in
    sys.modules while a class is made, so it is registered there first)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"autocompress_script_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
