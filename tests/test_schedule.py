"""Schedule JSON: round trip, strict validation with clear errors, applying to the right model only."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
import torch
from prune_models import TinyChain, TinyResNet, randomize_bn

from autocompress.pruning import Pruner, Schedule, ScheduleError, apply_schedule, structure_hash
from autocompress.pruning.prune import kept_count
from autocompress.pruning.schedule import MAX_BYTES

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
    assert data["format"] == "autocompress.schedule" and data["version"] == 2
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
        (lambda d: d.update(version=6), "version 6 is not supported"),
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
        (lambda d: d["groups"][1].update(prune_ratio=True), "group 'layer1.0.conv1': prune_ratio True"),
        (lambda d: d["groups"][1].update(prune_ratio=float("inf")), "group 'layer1.0.conv1': prune_ratio inf"),
        (lambda d: d["groups"][1].update(prune_ratio=None), "group 'layer1.0.conv1': prune_ratio None"),
        (lambda d: d["groups"][0].update(channels_before=10**40), "'channels_before' must be an integer in \\[1, "),
        (lambda d: d["groups"][0].update(channels_after=1), r"prune_ratio 0\.25 keeps about 6 of 8 channels, but"),
        (lambda d: d["groups"][0].update(prune_ratio=0.0), "removes none of the 8 channels but channels_after is 6"),
        (lambda d: d.update(metrics={"deep": json.loads("[" * 100 + "]" * 100)}), "'metrics' is nested more than"),
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


def test_unreadable_schedule_files_raise_schedule_error(made, tmp_path):
    (tmp_path / "latin1.json").write_bytes(made[3].to_json().replace("tiny_resnet", "tiny_r\u00e9snet").encode("latin-1"))
    with pytest.raises(ScheduleError, match="not UTF-8 text"):
        Schedule.load(tmp_path / "latin1.json")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(ScheduleError, match="nested too deeply"):
        Schedule.load(tmp_path / "deep.json")
    with pytest.raises(ScheduleError, match="not valid JSON"):  # over Python's int-digit limit: a bare ValueError
        Schedule.from_json('{"format": ' + "1" * 5000 + "}")
    with open(tmp_path / "huge.json", "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ScheduleError, match="larger than 64 MB"):
        Schedule.load(tmp_path / "huge.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + made[3].to_json().encode())
    assert Schedule.load(tmp_path / "bom.json") == made[3]


def test_every_ratio_the_pruner_rounds_still_loads(made):
    """The ratio/channel checks allow whatever round_to / min_channels did (they are not in the file)."""
    rng = random.Random(0)
    data = made[3].to_dict()
    for _ in range(300):
        round_to, min_channels = rng.choice([1, 2, 8, 32, rng.randint(1, 300)]), rng.choice([1, 8, 64])
        groups = []
        for i in range(rng.randint(1, 30)):
            before, ratio = rng.choice([8, 16, 64, 256, rng.randint(1, 300)]), rng.choice([0.0, rng.random() * 0.999])
            groups.append({"name": f"g{i}", "members": [f"g{i}"], "channels_before": before, "prune_ratio": ratio,
                           "channels_after": kept_count(before, ratio, round_to, min_channels)})
        assert len(Schedule.from_dict({**data, "groups": groups}).groups) == len(groups)


@pytest.mark.parametrize(
    "group, edit, message",
    [
        ("layer3.0.conv1", {"prune_ratio": 0.0}, "removes none of the"),  # ratio 0, yet channels were removed
        ("layer3.0.conv2", {"prune_ratio": 0.05}, "no rounding goes below"),  # keeps ~30 of 32, file says 16
    ],
)
def test_ratio_that_no_rounding_explains_is_refused(made, group, edit, message):
    data = made[3].to_dict()
    data["groups"] = [{**g, **edit} if g["name"] == group else g for g in data["groups"]]
    with pytest.raises(ScheduleError, match=f"group '{group}': .*{message}"):
        Schedule.from_dict(data)


def test_a_huge_schedule_is_checked_in_linear_time(made):
    data = made[3].to_dict()
    group = {"members": ["x"], "channels_before": 8, "channels_after": 4, "prune_ratio": 0.5}
    groups = [{**group, "name": f"g{i}"} for i in range(150_000)]
    t = time.perf_counter()
    assert len(Schedule.from_dict({**data, "groups": groups}).groups) == 150_000
    with pytest.raises(ScheduleError, match=r"\['g0', 'g1', .*\] and 74994 more appear more than once"):
        Schedule.from_dict({**data, "groups": groups[:75_000] * 2})
    assert time.perf_counter() - t < 5.0  # names.count made this minutes


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
