"""The UI's measurement and screenshot commands, in Debian's headless chromium (Playwright).

    python -m benchmarks.ui measure --source demo --seconds 30 --warmup 5    # the live view as shown
    python -m benchmarks.ui screenshot --source demo --seconds 28 --out docs/img/ui.png
    python -m benchmarks.ui transport --source stream/assets/demo.mp4 --seconds 10  # MJPEG vs yield

``measure`` starts ``python -m stream ui --frame-marker`` and reports the displayed frames/s and
the arrival->display delay (how: benchmarks.ui_driver) with the app's own stats panel;
``transport`` compares the app's MJPEG live view with Gradio's image-per-yield on the same
frames (benchmarks.ui_transport). Figures print as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.ui_driver import ROOT, AppProcess, browser, measure_display, open_live_page

VIEWPORT = (1280, 1040)  # the page as docs/img/ui.png shows it


def measure_live_view(source: str, seconds: float, warmup: float, app_args: list[str]) -> dict:
    """Displayed fps and display delay of the app's live view over ``seconds`` after ``warmup``."""
    with AppProcess("--source", source, "--frame-marker", *app_args) as app:
        app.wait_ready()
        with browser(viewport=VIEWPORT) as (_, page):
            open_live_page(page, app)
            time.sleep(warmup)
            res = measure_display(page, app, seconds)
            cells = page.query_selector_all("#stats-table td")
            stats = {el.get_attribute("data-k"): el.inner_text() for el in cells}
        return {**res, "server_stats": stats, "source": source, "load_avg_1min": os.getloadavg()[0]}


def screenshot(source: str, wait: float, out: str, app_args: list[str]) -> None:
    """The app's page after ``wait`` seconds of live view, as a PNG."""
    with AppProcess("--source", source, *app_args) as app:
        app.wait_ready()
        with browser(viewport=VIEWPORT) as (_, page):
            open_live_page(page, app)
            time.sleep(wait)
            page.screenshot(path=out)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ui", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    app = argparse.ArgumentParser(add_help=False)  # the options of the two commands that run the app
    app.add_argument("--source", default="demo", help="the app's --source")
    app.add_argument("--app-args", default="", help="extra arguments for python -m stream ui")
    m = sub.add_parser("measure", parents=[app], help="displayed fps and display delay of the live view")
    m.add_argument("--seconds", type=float, default=20.0, help="how long to measure")
    m.add_argument("--warmup", type=float, default=5.0)
    m.add_argument("--json", help="write the figures here")
    s = sub.add_parser("screenshot", parents=[app], help="a PNG of the page")
    s.add_argument("--seconds", type=float, default=20.0, help="live view shown before the picture")
    s.add_argument("--out", default="docs/img/ui.png")
    t = sub.add_parser("transport", help="MJPEG live view vs Gradio image-per-yield, same frames")
    t.add_argument("--source", default=str(ROOT / "stream" / "assets" / "demo.mp4"), help="a video file")
    t.add_argument("--seconds", type=float, default=15.0)
    t.add_argument("--warmup", type=float, default=3.0)
    t.add_argument("--frames", type=int, default=90, help="decoded once, then looped")
    t.add_argument("--json", help="write the figures here")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.what == "screenshot":
        screenshot(a.source, a.seconds, a.out, a.app_args.split())
        print(f"wrote {a.out}")
        return 0
    if a.what == "measure":
        res = measure_live_view(a.source, a.seconds, a.warmup, a.app_args.split())
    else:
        from benchmarks.ui_transport import compare_transports  # Gradio, only for this command

        res = compare_transports(a.source, a.seconds, a.warmup, a.frames)
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
