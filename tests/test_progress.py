"""Progress output: a tqdm bar on a terminal, plain rate-limited lines in a log."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tqdm import tqdm

from autocompress import progress as progress_mod
from autocompress.progress import INTERVAL_ENV, LineProgress, line_interval, progress


class FakeClock:
    """A monotonic clock the test moves by hand, so rate limiting is checked without sleeping."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_mod, "_now", fake)
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    return fake


def test_log_gets_complete_rate_limited_lines(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    with path.open("w") as log:
        bar = progress(total=300, desc="search[ddpg]", file=log)
        assert isinstance(bar, LineProgress)
        with bar:
            for i in range(300):
                clock.t += 1.0  # one episode a second: 300 s in all, so 10 lines at 30 s
                bar.update(1)
                bar.set_postfix({"best_reward": "0.5100", "top1": f"{i / 10:.1f}"}, refresh=True)
    text = path.read_text()
    assert "\r" not in text
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 11  # every 30 s plus the final one
    assert lines[0].startswith("search[ddpg]: 30/300 (10%) 00:30 elapsed, ~04:30 left")
    assert lines[1].startswith("search[ddpg]: 60/300 (20%) 01:00 elapsed")
    assert "best_reward=0.5100, top1=2.8" in lines[0]  # the postfix set after the 29th update
    assert lines[-1] == "search[ddpg]: 300/300 (100%) 05:00 elapsed, best_reward=0.5100, top1=29.9"


def test_interval_comes_from_the_environment(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL_ENV, "5")
    out = io.StringIO()
    with progress(total=20, desc="x", initial=10, file=out) as bar:
        for _ in range(10):
            clock.t += 1.0
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["15/20", "20/20"]  # a resumed bar counts from `initial`
    assert lines[0] == "x: 15/20 (75%) 00:05 elapsed, ~00:05 left"  # rate from this session's 5 steps only


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_bad_interval_warns_and_keeps_default(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(INTERVAL_ENV, raw)
    with pytest.warns(UserWarning, match=INTERVAL_ENV):
        assert line_interval() == progress_mod.DEFAULT_INTERVAL


def test_transient_bar_stays_silent_when_short(clock: FakeClock) -> None:
    out = io.StringIO()
    bar = progress(total=5, desc="epoch 1/3", leave=False, file=out)
    for _ in range(5):
        clock.t += 1.0
        bar.update(1)
        bar.set_postfix(loss="1.234", top1="50.0")
    bar.close()
    bar.close()
    assert out.getvalue() == ""


def test_transient_bar_ends_its_lines_once(clock: FakeClock) -> None:
    out = io.StringIO()
    bar = progress(total=4, desc="epoch 1/3", leave=False, file=out)
    for _ in range(4):
        clock.t += 20.0
        bar.update(1)
    bar.close()
    bar.close()
    assert out.getvalue().splitlines() == [
        "epoch 1/3: 2/4 (50%) 00:40 elapsed, ~00:40 left",
        "epoch 1/3: 4/4 (100%) 01:20 elapsed",
    ]


def test_iteration_counts_and_closes(clock: FakeClock) -> None:
    out = io.StringIO()
    assert list(progress(["a", "b", "c"], desc="decode", file=out)) == ["a", "b", "c"]
    assert out.getvalue() == "decode: 3/3 (100%) 00:00 elapsed\n"


def test_terminal_gets_tqdm() -> None:
    tty = FakeTTY()
    bar = progress(total=3, desc="search[random]", file=tty)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "\r" in tty.getvalue()  # the bar redraws in place, as before


def test_disabled_bar_prints_nothing() -> None:
    out = io.StringIO()
    bar = progress(total=3, desc="x", disable=True, file=out)
    bar.update(3)
    bar.set_postfix(a="1")
    bar.close()
    assert out.getvalue() == ""
