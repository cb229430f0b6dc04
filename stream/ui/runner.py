"""The server-side live stream behind the page, run by the runtime's own Pipeline.

    source (newest frame only) --pass-through overlay--> FrameHub (JPEG, MJPEG to the page)
           \\--> preprocess -> engine -> smoother -> alerts --> history + stats (plot, panel)

Every page watches the same stream (one endoscope, one feed); controls act on it at the
next frame. A source switch starts a new Pipeline on the same engine and stops the old
one. The browser's webcam is one more live source: frames pushed by Gradio's stream event
land in a `PushSource`, which the pipeline reads like any capture device.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from stream.alerts import AlertConfig
from stream.config import PipelineConfig
from stream.frame import Frame
from stream.pipeline import Pipeline, Result
from stream.sinks import Callback
from stream.sources import Source, SourceInfo
from stream.ui.controls import Controls
from stream.ui.live import FrameHub


class PushSource(Source):
    """Pictures handed in from outside (the browser webcam), timestamped on arrival."""

    def __init__(self, name: str = "webcam"):
        super().__init__(SourceInfo(name=name, kind="browser", live=True))
        self._q: collections.deque = collections.deque(maxlen=1)
        self._cv = threading.Condition()
        self._closed = False
        self._t0: float | None = None

    def push(self, rgb: np.ndarray) -> None:
        now = time.monotonic()
        self._t0 = now if self._t0 is None else self._t0
        with self._cv:
            self._q.append(Frame(0, now - self._t0, now, np.ascontiguousarray(rgb[..., :3])))
            self._cv.notify()

    def frames(self) -> Iterator[Frame]:
        while True:
            with self._cv:
                while not self._q and not self._closed:
                    self._cv.wait(0.5)
                if self._closed:
                    return
                f = self._q.popleft()
            yield f

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class Rate:
    """Events per second over a sliding window, from (time, running count) samples."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self.samples: collections.deque = collections.deque()

    def add(self, t: float, count: float) -> None:
        self.samples.append((t, count))
        while len(self.samples) > 2 and t - self.samples[1][0] > self.window:
            self.samples.popleft()

    def value(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


class LiveRunner:
    def __init__(self, hub: FrameHub, engine, base: PipelineConfig, controls: Controls, history: int = 900):
        """``base``: the live stream's pipeline config; the page's controls set its smoothing
        and alerts."""
        self.hub, self.engine, self.base = hub, engine, base
        self.class_names = list(engine.class_names)
        self.controls = controls.validate(len(self.class_names))
        self.alert_cfg = AlertConfig(class_names=tuple(self.class_names))
        self.history: collections.deque = collections.deque(maxlen=history)
        self.latency_ms: collections.deque = collections.deque(maxlen=300)
        self.in_rate, self.out_rate = Rate(), Rate()
        self.paused = False
        self.spec = ""
        self.last: dict = {}
        self.processed = 0
        self._pipe: Pipeline | None = None
        self._push: PushSource | None = None
        self._lock = threading.Lock()

    # -- control ------------------------------------------------------------------------
    def _config(self) -> PipelineConfig:
        c = self.controls
        return replace(self.base, smoothing=c.smoothing_config(len(self.class_names)),
                       alerts=c.alert_config(self.class_names))  # fmt: skip

    def switch(self, spec: str) -> None:
        """Make `spec` the live source; if it cannot be opened the current one keeps running."""
        spec = spec.strip()
        pipe = Pipeline(self._config(), engine=self.engine)
        pipe.add_sink(
            Callback(lambda r, p=pipe: self._on_result(p, r), lambda _, g, p=pipe: self._on_gap(p, g))
        )
        pipe.displays.append(lambda f, rgb, p=pipe: self._on_display(p, f, rgb))
        push = PushSource() if spec == "webcam" else None
        try:
            # Files replay paced at their own rate (the live config) and loop, so the demo keeps running.
            pipe.add_stream(push or spec, stream_id="live", **({} if push else {"loop": True}))
        except BaseException:  # e.g. SourceError, one line for the page: nothing of it may linger
            pipe.stop()
            raise
        if self.paused:
            pipe.pause()
        with self._lock:
            old, self._pipe, self._push, self.spec = self._pipe, pipe, push, spec
            self.history.clear()
            self.latency_ms.clear()
            self.processed, self.last = 0, {}
            self.in_rate, self.out_rate = Rate(), Rate()
        pipe.start()
        if old is not None:
            threading.Thread(target=old.stop, name="stop-old-source", daemon=True).start()

    def push(self, rgb: np.ndarray) -> bool:
        """A webcam picture from the browser; False when the webcam is not the live source."""
        p = self._push
        if p is None:
            return False
        p.push(rgb)
        return True

    def configure(self, **changes) -> Controls:
        """Apply page controls to the running pipeline (smoother state and held calls are kept)."""
        new = replace(self.controls, **changes).validate(len(self.class_names))
        self.controls = new
        pipe = self._pipe
        if pipe is not None:
            cfg = self._config()
            pipe.configure(smoothing=cfg.smoothing, alerts=cfg.alerts)
        return new

    def set_paused(self, paused: bool) -> None:
        """Pause freezes the picture and stops analysis; a live input keeps being read (and dropped)."""
        self.paused = bool(paused)
        pipe = self._pipe
        if pipe is not None:
            pipe.pause() if self.paused else pipe.resume()

    def close(self) -> None:
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.stop()
        self.hub.close()

    # -- pipeline callbacks (reader and post threads) -----------------------------------
    def _on_display(self, pipe: Pipeline, frame: Frame, rgb: np.ndarray) -> None:
        if pipe is not self._pipe or self.paused:
            return
        arrival_wall = time.time() - (time.monotonic() - frame.arrival)
        self.hub.submit(rgb, frame.index, arrival_wall)

    def _on_gap(self, pipe: Pipeline, gap: dict) -> None:
        """An outage of the input (also one while paused, when its frame is not analysed): a point
        without values breaks the plotted lines there, and its length is shaded (stream.ui.plots),
        instead of a line drawn across it."""
        if pipe is not self._pipe:
            return
        self.history.append({"t": time.monotonic(), "frame": gap["next_frame"], "state": "", "alert": False,
                             "confidence": 0.0, "p_raw": np.nan, "p_smooth": np.nan, "modality": "",
                             "gap_s": float(gap["seconds"])})  # fmt: skip

    def _on_result(self, pipe: Pipeline, r: Result) -> None:
        if pipe is not self._pipe:
            return
        now = time.monotonic()
        rec = {
            "t": now,
            "frame": r.frame.index,
            "state": r.state.state,
            "alert": bool(r.state.alert),
            "confidence": float(r.state.confidence),
            # P(alert class | lesion in view); NaN (a gap in the plot) where no model read the frame
            "p_raw": np.nan if r.probs is None else self.alert_cfg.alert_probability(r.probs),
            "p_smooth": np.nan if r.smoothed is None else self.alert_cfg.alert_probability(r.smoothed),
            "modality": r.modality,
        }
        self.processed += 1
        self.latency_ms.append(r.latency_ms)
        self.out_rate.add(now, self.processed)
        self.last = rec
        self.history.append(rec)

    # -- what the page shows ------------------------------------------------------------
    def stats(self) -> dict:
        pipe = self._pipe
        lat = np.array(self.latency_ms) if self.latency_ms else np.zeros(1)
        # The stream's own counters, not pipe.summary(): that sorts every latency sample kept (up to
        # 100k per stage) and this runs twice a second per open page.
        st = pipe.streams.get("live") if pipe is not None else None
        c = st.source.counters if st is not None else {}
        error = (st.error or "") if st is not None else ""
        now = time.monotonic()
        self.in_rate.add(now, c.get("frames", 0) + c.get("dropped", 0))  # everything the input delivered
        self.out_rate.add(now, self.processed)
        eng = self.engine.describe()
        return {
            "source": self.spec,
            "paused": self.paused,
            "input_fps": self.in_rate.value(),
            "processed_fps": self.out_rate.value(),
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            "dropped_source": int(c.get("dropped", 0)),
            "dropped_display": int(self.hub.dropped),
            "encode_ms": float(np.median(self.hub.encode_ms)) if self.hub.encode_ms else 0.0,
            "viewers": int(self.hub.viewers),
            "frames": self.processed,
            "engine": eng.get("engine", "?"),
            "precision": eng.get("precision", ""),
            "device": eng.get("device", "?"),
            "state": self.last.get("state", ""),
            "confidence": self.last.get("confidence"),
            "alert": bool(self.last.get("alert", False)),
            "modality": self.last.get("modality", ""),
            "alert_frames": sum(1 for r in list(self.history) if r["alert"]),
            "error": error or self.hub.last_error,
        }

    def timeline(self) -> list[dict]:
        return list(self.history)
