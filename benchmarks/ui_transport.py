"""Live-view transport measured in the browser: the app's MJPEG path vs Gradio's image-per-yield.

    python -m benchmarks.ui transport --source stream/assets/demo.mp4 --seconds 15

Both serve the same decoded frames (no inference), paced at 30 fps and stamped with the frame
marker; the same page probe (benchmarks.ui_driver) measures displayed fps and arrival->display
delay in Debian's headless chromium. One run, same machine: compare them as a ratio.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import av
import gradio as gr

from benchmarks.ui_driver import browser, free_port, measure_display
from stream.ui.live import FrameHub, draw_marker, live_routes


def decode(video: str, n: int) -> list:
    with av.open(video) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= n:
                return out
    return out


class Paced:
    """Frames at `fps` forever, each with a new sequence number and its wall-clock arrival."""

    def __init__(self, frames: list, fps: float = 30.0):
        self.frames, self.dt = frames, 1.0 / fps
        self.trace: collections.deque = collections.deque(maxlen=4096)

    def __iter__(self):
        t_next, seq = time.monotonic(), 0
        while True:
            for rgb in self.frames:
                t_next += self.dt
                time.sleep(max(0.0, t_next - time.monotonic()))
                seq += 1
                yield seq, rgb, time.time()


class Trace:
    def __init__(self, rows_fn):
        self.rows_fn = rows_fn

    def trace(self) -> dict:
        return {"marker": True, "frames": self.rows_fn()}


def run_mjpeg(frames, seconds: float, warmup: float) -> dict:
    hub = FrameHub(80, marker=True)
    stop = threading.Event()

    def feed():
        for seq, rgb, arrival in Paced(frames):
            if stop.is_set():
                return
            hub.submit(rgb, seq, arrival)

    with gr.Blocks() as demo:
        gr.HTML('<img id="live-img" src="live/mjpeg" style="width:100%">')
    port = free_port()
    demo.launch(
        server_port=port, prevent_thread_lock=True, quiet=True, app_kwargs={"routes": live_routes(hub)}
    )
    threading.Thread(target=feed, daemon=True).start()
    src = Trace(lambda: [{"seq": s, "arrival": a} for s, _, a, _ in list(hub.trace)])
    try:
        return measure(f"http://127.0.0.1:{port}/", "#live-img", src, seconds, warmup)
    finally:
        stop.set()
        demo.close()
        hub.close()


def run_yield(frames, seconds: float, warmup: float) -> dict:
    trace: collections.deque = collections.deque(maxlen=4096)
    stop = threading.Event()

    def stream():  # the usual Gradio way: a generator yielding numpy images to a gr.Image
        for seq, rgb, arrival in Paced(frames):
            if stop.is_set():
                return
            img = rgb.copy()
            draw_marker(img, seq & 0xFFFF)
            trace.append({"seq": seq & 0xFFFF, "arrival": arrival})
            yield img

    with gr.Blocks() as demo:
        out = gr.Image(format="jpeg", elem_id="yield-img", label="yield")
        demo.load(stream, outputs=out, show_progress="hidden")
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        return measure(
            f"http://127.0.0.1:{port}/", "#yield-img img", Trace(lambda: list(trace)), seconds, warmup
        )
    finally:
        stop.set()
        demo.close()


def measure(url: str, selector: str, src: Trace, seconds: float, warmup: float) -> dict:
    with browser() as (_, page):
        page.goto(url)
        page.wait_for_function(f"document.querySelector('{selector}')?.naturalWidth > 0", timeout=60000)
        time.sleep(warmup)
        return measure_display(page, src, seconds, selector)


def compare_transports(source: str, seconds: float, warmup: float, frames: int) -> dict:
    """Both transports on the first ``frames`` frames of ``source``, looped, one after the other."""
    decoded = decode(source, frames)
    h, w = decoded[0].shape[:2]
    res = {"source": source, "size": f"{w}x{h}", "paced_fps": 30.0}
    res["mjpeg"] = run_mjpeg(decoded, seconds, warmup)
    res["gradio_yield"] = run_yield(decoded, seconds, warmup)
    res["load_avg_1min"] = os.getloadavg()[0]
    return res
