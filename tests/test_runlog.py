"""RunLogger: what `tensorboard --logdir runs/` shows for several run folders, read from the event files."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.compat.proto.summary_pb2 import DataClass
from tensorboard.plugins.hparams import metadata as hparams_metadata

from autocompress.runlog import RunLogger, policy_figure

GROUPS = ["conv1", "layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1"]


def log_run(run_dir: Path, lr: float, episodes: int = 4) -> None:
    """A short search's worth of records: the best improves at episodes 0 and 2."""
    log = RunLogger(run_dir)
    best: dict[str, float] = {}
    for step in range(episodes):
        reward = [0.5, 0.4, 0.7, 0.6][step % 4]
        record = {"reward": reward, "top1": 100 * reward, "macs_ratio": 0.5, "timing": {"eval_s": 0.1}}
        if not best or reward > best["reward"]:
            best = dict(record)
            log.episode(step, record, {"agent/q_mean": 0.1}, best)
            log.best_policy(step, GROUPS, [0.1, 0.5, 0.3, 0.8], f"best policy, episode {step}")
        else:
            log.episode(step, record, {"agent/q_mean": 0.1}, best)
    log.hparams({"search.agent": "ddpg", "agent.lr": lr, "env.budget": 0.5, "unused": [1, 2]},
                {"reward": best["reward"], "top1": best["top1"], "speedup": None})
    log.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    log_run(root / "quick", lr=1e-3)
    log_run(root / "slow", lr=1e-4)
    return root


@pytest.fixture(scope="module")
def mux(runs: Path) -> EventMultiplexer:
    """The runs as TensorBoard's Python loader sees them for `--logdir runs/`."""
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(runs))
    multiplexer.Reload()
    return multiplexer


def test_each_run_folder_is_one_run_with_no_separate_hparams_run(runs: Path, mux: EventMultiplexer) -> None:
    assert set(mux.Runs()) == {"quick/tb", "slow/tb"}
    assert not [p for p in runs.rglob("*") if p.is_dir() and p.name not in ("quick", "slow", "tb")]
    scalars = mux.PluginRunToTagToContent("scalars")
    for run in ("quick/tb", "slow/tb"):
        for tag in ("episode/reward", "best/reward", "best/accuracy", "agent/q_mean", "time/eval_s",
                    "hparam/reward", "hparam/top1"):
            assert tag in scalars[run], f"{tag} missing from {run}: {sorted(scalars[run])}"
        assert "hparam/speedup" not in scalars[run]  # None is not a metric
        assert "best/policy" in mux.PluginRunToTagToContent("images")[run]


def test_hparams_are_in_the_run_itself(mux: EventMultiplexer) -> None:
    hparams = mux.PluginRunToTagToContent("hparams")
    assert set(hparams) == {"quick/tb", "slow/tb"}
    for run, lr in (("quick/tb", 1e-3), ("slow/tb", 1e-4)):
        content = hparams[run]
        start_info = content[hparams_metadata.SESSION_START_INFO_TAG]
        start = hparams_metadata.parse_session_start_info_plugin_data(start_info)
        assert start.hparams["agent.lr"].number_value == pytest.approx(lr)
        assert start.hparams["search.agent"].string_value == "ddpg" and "unused" not in start.hparams
        experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
        assert {m.name.tag for m in experiment.metric_infos} == {"hparam/reward", "hparam/top1"}
        final = mux.Tensors(run, "hparam/reward")
        assert len(final) == 1 and final[0].step == 3  # the last episode's step: a resume does not purge it


def test_best_curves_are_steps_and_say_smoothing_distorts_them(runs: Path, mux: EventMultiplexer) -> None:
    events = mux.Tensors("quick/tb", "best/reward")
    values = [(e.step, round(float(e.tensor_proto.float_val[0]), 6)) for e in events]
    assert values == [(0, 0.5), (1, 0.5), (2, 0.7), (3, 0.7)]
    assert "smoothing" in mux.SummaryMetadata("quick/tb", "best/reward").summary_description
    # the raw metadata carries the data class, without which TensorBoard's Rust loader drops the description
    raw = EventAccumulator(str(runs / "quick" / "tb"))
    raw.Reload()
    metadata = raw.SummaryMetadata("best/accuracy")
    assert metadata.data_class == DataClass.DATA_CLASS_SCALAR
    assert "step function" in metadata.summary_description
    assert [round(e.value, 3) for e in raw.Scalars("best/accuracy")] == [50.0, 50.0, 70.0, 70.0]


@pytest.mark.parametrize("n", [3, 20, 60])
def test_policy_figure_labels_are_readable_and_inside_the_image(n: int) -> None:
    names = [f"layer{i // 9 + 1}.{i % 9}.conv1" for i in range(n)]
    fig = policy_figure(names, [i / n for i in range(n)], f"best policy, episode 7 ({n} groups)")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.axes[0]
    labels = ax.get_xticklabels() + ax.get_yticklabels() + [ax.title, ax.yaxis.label]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert min(t.get_fontsize() for t in labels) >= 9
    assert 0 < abs(ax.get_xticklabels()[0].get_rotation()) <= 90  # slanted group names
    width, height = canvas.get_width_height()
    renderer = canvas.get_renderer()
    for text in labels:  # tight layout: nothing cut off at the image's edges
        box = text.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, text.get_text()
    assert fig.get_figwidth() >= 0.3 * n  # room for every name grows with the number of groups
