"""Data: splits, seeding, augmentation only on train, errors, loaders and preloaded tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from autocompress import image_cache
from autocompress.config import AutocompressError, DataConfig
from autocompress.data import (
    DataError,
    ImageTensorDataset,
    load_data,
    make_loader,
    stratified_val,
    take_tensors,
    val_count,
)
from autocompress.image_cache import CACHE_ENV_VAR


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


def _image_tree(root: Path, splits: tuple[str, ...], classes: int, per_class: int, size: tuple[int, int],
                suffix: str = ".png") -> None:
    for split in splits:
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(per_class):
                colour = (i * 40 % 256, 20 * c % 256, 255 if c % 2 else 0)
                Image.new("RGB", size, colour).save(root / split / f"class{c}" / f"{i:04d}{suffix}")


def test_imagefolder_resized_when_asked(tmp_path: Path) -> None:
    _image_tree(tmp_path, ("train", "val"), 2, 5, (40, 30))
    bundle = load_data(DataConfig(name="imagefolder", root=str(tmp_path), val_size=2, image_size=64))
    assert bundle.num_classes == 2 and bundle.input_shape == (3, 64, 64)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 2, 10)
    assert bundle.val[0][0].shape == (3, 64, 64) and bundle.train[0][0].shape == (3, 64, 64)


def test_imagefolder_keeps_native_size_and_reads_test(tmp_path: Path) -> None:
    _image_tree(tmp_path, ("train", "test"), 2, 8, (20, 12))
    bundle = load_data(DataConfig(name="imagefolder", root=str(tmp_path), val_size=4))
    assert bundle.input_shape == (3, 12, 20)
    assert bundle.train[0][0].shape == (3, 12, 20) and bundle.test[0][0].shape == (3, 12, 20)
    assert sorted(bundle.val.dataset.targets[i] for i in bundle.val.indices) == [0, 0, 1, 1]  # stratified


def test_stratified_val_keeps_class_shares_and_seed() -> None:
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    mask = stratified_val(labels, 100, seed=3)
    assert torch.bincount(labels[mask]).tolist() == [60, 30, 10]
    assert torch.equal(mask, stratified_val(labels, 100, seed=3))
    assert not torch.equal(mask, stratified_val(labels, 100, seed=4))
    assert int(stratified_val(labels, 7, seed=0).sum()) == 7  # remainders go to the largest fractions


def test_cifar10_jpeg_decodes_once_then_reads_the_cache(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    _image_tree(root / "cifar10-jpeg", ("train", "test"), 10, 4, (32, 32), suffix=".jpg")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    bundle = load_data(DataConfig(name="cifar10_jpeg", root=str(root), val_size=10, seed=1))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 40)
    assert bundle.input_shape == (3, 32, 32) and bundle.train.augment is not None
    assert torch.bincount(bundle.val.labels[bundle.val.indices], minlength=10).tolist() == [1] * 10
    assert len(list((tmp_path / "cache").glob("cifar10-jpeg-*.npz"))) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(image_cache, "_decode", no_decoding)
    again = load_data(DataConfig(name="cifar10_jpeg", root=str(root), val_size=10, seed=1))
    assert torch.equal(again.test.images, bundle.test.images)
    assert torch.equal(again.val.indices, bundle.val.indices)


def test_cifar10_jpeg_errors_name_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    with pytest.raises(DataError, match="cifar10-jpeg"):
        load_data(DataConfig(name="cifar10_jpeg", root=str(tmp_path)))
    _image_tree(tmp_path / "cifar10-jpeg", ("train", "test"), 10, 1, (32, 32), suffix=".jpg")
    (tmp_path / "cifar10-jpeg" / "test" / "class0" / "0000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot decode .*0000.jpg"):
        load_data(DataConfig(name="cifar10_jpeg", root=str(tmp_path), val_size=1))


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


@pytest.mark.slow
def test_cifar10_jpeg_complete(shared: Path) -> None:
    bundle = load_data(DataConfig(name="cifar10_jpeg", root=str(shared / "data")))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45000, 5000, 10000)
    assert torch.bincount(bundle.val.labels[bundle.val.indices]).tolist() == [500] * 10
    assert not set(bundle.val.indices.tolist()) & set(bundle.train.indices.tolist())
