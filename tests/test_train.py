"""Training: loss falls on real (digits) data, checkpoints load back, distillation pulls towards the teacher."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from autocompress.config import DataConfig, TrainConfig
from autocompress.data import load_data, take_tensors
from autocompress.measure.accuracy import evaluate_tensors
from autocompress.models import get_model
from autocompress.train import (
    CHECKPOINT_NAME,
    TrainError,
    autocast_dtype,
    cpu_has_native_bf16,
    distillation_loss,
    save_atomic,
    train,
)


@pytest.fixture(scope="module")
def digits():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_data(DataConfig(name="digits", val_size=200, batch_size=64))


def test_loss_falls_and_checkpoint_loads(digits, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("tiny_cnn", in_channels=1)
    cfg = TrainConfig(epochs=5, lr=0.2, max_batches=15, label_smoothing=0.05)
    history = train(model, digits, cfg, out_dir=tmp_path, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_top1"] > 70.0  # chance is 10%
    assert history[-1]["lr"] < 1e-6 * cfg.lr + 1e-9  # cosine reaches zero at the end
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["epoch"] == 5 and "optimizer" in ckpt
    reloaded = get_model("tiny_cnn", in_channels=1, weights=tmp_path / CHECKPOINT_NAME)
    x, y = take_tensors(digits.test, 100)
    assert evaluate_tensors(reloaded, x, y).top1 == pytest.approx(evaluate_tensors(model, x, y).top1)
    assert not list(tmp_path.glob("*.tmp"))


def test_frozen_shortcut_stays_fixed() -> None:
    bundle = load_data(DataConfig(name="digits", val_size=0, batch_size=32))
    model = get_model("cifar10_resnet20", in_channels=1)
    fixed = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert fixed
    train(model, bundle, TrainConfig(epochs=1, max_batches=2), progress=False)
    for n, p in model.named_parameters():
        if n in fixed:
            assert torch.equal(p, fixed[n]), n


def test_distillation_pulls_student_to_teacher(digits) -> None:
    torch.manual_seed(1)
    teacher = get_model("tiny_cnn", in_channels=1).eval()
    student = get_model("tiny_cnn", in_channels=1)
    x, _ = take_tensors(digits.val, 200)

    def gap() -> float:
        student.eval()
        with torch.no_grad():
            return distillation_loss(student(x), teacher(x), 4.0).item()

    before = gap()
    cfg = TrainConfig(epochs=2, lr=0.05, distill=True, distill_alpha=1.0, max_batches=10)
    train(student, digits, cfg, teacher=teacher, progress=False)
    assert gap() < 0.5 * before


def test_distillation_loss_zero_for_equal_logits() -> None:
    z = torch.randn(4, 10)
    assert distillation_loss(z, z, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(z, -z, 4.0).item() > 0


def test_divergence_is_a_clear_error(digits) -> None:
    model = get_model("tiny_cnn", in_channels=1)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    with pytest.raises(TrainError, match="learning rate"):
        train(model, digits, TrainConfig(epochs=1, max_batches=2), progress=False)


def test_save_atomic(tmp_path: Path) -> None:
    path = save_atomic({"a": torch.ones(2)}, tmp_path / "sub" / "x.pth")
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))


def test_channels_last_trains_like_nchw_and_hands_back_contiguous(digits) -> None:
    """Same fp32 arithmetic in NHWC; the model and the teacher come back in the default layout."""
    results = {}
    for channels_last in (False, True):
        torch.manual_seed(3)
        teacher = get_model("tiny_cnn", in_channels=1)
        model = get_model("tiny_cnn", in_channels=1)
        cfg = TrainConfig(epochs=1, lr=0.05, max_batches=5, distill=True, channels_last=channels_last)
        train(model, digits, cfg, teacher=teacher, progress=False)
        for m in (model, teacher):
            for p in m.parameters():
                assert p.is_contiguous()
        results[channels_last] = model.state_dict()
    for name, value in results[False].items():
        assert torch.allclose(value.float(), results[True][name].float(), atol=1e-4), name


def test_cpu_bf16_learns_and_keeps_fp32_weights(digits) -> None:
    torch.manual_seed(0)
    model = get_model("tiny_cnn", in_channels=1)
    cfg = TrainConfig(epochs=4, lr=0.2, max_batches=15, cpu_bf16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU without native bf16 warns, and still trains
        history = train(model, digits, cfg, progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_top1"] > 60.0  # chance is 10%
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_autocast_dtype_follows_device_and_config() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(TrainConfig(), cpu) is None
    assert autocast_dtype(TrainConfig(), cuda) is torch.float16
    assert autocast_dtype(TrainConfig(amp=False), cuda) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert autocast_dtype(TrainConfig(cpu_bf16=True), cpu) is torch.bfloat16
    assert bool(caught) == (not cpu_has_native_bf16())


class _ViewNet(torch.nn.Module):
    """Flattens its feature map with .view(), as many hand-written models do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)  # digits are 16x16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_view_in_forward_is_a_clear_error_in_channels_last(digits) -> None:
    with pytest.raises(TrainError, match="channels_last: false"):
        train(_ViewNet(), digits, TrainConfig(epochs=1, max_batches=1), progress=False)
    model = _ViewNet()
    train(model, digits, TrainConfig(epochs=1, max_batches=2, channels_last=False), progress=False)
    assert all(p.is_contiguous() for p in model.parameters())


def test_resume_after_interruption_matches_an_uninterrupted_run(digits, tmp_path: Path, monkeypatch) -> None:
    cfg = TrainConfig(epochs=3, lr=0.1, max_batches=6)
    torch.manual_seed(0)
    whole = get_model("tiny_cnn", in_channels=1)
    torch.manual_seed(1)
    want = train(whole, digits, cfg, out_dir=tmp_path / "whole", progress=False)

    import autocompress.train as train_mod

    real_epoch, calls = train_mod._epoch, []

    def dies_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the session ends mid-epoch
        return real_epoch(*args, **kwargs)

    torch.manual_seed(0)
    model = get_model("tiny_cnn", in_channels=1)
    torch.manual_seed(1)
    monkeypatch.setattr(train_mod, "_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(model, digits, cfg, out_dir=tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_mod, "_epoch", real_epoch)
    torch.manual_seed(0)
    again = get_model("tiny_cnn", in_channels=1)  # a fresh process: new weights, RNG elsewhere
    torch.manual_seed(123)
    got = train(again, digits, cfg, out_dir=tmp_path / "cut", progress=False, resume=True)
    assert [h["epoch"] for h in got] == [1, 2, 3]
    assert got[-1]["train_loss"] == pytest.approx(want[-1]["train_loss"])
    for a, b in zip(again.state_dict().values(), whole.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(TrainError, match="3-epoch run, this one has 4 epochs"):
        train(get_model("tiny_cnn", in_channels=1), digits, TrainConfig(epochs=4, max_batches=2),
              out_dir=tmp_path / "cut", progress=False, resume=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="delete it"):
        train(get_model("tiny_cnn", in_channels=1), digits, cfg, out_dir=tmp_path / "bad", progress=False,
              resume=True)
