"""Small helpers shared by the benchmark scripts: read a run's history, plot best-so-far curves, write atomically,
turn a user error into a one-line message.

Kept out of the package on purpose: they only serve the reports in docs/benchmarks.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autocompress.config import AutocompressError


def run_script(main: Callable[[], object]) -> None:
    """Run a script's main; a bad argument, path or dataset exits 2 with its message, not a traceback."""
    try:
        main()
    except AutocompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor(). Where the name is as vague as
    virtual machines often make it ("AMD EPYC", "Intel(R) Xeon(R) Processor"), family and model numbers follow,
    which tell the generations apart (AMD family 25 model 17: Zen 4)."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not line.strip():
                break
            fields.setdefault(key.strip(), value.strip())
        if "model name" in fields:
            name = fields["model name"]
            if not any(ch.isdigit() for ch in name) and "cpu family" in fields and "model" in fields:
                name += f" (family {fields['cpu family']}, model {fields['model']})"
            return name
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """JSON to a temp file in the same folder, then os.replace (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=float)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def best_so_far(history_path: str | Path, key: str = "top1") -> list[float]:
    """Running maximum of `key` over the episodes of one run's history.jsonl (one value per episode)."""
    values = []
    with Path(history_path).open() as f:
        for line in f:
            if line.strip():
                values.append(float(json.loads(line)[key]))
    return list(np.maximum.accumulate(values)) if values else []


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def plot_best_curves(curves: Mapping[str, Sequence[Sequence[float]]], path: str | Path, title: str,
                     ylabel: str = "best held-out top-1 (%)") -> Path:
    """Mean (line) and min-max over seeds (band) of best-so-far curves per method; one-episode methods as a
    dashed horizontal line. Saved as PNG with the Agg backend, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max((len(c) for runs in curves.values() for c in runs), default=1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, runs in curves.items():
        runs = [list(r) for r in runs if len(r) > 0]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        if n == 1:
            level = float(np.mean([r[0] for r in runs]))
            ax.axhline(level, linestyle="--", linewidth=1.2, label=f"{name} (1 episode)", color="gray")
            continue
        arr = np.asarray([r[:n] for r in runs])
        x = np.arange(1, n + 1)
        (line,) = ax.plot(x, arr.mean(axis=0), label=f"{name} (n={len(runs)})")
        ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), alpha=0.15, color=line.get_color())
    ax.set_xlim(1, max(longest, 2))
    ax.set_xlabel("episodes (evaluated policies)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
