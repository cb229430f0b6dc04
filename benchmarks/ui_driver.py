"""Drive the UI in Debian's headless chromium (Playwright, never a downloaded browser).

Used by tests/test_ui_browser.py and by the UI's measurement commands (benchmarks.ui):

    python -m benchmarks.ui measure --source demo --seconds 20

Display measurement: the app runs with --frame-marker, so every JPEG carries its hub
sequence number in 16 black/white 8x8 cells at the top-left. A requestAnimationFrame hook
in the page copies those cells from the <img> into a canvas and records when each new
number first shows (performance.timeOrigin + now(): wall-clock ms). The server's
/live/trace gives each number's source-arrival wall time (time.time()); same machine,
same clock, so display delay = shown - arrival. Displayed fps = new numbers per second.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

PROBE_JS = """
(sel) => {
  const cv = document.createElement('canvas'); cv.width = 128; cv.height = 8;
  const ctx = cv.getContext('2d', {willReadFrequently: true});
  const st = {shown: [], last: -1, run: true, ticks: 0};
  function tick() {
    if (!st.run) return;
    st.ticks++;
    const img = document.querySelector(sel);  // re-queried: a framework may swap the element
    if (img && img.complete && img.naturalWidth >= 128) {
      ctx.drawImage(img, 0, 0, 128, 8, 0, 0, 128, 8);
      const d = ctx.getImageData(0, 4, 128, 1).data;   // the cells' middle row
      let seq = 0;
      for (let b = 0; b < 16; b++) { const o = (b * 8 + 4) * 4; if (d[o] + d[o + 1] + d[o + 2] > 381) seq |= (1 << b); }
      if (seq !== st.last) { st.last = seq; st.shown.push([seq, performance.timeOrigin + performance.now()]); }
    }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
  window.__uiProbe = {
    stop: () => { st.run = false; return {shown: st.shown, ticks: st.ticks}; },
    peek: () => ({n: st.shown.length, last: st.last, ticks: st.ticks}),
  };
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class AppProcess:
    """`python -m stream ui` in a subprocess on a free port; stop() ends it (and only it)."""

    def __init__(self, *args: str, port: int | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log or Path(tempfile.mkstemp(prefix="ui-app-", suffix=".log")[1])
        self._log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "stream", "ui", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the page is served and the live view has a first frame."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                get(self.url)
                get(self.url + "live/frame.jpg")
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"app not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")

    def trace(self) -> dict:
        return json.loads(get(self.url + "live/trace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def browser(viewport=(1400, 1000)):
    """A fresh headless chromium profile driven by Playwright; yields (context, page)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ui-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            yield ctx, page
        finally:
            ctx.close()


def measure_display(page, app, seconds: float, selector: str = "#live-img") -> dict:
    """Displayed fps and arrival->display delay (ms) over `seconds`, via the frame marker.

    `app.trace()` -> {"marker": bool, "frames": [{"seq", "arrival"}, ...]} (wall-clock seconds)."""
    page.evaluate(PROBE_JS, selector)
    time.sleep(seconds)
    res = page.evaluate("window.__uiProbe.stop()")
    trace = app.trace()
    if not trace["marker"]:
        raise RuntimeError("start the app with --frame-marker to measure the display")
    arrival = {f["seq"] & 0xFFFF: f["arrival"] for f in trace["frames"]}
    shown = res["shown"][1:]  # the first entry is whatever was on screen when the probe started
    delays = np.array([t / 1e3 - arrival[s] for s, t in shown if s in arrival]) * 1e3
    span = (shown[-1][1] - shown[0][1]) / 1e3 if len(shown) > 1 else 0.0
    return {
        "seconds": seconds,
        "frames_shown": len(shown),
        "displayed_fps": (len(shown) - 1) / span if span > 0 else 0.0,
        "delay_p50_ms": float(np.percentile(delays, 50)) if delays.size else float("nan"),
        "delay_p99_ms": float(np.percentile(delays, 99)) if delays.size else float("nan"),
        "delay_max_ms": float(delays.max()) if delays.size else float("nan"),
        "unmatched": len(shown) - int(delays.size),
        "page_ticks_per_s": res["ticks"] / seconds,
    }


def open_live_page(page, app: AppProcess) -> None:
    page.goto(app.url)
    page.wait_for_function("document.querySelector('#live-img')?.naturalWidth > 0", timeout=30000)
