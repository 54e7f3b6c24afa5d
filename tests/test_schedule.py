"""Schedule JSON: round trip, strict validation with clear errors, applying to the right model only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from prune_models import TinyChain, TinyResNet, randomize_bn

from autocompress.pruning import Pruner, Schedule, ScheduleError, apply_schedule, structure_hash

X = torch.randn(2, 3, 32, 32)


@pytest.fixture(scope="module")
def made():
    torch.manual_seed(0)
    model = randomize_bn(TinyResNet())
    pruner = Pruner(model, X)
    ratios = {g.name: 0.25 + 0.05 * i for i, g in enumerate(pruner.groups)}
    schedule = Schedule.from_pruner(pruner, ratios, "tiny_resnet", budget={"kind": "macs", "fraction": 0.5},
                                    metrics={"accuracy": 91.5, "latency_ms": 1.25})
    return model, pruner, ratios, schedule


def test_round_trip_is_unchanged(made, tmp_path):
    _, pruner, ratios, schedule = made
    path = schedule.save(tmp_path / "s.json")
    loaded = Schedule.load(path)
    assert loaded == schedule
    assert loaded.to_json() == schedule.to_json()
    assert loaded.prune_ratios() == ratios
    assert loaded.kept_channels() == pruner.kept_channels(ratios)
    data = json.loads(path.read_text())
    assert data["format"] == "autocompress.schedule" and data["version"] == 1
    assert set(data["groups"][0]) == {"name", "members", "channels_before", "channels_after", "prune_ratio"}
    assert data["metrics"]["accuracy"] == 91.5 and 0 < data["metrics"]["macs_ratio"] < 1
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def _broken(schedule: Schedule, edit) -> str:
    data = schedule.to_dict()
    edit(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.update(format="other"), "not an autocompress schedule"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
        (lambda d: d.pop("groups"), r"missing key\(s\) \['groups'\]"),
        (lambda d: d.update(extra=1), r"unknown key\(s\) \['extra'\]"),
        (lambda d: d["model"].pop("structure_hash"), "'model' must be"),
        (lambda d: d["groups"][1].update(prune_ratio=1.0), "group 'layer1.0.conv1': prune_ratio 1.0"),
        (lambda d: d["groups"][1].update(prune_ratio=-0.2), "group 'layer1.0.conv1': prune_ratio"),
        (lambda d: d["groups"][2].update(prune_ratio="half"), "group 'layer2.0.conv1': prune_ratio"),
        (lambda d: d["groups"][0].pop("members"), r"group 'conv1': missing \['members'\]"),
        (lambda d: d["groups"][0].update(channels_after=99), "channels_after 99 > channels_before 8"),
        (lambda d: d["groups"].append(dict(d["groups"][0])), r"\['conv1'\] appear more than once"),
        (lambda d: d.update(groups=[]), "non-empty list"),
    ],
)
def test_malformed_schedules_raise_clear_errors(made, edit, match):
    with pytest.raises(ScheduleError, match=match):
        Schedule.from_json(_broken(made[3], edit))


def test_nan_bad_json_and_missing_file(made, tmp_path):
    text = made[3].to_json().replace('"prune_ratio": 0.3', '"prune_ratio": NaN', 1)
    assert "NaN" in text
    with pytest.raises(ScheduleError, match="prune_ratio nan"):
        Schedule.from_json(text)
    with pytest.raises(ScheduleError, match="not valid JSON"):
        Schedule.from_json("{not json")
    with pytest.raises(ScheduleError, match="does not exist"):
        Schedule.load(tmp_path / "missing.json")


def test_apply_schedule_builds_the_same_model(made):
    model, pruner, ratios, schedule = made
    with torch.no_grad():
        assert torch.equal(apply_schedule(model, schedule, X).eval()(X), pruner.prune(ratios).eval()(X))


def test_schedule_for_another_model_names_the_groups(made):
    _, _, _, schedule = made
    with pytest.raises(ScheduleError, match="groups not in this model: conv1.*missing from the schedule: features.0"):
        apply_schedule(TinyChain(), schedule, X)
    with pytest.raises(ScheduleError, match="groups of another size: conv1 \\(8 channels in the schedule, 16"):
        apply_schedule(TinyResNet(width=16), schedule, X)
    with pytest.raises(ScheduleError, match="structure hash"):
        apply_schedule(TinyResNet(num_classes=5), schedule, X)  # same groups, other classifier


def test_structure_hash_is_stable_across_processes():
    code = (
        "import sys; sys.path.insert(0, 'tests'); from prune_models import TinyResNet; "
        "from autocompress.pruning import structure_hash; print(structure_hash(TinyResNet()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == structure_hash(TinyResNet())
    assert structure_hash(TinyResNet()) != structure_hash(TinyResNet(num_classes=5))
