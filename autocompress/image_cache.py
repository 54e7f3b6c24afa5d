"""Decode an ImageFolder tree (`<split>/<class>/<image>`) once into uint8 arrays, cached on local disk.

Decoding 60,000 small JPEGs takes 10-20 s; reading the cached arrays back takes well under a second. The
cache lives outside the (possibly read-only) data folder: $AUTOCOMPRESS_CACHE, else $XDG_CACHE_HOME/autocompress,
else ~/.cache/autocompress. Its file name carries a fingerprint of the tree (file names and sizes), so a changed
tree is decoded again rather than read stale.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from autocompress.config import AutocompressError

CACHE_ENV_VAR = "AUTOCOMPRESS_CACHE"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_FORMAT = 1
"""Bumped when the cached arrays' layout changes, so old files are not read."""


class ImageCacheError(AutocompressError, ValueError):
    """The image tree is missing, empty, or holds images that cannot be decoded or stacked."""


def cache_dir() -> Path:
    """Where decoded arrays are kept (created on first use)."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autocompress"


def list_images(split_dir: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names (sorted folder names, as torchvision's ImageFolder), image paths and their labels."""
    if not split_dir.is_dir():
        raise ImageCacheError(f"{split_dir} is not a folder of <class>/<image> files.")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ImageCacheError(f"{split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class folders.")
    return classes, paths, labels


def _fingerprint(split_dir: Path, paths: list[Path]) -> str:
    h = hashlib.sha1(f"{CACHE_FORMAT}|{split_dir.resolve()}".encode())
    for p in paths:
        h.update(f"{p.parent.name}/{p.name}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]


def _decode(paths: list[Path], desc: str) -> np.ndarray:
    """All images as one (N, C, H, W) uint8 array; they must share one size."""
    from PIL import Image, UnidentifiedImageError

    from autocompress.progress import progress

    first = None
    out: np.ndarray | None = None
    for i, p in enumerate(progress(paths, desc=desc, leave=False, dynamic_ncols=True)):
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageCacheError(f"cannot decode {p} ({exc}); remove or replace the file.") from None
        if out is None:
            first = arr.shape
            out = np.empty((len(paths), arr.shape[2], arr.shape[0], arr.shape[1]), dtype=np.uint8)
        elif arr.shape != first:
            raise ImageCacheError(f"{p} is {arr.shape[1]}x{arr.shape[0]} but {paths[0]} is "
                                  f"{first[1]}x{first[0]}; images read as arrays must share one size.")
        out[i] = arr.transpose(2, 0, 1)
    assert out is not None
    return out


def _save_atomic(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, classes=np.array(classes))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_image_arrays(split_dir: str | Path, tag: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, C, H, W), labels int64 (N,), class names) of `split_dir`, decoded once and cached.

    `tag` names the cache file (e.g. 'cifar10-jpeg-train'). An unwritable cache folder only costs the
    decode next time: a warning, not an error.
    """
    split_dir = Path(split_dir)
    classes, paths, labels = list_images(split_dir)
    path = cache_dir() / f"{tag}-{_fingerprint(split_dir, paths)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["images"], z["labels"].astype(np.int64), [str(c) for c in z["classes"]]
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache is rebuilt, never trusted
    images = _decode(paths, f"decoding {split_dir.name} ({tag}, once)")
    label_arr = np.asarray(labels, dtype=np.int64)
    try:
        _save_atomic(path, images, label_arr, classes)
    except OSError as exc:
        print(f"warning: could not cache decoded images in {path.parent} ({exc}); set ${CACHE_ENV_VAR} "
              "to a writable folder to skip decoding next time.", file=sys.stderr)
    return images, label_arr, classes
