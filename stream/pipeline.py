"""The runtime: source -> preprocess -> batcher -> engine -> smoother/alerts -> sinks.

    pipe = Pipeline(PipelineConfig(predictions="run.jsonl"), on_result=print)
    pipe.add_stream("clip.mp4")      # or a device, URL, folder, "demo"; several streams share the engine
    summary = pipe.run()             # start, wait for the sources to end, stop

    pipe.start(); pipe.pause(); pipe.configure(smoothing=SmoothingConfig("hmm", {"stay": 0.98})); pipe.stop()

``Pipeline.compose`` states each stream's flow; stream.loops runs it in threads (one ingest per
stream, one batcher per model, one post, and the pass-through of live streams). Between the
source and the batcher the router (stream.routing) sends WLI frames to the student and NBI
frames to the NBI teacher exported beside it, or, without one, straight to post as "NBI: not
analysed". Every output is a sink (stream.sinks): a stream's own videos first (raw recording,
the annotated overlay), then the pipeline's (prediction log, callbacks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from stream.alerts import AlertConfig, AlertMachine
from stream.config import PipelineConfig, bundled_model
from stream.lanes import open_engine
from stream.loops import Loops, Stream
from stream.result import Result
from stream.routing import InOrder, ModalityRouter
from stream.sinks import Callback, LatencyStats, Overlay, PredictionLog, RawVideo, Recorder, Sink
from stream.sinks.overlay import PictureOutput
from stream.smoothing import SmoothingConfig
from stream.sources import LatestFrameReader, Source, open_source
from stream.sources.prefetch import Prefetcher
from stream.summary import session_summary, stream_errors, stream_warnings

__all__ = ["Pipeline", "PipelineConfig", "Result"]


def _sibling(path: str, sid: str, first: bool) -> str:
    # The first stream writes to the path as given; others get their id inserted before the suffix.
    p = Path(path)
    return str(p) if first else str(p.with_name(f"{p.stem}.{sid}{p.suffix}"))


class Pipeline:
    def __init__(
        self,
        cfg: PipelineConfig | None = None,
        engine=None,
        on_result: Callable[[Result], None] | None = None,
        on_display: PictureOutput | None = None,
        teacher=None,
    ):
        """``engine``: the student's engine (default: built as ``cfg`` says); ``teacher``: an NBI
        model's engine (default: ``cfg.nbi_teacher``, i.e. the one exported beside the student)."""
        self.cfg = cfg = cfg or PipelineConfig()
        self.engine = engine if engine is not None else open_engine(cfg, cfg.model or bundled_model())
        self.class_names = list(self.engine.class_names)
        cfg.alerts = replace(cfg.alerts, class_names=tuple(self.class_names))
        self.router = ModalityRouter(cfg, self.engine, teacher)
        self.pre = self.router.student.pre
        self.stats = LatencyStats()
        # Every stream's results reach these, in this order, after the stream's own video sinks.
        self.sinks: list[Sink] = [PredictionLog(cfg.predictions, self.class_names)] if cfg.predictions else []
        # Annotated pictures of every stream (add them before add_stream): a display, a recorder.
        self.displays: list[PictureOutput] = [on_display] if on_display else []
        if on_result:
            self.add_sink(Callback(on_result))
        self.streams: dict[str, Stream] = {}
        self.loops = Loops(self.router, self.sinks, self.stats, cfg.max_frames)
        self._started = self._stopped = False
        self.t_start = self.t_end = None

    # -- building ------------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        """One more output of every stream's results (``Callback(fn)`` makes a function one)."""
        self.sinks.append(sink)

    def add_stream(self, source: str | Source, stream_id: str | None = None, **source_kw) -> str:
        """Open ``source`` (spec or Source) as one more stream; raises SourceError if it cannot be opened."""
        sid = stream_id or str(len(self.streams))
        if sid in self.streams:
            raise ValueError(f"stream id {sid!r} already in use")
        if not isinstance(source, Source):
            source = open_source(source, live=self.cfg.live, **source_kw)
        st = self.streams[sid] = self.compose(sid, source)
        if self._started:
            self.loops.launch(st)
        return sid

    def compose(self, sid: str, source: Source) -> Stream:
        """One stream's flow. The router's lanes (preprocessing, batcher and engine per model) and
        ``self.sinks`` serve every stream; the rest is the stream's own."""
        cfg, live, first = self.cfg, bool(source.info.live), not self.streams
        # source: a live feed is read newest-frame-only by its own thread, which also hands every
        # frame to the pass-through path; a replay is decoded a few frames ahead
        if live and not isinstance(source, LatestFrameReader):
            source = LatestFrameReader(source)
        elif not live and cfg.prefetch > 0:
            source = Prefetcher(source, cfg.prefetch)
        # -> route -> preprocess -> batcher -> engine: self.router (stream.routing, stream.lanes)
        # -> smoother -> alerts
        smoother, alerts = cfg.smoothing.build(), AlertMachine(cfg.alerts)
        # -> sinks: the stream's videos (the overlay sets result.annotated), then self.sinks
        fps = source.info.fps or 30.0

        def recorder(path: str) -> Recorder:  # a live recorder drops frames rather than block
            return Recorder(_sibling(path, sid, first), fps=fps, lossless=not live)

        videos = []
        if cfg.record_raw:
            videos.append(RawVideo(recorder(cfg.record_raw), live))
        if cfg.annotate and (cfg.record or self.displays):
            videos.append(Overlay(self.class_names, recorder(cfg.record) if cfg.record else None, self.displays, live))
        st = Stream(sid, source, live, cfg.inflight or (2 if live else 2 * cfg.batch), smoother, alerts, videos)
        st.order = InOrder(lambda fut: self.loops.to_post(st, fut))
        if live and videos:
            source.taps.append(lambda frame: self.loops.passthrough(st, frame))
        return st

    # -- control -------------------------------------------------------------------------
    def start(self) -> Pipeline:
        if self._started:
            return self
        if not self.streams:
            raise ValueError("add at least one stream before start()")
        self._started, self.t_start = True, time.monotonic()
        queue_size = max(8, sum(s.inflight for s in self.streams.values()) + 8)
        self.router.start(self.cfg.batch, self.cfg.max_wait_ms, queue_size)
        self.loops.start()
        for st in self.streams.values():
            self.loops.launch(st)
        return self

    def pause(self) -> None:
        """Replay waits; a live feed keeps flowing through the pass-through path but is not analysed."""
        self.loops.running.clear()

    def resume(self) -> None:
        self.loops.running.set()

    @property
    def paused(self) -> bool:
        return not self.loops.running.is_set()

    def configure(self, smoothing: SmoothingConfig | None = None, alerts: AlertConfig | None = None) -> None:
        """Change smoothing and alerts while running. A smoother of the same mode and the alert
        machines keep their state (a held call stays held); another mode starts afresh."""
        if smoothing is not None:
            for st in self.streams.values():
                if type(st.smoother).mode == smoothing.mode:
                    st.smoother.set_params(**{**type(st.smoother).params, **smoothing.params})
                else:
                    st.smoother = smoothing.build()
            self.cfg.smoothing = smoothing
        if alerts is not None:
            alerts = replace(alerts, class_names=tuple(self.class_names))
            for st in self.streams.values():
                st.alerts.configure(**alerts.to_dict())
            self.cfg.alerts = alerts

    def done(self) -> bool:
        return self.loops.idle(self.streams.values())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source has ended and every frame is through; False on timeout."""
        return self.loops.wait(self.streams.values(), timeout)

    def stop(self) -> dict:
        """Stop sources, finish frames in flight, close sinks; returns the summary."""
        if self._stopped:
            return self.summary()
        self._stopped = True
        self.loops.stop.set()
        self.loops.running.set()
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
        self.loops.finish()
        for sink in [v for st in self.streams.values() for v in st.videos] + self.sinks:
            sink.close()
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

    # -- reporting -----------------------------------------------------------------------
    def summary(self) -> dict:
        """Engine, wall time, frames/s, per-stream counts and errors, per-stage latency, batches."""
        end = self.t_end or time.monotonic()
        wall = (end - self.t_start) if self.t_start else 0.0
        batches = self.router.batch_stats()
        engine = {**self.engine.describe(), "views": list(self.router.student.views)}  # what it reads of a frame
        return session_summary(engine, self.streams, self.stats, wall, batches, self.paused)

    def errors(self) -> list[str]:
        """One line per stream that ended on an error it could not recover from."""
        return stream_errors(self.streams)

    def warnings(self) -> list[str]:
        """One line per stream that went on past damaged input or outages."""
        return stream_warnings(self.streams)
