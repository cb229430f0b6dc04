"""End to end in a real browser: `python -m stream ui` on the demo video, driven in Debian's
headless chromium by Playwright (tests/ui_driver.py).

Checks: the page loads; the live view's frames change; label and stats panel update; a
threshold change changes the call; a replay upload returns annotated video, log and report;
bad uploads (not a video, a fake video, too big) show an error in the page and the app
keeps serving. Screenshots and display figures go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

from ui_driver import CHROMIUM, AppProcess, browser, measure_display

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")

ART = Path(__file__).resolve().parent / "artifacts"
DEMO = Path(os.environ.get("UI_TEST_DEMO", Path(__file__).resolve().parent.parent / "stream/assets/demo.mp4"))
MAX_UPLOAD = 2_000_000  # tiny on purpose: the "too big" upload must trip it
EXTRA = os.environ.get("UI_TEST_ARGS", "").split()  # e.g. --model PATH while developing


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A short replay clip cut from the demo video, its labels, and three bad uploads."""
    d = tmp_path_factory.mktemp("ui-media")
    clip, labels = d / "clip.mp4", d / "clip.truth.csv"
    n = 45
    with av.open(str(DEMO)) as src, av.open(str(clip), "w") as dst:
        s = dst.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i, f in enumerate(src.decode(video=0)):
            if i >= n:
                break
            for p in s.encode(f.reformat(320, 240, "yuv420p")):
                dst.mux(p)
        for p in s.encode(None):
            dst.mux(p)
    truth = DEMO.with_suffix(".truth.csv")
    if truth.is_file():
        rows = truth.read_text().splitlines()[: n + 1]
        labels.write_text("\n".join(rows) + "\n")
    notes = d / "notes.txt"
    notes.write_text("not a video\n")
    fake = d / "fake.mp4"
    fake.write_bytes(b"definitely not an mp4 " * 100)
    big = d / "big.mp4"
    big.write_bytes(np.random.default_rng(0).bytes(MAX_UPLOAD + 500_000))
    return {"clip": clip, "labels": labels if labels.is_file() else None, "notes": notes, "fake": fake,
            "big": big}


@pytest.fixture(scope="module")
def app():
    ART.mkdir(exist_ok=True)
    (ART / ".gitignore").write_text("*\n")
    source = os.environ.get("UI_TEST_DEMO", "demo")
    with AppProcess("--source", source, "--frame-marker", "--max-upload", str(MAX_UPLOAD), *EXTRA,
                    log=ART / "ui_app.log") as a:
        a.wait_ready(timeout=90)
        yield a


def stat(page, key: str) -> str:
    return page.inner_text(f'#stats-table td[data-k="{key}"]')


def label_state(page) -> tuple[str, str]:
    el = page.query_selector("#live-label")
    return el.get_attribute("data-state"), el.get_attribute("data-alert")


def set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def frames_advance(app: AppProcess, wait: float = 1.5) -> bool:
    a = app.trace()["frames"][-1]["seq"]
    time.sleep(wait)
    return app.trace()["frames"][-1]["seq"] > a


def upload(page, elem_id: str, path: Path) -> None:
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))


def test_ui_end_to_end(app, media):
    with browser() as (_, page):
        page.goto(app.url)
        # -- the page loads and the live view shows changing frames -------------------------
        page.wait_for_function("document.querySelector('#live-img')?.naturalWidth > 0", timeout=30000)
        disp = measure_display(page, app, 4.0)
        (ART / "ui_display.json").write_text(json.dumps(disp, indent=2) + "\n")
        assert disp["frames_shown"] >= 8, disp  # distinct frame numbers seen in the page
        assert disp["unmatched"] <= 1, disp

        # -- label and stats panel update ---------------------------------------------------
        page.wait_for_selector('#stats-table td[data-k="frames"]')
        f0 = int(stat(page, "frames"))
        time.sleep(1.5)
        f1 = int(stat(page, "frames"))
        assert f1 > f0, (f0, f1)
        assert float(stat(page, "processed_fps")) > 0
        assert stat(page, "engine") and stat(page, "device") in ("cpu", "cuda") or stat(page, "device").startswith("cuda")
        assert label_state(page)[0] not in ("", "waiting")
        page.wait_for_selector("#timeline img, #timeline canvas, #timeline svg", timeout=15000)

        # -- a control change takes effect --------------------------------------------------
        set_number(page, "min-dur", 0)
        set_number(page, "threshold", 1.0)  # unreachable: never a call, never an alert
        time.sleep(2.0)
        states = set()
        for _ in range(6):
            states.add(label_state(page))
            time.sleep(0.3)
        assert all(s in ("uncertain", "no call") and a == "0" for s, a in states), states
        set_number(page, "threshold", 0.5)  # the lowest: the top class is always called
        time.sleep(2.0)
        s, _ = label_state(page)
        assert s not in ("uncertain", "no call", "waiting"), s
        page.screenshot(path=str(ART / "ui.png"), full_page=True)

        # -- replay evaluation --------------------------------------------------------------
        page.get_by_role("tab", name="Replay evaluation").click()
        upload(page, "replay-video", media["clip"])
        if media["labels"] is not None:
            upload(page, "replay-labels", media["labels"])
        page.wait_for_timeout(1000)
        page.click("#replay-run")
        page.wait_for_function("document.querySelector('#replay-report')?.innerText.includes('Replay of')",
                               timeout=60000)
        report = page.inner_text("#replay-report")
        assert "frames analysed: 45" in report, report
        files = page.inner_text("#replay-files")
        assert "predictions.jsonl" in files and "annotated.mp4" in files, files
        if media["labels"] is not None:
            assert "AUC" in report or "sensitivity" in report.lower(), report
        page.screenshot(path=str(ART / "ui_replay.png"), full_page=True)

        # -- bad uploads: an error in the page, the app keeps serving -----------------------
        for bad, expect in ((media["fake"], "not a readable video"), (media["notes"], ""),
                            (media["big"], "")):
            page.goto(app.url)
            page.get_by_role("tab", name="Replay evaluation").click()
            upload(page, "replay-video", bad)
            page.wait_for_timeout(1500)
            if page.locator("#replay-run").is_enabled():
                page.click("#replay-run")
            err = page.locator("#upload-error, .toast-body, [data-testid='toast-body']").first
            err.wait_for(timeout=20000)
            text = err.inner_text()
            assert expect in text, text
            assert frames_advance(app), "live view stopped after a bad upload"
        assert app.proc.poll() is None
