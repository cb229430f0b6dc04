"""The pipeline's threads, running the flow that ``Pipeline.compose`` states for each stream.

  ingest (one per stream): next frame -> stamp the stream's id -> route + preprocess ->
      the lane's batcher. At most ``inflight`` frames per stream are between source and
      result; a live source's reader thread meanwhile keeps only the newest frame, so lag
      cannot build up, and drops are counted.
  batcher (stream.batching, one per model): up to ``batch`` frames or ``max_wait_ms`` -> engine.
  post (one): logits -> probabilities -> smoother -> alert machine -> Result -> sinks, each
      stream's results in frame order whichever model read them (stream.routing.InOrder).
  pass-through (live streams, in the source's reader thread): every frame to the stream's video
      sinks at once, so the video never waits for inference.

Every stage is timed into the pipeline's LatencyStats.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from stream.alerts import AlertMachine
from stream.frame import Frame
from stream.result import Result
from stream.routing import InOrder, ModalityRouter
from stream.sinks import LatencyStats, Sink, VideoSink
from stream.smoothing import Smoother
from stream.sources import Source, SourceError


@dataclass
class Stream:
    """One stream's own stages and counters."""

    sid: str
    source: Source
    live: bool
    inflight: int
    smoother: Smoother
    alerts: AlertMachine
    videos: list[VideoSink]  # the stream's own sinks; each result reaches them before the pipeline's
    slots: threading.Semaphore = field(init=False)
    order: InOrder | None = None
    thread: threading.Thread | None = None
    taken: int = 0
    done: bool = False
    error: str | None = None

    def __post_init__(self):
        self.slots = threading.Semaphore(self.inflight)

    @property
    def recorders(self) -> list:
        return [v.recorder for v in self.videos if v.recorder is not None]


