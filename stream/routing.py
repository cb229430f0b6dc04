"""Which model, if any, reads a frame: content area -> modality -> lane.

    router = ModalityRouter(cfg, student_engine)        # finds the NBI teacher beside the student
    lane, x = router.prepare(frame)   # lane None: an NBI frame with no teacher ("NBI: not analysed")

WLI frames go to the student. NBI frames (stream.modality, per stream, with hysteresis) go to
the NBI teacher when one is exported beside the student (stream.lanes), else to no model at
all: the WLI student never sees an NBI frame, whose colours it was never trained on. Each
frame's content area is found once, here, and used for the modality and the model input. The
frame's ``meta["route"]`` records the modality call and the lane, for the post stage, and
``InOrder`` hands each stream's results to it in frame order whichever lane read them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from stream.batching import BatchResult
from stream.config import PipelineConfig
from stream.frame import Frame
from stream.lanes import STUDENT, TEACHER, Lane, student_lane, teacher_lane
from stream.modality import NBI, WLI, ModalityCall, ModalityDetector
from stream.preprocess import per_stream


@dataclass(frozen=True)
class Route:
    modality: str  # how the frame is handled (stream.modality.ModalityCall.modality)
    lane: str | None  # stream.lanes.STUDENT, TEACHER, or None: not analysed
    call: ModalityCall | None = None  # None when modality detection is off


class ModalityRouter:
    def __init__(self, cfg: PipelineConfig, engine, teacher=None):
        self.cfg = cfg
        self.student: Lane = student_lane(cfg, engine)
        # The teacher is loaded only where NBI frames are told apart at all.
        self.teacher: Lane | None = teacher_lane(cfg, self.student, teacher) if cfg.detect_modality else None
        self.detectors: dict[str, ModalityDetector] = {}

    @property
    def lanes(self) -> list[Lane]:
        return [lane for lane in (self.student, self.teacher) if lane is not None]

    def lane(self, name: str) -> Lane:
        return self.teacher if name == TEACHER and self.teacher is not None else self.student

    def route(self, frame: Frame, box: tuple[int, int, int, int]) -> Route:
        if not self.cfg.detect_modality:
            return Route(WLI, STUDENT)
        call = per_stream(self.detectors, frame.stream_id, ModalityDetector).update(frame, box)
        if call.modality == WLI:
            return Route(WLI, STUDENT, call)
        return Route(NBI, TEACHER if self.teacher is not None else None, call)

    def prepare(self, frame: Frame) -> tuple[Lane | None, object]:
        """The lane that reads ``frame`` and its model input (numpy on CPU, a tensor on a GPU:
        stream.preprocess); (None, None) when no model reads it."""
        box = self.student.pre.area(frame).box
        route = self.route(frame, box)
        frame.meta["route"] = route
        if route.lane is None:
            return None, None
        lane = self.lane(route.lane)
        return lane, lane.input(frame, box)

    def submit(self, lane: Lane | None, x, stream_id: str, frame: Frame) -> Future:
        """The frame's Future: its lane's batcher result, or (no lane) a result without logits
        at once, which the post stage turns into "NBI: not analysed"."""
        if lane is not None:
            return lane.batcher.submit(x, stream_id, meta=frame)
        fut: Future = Future()
        fut.set_result(BatchResult(None, stream_id, frame, 0, 0.0, 0.0))
        return fut

    def start(self, max_batch: int, max_wait_ms: float, max_queue: int) -> None:
        for lane in self.lanes:
            lane.start(max_batch, max_wait_ms, max_queue)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    def batch_stats(self) -> dict:
        """The student's batcher statistics, with the teacher's under ``nbi_teacher`` when loaded."""
        stats = self.student.batcher.stats() if self.student.batcher is not None else {}
        if self.teacher is not None and self.teacher.batcher is not None:
            stats = {**stats, TEACHER: self.teacher.batcher.stats()}
        return stats


class InOrder:
    """Hands one stream's finished frames on in the order they were submitted.

    One batcher keeps a stream's order by itself, but frames of one stream can now take
    different lanes (student, NBI teacher, none): at a switch an NBI frame would otherwise
    overtake the WLI frames still in the student's batch, and the smoother, the alert machine
    and the log would see the stream jump back and forth. Each frame is released once it is
    done *and* its predecessor has been released. ``add`` is called from the stream's ingest
    thread only; releases run on whichever thread finished the frame."""

    def __init__(self, release: Callable[[Future], None]):
        self._release = release
        self._pending: deque[Future] = deque()  # added and not yet released, oldest first
        self._lock = threading.Lock()  # one release at a time, in order, from any thread

    def add(self, fut: Future) -> None:
        with self._lock:
            self._pending.append(fut)
        # A done callback runs at once when the future is already done (a frame no model reads).
        # Only a bound method is left on the future: closures that held the future itself made
        # a reference cycle per frame (future -> callback -> closure -> future), which kept every
        # frame's picture alive until a full garbage collection - hundreds of MB on a live
        # 1080p feed being recorded (benchmarks.soak).
        fut.add_done_callback(self._drain)

    def _drain(self, _done: Future) -> None:
        with self._lock:
            while self._pending and self._pending[0].done():
                self._release(self._pending.popleft())
