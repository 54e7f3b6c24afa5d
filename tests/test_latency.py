"""LatencyMeter: real timing of tiny real networks, with bounds loose enough for a busy 2-core machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.config import AutocompressError, LatencyConfig
from autocompress.measure.latency import LatencyComparison, LatencyError, LatencyMeter, LatencyStats

SHAPE = (3, 32, 32)


def conv_net(width: int) -> nn.Module:
    """Two conv-BN-ReLU blocks and a linear head; `width` sets the cost (conv2 MACs grow as width**2)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    )


class ThreadProbe(nn.Module):
    """Records the torch thread count seen inside forward (to check the meter sets it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(torch.get_num_threads())
        return self.conv(x)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_bigger_net_is_slower(runtime: str) -> None:
    meter = LatencyMeter(LatencyConfig(runtime=runtime, rounds=15, warmup=3), SHAPE)
    small, big = conv_net(8), conv_net(32)
    cmp = meter.compare(big, small)
    assert isinstance(cmp, LatencyComparison)
    assert cmp.n == 15
    assert cmp.speedup > 1.3, cmp
    assert cmp.latency_ms < cmp.baseline_ms
    assert cmp.spread >= 0
    stats_small, stats_big = meter.measure(small), meter.measure(big)
    assert isinstance(stats_small, LatencyStats)
    assert stats_small.n == 15
    assert 0 < stats_small.p10_ms <= stats_small.median_ms <= stats_small.p90_ms
    assert stats_big.median_ms > stats_small.median_ms


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_speedup_against_itself_is_about_one(runtime: str) -> None:
    meter = LatencyMeter(LatencyConfig(runtime=runtime, rounds=20, warmup=3), SHAPE)
    model = conv_net(16)
    cmp = meter.compare(model, model)
    assert 0.7 < cmp.speedup < 1.4, cmp


def test_threads_are_set_and_restored() -> None:
    probe = ThreadProbe()
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    meter = LatencyMeter(LatencyConfig(threads=target, rounds=3, warmup=1), SHAPE)
    meter.measure(probe)
    assert target in probe.seen
    assert torch.get_num_threads() == before


def test_training_flags_restored_and_model_not_moved() -> None:
    model = conv_net(8).train()
    model[1].eval()  # a mixed state must come back exactly
    LatencyMeter(LatencyConfig(rounds=2, warmup=1), SHAPE).measure(model)
    assert model.training and model[0].training and not model[1].training
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_bad_input_shape_is_a_clear_error(runtime: str) -> None:
    meter = LatencyMeter(LatencyConfig(runtime=runtime, rounds=2), (1, 28, 28))
    with pytest.raises(LatencyError, match=r"\(1, 1, 28, 28\)") as info:
        meter.measure(conv_net(8))
    assert "--input-shape" in str(info.value)
    assert isinstance(info.value, AutocompressError)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(LatencyError, match="one to three positive integers"):
        LatencyMeter(LatencyConfig(), (3, 32, 32, 1))
    with pytest.raises(LatencyError, match="one to three positive integers"):
        LatencyMeter(LatencyConfig(), (3, 0))
    with pytest.raises(AutocompressError, match="threads"):
        LatencyMeter(LatencyConfig(threads=0), SHAPE)
    with pytest.raises(LatencyError, match="expected a torch.nn.Module"):
        LatencyMeter(LatencyConfig(), SHAPE).measure("resnet56")  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU is present")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(LatencyError, match="no CUDA GPU"):
        LatencyMeter(LatencyConfig(device="cuda"), SHAPE)


def test_missing_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail as if absent
    with pytest.raises(LatencyError, match=r'pip install "autocompress\[onnx\]"'):
        LatencyMeter(LatencyConfig(runtime="onnxruntime"), SHAPE)


def test_prepared_session_is_reused_until_shapes_change() -> None:
    meter = LatencyMeter(LatencyConfig(runtime="onnxruntime", rounds=2), SHAPE)
    model = conv_net(8)
    first = meter.prepare(model)
    assert meter.prepare(model) is first
    model[3] = nn.Conv2d(8, 8, 1, bias=False)  # structure changed in place: must re-export
    assert meter.prepare(model) is not first


def test_batch_size_is_the_timed_batch() -> None:
    meter = LatencyMeter(LatencyConfig(batch_size=4, rounds=2, warmup=0), SHAPE)
    assert meter.expected_shape == (4, 3, 32, 32)
    assert meter.measure(conv_net(8)).n == 2


@pytest.mark.slow
def test_compile_runtime_runs() -> None:
    """torch.compile costs ~20 s on the first shape here (hence slow); it must still time correctly."""
    meter = LatencyMeter(LatencyConfig(runtime="compile", rounds=3, warmup=1), SHAPE)
    stats = meter.measure(conv_net(8))
    assert stats.n == 3 and stats.median_ms > 0


def test_cli_latency_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    from autocompress.cli import main

    rc = main(["latency", "--model", "tiny_cnn", "--rounds", "3", "--warmup", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["latency_ms"] > 0 and out["speedup"] == 1.0 and out["macs_ratio"] == 1.0
    assert (out["runtime"], out["threads"], out["batch"], out["n"]) == ("torch", 1, 1, 3)


def test_cli_latency_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from autocompress.cli import main

    assert main(["latency", "--rounds", "2"]) == 2
    assert "give --model" in capsys.readouterr().err
    assert main(["latency", "--model", "no_such_net"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["latency", "--model", "tiny_cnn", "--input-shape", "3,32"])
    assert "C,H,W" in capsys.readouterr().err


def test_cli_latency_of_a_saved_pruned_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--pruned: the file's model is timed against the unpruned zoo model it records."""
    from autocompress.cli import main
    from autocompress.export import save_pruned
    from autocompress.models import get_model
    from autocompress.pruning import Pruner, Schedule

    model = get_model("tiny_cnn")
    pruner = Pruner(model, torch.zeros(1, *SHAPE))
    ratios = {g.name: 0.5 for g in pruner.groups}
    path = tmp_path / "pruned.pt"
    save_pruned(path, pruner.prune(ratios), Schedule.from_pruner(pruner, ratios, "tiny_cnn"), "tiny_cnn", 10, 3, SHAPE)
    rc = main(["latency", "--pruned", str(path), "--runtime", "onnxruntime", "--rounds", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["model"] == "tiny_cnn" and out["n"] == 5
    assert 0 < out["macs_ratio"] < 0.6  # half the channels of every group: about a quarter of the MACs
    assert out["latency_ms"] > 0 and out["baseline_ms"] > 0 and out["spread"] >= 0
    assert main(["latency", "--pruned", str(path), "--model", "cifar10_resnet20"]) == 2
    assert "does not match" in capsys.readouterr().err


def test_config_runtimes_and_the_registry_agree():
    from autocompress.config import LATENCY_RUNTIMES
    from autocompress.measure.latency import RUNTIMES

    assert set(LATENCY_RUNTIMES) == set(RUNTIMES)
    assert [n for n, r in RUNTIMES.items() if r.compiles_per_shape] == ["compile"]