class Loops:
    """The threads of one pipeline and what they share: the stop and run flags, the post queue
    and the count of frames in flight."""

    def __init__(self, router: ModalityRouter, sinks: list[Sink], stats: LatencyStats, max_frames: int):
        self.router, self.sinks, self.stats, self.max_frames = router, sinks, stats, max_frames
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()  # cleared while paused
        self._pending = 0
        self._cv = threading.Condition()
        self._post_q: queue.Queue = queue.Queue()
        self._post_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._post_thread = threading.Thread(target=self._post_loop, name="post", daemon=True)
        self._post_thread.start()

    def launch(self, st: Stream) -> None:
        st.thread = threading.Thread(target=self._ingest, args=(st,), name=f"ingest-{st.sid}", daemon=True)
        st.thread.start()

    def finish(self) -> None:
        """Once the ingest threads and batchers are done: post what is left, then end."""
        self._post_q.put(None)
        if self._post_thread is not None:
            self._post_thread.join(timeout=10)

    def idle(self, streams) -> bool:
        with self._cv:
            return all(s.done for s in streams) and self._pending == 0

    def wait(self, streams, timeout: float | None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not (all(s.done for s in streams) and self._pending == 0):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(0.1 if left is None else min(0.1, left))
        return True

    # -- threads -----------------------------------------------------------------------
    def _ingest(self, st: Stream) -> None:
        it = iter(st.source)
        try:
            while not self.stop.is_set() and not (self.max_frames and st.taken >= self.max_frames):
                # Take a slot first, then the frame: a live frame must not age while we wait.
                while not st.slots.acquire(timeout=0.1):
                    if self.stop.is_set():
                        return
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    st.slots.release()
                    break
                t1 = time.perf_counter()
                # The pipeline names its streams, whatever source (or wrapper around one) made the
                # frame: trackers, croppers, detectors and the prediction log are keyed by it.
                frame.stream_id = st.sid
                self.stats.add("source", (t1 - t0) * 1e3)
                if not self.running.is_set():
                    if st.live:  # a live feed goes on: frames arriving while paused are skipped ...
                        if "gap" in frame.meta:  # ... but not the outage before one: it goes on record
                            self._enqueue(st, _skipped(frame))
                        else:
                            st.slots.release()
                        continue
                    while not self.running.wait(0.1) and not self.stop.is_set():
                        pass  # replay waits for resume and then goes on with this very frame
                lane, x = self.router.prepare(frame)
                self.stats.add("preprocess", (time.perf_counter() - t1) * 1e3)
                st.taken += 1
                self._enqueue(st, self.router.submit(lane, x, st.sid, frame))
        except SourceError as e:
            st.error = str(e)
        except Exception as e:  # noqa: BLE001 - whatever stops this stream (a decoder, preprocessing or
            # engine failure) becomes its one-line error; the other streams and the session go on.
            st.error = f"stream {st.sid}: {type(e).__name__}: {e}"
        finally:
            with self._cv:
                st.done = True
                self._cv.notify_all()

    def _enqueue(self, st: Stream, fut: Future) -> None:
        """Post ``fut`` (holding one of the stream's slots) once it and the frames before it are done."""
        with self._cv:
            self._pending += 1
        st.order.add(fut)

    def to_post(self, st: Stream, fut: Future) -> None:
        self._post_q.put((st, fut))

    def _post_loop(self) -> None:
        while True:
            item = self._post_q.get()
            if item is None:
                return
            st, fut = item
            try:
                self._post(st, fut.result())
            except Exception as e:  # noqa: BLE001 - the engine's or a sink's failure, of any type:
                # reported as the stream's error while the stream keeps going.
                self.stats.count("failed")
                st.error = f"stream {st.sid}: {type(e).__name__}: {' '.join(str(e).split())}"
            finally:
                st.slots.release()
                with self._cv:
                    self._pending -= 1
                    if self._pending == 0:  # wait() can only be done now: no wake-up per frame
                        self._cv.notify_all()

    def _post(self, st: Stream, res) -> None:
        t0 = time.perf_counter()
        frame = res if isinstance(res, Frame) else res.meta
        gap = frame.meta.get("gap")
        if gap is not None:
            # An outage of the input, before this frame: to the sinks that keep a record of them
            # (the prediction log, the UI's timeline), also when the frame itself was skipped.
            for sink in (*st.videos, *self.sinks):
                if hasattr(sink, "gap"):
                    sink.gap(frame.stream_id, gap)
        if frame is res:  # skipped while paused: nothing else to say about it
            return
        route = frame.meta["route"]
        if res.logits is None:
            # Nothing read this frame: no probabilities, and no call carried over it, whose
            # evidence would be older than the NBI stretch.
            probs = smoothed = views = None
            st.smoother.reset()
            state = st.alerts.not_analysed(frame.pts)
        else:
            self.stats.add("queue", res.wait_ms)
            self.stats.add("infer", res.infer_ms)
            probs, views = self.router.lane(route.lane).read(res.logits)
            smoothed = st.smoother.update(probs)
            state = st.alerts.update(smoothed, frame.pts)
        latency = (time.monotonic() - frame.arrival) * 1e3
        result = Result(
            frame, probs, smoothed, state, latency, res.batch_size, modality=route.modality, model=route.lane,
            view_probs=views,
        )
        self.stats.add("total", latency)
        self.stats.count("frames")
        t1 = time.perf_counter()
        self.stats.add("post", (t1 - t0) * 1e3)
        for sink in (*st.videos, *self.sinks):
            sink.write(result)
        self.stats.add("sinks", (time.perf_counter() - t1) * 1e3)

    def passthrough(self, st: Stream, frame: Frame) -> None:
        """A live stream's every frame, in its reader thread, before ingest takes (or skips) it."""
        frame.stream_id = st.sid
        t0 = time.perf_counter()
        for video in st.videos:
            video.tap(frame)
        self.stats.add("passthrough", (time.perf_counter() - t0) * 1e3)


def _skipped(frame: Frame) -> Future:
    """A frame skipped while paused, posted only for the outage it reports (``meta['gap']``)."""
    fut: Future = Future()
    fut.set_result(frame)
    return fut
