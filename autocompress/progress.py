"""Progress bars that stay readable in log files.

On a terminal `progress()` returns an ordinary tqdm bar. Off a terminal (`nohup ... > log 2>&1`, CI) tqdm
would still redraw its bar in place with carriage returns, filling the log with thousands of `\\r`-joined
updates, and it has no option to stop that; there `progress()` returns a `LineProgress`, which prints a plain,
complete line at most every `AUTOCOMPRESS_PROGRESS_INTERVAL` seconds (30 by default) plus a final one.
Its lines are formatted by tqdm's own `format_meter`, so the figures (elapsed, remaining) match the bar's.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sized
from types import TracebackType
from typing import IO, Any, Generic, TypeVar

from tqdm import tqdm

__all__ = ["DEFAULT_INTERVAL", "INTERVAL_ENV", "LineProgress", "line_interval", "progress"]

INTERVAL_ENV = "AUTOCOMPRESS_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
"""Seconds between two plain progress lines: often enough to see a run is alive, rare enough for a log."""

_RUNNING = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed} elapsed, ~{remaining} left{postfix}"
_FINAL = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed} elapsed{postfix}"
_UNSIZED = "{desc}: {n_fmt} {elapsed} elapsed{postfix}"

_now = time.monotonic  # module-level so tests can swap the clock

T = TypeVar("T")


def line_interval() -> float:
    """The seconds between plain lines; a bad environment value warns rather than failing a long run."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0 or value != value:  # negative or NaN
        warnings.warn(f"{INTERVAL_ENV}={raw!r} is not a number of seconds >= 0; using {DEFAULT_INTERVAL:g}.",
                      stacklevel=3)
        return DEFAULT_INTERVAL
    return value


class LineProgress(Generic[T]):
    """The part of tqdm's interface the package uses, printed as whole lines without carriage returns."""

    def __init__(self, iterable: Iterable[T] | None = None, *, total: float | None = None, desc: str = "",
                 initial: float = 0, leave: bool = True, file: IO[str] | None = None,
                 interval: float | None = None) -> None:
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.initial, self.leave = iterable, total, desc, initial, leave
        self.n: float = initial
        self.file = file if file is not None else sys.stderr
        self.interval = line_interval() if interval is None else interval
        self.postfix = ""
        self.start_t = self._last_t = _now()
        self._last_state: tuple[float, str] | None = None
        self.closed = False

    def update(self, n: float = 1) -> None:
        """Count `n` more steps; print a line if the interval has passed since the last one."""
        self.n += n
        if _now() - self._last_t >= self.interval:
            self._print(final=False)

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Figures shown after the counts; like tqdm's, but `refresh` never forces a line (a log needs none)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={tqdm.format_num(v) if isinstance(v, int | float) else v}"
                                 for k, v in items.items())

    def close(self) -> None:
        """Print the final line once, unless it would repeat the last one.

        A bar made with `leave=False` vanishes on a terminal; here it ends with a line only if it printed any,
        so a short transient step (an epoch followed by its own summary) adds nothing to the log.
        """
        if self.closed:
            return
        self.closed = True
        if (self.leave or self._last_state is not None) and self._last_state != (self.n, self.postfix):
            self._print(final=True)

    def _print(self, final: bool) -> None:
        now = _now()
        fmt = _UNSIZED if not self.total else _FINAL if final or self.n >= self.total else _RUNNING
        line = tqdm.format_meter(self.n, self.total, now - self.start_t, prefix=self.desc, postfix=self.postfix,
                                 initial=self.initial, bar_format=fmt)
        self.file.write(line + "\n")
        self.file.flush()
        self._last_t, self._last_state = now, (self.n, self.postfix)

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this progress line was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _is_terminal(file: IO[str]) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def progress(iterable: Iterable[T] | None = None, *, total: float | None = None, desc: str = "",
             disable: bool = False, initial: float = 0, unit: str = "it", leave: bool = True,
             file: IO[str] | None = None, **tqdm_kwargs: Any) -> tqdm | LineProgress[T]:
    """A tqdm bar on a terminal, plain rate-limited lines elsewhere; `file` defaults to the current stderr.

    `unit` and `tqdm_kwargs` shape the terminal bar only.
    """
    out = file if file is not None else sys.stderr
    if disable or _is_terminal(out):
        return tqdm(iterable, total=total, desc=desc, disable=disable, initial=initial, unit=unit, leave=leave,
                    file=out, **tqdm_kwargs)
    return LineProgress(iterable, total=total, desc=desc, initial=initial, leave=leave, file=out)
