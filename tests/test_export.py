"""Saving a pruned model and rebuilding it in a fresh process; TorchScript and ONNX export."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from autocompress.export import ExportError, export_onnx, export_torchscript, load_pruned, save_pruned
from autocompress.models import get_model
from autocompress.pruning import Pruner, Schedule

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
        f"m, s = load_pruned({str(path)!r}); x = torch.load({str(tmp_path / 'x.pt')!r}); "
        f"torch.save(m(x).detach(), {str(tmp_path / 'y.pt')!r}); print(len(s.groups))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), pruned(X))
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
