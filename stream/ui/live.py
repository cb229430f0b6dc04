"""Low-latency live view: annotated frames -> one JPEG encode -> MJPEG to every open page.

Why not Gradio's image-per-yield: every frame then travels as its own queue event and image
file through Gradio (1.6-2.1 displayed fps at 720p here, docs/ui.md). Here the browser's own <img> decodes a
multipart/x-mixed-replace stream served by the same FastAPI app as Gradio, so a frame
costs one cv2.imencode on the server and one JPEG decode in the page.

Latency rules (field.md: lag must not grow): the pipeline hands frames to a one-slot
mailbox (a newer frame replaces an unencoded one, counted as dropped); the encoder thread
broadcasts only the newest JPEG; each viewer always gets the newest JPEG when it is ready
for the next one, so a slow viewer skips frames instead of queueing them.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

BOUNDARY = "frame"
MARKER_BITS = 16
MARKER_CELL = 8  # one 8x8 JPEG block per bit: survives quality-80 compression intact
IDLE_INTERVAL = 1.0  # s between encodes while no page is watching


@dataclass
class Encoded:
    seq: int  # hub sequence number (what the pixel marker carries)
    index: int  # source frame index
    arrival: float  # wall-clock time.time() when the source frame arrived at the server
    encoded: float  # wall-clock time when the JPEG was ready
    jpeg: bytes


def draw_marker(rgb: np.ndarray, seq: int) -> None:
    """Write `seq` as black/white 8x8 cells along the top-left edge (measurement mode only)."""
    for bit in range(MARKER_BITS):
        x = bit * MARKER_CELL
        rgb[:MARKER_CELL, x : x + MARKER_CELL] = 255 if (seq >> bit) & 1 else 0


def read_marker(rgb: np.ndarray) -> int:
    """Inverse of draw_marker (reads each cell's centre); the page hook does the same in JS."""
    c = MARKER_CELL // 2
    return sum(1 << b for b in range(MARKER_BITS) if rgb[c, b * MARKER_CELL + c].mean() > 127)


class FrameHub:
    """One-slot mailbox -> encoder thread -> newest JPEG shared by all viewers."""

    def __init__(self, quality: int = 80, marker: bool = False, trace_len: int = 4096):
        self.quality = int(quality)
        self.marker = marker
        self.dropped = 0  # frames replaced in the mailbox before they were encoded
        self.bad_frames, self.last_error = 0, ""  # pictures the encoder could not take
        self.encode_ms = collections.deque(maxlen=256)
        self.trace = collections.deque(maxlen=trace_len)  # (seq, index, arrival, encoded)
        self.latest: Encoded | None = None
        self.viewers = 0  # open MJPEG streams (only touched on the event loop)
        self._slot = None
        self._seq = 0
        self._cv = threading.Condition()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._wlock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._encode_loop, name="jpeg-encoder", daemon=True)
        self._thread.start()

    # -- producer side (pipeline thread) -------------------------------------------------
    def submit(self, rgb: np.ndarray, index: int, arrival: float) -> None:
        """Hand over an annotated RGB frame; never blocks the pipeline."""
        with self._cv:
            if self._slot is not None:
                self.dropped += 1
            self._slot = (rgb, index, arrival)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()

    def _encode_loop(self) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        while True:
            with self._cv:
                while self._slot is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                rgb, index, arrival = self._slot
                self._slot = None
            idle = self.latest is not None and time.time() - self.latest.encoded < IDLE_INTERVAL
            if self.viewers == 0 and idle:
                continue  # nobody watching: one picture a second keeps /live/frame.jpg fresh
            t0 = time.perf_counter()
            seq = self._seq + 1
            try:
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # a new array: the marker never touches the caller's
                if self.marker:
                    draw_marker(bgr, seq & ((1 << MARKER_BITS) - 1))
                ok, buf = cv2.imencode(".jpg", bgr, params)
            except (cv2.error, ValueError, TypeError, IndexError) as e:
                # One bad picture (2-D, wrong dtype) must not end this thread: it is the live view
                # of every viewer. It is skipped and said once in the stats.
                self.bad_frames += 1
                self.last_error = f"live view skipped a picture it cannot encode: {' '.join(str(e).split())[:200]}"
                continue
            if not ok:
                continue
            self.encode_ms.append((time.perf_counter() - t0) * 1e3)
            self._seq = seq
            self.latest = Encoded(seq, index, arrival, time.time(), buf.tobytes())
            self.trace.append((seq, index, arrival, self.latest.encoded))
            self._wake_viewers()

    # -- consumer side (asyncio, one coroutine per open page) ----------------------------
    def _wake_viewers(self) -> None:
        with self._wlock:
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop closed: the viewer is gone
                pass

    async def next_frame(self, after_seq: int, timeout: float = 5.0) -> Encoded | None:
        """The newest frame with seq > after_seq, waiting up to `timeout` s for one."""
        cur = self.latest
        if cur is not None and cur.seq > after_seq:
            return cur
        ev = asyncio.Event()
        key = (asyncio.get_running_loop(), ev)
        with self._wlock:
            self._waiters.add(key)
        try:
            cur = self.latest  # re-check: a frame may have landed before we registered
            if cur is None or cur.seq <= after_seq:
                await asyncio.wait_for(ev.wait(), timeout)
                cur = self.latest
        except asyncio.TimeoutError:
            return None
        finally:
            with self._wlock:
                self._waiters.discard(key)
        return cur if cur is not None and cur.seq > after_seq else None

    async def mjpeg(self):
        """Async generator of multipart parts; Starlette cancels it when the page goes away."""
        last = 0
        self.viewers += 1
        # Each part is sent together with the boundary that closes it: a browser treats a part
        # as complete only when it sees the next boundary, which would otherwise come one frame later.
        delimiter = f"\r\n--{BOUNDARY}\r\n".encode()
        try:
            yield delimiter[2:]
            while True:
                f = await self.next_frame(last)
                if f is None:
                    continue  # source paused or switching: keep the connection open
                last = f.seq
                head = (
                    f"Content-Type: image/jpeg\r\nContent-Length: {len(f.jpeg)}\r\n"
                    f"X-Frame-Seq: {f.seq}\r\nX-Frame-Index: {f.index}\r\nX-Arrival: {f.arrival:.6f}\r\n\r\n"
                )
                yield head.encode() + f.jpeg + delimiter
        finally:
            self.viewers -= 1


