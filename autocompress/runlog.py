"""What a search records: TensorBoard scalars and figures, and a JSON-lines episode history.

Recording (`RunLogger.episode`, `.best_policy`) is separate from the search logic, so the loop
only hands over plain numbers. On resume the history and the TensorBoard events past the last
checkpoint are dropped (`purge_step`), so no episode appears twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

EPISODE_KEYS = {
    "reward": "episode/reward",
    "top1": "episode/accuracy",
    "latency_ms": "episode/latency_ms",
    "speedup": "episode/speedup",
    "macs_ratio": "episode/macs_ratio",
    "params_ratio": "episode/params_ratio",
    "lut_correction": "episode/lut_correction",
}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class RunLogger:
    """TensorBoard + history.jsonl for one run folder."""

    def __init__(self, run_dir: Path, start_episode: int = 0):
        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start_episode or None)
        self.history_path = self.run_dir / "history.jsonl"
        self._truncate_history(start_episode)

    def _truncate_history(self, keep: int) -> None:
        if not self.history_path.exists():
            return
        lines = self.history_path.read_text().splitlines()[:keep]
        self.history_path.write_text("".join(line + "\n" for line in lines))

    def config(self, yaml_text: str) -> None:
        """The resolved config, as text in TensorBoard."""
        self.writer.add_text("config", "```yaml\n" + yaml_text + "\n```", 0)

    def episode(self, step: int, record: Mapping[str, Any], agent_metrics: Mapping[str, float], best: Mapping[str, Any]) -> None:
        """One episode's figures: episode/*, best/*, agent/*, time/*."""
        for key, tag in EPISODE_KEYS.items():
            if _finite(record.get(key)):
                self.writer.add_scalar(tag, record[key], step)
        for key in ("reward", "top1", "macs_ratio", "speedup", "latency_ms"):
            if _finite(best.get(key)):
                self.writer.add_scalar(f"best/{'accuracy' if key == 'top1' else key}", best[key], step)
        for key, value in agent_metrics.items():
            if _finite(value):
                self.writer.add_scalar(key, value, step)
        for key, value in (record.get("timing") or {}).items():
            if _finite(value):
                self.writer.add_scalar(f"time/{key}", value, step)
        with self.history_path.open("a") as f:
            f.write(json.dumps({"episode": step, **record, **agent_metrics}, default=float) + "\n")

    def best_policy(self, step: int, group_names: Sequence[str], prune_ratios: Sequence[float], title: str) -> None:
        """The best policy's per-group prune ratios as a bar chart (AMC's characteristic shapes)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(group_names)), 4.0), dpi=110)
        ax.bar(range(len(prune_ratios)), prune_ratios, color="#4c72b0")
        ax.set_xticks(range(len(group_names)))
        ax.set_xticklabels(group_names, rotation=90, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("prune ratio")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        self.writer.add_figure("best/policy", fig, step)
        plt.close(fig)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The config's scalar fields against the final metrics (TensorBoard's HPARAMS tab)."""
        clean = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
        self.writer.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items() if _finite(v)}, run_name="hparams")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
