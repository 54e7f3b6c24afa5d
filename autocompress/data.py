"""Datasets as train / held-out val / test splits, loaders, and preloaded tensors.

Small image sets (digits, the CIFAR-10 subset, Fashion-MNIST, CIFAR-10/100) are held in memory as uint8
tensors and normalised per item, with no PIL round trip; only `imagefolder` reads files per item. The
validation split is carved from the training set by a seeded permutation and is never augmented.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from autocompress.config import DATA_ROOT_ENV_VAR, AutocompressError, DataConfig
from autocompress.image_cache import ImageCacheError, load_image_arrays

DATASETS = ("digits", "cifar10", "cifar100", "fashion_mnist", "cifar10_subset", "cifar10_jpeg", "imagefolder")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VAL_SHARE_CAP = 0.25
"""The validation split never takes more than this share of the training images."""
DIGITS_TEST_SEED = 20240
DIGITS_TEST_SIZE = 360


class DataError(AutocompressError, ValueError):
    """A dataset is unknown, missing or malformed; the message says where we looked and how to fix it."""


@dataclass
class DataBundle:
    """Splits of one dataset plus what a model needs to know about it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]
    """(C, H, W) of one image."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 128
    """The DataConfig's batch size, carried along for training / evaluation loaders."""
    num_workers: int = 0


@dataclass(frozen=True)
class Augment:
    """Random crop after zero padding by `pad` pixels, and optional horizontal flip."""

    pad: int = 4
    flip: bool = True


class ImageTensorDataset(Dataset):
    """uint8 images (N, C, H, W) and int labels in memory; `indices` selects a split without copying."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        indices: torch.Tensor | None = None,
        augment: Augment | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = labels.long()
        self.indices = torch.arange(len(images)) if indices is None else indices.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def view(self, indices: torch.Tensor, augment: Augment | None) -> ImageTensorDataset:
        """Another split over the same memory (indices relative to this dataset)."""
        return ImageTensorDataset(self.images, self.labels, self.mean.flatten().tolist(),
                                  self.std.flatten().tolist(), self.indices[indices], augment)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255) - self.mean) / self.std

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        img = self.images[j]
        if self.augment is not None:
            img = _random_crop_flip(img, self.augment)
        return self._normalise(img), int(self.labels[j])

    def tensors(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented normalised images and labels at `positions`, in one batched operation."""
        idx = self.indices[positions]
        x = self.images[idx].float().div_(255)
        return (x - self.mean) / self.std, self.labels[idx]


def _random_crop_flip(img: torch.Tensor, aug: Augment) -> torch.Tensor:
    if aug.pad > 0:
        _, h, w = img.shape
        padded = F.pad(img, (aug.pad, aug.pad, aug.pad, aug.pad))
        dy, dx = torch.randint(0, 2 * aug.pad + 1, (2,)).tolist()
        img = padded[:, dy : dy + h, dx : dx + w]
    if aug.flip and torch.rand(()) < 0.5:
        img = img.flip(-1)
    return img


# --- the individual datasets: each returns (train, test, num_classes, mean, std, augmentation) ---

Loaded = tuple[ImageTensorDataset, ImageTensorDataset, int, Augment]


def _digits(cfg: DataConfig) -> Loaded:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div(16).unsqueeze(1)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    images = x.mul(255).round().clamp(0, 255).to(torch.uint8)
    labels = torch.tensor(d.target)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(DIGITS_TEST_SEED))
    mean, std = (0.305,), (0.319,)
    full = ImageTensorDataset(images, labels, mean, std)
    test, train = full.view(perm[:DIGITS_TEST_SIZE], None), full.view(perm[DIGITS_TEST_SIZE:], None)
    return train, test, 10, Augment(pad=2, flip=False)


def _cifar10_subset(cfg: DataConfig) -> Loaded:
    path = Path(cfg.root) / "cifar10-subset" / "cifar10_subset.npz"
    if not path.is_file():
        raise DataError(
            f"cifar10_subset not found: looked for {path}. Point --data-root (or ${DATA_ROOT_ENV_VAR}) at the "
            "folder holding cifar10-subset/cifar10_subset.npz (e.g. ../shared/data)."
        )
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("train_data", "train_index", "test_data", "test_index",
                                        "train_labels_all", "test_labels_all")}
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a valid cifar10_subset archive ({exc}).") from None

    def split(kind: str, augment: Augment | None) -> ImageTensorDataset:
        images = torch.from_numpy(arrays[f"{kind}_data"]).view(-1, 3, 32, 32)
        labels = torch.from_numpy(arrays[f"{kind}_labels_all"][arrays[f"{kind}_index"]].astype(np.int64))
        return ImageTensorDataset(images, labels, IMAGENET_MEAN, IMAGENET_STD, augment=augment)

    return split("train", None), split("test", None), 10, Augment(pad=4, flip=True)