def authorised(request: Request) -> bool:
    """The same login as the Gradio page: its session cookie must map to a user."""
    app = request.app  # Gradio's App: these routes are mounted on it
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    cid = getattr(app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cid}") or request.cookies.get(f"access-token-unsecure-{cid}")
    return app.tokens.get(token) is not None


def live_routes(hub: FrameHub) -> list[APIRoute]:
    """/live/mjpeg (the stream), /live/frame.jpg (newest picture), /live/trace (timing log).

    Passed to Gradio's FastAPI app at construction (launch(app_kwargs={"routes": ...})), so
    they sit on the same server and port as the page and ahead of Gradio's own routes.
    """

    def check(request: Request) -> None:
        if not authorised(request):
            raise HTTPException(status_code=401, detail="log in to the app first")

    async def live_mjpeg(request: Request):
        check(request)
        return StreamingResponse(
            hub.mjpeg(),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def live_frame(request: Request):
        check(request)
        f = hub.latest
        if f is None:
            raise HTTPException(status_code=404, detail="no frame yet")
        return Response(f.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def live_trace(request: Request):
        """Server-side arrival/encode wall-clock times per hub seq, for display-latency measurement."""
        check(request)
        rows = [{"seq": s, "index": i, "arrival": a, "encoded": e} for s, i, a, e in list(hub.trace)]
        return JSONResponse({"marker": hub.marker, "dropped": hub.dropped, "frames": rows})

    return [
        APIRoute("/live/mjpeg", live_mjpeg, methods=["GET"], include_in_schema=False),
        APIRoute("/live/frame.jpg", live_frame, methods=["GET"], include_in_schema=False),
        APIRoute("/live/trace", live_trace, methods=["GET"], include_in_schema=False),
    ]
