"""Saving a pruned model and rebuilding it in a fresh process; TorchScript and ONNX export."""

from __future__ import annotations

import datetime
import subprocess
import sys

import numpy as np
import pytest
import torch

from autocompress.export import ExportError, export_onnx, export_torchscript, load_pruned, save_pruned
from autocompress.models import get_model
from autocompress.pruning import Pruner, Schedule, ScheduleError

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = get_model("cifar10_resnet20").eval()
    pruner = Pruner(model, X)
    ratios = {g.name: 0.4 for g in pruner.groups}
    pruned = pruner.prune(ratios).eval()
    with torch.no_grad():  # change the weights so a rebuild that ignored the file would differ
        for p in pruned.parameters():
            p.add_(0.01)
    schedule = Schedule.from_pruner(pruner, ratios, "cifar10_resnet20")
    path = save_pruned(tmp_path_factory.mktemp("pruned") / "m.pt", pruned, schedule, "cifar10_resnet20", 10, 3,
                       (3, 32, 32))
    return path, pruned, schedule


def test_load_pruned_in_a_fresh_process_gives_identical_outputs(saved, tmp_path):
    path, pruned, _ = saved
    torch.save(X, tmp_path / "x.pt")
    code = (
        "import sys, torch; from autocompress.export import load_pruned; "
        f"m, s = load_pruned({str(path)!r}); x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True); "
        f"torch.save(m(x).detach(), {str(tmp_path / 'y.pt')!r}); print(len(s.groups))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), pruned(X))
    assert int(out.stdout.strip()) == 12


def test_load_pruned_returns_the_schedule(saved):
    path, pruned, schedule = saved
    model, loaded = load_pruned(path)
    assert loaded == schedule
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_bad_files_raise_export_error(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        load_pruned(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(ExportError, match="not an autocompress pruned model"):
        load_pruned(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ExportError, match="not a readable"):
        load_pruned(tmp_path / "junk.pt")
    torch.save({"format": "autocompress.pruned_model", "when": datetime.date(2024, 1, 1)}, tmp_path / "obj.pt")
    with pytest.raises(ExportError, match="holds objects other than tensors") as err:
        load_pruned(tmp_path / "obj.pt")
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)  # torch's text advises the unsafe load


def _spec(**changes):
    return lambda d: d["model"].update(changes)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("model"), r"lacks \['model'\]"),
        (lambda d: d.pop("state_dict"), r"lacks \['state_dict'\]"),
        (lambda d: d.pop("schedule"), r"lacks \['schedule'\]"),
        (lambda d: d.update(schedule={"groups": []}), "'schedule' is dict, not schedule JSON text"),
        (lambda d: d.update(state_dict=[1, 2]), "'state_dict' is not a mapping of names to tensors"),
        (lambda d: d["state_dict"].update({"fc.weight": 3}), "'state_dict' is not a mapping of names to tensors"),
        (lambda d: d.update(model="cifar10_resnet20"), "'model' is str, not the model spec"),
        (lambda d: d["model"].pop("name"), "model spec 'name' is None"),
        (_spec(num_classes=None), "model spec 'num_classes' is None, not a positive integer"),
        (_spec(num_classes=True), "model spec 'num_classes' is True"),
        (_spec(num_classes=10**12), "model spec 'num_classes' 1000000000000 exceeds the"),
        (_spec(in_channels=-1), "model spec 'in_channels' is -1"),
        (_spec(input_shape="3x32x32"), "model spec 'input_shape' is '3x32x32'"),
        (_spec(input_shape=[3, 32]), r"model spec 'input_shape' \[3, 32\] must be \[in_channels 3, height, width\]"),
        (_spec(input_shape=[1, 32, 32]), r"must be \[in_channels 3, height, width\]"),
        (_spec(input_shape=[3, 10**6, 10**6]), "more than any image"),
    ],
)
def test_damaged_pruned_files_raise_export_error(saved, tmp_path, edit, match):
    payload = torch.load(saved[0], weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ExportError, match=match):
        load_pruned(tmp_path / "bad.pt")


def test_a_pruned_file_that_is_not_a_dict_or_holds_a_broken_schedule(saved, tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ExportError, match="not an autocompress pruned model"):
        load_pruned(tmp_path / "list.pt")
    payload = torch.load(saved[0], weights_only=True)
    torch.save({**payload, "schedule": "{broken"}, tmp_path / "bad.pt")
    with pytest.raises(ScheduleError, match=r"bad.pt \(schedule\): not valid JSON"):
        load_pruned(tmp_path / "bad.pt")


def test_torchscript_and_onnx_match_eager(saved, tmp_path):
    _, pruned, _ = saved
    ts = torch.jit.load(str(export_torchscript(pruned, tmp_path / "m.ts", X[:1])))
    with torch.no_grad():
        ref = pruned(X)
        assert torch.allclose(ts(X), ref, rtol=1e-5, atol=1e-4)
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(pruned, tmp_path / "m.onnx", X[:1])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": X.numpy()})[0]
    assert np.allclose(out, ref.numpy(), rtol=1e-4, atol=1e-3)
