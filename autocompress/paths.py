"""Output paths checked before the work starts: a read-only or misnamed `--out` fails in a second, not
after minutes of training, and with one line that names the path instead of an OSError traceback."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from autocompress.config import AutocompressError

WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                          errno.EISDIR, errno.EEXIST})
"""OSErrors that mean "this output cannot be written here" rather than a bug."""


class OutputError(AutocompressError):
    """An output path that cannot be written; the message names it and says what to do."""


def ensure_writable(path: str | os.PathLike[str], folder: bool) -> Path:
    """Raise OutputError unless `path` (a folder if `folder`, else a file) can be created or replaced.

    Nothing is created: the nearest existing ancestor must be a folder in which a scratch file can be made
    (a real write, so read-only mounts and full disks are caught, not just permission bits).
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        want = "a folder" if folder else "a file name"
        raise OutputError(f"--out {path} is {kind}; give {want}.")
    probe = path if folder and path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"--out {path}: {probe} is a file, so nothing can be written below it; choose another path.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OutputError(f"--out {path}: cannot write in {probe} ({exc.strerror or exc}); "
                          "choose a folder you can write to.") from None
    return path