def _cifar10_jpeg(cfg: DataConfig) -> Loaded:
    """The complete CIFAR-10 as JPEG files (`cifar10-jpeg/{train,test}/<class>/*.jpg`), decoded once and cached."""
    base = Path(cfg.root) / "cifar10-jpeg"
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise DataError(
            f"cifar10_jpeg not found: looked for {base}/train and {base}/test. Point --data-root (or "
            f"${DATA_ROOT_ENV_VAR}) at the folder holding cifar10-jpeg/ (e.g. ../shared/data)."
        )
    splits = []
    for kind in ("train", "test"):
        try:
            images, labels, classes = load_image_arrays(base / kind, f"cifar10-jpeg-{kind}")
        except ImageCacheError as exc:
            raise DataError(f"cifar10_jpeg: {exc}") from None
        if len(classes) != 10 or images.shape[1:] != (3, 32, 32):
            raise DataError(f"cifar10_jpeg: {base / kind} holds {len(classes)} classes of "
                            f"{images.shape[1:]} images; expected 10 classes of 3x32x32.")
        splits.append(ImageTensorDataset(torch.from_numpy(images), torch.from_numpy(labels),
                                         IMAGENET_MEAN, IMAGENET_STD))
    return splits[0], splits[1], 10, Augment(pad=4, flip=True)


def _missing(name: str, root: Path, exc: Exception) -> DataError:
    return DataError(
        f"{name} not found under {root.resolve()} ({exc}). Download it once with torchvision "
        f"(e.g. torchvision.datasets.{name}(root, download=True)) on a machine with internet, "
        f"then pass --data-root (or set ${DATA_ROOT_ENV_VAR}) to that folder."
    )


def _torchvision_arrays(name: str, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import torchvision

    cls = getattr(torchvision.datasets, name)
    root = Path(cfg.root)
    try:
        train, test = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except (RuntimeError, OSError) as exc:
        raise _missing(name, root, exc) from None

    def chw(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        data = torch.as_tensor(np.asarray(ds.data))  # type: ignore[attr-defined]
        data = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)
        return data.contiguous(), torch.as_tensor(np.asarray(ds.targets))  # type: ignore[attr-defined]

    return (*chw(train), *chw(test))


def _torchvision_set(name: str, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                     aug: Augment) -> Callable[[DataConfig], Loaded]:
    def load(cfg: DataConfig) -> Loaded:
        xtr, ytr, xte, yte = _torchvision_arrays(name, cfg)
        return (ImageTensorDataset(xtr, ytr, mean, std), ImageTensorDataset(xte, yte, mean, std), num_classes, aug)

    return load


_LOADERS: dict[str, Callable[[DataConfig], Loaded]] = {
    "digits": _digits,
    "cifar10_subset": _cifar10_subset,
    "cifar10_jpeg": _cifar10_jpeg,
    "fashion_mnist": _torchvision_set("FashionMNIST", 10, (0.2860,), (0.3530,), Augment(pad=2, flip=False)),
    "cifar10": _torchvision_set("CIFAR10", 10, IMAGENET_MEAN, IMAGENET_STD, Augment(pad=4, flip=True)),
    "cifar100": _torchvision_set("CIFAR100", 100, (0.507, 0.487, 0.441), (0.267, 0.256, 0.276),
                                 Augment(pad=4, flip=True)),
}


def val_count(val_size: int, n_train: int) -> int:
    """`val_size`, capped at VAL_SHARE_CAP of the training images (warns when it caps)."""
    cap = int(n_train * VAL_SHARE_CAP)
    if val_size > cap:
        warnings.warn(
            f"val_size {val_size} is more than {VAL_SHARE_CAP:.0%} of the {n_train} training images; "
            f"using {cap} for validation so that training keeps the rest.",
            stacklevel=4,
        )
        return cap
    return val_size


STRATIFIED = frozenset({"cifar10_jpeg"})
"""Datasets whose val split keeps the class shares of train (older ones keep their plain random split, so
that their published figures stay reproducible)."""


def stratified_val(labels: torch.Tensor, n_val: int, seed: int) -> torch.Tensor:
    """Boolean mask of `n_val` positions drawn per class in proportion to its share (largest remainder),
    each class's picks the first of a seeded permutation."""
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n_val / len(labels)
    quota = exact.floor().long()
    short = n_val - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:short]] += 1
    mask = torch.zeros(len(labels), dtype=torch.bool)
    shuffled = labels[perm]
    for c, q in zip(classes.tolist(), quota.tolist(), strict=True):
        mask[perm[shuffled == c][:q]] = True
    return mask


