"""The runtime: source -> route (content area, modality) -> preprocess -> batcher -> engine
-> smoother/alerts -> sinks.

    pipe = Pipeline(PipelineConfig(predictions="run.jsonl"), on_result=print)
    pipe.add_stream("clip.mp4")      # or a device, URL, folder, "demo"; several streams share the engine
    summary = pipe.run()             # start, wait for the sources to end, stop

    pipe.start(); pipe.pause(); pipe.set_params(smoothing="hmm:stay=0.98", threshold=0.8); pipe.stop()

Threads and queues (each bounded, each stage timed into ``pipe.stats``):
  ingest (one per stream): next frame -> route -> preprocess -> batcher.submit. The router
      (stream.routing) sends WLI frames to the student and NBI frames to the NBI teacher exported
      beside it, or, without one, straight to post as "NBI: not analysed". At most ``inflight``
      frames per stream are between source and result; for a live source the reader thread
      keeps only the newest frame meanwhile, so lag cannot build up, and drops are counted;
      a file replayed as fast as possible is decoded a few frames ahead in its own thread.
  batcher (stream.batching, one per model): up to ``batch`` frames or ``max_wait_ms`` -> engine.infer.
  post: softmax -> smoother -> alert machine -> prediction log, overlay, recorder, callbacks.
  pass-through (live sources only, in the reader thread): every frame is annotated with the
      newest result at once and handed to the display/recorder, so the video never waits.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.alerts import AlertConfig, AlertMachine
from stream.config import PipelineConfig, bundled_model
from stream.frame import Frame
from stream.lanes import open_engine
from stream.result import Result
from stream.routing import InOrder, ModalityRouter
from stream.sinks import Annotation, LatencyStats, PassThroughOverlay, PredictionLog, Recorder, draw_overlay
from stream.smoothing import build_smoother, parse_spec
from stream.sources import Source, SourceError, open_source
from stream.sources.prefetch import Prefetcher
from stream.summary import session_summary, stream_errors

__all__ = ["Pipeline", "PipelineConfig", "Result"]


def _sibling(path: str, sid: str, first: bool) -> str:
    # The first stream writes to the path as given; others get their id inserted before the suffix.
    p = Path(path)
    return str(p) if first else str(p.with_name(f"{p.stem}.{sid}{p.suffix}"))


@dataclass
class _Stream:
    sid: str
    source: Source
    live: bool
    inflight: int
    slots: threading.Semaphore
    smoother: object
    alerts: AlertMachine
    recorder: Recorder | None = None
    raw_recorder: Recorder | None = None
    passthrough: bool = False
    order: InOrder | None = None  # results handed to post in frame order, whichever model read them
    thread: threading.Thread | None = None
    taken: int = 0
    done: bool = False
    error: str | None = None


class Pipeline:
    def __init__(
        self,
        cfg: PipelineConfig | None = None,
        engine=None,
        on_result: Callable[[Result], None] | None = None,
        on_display: Callable[[Frame, np.ndarray], None] | None = None,
        teacher=None,
    ):
        """``engine``: the student's engine (default: built as ``cfg`` says); ``teacher``: an NBI
        model's engine (default: ``cfg.nbi_teacher``, i.e. the one exported beside the student)."""
        self.cfg = cfg = cfg or PipelineConfig()
        self.engine = engine if engine is not None else open_engine(cfg, cfg.model or bundled_model())
        self.class_names = list(self.engine.class_names)
        self.router = ModalityRouter(cfg, self.engine, teacher)
        self.pre = self.router.student.pre
        self.stats = LatencyStats()
        self.result_callbacks = [on_result] if on_result else []
        self.display_callbacks = [on_display] if on_display else []
        self.overlay = PassThroughOverlay([self._emit_display])
        self.log = PredictionLog(cfg.predictions) if cfg.predictions else None
        self.streams: dict[str, _Stream] = {}
        self._post_q: queue.Queue = queue.Queue()
        self._post_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()  # cleared while paused
        self._pending = 0
        self._cv = threading.Condition()
        self._started = self._stopped = False
        self.t_start = self.t_end = None

    # -- building ------------------------------------------------------------------------
    def add_stream(self, source: str | Source, stream_id: str | None = None, **source_kw) -> str:
        """Open ``source`` (spec or Source) as one more stream; raises SourceError if it cannot be opened."""
        sid = stream_id or str(len(self.streams))
        if sid in self.streams:
            raise ValueError(f"stream id {sid!r} already in use")
        if not isinstance(source, Source):
            source = open_source(source, realtime=self.cfg.realtime, stream_id=sid, **source_kw)
        source.stream_id = sid
        live = bool(source.info.live)
        if not live and self.cfg.prefetch > 0:
            source = Prefetcher(source, self.cfg.prefetch)  # decode ahead while frames are analysed
        # Sources with taps (LatestFrameReader) feed the pass-through path from their reader thread;
        # other live sources (e.g. frames pushed by a browser) get their overlay after analysis.
        passthrough = live and hasattr(source, "taps")
        cfg, first = self.cfg, not self.streams
        n = cfg.inflight or (2 if live else 2 * cfg.batch)
        mode, params = parse_spec(cfg.smoothing)
        st = _Stream(
            sid,
            source,
            live,
            n,
            threading.Semaphore(n),
            build_smoother(mode, **params),
            AlertMachine(AlertConfig(class_names=tuple(self.class_names), **cfg.alert_params())),
        )
        fps = source.info.fps or 30.0
        if cfg.record:
            st.recorder = Recorder(_sibling(cfg.record, sid, first), fps=fps, lossless=not live)
        if cfg.record_raw:
            st.raw_recorder = Recorder(_sibling(cfg.record_raw, sid, first), fps=fps, lossless=not live)
        st.passthrough = passthrough
        st.order = InOrder(lambda f, sid=sid: self._post_q.put((sid, f)))
        if passthrough:
            # Pass-through path: runs in the reader thread for every frame, never waits on inference.
            source.taps.append(self._passthrough)
        self.streams[sid] = st
        if self._started:
            self._launch(st)
        return sid

    # -- control -------------------------------------------------------------------------
    def start(self) -> Pipeline:
        if self._started:
            return self
        if not self.streams:
            raise ValueError("add at least one stream before start()")
        self._started, self.t_start = True, time.monotonic()
        queue_size = max(8, sum(s.inflight for s in self.streams.values()) + 8)
        self.router.start(self.cfg.batch, self.cfg.max_wait_ms, queue_size)
        self._post_thread = threading.Thread(target=self._post_loop, name="post", daemon=True)
        self._post_thread.start()
        for st in self.streams.values():
            self._launch(st)
        return self

    def _launch(self, st: _Stream) -> None:
        st.thread = threading.Thread(target=self._ingest, args=(st,), name=f"ingest-{st.sid}", daemon=True)
        st.thread.start()

    def pause(self) -> None:
        """Replay waits; a live feed keeps flowing through the pass-through path but is not analysed."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def set_params(self, smoothing: str | None = None, **alerts) -> None:
        """Change smoothing (spec string) and alert parameters while running."""
        if smoothing is not None:
            mode, params = parse_spec(smoothing)
            old_mode, _ = parse_spec(self.cfg.smoothing)
            for st in self.streams.values():
                if mode == old_mode:
                    st.smoother.set_params(**params)  # keeps the running state
                else:
                    st.smoother = build_smoother(mode, **params)
            self.cfg.smoothing = smoothing
        if alerts:
            for st in self.streams.values():
                st.alerts.configure(**alerts)
            for k, v in alerts.items():
                if hasattr(self.cfg, k):
                    setattr(self.cfg, k, v)

    def done(self) -> bool:
        with self._cv:
            return all(s.done for s in self.streams.values()) and self._pending == 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source has ended and every frame is through; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not (all(s.done for s in self.streams.values()) and self._pending == 0):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(0.1 if left is None else min(0.1, left))
        return True

    def stop(self) -> dict:
        """Stop sources, finish frames in flight, close sinks; returns the summary."""
        if self._stopped:
            return self.summary()
        self._stopped = True
        self._stop.set()
        self._running.set()
        # Live readers are closed first (that wakes an ingest thread waiting for a frame); a file
        # is closed only after its ingest thread has left the decoder, never under its feet.
        for st in self.streams.values():
            if st.live:
                st.source.close()
        for st in self.streams.values():
            if st.thread is not None:
                st.thread.join(timeout=10)
            if not st.live:
                st.source.close()
        self.router.close()
        self._post_q.put(None)
        if self._post_thread is not None:
            self._post_thread.join(timeout=10)
        for st in self.streams.values():
            for rec in (st.recorder, st.raw_recorder):
                if rec is not None:
                    rec.close()
        if self.log is not None:
            self.log.close()
        self.t_end = time.monotonic()
        return self.summary()

    def run(self, timeout: float | None = None) -> dict:
        """start(), wait for the sources to end (or ``timeout`` / Ctrl-C), stop(); the summary."""
        self.start()
        try:
            self.wait(timeout)
        except KeyboardInterrupt:
            pass
        return self.stop()

    def __enter__(self) -> Pipeline:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- stages --------------------------------------------------------------------------
    def _ingest(self, st: _Stream) -> None:
        it = iter(st.source)
        limit = self.cfg.max_frames
        try:
            while not self._stop.is_set() and not (limit and st.taken >= limit):
                # Take a slot first, then the frame: a live frame must not age while we wait.
                while not st.slots.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    st.slots.release()
                    break
                t1 = time.perf_counter()
                # The stream's id on every frame it analyses, whatever source (or wrapper around
                # one) made the frame: trackers, croppers, smoothers and sinks are keyed by it.
                frame.stream_id = st.sid
                self.stats.add("source", (t1 - t0) * 1e3)
                if not self._running.is_set():
                    if st.live:  # a live feed goes on: frames arriving while paused are skipped
                        st.slots.release()
                        continue
                    while not self._running.wait(0.1) and not self._stop.is_set():
                        pass  # replay waits for resume and then goes on with this very frame
                if st.raw_recorder is not None and not st.passthrough:
                    st.raw_recorder.write(frame)
                lane, x = self.router.prepare(frame)
                self.stats.add("preprocess", (time.perf_counter() - t1) * 1e3)
                with self._cv:
                    self._pending += 1
                st.taken += 1
                # To post when the engine is done (or failed) with it and with the frames before it.
                st.order.add(self.router.submit(lane, x, st.sid, frame))
        except SourceError as e:
            st.error = str(e)
        except Exception as e:  # noqa: BLE001 - whatever stops this stream (a decoder, preprocessing or
            # engine failure) becomes its one-line error; the other streams and the session go on.
            st.error = f"stream {st.sid}: {type(e).__name__}: {e}"
        finally:
            with self._cv:
                st.done = True
                self._cv.notify_all()

    def _post_loop(self) -> None:
        while True:
            item = self._post_q.get()
            if item is None:
                return
            sid, fut = item
            try:
                self._post(fut.result())
            except Exception as e:  # noqa: BLE001 - the engine's or a callback's failure, of any type:
                # reported as the stream's error while the stream keeps going.
                self.stats.count("failed")
                self.streams[sid].error = f"stream {sid}: {type(e).__name__}: {' '.join(str(e).split())}"
            finally:
                self.streams[sid].slots.release()
                with self._cv:
                    self._pending -= 1
                    if self._pending == 0:  # wait() can only be done now: no wake-up per frame
                        self._cv.notify_all()

    def _post(self, res) -> None:
        t0 = time.perf_counter()
        st, frame = self.streams[res.stream_id], res.meta
        route = frame.meta["route"]
        if res.logits is None:
            # Nothing read this frame: no probabilities, and no call carried over it, whose
            # evidence would be older than the NBI stretch.
            probs = smoothed = None
            st.smoother.reset()
            state = st.alerts.not_analysed(frame.pts)
        else:
            self.stats.add("queue", res.wait_ms)
            self.stats.add("infer", res.infer_ms)
            probs = self.router.lane(route.lane).probs(res.logits)
            smoothed = np.asarray(st.smoother.update(probs), dtype=np.float64)
            state = st.alerts.update(smoothed, frame.pts)
        latency = (time.monotonic() - frame.arrival) * 1e3
        result = Result(
            frame, probs, smoothed, state, latency, res.batch_size, modality=route.modality, model=route.lane
        )
        self.stats.add("total", latency)
        self.stats.count("frames")
        t1 = time.perf_counter()
        self.stats.add("post", (t1 - t0) * 1e3)
        ann = Annotation(
            state.state,
            bool(state.alert),
            float(state.confidence),
            None if smoothed is None else smoothed.tolist(),
            self.class_names,
            frame.index,
            route.modality,
        )
        if st.passthrough:
            self.overlay.update(st.sid, ann)  # the pass-through path draws it on the next frames
        elif self.cfg.annotate and (st.recorder is not None or self.display_callbacks):
            result.annotated = draw_overlay(frame.rgb, ann)
            if st.recorder is not None:
                st.recorder.write(frame, result.annotated)
            for cb in self.display_callbacks:
                cb(frame, result.annotated)
        if self.log is not None:
            self.log.write(result.record(self.class_names))
        for cb in self.result_callbacks:
            cb(result)
        self.stats.add("sinks", (time.perf_counter() - t1) * 1e3)

    def _passthrough(self, frame: Frame) -> None:
        st = self.streams.get(frame.stream_id)
        if st is None:
            return
        if st.raw_recorder is not None:
            st.raw_recorder.write(frame)
        if self.cfg.annotate and (st.recorder is not None or self.display_callbacks):
            t0 = time.perf_counter()
            self.overlay.tap(frame)
            self.stats.add("passthrough", (time.perf_counter() - t0) * 1e3)

    def _emit_display(self, frame: Frame, rgb: np.ndarray) -> None:
        st = self.streams.get(frame.stream_id)
        if st is not None and st.recorder is not None:
            st.recorder.write(frame, rgb)
        for cb in self.display_callbacks:
            cb(frame, rgb)

    # -- reporting -----------------------------------------------------------------------
    def summary(self) -> dict:
        """Engine, wall time, frames/s, per-stream counts and errors, per-stage latency, batches."""
        end = self.t_end or time.monotonic()
        wall = (end - self.t_start) if self.t_start else 0.0
        batches = self.router.batch_stats()
        return session_summary(self.engine.describe(), self.streams, self.stats, wall, batches, self.paused)

    def errors(self) -> list[str]:
        """One line per stream that ended on an error or saw damaged input."""
        return stream_errors(self.streams)
