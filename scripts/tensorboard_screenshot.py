"""Screenshot a run's TensorBoard dashboards with headless Chromium, for the docs.

Starts TensorBoard on 127.0.0.1 in the background, waits until it serves the run's tags, captures
each view with `chromium --headless --screenshot` (TensorBoard is a JavaScript app, so Chromium is
given virtual time to fetch the data and draw), checks that each PNG is not a blank page, and stops
TensorBoard again whatever happens. Chromium is a docs tool, not a project dependency:

    apt-get install -y chromium          # Debian
    python scripts/tensorboard_screenshot.py runs/h7-quickstart/tb --out-dir docs/benchmarks --prefix quickstart

Views (name -> URL fragment): see VIEWS; `--views timeseries,images` picks some.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# name -> (URL after the host, window WIDTH,HEIGHT, device scale). Time Series reads its filter and
# feature flags from the query string, the legacy dashboards from the hash. forceSVG=true: headless
# Chromium without a GPU has no WebGL, and Time Series' default WebGL line chart then draws empty axes.
VIEWS = {
    "timeseries": ("?forceSVG=true&tagFilter=%5Eepisode%2F#timeseries", "1600,1000", 1.0),
    "best": ("?forceSVG=true&tagFilter=%5Ebest%2F#timeseries", "1600,1000", 1.0),
    "agent": ("?forceSVG=true&tagFilter=%5E%28agent%7Ctime%29%2F#timeseries", "1600,1000", 1.0),
    "scalars": ("#scalars&tagFilter=episode", "1600,1200", 1.0),
    "images": ("#images", "800,420", 2.0),
    "text": ("#text", "1200,900", 1.0),
}


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (localhost only)
        return r.read()


def wait_for_tensorboard(base: str, deadline_s: float) -> dict:
    """Poll until TensorBoard lists the run's scalar tags (it loads event files lazily)."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        try:
            tags = json.loads(_get(f"{base}/data/plugin/scalars/tags"))
            if any(tags.values()):
                return tags
            last = "answers, but no scalar tags yet"
        except OSError as exc:
            last = str(exc)
        time.sleep(1.0)
    raise TimeoutError(f"TensorBoard at {base} not ready after {deadline_s:.0f}s ({last})")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("error: no chromium on PATH; install it (Debian: apt-get install -y chromium).")


def screenshot(chromium: str, url: str, out: Path, size: str, scale: float, budget_ms: int) -> None:
    """One headless capture into `out` (written via a temp name, then os.replace)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    with tempfile.TemporaryDirectory(prefix="tb-shot-") as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size}",
            f"--force-device-scale-factor={scale}",
            f"--virtual-time-budget={budget_ms}", f"--screenshot={tmp}", url,
        ]
        # Own process group, so a hung renderer and its children can be stopped together.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"chromium timed out on {url}") from None
    if not tmp.is_file():
        raise RuntimeError(f"chromium wrote no screenshot for {url} (exit {proc.returncode})")
    os.replace(tmp, out)


def content_ink(path: Path) -> float:
    """Share of dark pixels (text, axes, curves) in the page's middle, below the toolbar.

    A page still loading shows empty white cards on grey: no dark pixels there, so ~0.
    """
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    h, w = img.shape[:2]
    middle = img[int(0.16 * h):, int(0.22 * w):int(0.82 * w)]
    return float((middle.mean(axis=-1) < 0.6).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logdir", type=Path, help="a run's tb/ folder (or a folder of runs)")
    p.add_argument("--out-dir", type=Path, default=Path("docs/benchmarks"))
    p.add_argument("--prefix", default="run", help="files are tensorboard_<prefix>_<view>.png")
    p.add_argument("--views", default="timeseries,images", help=f"comma list of {', '.join(VIEWS)}")
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--size", help="window WIDTH,HEIGHT for every view (default: per view, see VIEWS)")
    p.add_argument("--budget-ms", type=int, default=20000, help="virtual time given to the page to render")
    p.add_argument("--retries", type=int, default=2, help="retries, each with twice the time, when a view looks blank")
    args = p.parse_args(argv)
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    unknown = sorted(set(views) - set(VIEWS))
    if unknown:
        p.error(f"unknown view(s) {unknown}; choose from {sorted(VIEWS)}")
    if not args.logdir.is_dir():
        p.error(f"logdir {args.logdir} does not exist; pass a run's tb/ folder")
    chromium = find_chromium()
    base = f"http://127.0.0.1:{args.port}"
    tb = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir), "--host", "127.0.0.1",
         "--port", str(args.port), "--reload_interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        tags = wait_for_tensorboard(base, 90)
        print(f"tensorboard ready, scalar tags: {sorted(t for run in tags.values() for t in run)}", file=sys.stderr)
        for view in views:
            out = args.out_dir / f"tensorboard_{args.prefix}_{view}.png"
            fragment, size, scale = VIEWS[view]
            budget = args.budget_ms
            for _ in range(args.retries + 1):
                screenshot(chromium, base + "/" + fragment, out, args.size or size, scale, budget)
                share = content_ink(out)
                if share > 0.003:
                    break
                budget *= 2  # a busy machine: the charts had not drawn yet
            flag = "" if share > 0.003 else "  <- still looks blank (cards not drawn); raise --budget-ms"
            print(f"{view}: {out} ({out.stat().st_size // 1024} KB, {share:.2%} dark pixels in the content){flag}", file=sys.stderr)
    finally:
        os.killpg(tb.pid, signal.SIGTERM)
        try:
            tb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(tb.pid, signal.SIGKILL)
            tb.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
