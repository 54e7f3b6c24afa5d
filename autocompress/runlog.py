"""What a search records: TensorBoard scalars and figures, and a JSON-lines episode history.

Recording (`RunLogger.episode`, `.best_policy`) is separate from the search logic, so the loop
only hands over plain numbers. On resume the history and the TensorBoard events past the last
checkpoint are dropped (`purge_step`), so no episode appears twice.

Everything of a run, its hparams included, goes into one TensorBoard run (`<run folder>/tb`):
`tensorboard --logdir runs/` then lists one entry per run folder, named after it, and no extra
"hparams" runs (torch's `add_hparams` would write those into a sub-folder of their own).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorboard.compat.proto.summary_pb2 import DataClass, Summary, SummaryMetadata
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EPISODE_KEYS = {
    "reward": "episode/reward",
    "top1": "episode/accuracy",
    "latency_ms": "episode/latency_ms",
    "speedup": "episode/speedup",
    "macs_ratio": "episode/macs_ratio",
    "params_ratio": "episode/params_ratio",
    "lut_correction": "episode/lut_correction",
    "return_mean": "episode/return_mean",
    "size_ratio": "episode/size_ratio",
    "nonzero_ratio": "episode/nonzero_ratio",
}


BEST_KEYS = {"reward": "reward", "top1": "accuracy", "macs_ratio": "macs_ratio", "speedup": "speedup",
             "latency_ms": "latency_ms", "size_ratio": "size_ratio"}
"""Fields of the best policy so far, logged as best/<name> at every episode."""

STEP_NOTE = (
    "It only changes when an episode beats the best reward, so it is a step function. TensorBoard's "
    "smoothing slider smooths it like every scalar and turns each step into a ramp: read the faint "
    "unsmoothed line, or set smoothing to 0."
)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def described_scalar(tag: str, value: float, description: str) -> Summary:
    """A scalar carrying a description TensorBoard shows on its card.

    The data class is set because TensorBoard's fast (Rust) loader otherwise replaces the metadata of a
    plain `simple_value`, description included, with its own.
    """
    metadata = SummaryMetadata(
        summary_description=description,
        data_class=DataClass.DATA_CLASS_SCALAR,
        plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"),
    )
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value), metadata=metadata)])


def policy_figure(group_names: Sequence[str], prune_ratios: Sequence[float], title: str) -> Figure:
    """Per-group prune ratios as bars, sized so that labels stay readable (>= 9 pt) at the image's own size.

    The width grows with the number of groups and the height with the longest (slanted) name, rather than
    shrinking the text to fit: TensorBoard shows the image as rendered.
    """
    from matplotlib.figure import Figure

    n = len(group_names)
    longest = max((len(name) for name in group_names), default=0)
    fig = Figure(figsize=(max(6.0, 1.5 + 0.3 * n), 3.2 + 0.065 * longest), dpi=100, layout="tight")
    ax = fig.add_subplot()
    ax.bar(range(len(prune_ratios)), prune_ratios, color="#4c72b0")
    ax.set_xticks(range(n))
    ax.set_xticklabels(group_names, rotation=60, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_xlim(-0.6, max(n, 1) - 0.4)
    ax.set_ylim(0, 1)
    ax.tick_params(axis="y", labelsize=9)
    ax.yaxis.grid(True, color="#dddddd")
    ax.set_axisbelow(True)
    ax.set_ylabel("prune ratio", fontsize=10)
    ax.set_title(title, fontsize=11)
    return fig


class RunLogger:
    """TensorBoard + history.jsonl for one run folder."""

    def __init__(self, run_dir: Path, start_episode: int = 0):
        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=start_episode or None)
        self.history_path = self.run_dir / "history.jsonl"
        self._truncate_history(start_episode)
        self._described: set[str] = set()
        self._last_step = max(start_episode - 1, 0)

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
        for key, name in BEST_KEYS.items():
            if _finite(best.get(key)):
                note = f"{name} of the policy with the best reward so far. {STEP_NOTE}"
                self._scalar(f"best/{name}", best[key], step, note)
        for key, value in agent_metrics.items():
            if _finite(value):
                self.writer.add_scalar(key, value, step)
        for key, value in (record.get("timing") or {}).items():
            if _finite(value):
                self.writer.add_scalar(f"time/{key}", value, step)
        with self.history_path.open("a") as f:
            f.write(json.dumps({"episode": step, **record, **agent_metrics}, default=float) + "\n")
        self._last_step = step

    def _scalar(self, tag: str, value: float, step: int, description: str) -> None:
        """`add_scalar`, with the description on the tag's first value (TensorBoard reads it from there)."""
        if tag in self._described:
            self.writer.add_scalar(tag, value, step)
            return
        self._described.add(tag)
        self.writer.file_writer.add_summary(described_scalar(tag, value, description), step)

    def best_policy(self, step: int, group_names: Sequence[str], prune_ratios: Sequence[float], title: str) -> None:
        """The best policy's per-group prune ratios as a bar chart (AMC's characteristic shapes)."""
        self.writer.add_figure("best/policy", policy_figure(group_names, prune_ratios, title), step)

    def hparams(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """The config's scalar fields against the final metrics (TensorBoard's HPARAMS tab), in this run.

        Written into the run's own event file, so the HPARAMS table has one row per run folder. The default
        step is the last episode's, not the next one: resuming a finished run purges events from its episode
        count on, and would drop them there.
        """
        clean = {k: v for k, v in hparams.items() if isinstance(v, (int, float, str, bool))}
        scores = {f"hparam/{k}": float(v) for k, v in metrics.items() if _finite(v)}
        step = self._last_step if step is None else step
        for summary in hparams_summaries(clean, scores):
            self.writer.file_writer.add_summary(summary, step)
        for tag, value in scores.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
