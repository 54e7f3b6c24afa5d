"""autocompress: an RL agent learns how much to prune each layer (AMC), against measured latency.

The few names a user needs, imported lazily so that `import autocompress` stays cheap:

    from autocompress import load_config, run_experiment, NetCompressEnv, Schedule, apply_schedule
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "autocompress.config",
    "ExperimentConfig": "autocompress.config",
    "AutocompressError": "autocompress.config",
    "run_experiment": "autocompress.pipeline",
    "Search": "autocompress.search",
    "NetCompressEnv": "autocompress.envs",
    "DiscreteActions": "autocompress.envs",
    "Pruner": "autocompress.pruning",
    "Schedule": "autocompress.pruning",
    "apply_schedule": "autocompress.pruning",
    "get_model": "autocompress.models",
    "load_data": "autocompress.data",
    "LatencyMeter": "autocompress.measure.latency",
    "save_pruned": "autocompress.export",
    "load_pruned": "autocompress.export",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")
