"""Data: splits, seeding, augmentation only on train, errors, loaders and preloaded tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from autocompress.config import AutocompressError, DataConfig
from autocompress.data import DataError, ImageTensorDataset, load_data, make_loader, take_tensors, val_count


@pytest.fixture(scope="module")
def digits():
    with pytest.warns(UserWarning, match="using 359"):
        return load_data(DataConfig(name="digits", val_size=5000))


def test_digits_shapes_and_split(digits) -> None:
    assert digits.input_shape == (1, 16, 16)
    assert digits.num_classes == 10
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1078, 359, 360)
    x, y = digits.test[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)


def test_val_disjoint_from_train_and_seeded(digits) -> None:
    train_idx = set(digits.train.indices.tolist())
    val_idx = set(digits.val.indices.tolist())
    test_idx = set(digits.test.indices.tolist())
    assert not train_idx & val_idx and not (train_idx | val_idx) & test_idx
    again = load_data(DataConfig(name="digits", val_size=100, seed=0))
    other = load_data(DataConfig(name="digits", val_size=100, seed=1))
    assert len(again.val) == 100
    assert torch.equal(again.test.indices, digits.test.indices)  # the test split never moves
    assert not torch.equal(again.val.indices, other.val.indices)
    assert torch.equal(load_data(DataConfig(name="digits", val_size=100, seed=0)).val.indices, again.val.indices)


def test_only_train_is_augmented(digits) -> None:
    assert digits.train.augment is not None and not digits.train.augment.flip
    assert digits.val.augment is None and digits.test.augment is None
    torch.manual_seed(0)
    views = torch.stack([digits.train[0][0] for _ in range(20)])
    assert (views - views[0]).abs().amax() > 0  # random crops differ
    assert torch.equal(digits.val[0][0], digits.val[0][0])
    plain = load_data(DataConfig(name="digits", val_size=100, augment=False))
    assert plain.train.augment is None


def test_val_count_caps_and_warns() -> None:
    assert val_count(100, 1000) == 100
    with pytest.warns(UserWarning, match="25%"):
        assert val_count(5000, 1000) == 250
    assert val_count(1000, 4373) == 1000  # the issues' 1,000 held-out images of the CIFAR-10 subset fit


def test_take_tensors_matches_items_and_is_seeded(digits) -> None:
    x, y = take_tensors(digits.val, 50, seed=3)
    assert x.shape == (50, 1, 16, 16) and y.shape == (50,) and y.dtype == torch.long
    x2, y2 = take_tensors(digits.val, 50, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    perm = torch.randperm(len(digits.val), generator=torch.Generator().manual_seed(3))
    item_x, item_y = digits.val[int(perm[0])]
    torch.testing.assert_close(x[0], item_x)
    assert y[0].item() == item_y
    assert take_tensors(digits.val, None)[0].shape[0] == len(digits.val)
    # generic path (not an ImageTensorDataset) gives the same images
    sub = torch.utils.data.Subset(digits.val, list(range(len(digits.val))))
    torch.testing.assert_close(take_tensors(sub, 50, seed=3)[0], x)


def test_normalisation_roughly_standard(digits) -> None:
    x, _ = take_tensors(digits.train, None)
    assert abs(x.mean().item()) < 0.1 and 0.8 < x.std().item() < 1.2


def test_make_loader_batches_and_seeded_shuffle(digits) -> None:
    loader = make_loader(digits.test, 64)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 1, 16, 16) and yb.shape == (64,)
    first = [next(iter(make_loader(digits.val, 32, shuffle=True, seed=5)))[1] for _ in range(2)]
    assert torch.equal(first[0], first[1])


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="valid names") as exc:
        load_data(DataConfig(name="mnist2"))
    assert isinstance(exc.value, AutocompressError)
    with pytest.raises(DataError, match="data-root"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(DataError, match="cifar10_subset.npz"):
        load_data(DataConfig(name="cifar10_subset", root=str(tmp_path)))
    with pytest.raises(DataError, match="train"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)))
    with pytest.raises(DataError, match="uint8"):
        ImageTensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2), (0.5,), (0.5,))


def test_imagefolder(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (40, 30), (i * 40, 0, 255 if cls == "a" else 0)).save(tmp_path / split / cls / f"{i}.png")
    bundle = load_data(DataConfig(name="imagefolder", root=str(tmp_path), val_size=2))
    assert bundle.num_classes == 2 and bundle.input_shape == (3, 224, 224)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 2, 10)
    assert bundle.val[0][0].shape == (3, 224, 224)


def test_cifar10_subset(shared: Path) -> None:
    bundle = load_data(DataConfig(name="cifar10_subset", root=str(shared / "data"), val_size=500))
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3873, 500, 761)
    assert bundle.mean == pytest.approx((0.485, 0.456, 0.406))
    assert bundle.train.augment is not None and bundle.train.augment.flip


def test_fashion_mnist(shared: Path) -> None:
    bundle = load_data(DataConfig(name="fashion_mnist", root=str(shared / "data"), val_size=1000))
    assert bundle.input_shape == (1, 28, 28)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (59000, 1000, 10000)
    x, y = take_tensors(bundle.test, 10)
    assert x.shape == (10, 1, 28, 28) and int(y.max()) < 10