def _split(train: ImageTensorDataset, cfg: DataConfig, aug: Augment) -> tuple[Dataset, Dataset]:
    n_val = val_count(cfg.val_size, len(train))
    if cfg.name in STRATIFIED:
        in_val = stratified_val(train.labels[train.indices], n_val, cfg.seed)
        val_pos, train_pos = torch.nonzero(in_val).flatten(), torch.nonzero(~in_val).flatten()
    else:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        val_pos, train_pos = perm[:n_val], perm[n_val:]
    return (train.view(train_pos, aug if cfg.augment else None), train.view(val_pos, None))


def _imagefolder_transforms(cfg: DataConfig, native: tuple[int, int]) -> tuple[Any, Any, tuple[int, int, int]]:
    """(train, eval) transforms and the input shape: ImageNet-style crops when cfg.image_size is set, else
    the native size kept (pad-and-crop + flip augmentation, as for CIFAR)."""
    import torchvision.transforms as T

    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if cfg.image_size is None:
        h, w = native
        plain = T.Compose([T.ToTensor(), norm])
        aug = T.Compose([T.RandomCrop((h, w), padding=max(1, min(h, w) // 8)), T.RandomHorizontalFlip(),
                         T.ToTensor(), norm])
        return (aug if cfg.augment else plain), plain, (3, h, w)
    size = cfg.image_size
    plain = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm])
    aug = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    return (aug if cfg.augment else plain), plain, (3, size, size)


def _imagefolder(cfg: DataConfig) -> DataBundle:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root)
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataError(
            f"imagefolder needs {root}/train/<class>/<image> and {root}/test/ (or val/) folders; "
            "point --data-root at the folder holding them."
        )
    probe = ImageFolder(str(root / "train"))
    with Image.open(probe.samples[0][0]) as im:
        native = (im.height, im.width)
    train_tf, plain, shape = _imagefolder_transforms(cfg, native)
    train_aug, train_plain = ImageFolder(str(root / "train"), train_tf), ImageFolder(str(root / "train"), plain)
    test = ImageFolder(str(test_dir), plain)
    n_val = val_count(cfg.val_size, len(train_plain))
    labels = torch.tensor(train_plain.targets)
    in_val = stratified_val(labels, n_val, cfg.seed)
    val_idx, train_idx = torch.nonzero(in_val).flatten().tolist(), torch.nonzero(~in_val).flatten().tolist()
    return DataBundle("imagefolder", Subset(train_aug, train_idx), Subset(train_plain, val_idx), test,
                      len(train_plain.classes), shape, IMAGENET_MEAN, IMAGENET_STD,
                      cfg.batch_size, cfg.num_workers)


def load_data(cfg: DataConfig) -> DataBundle:
    """Train (augmented if cfg.augment), seeded val (carved from train, plain) and test splits of cfg.name."""
    if cfg.name == "imagefolder":
        return _imagefolder(cfg)
    if cfg.name not in _LOADERS:
        raise DataError(f"unknown dataset {cfg.name!r}; valid names: {', '.join(DATASETS)}.")
    train, test, num_classes, aug = _LOADERS[cfg.name](cfg)
    train_split, val_split = _split(train, cfg, aug)
    c, h, w = train.images.shape[1:]
    return DataBundle(cfg.name, train_split, val_split, test, num_classes, (int(c), int(h), int(w)),
                      tuple(train.mean.flatten().tolist()), tuple(train.std.flatten().tolist()),
                      cfg.batch_size, cfg.num_workers)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                seed: int = 0) -> DataLoader:
    """A DataLoader; shuffling uses its own seeded generator so runs repeat."""
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=gen, persistent_workers=num_workers > 0)


def take_tensors(dataset: Dataset, n: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images (all if None) of a seeded permutation of `dataset`, stacked, with labels.

    In-memory splits are read un-augmented in one batched operation (even the train split), so the
    result is the same for the same seed; other datasets go item by item through their transforms.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise DataError("cannot take images from an empty split; raise val_size or pick another split.")
    count = size if n is None else min(n, size)
    positions = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count]
    if isinstance(dataset, ImageTensorDataset):
        return dataset.tensors(positions)
    items = [dataset[int(i)] for i in positions]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.long)
