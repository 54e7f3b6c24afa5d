"""Depth pruning (removing residual blocks): the pruner, the schedule, the env action and INT8 on top."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from autocompress.config import DROP_ACTION, ConfigError, EnvConfig, LatencyConfig, PruneConfig, validate
from autocompress.envs import EnvData, NetCompressEnv
from autocompress.measure.flops import count_macs_params
from autocompress.models.cifar_resnet import cifar_resnet
from autocompress.pruning import Schedule
from autocompress.pruning.errors import PruneError
from autocompress.pruning.prune import Pruner, apply_schedule
from autocompress.pruning.schedule import ScheduleError

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = cifar_resnet(20).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that a wrong block shows in the output
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def pruner(resnet20) -> Pruner:
    return Pruner(resnet20, X, PruneConfig(scope="all"))


def test_only_blocks_with_an_identity_shortcut_can_go(pruner):
    # ResNet-20: 9 blocks; the first of stages 2 and 3 downsample through a conv shortcut
    assert pruner.droppable == {f"layer{s}.{b}.conv1": f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)
                                if (s, b) not in ((2, 0), (3, 0))}


def test_ratio_one_removes_the_block_exactly(resnet20, pruner):
    ratios = {"layer1.1.conv1": 1.0, "layer3.2.conv1": 1.0, "layer2.1.conv1": 0.5}
    pruned = pruner.prune(ratios)
    assert isinstance(pruned.layer1[1], nn.Identity) and isinstance(pruned.layer3[2], nn.Identity)
    assert pruned.layer2[1].conv1.out_channels == 16
    reference = pruner.prune({"layer2.1.conv1": 0.5})
    reference.layer1[1] = nn.Identity()
    reference.layer3[2] = nn.Identity()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(pruned(x), reference(x))
    kept = pruner.kept_channels(ratios)
    assert kept["layer1.1.conv1"] == 0 and kept["layer3.2.conv1"] == 0
    counted = count_macs_params(pruned, X)[0] / count_macs_params(resnet20, X)[0]
    assert pruner.cost_model.macs(kept) / pruner.cost_model.base_macs == pytest.approx(counted, rel=0.01)


def test_a_group_that_is_no_block_cannot_be_removed(pruner):
    with pytest.raises(PruneError, match="not the inner width"):
        pruner.kept_channels({"layer2.0.conv1": 1.0})
    with pytest.raises(PruneError, match=r"\[1, 32\]"):
        pruner.check_kept({"layer2.0.conv1": 0})


def test_schedule_with_removed_blocks_round_trips_as_version_4(resnet20, pruner, tmp_path):
    ratios = {"layer1.0.conv1": 1.0, "layer3.1.conv1": 0.25}
    schedule = Schedule.from_pruner(pruner, ratios, "cifar10_resnet20")
    assert schedule.version == 4 and schedule.dropped_groups() == ["layer1.0.conv1"]
    path = schedule.save(tmp_path / "s.json")
    loaded = Schedule.load(path)
    rebuilt = apply_schedule(resnet20, loaded, X, PruneConfig(scope="all"))
    with torch.no_grad():
        assert torch.equal(rebuilt(X), pruner.prune(ratios)(X))
    data = json.loads(path.read_text())
    data["version"] = 3
    with pytest.raises(ScheduleError, match="version 4"):
        Schedule.from_dict(data)


def test_schedule_refuses_inconsistent_or_misplaced_removals(resnet20, pruner):
    data = Schedule.from_pruner(pruner, {}, "cifar10_resnet20").to_dict()
    data["version"] = 4
    entry = next(g for g in data["groups"] if g["name"] == "layer1.1.conv1")
    entry["channels_after"] = 0  # but prune_ratio 0
    with pytest.raises(ScheduleError, match="prune_ratio 1 and channels_after 0"):
        Schedule.from_dict(data)
    entry["channels_after"], entry["prune_ratio"] = 16, 1.0
    with pytest.raises(ScheduleError, match="prune_ratio 1 and channels_after 0"):
        Schedule.from_dict(data)
    entry["channels_after"], entry["prune_ratio"] = 16, 0.0
    shortcut = next(g for g in data["groups"] if g["name"] == "layer3.0.conv1")
    shortcut["channels_after"], shortcut["prune_ratio"] = 0, 1.0
    with pytest.raises(ScheduleError, match="not the inner width of a residual block"):
        apply_schedule(resnet20, Schedule.from_dict(data), X, PruneConfig(scope="all"))


def test_torchvision_resnet_blocks_without_downsample_are_found():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(num_classes=10).eval()
    pruner = Pruner(model, torch.randn(1, 3, 64, 64), PruneConfig())
    assert sorted(pruner.droppable.values()) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    pruned = pruner.prune({"layer1.1.conv1": 1.0, "layer4.1.conv1": 1.0})
    assert isinstance(pruned.layer4[1], nn.Identity)
    assert pruned(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_drop_blocks_cannot_be_priced_by_a_latency_table():
    with pytest.raises(ConfigError, match="drop_blocks"):
        validate(EnvConfig(drop_blocks=True, latency_mode="lut", budget_kind="latency"), "env")
    validate(EnvConfig(drop_blocks=True), "env")  # a MACs budget counts removed blocks exactly


def test_a_config_assembled_in_code_is_checked_before_any_work(tmp_path):
    """`dataclasses.replace` skips the YAML checks; building the env must not (a search once ran with a
    combination its saved config.yaml then refused), and it refuses before reading data or weights."""
    from dataclasses import replace

    from autocompress.config import ExperimentConfig, dump_config, load_config
    from autocompress.envs.factory import build_env_and_data

    base = ExperimentConfig()
    env = replace(base.env, drop_blocks=True, budget_kind="latency", latency_mode="measured", precisions="fp32",
                  reward="acc_latency", latency=LatencyConfig(runtime="onnxruntime"))
    cfg = replace(base, data=replace(base.data, root=str(tmp_path / "no-such-data")), env=env)
    with pytest.raises(ConfigError, match=r"^env\.drop_blocks: a latency look-up table"):
        build_env_and_data(cfg, progress=False)
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    with pytest.raises(ConfigError, match="drop_blocks"):  # the same verdict as its YAML would get
        load_config(tmp_path / "config.yaml")


def _data(n: int = 32, size: int = 16) -> EnvData:
    g = torch.Generator().manual_seed(0)
    return EnvData(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g),
                   torch.randn(n, 3, size, size, generator=g))


def test_env_top_action_removes_droppable_blocks_and_maps_the_rest(resnet20):
    cfg = EnvConfig(drop_blocks=True, budget=0.9, max_ratio=0.8, val_images=32, prune=PruneConfig(scope="all"))
    env = NetCompressEnv(resnet20, _data(), cfg, model_name="cifar10_resnet20")
    env.reset(seed=0)
    for _ in env.groups:
        *_, terminated, _, info = env.step(np.array([DROP_ACTION + 0.02], np.float32))
    assert terminated
    schedule = info["schedule"]
    for name, ratio in schedule.items():
        assert ratio == (1.0 if name in env.pruner.droppable else pytest.approx(0.97 * 0.8))
    assert info["macs_ratio"] < 0.5  # 7 of 9 blocks gone, the rest at 76%


def test_joint_int8_episode_with_a_removed_block_quantizes_what_is_left():
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = cifar_resnet(8).eval()  # one block per stage; only layer1.0 has an identity shortcut
    ort = LatencyConfig(runtime="onnxruntime", rounds=3, warmup=1, threads=1)
    cfg = EnvConfig(drop_blocks=True, precisions="fp32+int8", latency_mode="measured", latency=ort,
                    budget_kind="latency", budget=0.8, reward="acc_latency", val_images=32)
    env = NetCompressEnv(model, _data(), cfg, model_name="cifar10_resnet8")
    assert list(env.pruner.droppable) == ["layer1.0.conv1"]
    env.reset(seed=0)
    for g in env.groups:
        *_, info = env.step(np.array([1.0 if g.name == "layer1.0.conv1" else 0.0, 0.9], np.float32))
    assert info["schedule"]["layer1.0.conv1"] == 1.0
    assert "layer1.0.conv1" not in info["layer_precision"] and "layer1.0.conv2" not in info["layer_precision"]
    assert info["int8_layers"] == 8  # stem, 2 x (2 convs + shortcut), classifier: all that is left
    deployed = env.evaluator.deployable(env.compress(info["schedule"]), info["precision"])
    assert deployed(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_cli_finetune_of_a_quantized_schedule_with_removed_blocks_writes_and_scores_int8(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from autocompress.cli import main
    from autocompress.models import get_model

    torch.manual_seed(0)
    model = get_model("cifar10_resnet20", num_classes=10, in_channels=1).eval()  # digits: 1 x 16 x 16
    torch.save(model.state_dict(), tmp_path / "w.pt")
    pruner = Pruner(model, torch.randn(1, 1, 16, 16), PruneConfig())
    layers = {s.name: "int8" for s in pruner.layer_specs if s.kind in ("conv", "linear")}
    quant = {"layers": layers, "calib_images": 32, "per_channel": True, "calibration": "minmax"}
    Schedule.from_pruner(pruner, {"layer1.1.conv1": 1.0, "layer3.2.conv1": 1.0}, "cifar10_resnet20",
                         quantization=quant).save(tmp_path / "s.json")
    code = main(["finetune", "--model", "cifar10_resnet20", "--weights", str(tmp_path / "w.pt"), "--schedule",
                 str(tmp_path / "s.json"), "--data", "digits", "--epochs", "1", "--max-batches", "3",
                 "--out", str(tmp_path / "ft"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "ft" / "pruned_model.int8.onnx").is_file() and 0 <= result["top1_int8"] <= 100
    assert main(["latency", "--pruned", result["pruned_model"], "--model", "cifar10_resnet20", "--rounds", "3"]) == 0
    assert "onnxruntime" in capsys.readouterr().out  # the INT8 file beside it is what is timed
