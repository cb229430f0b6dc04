"""End to end in a real browser: `python -m stream ui` on the demo video, driven in Debian's
headless chromium by Playwright (benchmarks/ui_driver.py).

Checks: the page loads; the live view's frames change; label and stats panel update; a
threshold change changes the call; pause freezes and resume restarts the picture; bad uploads
(not a video, a fake video, too big) show an error in the page and the app keeps serving; a
replay upload with labels returns annotated video, log and evaluation report; the browser's
(fake) webcam becomes the live source; closing the page deletes the session's files; SIGTERM
removes the app's temporary root. Screenshots, display figures and step timings go to
tests/artifacts/ (git-ignored). Without a browser: the live routes honour the page's login,
the upload gate and session files, and the controls' mapping onto the runtime.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from benchmarks.ui_driver import CHROMIUM, AppProcess, browser, measure_display, open_live_page

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
)

ART = Path(__file__).resolve().parent / "artifacts"
DEMO = Path(__file__).resolve().parent.parent / "stream" / "assets" / "demo.mp4"
MAX_UPLOAD = 2_000_000  # tiny on purpose: the "too big" upload must trip it
EXTRA = os.environ.get("UI_TEST_ARGS", "").split()  # e.g. --model PATH while developing


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A short replay clip cut from the demo video where a lesion comes into view, its labels
    (renumbered from frame 0), and three bad uploads."""
    d = tmp_path_factory.mktemp("ui-media")
    clip, labels = d / "clip.mp4", d / "clip.truth.csv"
    n = 45
    head, *rows = DEMO.with_suffix(".truth.csv").read_text().splitlines()
    cols = head.split(",")
    visible = [i for i, r in enumerate(rows) if r.split(",")[cols.index("lesion_visible")] == "1"]
    start = max(0, (visible[0] if visible else 0) - n // 3)
    with av.open(str(DEMO)) as src, av.open(str(clip), "w") as dst:
        s = dst.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i, f in enumerate(src.decode(video=0)):
            if i >= start + n:
                break
            if i >= start:
                for p in s.encode(f.reformat(320, 240, "yuv420p")):
                    dst.mux(p)
        for p in s.encode(None):
            dst.mux(p)
    out = [head]
    for j, r in enumerate(rows[start : start + n]):
        v = r.split(",")
        v[0], v[1] = str(j), f"{float(v[1]) - float(rows[start].split(',')[1]):.6f}"
        out.append(",".join(v))
    labels.write_text("\n".join(out) + "\n")
    notes = d / "notes.txt"
    notes.write_text("not a video\n")
    fake = d / "fake.mp4"
    fake.write_bytes(b"definitely not an mp4 " * 100)
    big = d / "big.mp4"
    big.write_bytes(np.random.default_rng(0).bytes(MAX_UPLOAD + 500_000))
    return {
        "clip": clip,
        "labels": labels,
        "notes": notes,
        "fake": fake,
        "big": big,
    }


@pytest.fixture(scope="module")
def app():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed")
    ART.mkdir(exist_ok=True)
    (ART / ".gitignore").write_text("*\n")
    with AppProcess(
        "--source", "demo", "--frame-marker", "--max-upload", str(MAX_UPLOAD), *EXTRA, log=ART / "ui_app.log"
    ) as a:
        a.wait_ready(timeout=90)
        yield a
    # SIGTERM (AppProcess.stop) ends the app cleanly: its temporary root is gone.
    assert a.proc.returncode == 0, a.log()[-2000:]
    assert not session_root(a).exists()


def session_root(app: AppProcess) -> Path:
    return Path(re.search(r"results go under (\S+) ", app.log()).group(1))


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


@needs_chromium
def test_ui_end_to_end(app, media):
    errors, marks = {}, [("page load, live view", time.monotonic())]

    def lap(step):  # start of the next step; step durations go to ui_steps.json (budget: ~90 s)
        marks.append((step, time.monotonic()))

    with browser() as (ctx, page):
        ctx.grant_permissions(["camera"])
        # -- the page loads and the live view shows changing frames -------------------------
        open_live_page(page, app)
        disp = measure_display(page, app, 4.0)
        (ART / "ui_display.json").write_text(json.dumps(disp, indent=2) + "\n")
        assert disp["frames_shown"] >= 8, disp  # distinct frame numbers seen in the page
        assert disp["unmatched"] <= 1, disp

        lap("label and stats panel update")
        # -- label and stats panel update ---------------------------------------------------
        page.wait_for_selector('#stats-table td[data-k="frames"]')
        f0 = int(stat(page, "frames"))
        time.sleep(1.5)
        f1 = int(stat(page, "frames"))
        assert f1 > f0, (f0, f1)
        assert float(stat(page, "processed_fps")) > 0
        assert (
            stat(page, "engine")
            and stat(page, "device") in ("cpu", "cuda")
            or stat(page, "device").startswith("cuda")
        )
        assert label_state(page)[0] not in ("", "waiting")
        page.wait_for_selector("#timeline img, #timeline canvas, #timeline svg", timeout=15000)

        lap("a control change takes effect")
        # -- a control change takes effect --------------------------------------------------
        set_number(page, "min-dur", 0)
        set_number(page, "threshold", 1.0)  # unreachable: never a call, never an alert ...
        # ... once no call is held (hysteresis keeps one): re-opening the source starts afresh.
        page.click("#switch")
        page.locator("#source-msg").get_by_text("Now showing").wait_for(timeout=20000)
        time.sleep(2.0)
        states = set()
        for _ in range(6):
            states.add(label_state(page))
            time.sleep(0.3)
        assert all(s in ("uncertain", "no call", "no lesion") and a == "0" for s, a in states), states
        lowest = float(page.get_attribute("#threshold input[type=number]", "min"))  # 1/K
        set_number(page, "threshold", lowest)  # the top class is called once it holds min_frames
        seen = []
        for _ in range(30):  # up to ~10 s: the student's min_frames wait, while the clip moves on
            time.sleep(0.3)
            seen.append(label_state(page)[0])
            if seen[-1] not in ("uncertain", "no call", "waiting"):
                break
        assert seen[-1] not in ("uncertain", "no call", "waiting"), seen
        page.click("#pause")  # the picture freezes ...
        page.get_by_role("button", name="Resume").wait_for(timeout=10000)
        time.sleep(0.5)
        assert not frames_advance(app, 1.0), "pause did not freeze the live view"
        page.click("#pause")  # ... and moves again
        page.get_by_role("button", name="Pause").wait_for(timeout=10000)
        assert frames_advance(app), "resume did not restart the live view"
        page.screenshot(path=str(ART / "ui.png"), full_page=True)

        lap("bad uploads")
        # -- bad uploads: an error in the page, the app keeps serving -----------------------
        page.get_by_role("tab", name="Replay evaluation").click()
        for bad, needs_run in ((media["notes"], False), (media["big"], False), (media["fake"], True)):
            upload(page, "replay-video", bad)
            if needs_run:  # passes the browser-side checks: the server's PyAV probe refuses it
                page.click("#replay-run")
            err = page.locator(".toast-body, #upload-error").filter(has_text=bad.name).first
            err.wait_for(timeout=20000)
            errors[bad.name] = err.inner_text()
            assert frames_advance(app), "live view stopped after a bad upload"
        assert "not a readable video" in errors["fake.mp4"], errors
        assert app.proc.poll() is None
        (ART / "ui_upload_errors.json").write_text(json.dumps(errors, indent=2) + "\n")
        page.locator("#replay-video button[aria-label='Clear']").first.click()

        lap("replay evaluation")
        # -- replay evaluation --------------------------------------------------------------
        upload(page, "replay-video", media["clip"])
        upload(page, "replay-labels", media["labels"])
        page.locator("#replay-video").get_by_text("clip").first.wait_for(timeout=10000)
        page.click("#replay-run")
        page.wait_for_function(
            "document.querySelector('#replay-report')?.innerText.includes('Replay of')", timeout=60000
        )
        report = page.inner_text("#replay-report")
        assert "frames analysed: 45" in report and "annotated video: 45 frames" in report, report
        files = page.inner_text("#replay-files").replace("\n", "")  # names wrap at the dot
        assert "predictions.jsonl" in files and "annotated.mp4" in files, files
        assert "Video-level evaluation" in report and "AUC" in report, report
        page.screenshot(path=str(ART / "ui_replay.png"), full_page=True)
        assert frames_advance(app)
        root = session_root(app)
        assert [p for p in root.iterdir() if p.is_dir()], "the replay wrote nothing to its session folder"

        lap("the browser's own webcam")
        # -- the browser's own webcam as the live source (chromium's fake camera) -----------
        page.get_by_role("tab", name="Live").click()
        page.get_by_text("Browser webcam").click()
        page.get_by_text("Click to Access Webcam").click()
        page.locator('#webcam button[aria-label="capture photo"]').click()
        page.wait_for_function(
            "document.querySelector('#stats-table td[data-k=source]')?.innerText === 'webcam' && "
            "+document.querySelector('#stats-table td[data-k=frames]').innerText >= 2",
            timeout=30000,
        )
        assert frames_advance(app, 3.0), "webcam frames do not reach the live view"

    lap("closing the page")
    # -- closing the page deletes the session's uploads and results -------------------------
    end = time.monotonic() + 20
    while [p for p in root.iterdir() if p.is_dir()] and time.monotonic() < end:
        time.sleep(0.5)
    assert not [p for p in root.iterdir() if p.is_dir()], list(root.rglob("*"))
    lap("end")
    steps = {a[0]: round(b[1] - a[1], 1) for a, b in itertools.pairwise(marks)}
    (ART / "ui_steps.json").write_text(json.dumps(steps, indent=2) + "\n")


def test_live_routes_share_the_page_login():
    """With --auth, the MJPEG/trace routes answer only a logged-in browser (Gradio's cookie)."""
    import gradio as gr
    import httpx

    from benchmarks.ui_driver import free_port
    from stream.ui.live import FrameHub, live_routes, read_marker

    hub = FrameHub(marker=True)
    hub.submit(np.zeros((48, 160, 3), np.uint8), 0, time.time())
    while hub.latest is None:  # encoded on the hub's own thread
        time.sleep(0.01)
    with gr.Blocks() as demo:
        gr.Markdown("login test")
    port = free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        auth=("alice", "pw"),
        prevent_thread_lock=True,
        quiet=True,
        app_kwargs={"routes": live_routes(hub)},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as c:
            for path in ("/live/frame.jpg", "/live/trace", "/live/mjpeg"):
                assert c.get(path).status_code == 401, path
            assert c.post("/login", data={"username": "alice", "password": "wrong"}).status_code >= 400
            assert c.post("/login", data={"username": "alice", "password": "pw"}).status_code == 200
            r = c.get("/live/frame.jpg")
            assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"  # a JPEG
            # ... whose frame-number cells survive JPEG compression (the display measurement reads them)
            bgr = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert read_marker(bgr) == 1
            assert c.get("/live/trace").json()["frames"][0]["seq"] == 1
    finally:
        demo.close()
        hub.close()


def test_upload_gate_and_session_files(tmp_path):
    """Uploads: type, size and a PyAV probe; a session's files survive a second run and go on drop."""
    from stream.ui.session import SessionFiles, UploadError, check_labels, check_video, parse_size

    assert parse_size("500MB") == 500_000_000 and parse_size("2 GiB") == 2**31
    with pytest.raises(ValueError, match="bad size"):
        parse_size("5XB")
    video = tmp_path / "ok.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    probe = check_video(video, 10**6)
    assert (probe.width, probe.height) == (64, 48)
    with pytest.raises(UploadError, match="upload limit"):
        check_video(video, 100)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(UploadError, match="not a video file"):
        check_video(tmp_path / "x.txt", 10**6)
    (tmp_path / "bad.mkv").write_bytes(b"\x00" * 500)
    with pytest.raises(UploadError, match="not a readable video") as err:
        check_video(tmp_path / "bad.mkv", 10**6)
    assert str(tmp_path) not in str(err.value)  # never names a server path
    (tmp_path / "l.csv").write_text("frame,lesion_visible\n0,1\n")
    check_labels(tmp_path / "l.csv", 10**6)
    (tmp_path / "n.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UploadError, match="'frame' column"):
        check_labels(tmp_path / "n.csv", 10**6)

    files = SessionFiles(tmp_path)
    cached = files.root / "hash123" / "ok.mp4"  # where Gradio keeps an upload
    cached.parent.mkdir()
    cached.write_bytes(video.read_bytes())
    files.track("s1", cached)
    first = files.adopt("s1", cached)
    assert files.adopt("s1", cached) == first and first.is_file()  # "Evaluate" pressed twice
    files.drop("s1")
    assert not first.exists() and not cached.parent.exists()
    files.close()
    assert not files.root.exists()


@pytest.mark.parametrize("mode", ["none", "ema", "window", "hmm"])
def test_controls_map_onto_the_runtime(mode):
    """Every slider position gives a smoother spec and alert config the runtime accepts."""
    from stream.ui.controls import Controls

    for k in (2, 3):
        for strength in (0.0, 0.5, 1.0):
            for threshold in (0.2, 0.5, 1.0):  # 0.2 < 1/K: raised to 1/K
                c = Controls(threshold=threshold, uncertain_band=0.5, smoothing=mode, strength=strength).validate(
                    k
                )
                smoothing = c.smoothing_config(k)
                assert smoothing.mode == mode
                smoothing.build()
                cfg = c.alert_config(tuple(f"c{i}" for i in range(k)))
                assert cfg.threshold >= 1.0 / k  # below 1/K a threshold means nothing
    with pytest.raises(ValueError, match="smoothing must be one of"):
        Controls(smoothing="kalman").validate(2)
