"""Reading live input in its own thread, keeping only the newest frame."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from stream.frame import Frame
from stream.sources.base import Source, SourceError, SourceInfo


class LatestFrameReader(Source):
    """Wrap a source whose frames arrive on their own clock.

    A thread pulls frames as fast as the input delivers them and keeps only the newest:
    a consumer that falls behind skips frames (counted in ``counters['dropped']``) instead
    of building up lag. When the input stops or fails, the reader reopens it through
    ``reopen`` with exponential back-off (``backoff`` .. ``max_backoff`` seconds) and the
    session goes on. ``first=None`` (with ``info``): nothing could be opened yet (a sender that
    has not started); the reader starts by reconnecting.
    ``reopen=None`` means the input is finite (a paced file): its end ends the iteration.
    ``give_up_after``: seconds without a frame after which iteration ends with an error.

    Indices stay monotonic. Timestamps continue across an outage by the real time it lasted
    (a reconnected sender restarts its clock, a restarted one may jump back), so ``pts`` keeps
    matching procedure time; the first frame the consumer takes after an outage carries
    ``meta['gap']`` (stream.sinks.predictions writes it as a gap record).
    """

    def __init__(
        self,
        first: Source | None,
        reopen: Callable[[], Source] | None = None,
        *,
        info: SourceInfo | None = None,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        give_up_after: float | None = None,
        gap_s: float = 1.0,
    ):
        info = first.info if first is not None else info
        info.live = True
        super().__init__(info)
        self._src, self._reopen = first, reopen
        self.backoff, self.max_backoff, self.give_up_after = backoff, max_backoff, give_up_after
        self.gap_s = gap_s  # a forward jump of the sender's clock this long is an outage (a stall)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._done = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._last_frame_time = time.monotonic()
        # The clock across sessions: pts offset, last pts and arrival, the outage not yet reported.
        self._offset, self._last_pts, self._last_content, self._anchor = 0.0, None, None, None
        self._pending_gap: dict | None = None
        self._reconnects_since_frame = 0
        # Called in the reader thread with every frame, also those the consumer never takes:
        # the pass-through video path (display, raw recording) hangs here.
        self.taps: list[Callable[[Frame], None]] = []
        # Started by the first read, so taps attached before that see every frame.
        self._thread = threading.Thread(target=self._run, name=f"reader-{self.info.name}", daemon=True)

    def start(self) -> None:
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()

    # -- producer ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._read()
        except Exception as e:  # noqa: BLE001 - a failure outside the input (a bug): end the iteration
            # with a one-line error instead of leaving the consumer waiting for frames forever.
            self._error = f"{self.info.name!r}: reader stopped: {type(e).__name__}: {e}"
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _read(self) -> None:
        index, delay, src, resumed = 0, self.backoff, self._src, False
        while not self._stop.is_set():
            if src is not None:
                got = 0
                try:
                    for f in src:
                        if self._stop.is_set():
                            break
                        self._stamp(f, index, resumed and got == 0)
                        index, got, delay = index + 1, got + 1, self.backoff
                        self._publish(f)
                except Exception as e:  # noqa: BLE001 - a live session survives whatever its input raises
                    # (SourceError, PyAV/FFmpeg errors, OS errors of a device or socket): reconnect.
                    line = f"input failed after frame {index}: {' '.join(str(e).split())}"
                    if self._reopen is None:  # nothing to reconnect to: the session ends on this error
                        self._error = f"{self.info.name!r}: {line}"
                    self.note(line)
                finally:
                    self._absorb(src)
                    src.close()
                if got == 0 and not self._stop.is_set():
                    # Connected, yet not one picture: without this the session would sit at 0 fps
                    # reconnecting in silence.
                    self.note(
                        "connected but no picture could be decoded (no keyframe received?); "
                        "check the sender's codec and keyframe interval"
                    )
            if self._reopen is None or self._stop.is_set():
                break
            src = self._reconnect(delay)
            delay = min(delay * 2, self.max_backoff)
            if src is None:
                break
            resumed = True

    def _stamp(self, f: Frame, index: int, new_session: bool) -> None:
        """Number the frame, put its pts on the session's clock and note an outage before it.

        A frame's content time is when it would have arrived had nothing held it up: the
        session's smallest arrival-minus-pts plus its pts. Frames a decoder flushes when its input
        times out arrive late but are not late content, so an outage is measured from the last
        content time to the first arrival after it. A sender that restarted without a time-out
        (its clock jumps back) is an outage too; a forward pts jump beyond ``gap_s`` is a stall
        (content missing), whose length the pts jump already is."""
        f.index = index
        dur = self._frame_dur()
        raw = None if f.pts is None else f.pts + self._offset
        last, since = self._last_pts, self._last_content
        jumped_back = not new_session and raw is not None and last is not None and raw <= last
        restarted = new_session or jumped_back
        if restarted:
            self._anchor = None  # a new sender clock
            if last is not None and f.pts is not None and since is not None:
                self._offset = last + max(dur, f.arrival - since) - f.pts
                raw = f.pts + self._offset
        stalled = not restarted and raw is not None and last is not None and raw - last > max(self.gap_s, 5 * dur)
        if raw is not None:
            f.pts = self._last_pts = raw
            lead = f.arrival - raw
            self._anchor = lead if self._anchor is None else min(self._anchor, lead)
            content = self._anchor + raw
        else:
            content = f.arrival
        if (restarted or stalled) and since is not None:
            until = content if stalled else f.arrival
            gap = self._pending_gap or {"after_frame": index - 1, "since": since, "reconnects": 0}
            gap.update(
                next_frame=index,
                until=until,
                seconds=round(until - gap["since"], 3),
                reason="reconnect" if new_session or gap.get("reason") == "reconnect" else
                ("restart" if jumped_back else "stall"),
                reconnects=gap["reconnects"] + self._reconnects_since_frame,
            )
            with self._cond:
                self._pending_gap = gap
        self._reconnects_since_frame = 0
        self._last_content = content

    def _reconnect(self, delay: float) -> Source | None:
        while not self._stop.is_set():
            if self.give_up_after and time.monotonic() - self._last_frame_time > self.give_up_after:
                self._error = (
                    f"{self.info.name!r}: no frames for {self.give_up_after:g} s, "
                    f"gave up after {self.counters['reconnects']} reconnect attempts"
                )
                return None
            self._stop.wait(delay)
            if self._stop.is_set():
                return None
            self.counters["reconnects"] += 1
            self._reconnects_since_frame += 1
            try:
                src = self._reopen()
            except SourceError as e:  # opening wraps every FFmpeg/OS failure in a SourceError
                self.note(f"reconnect failed: {' '.join(str(e).split())}")
                delay = min(delay * 2, self.max_backoff)
                continue
            self._adopt(src.info)
            return src
        return None

    def _adopt(self, info: SourceInfo) -> None:
        # A session that started waiting for its sender learns the picture's format here.
        for k in ("width", "height", "fps", "codec", "pix_fmt"):
            if getattr(self.info, k) is None:
                setattr(self.info, k, getattr(info, k))

    def _absorb(self, src: Source) -> None:
        # Errors the inner source counted belong to the session's totals.
        for k in ("decode_errors", "discontinuities"):
            self.counters[k] += src.counters.get(k, 0)
        for p in src.problems:
            self.note(p)

    def _frame_dur(self) -> float:
        return 1.0 / self.info.fps if self.info.fps else 0.0

    def _publish(self, f: Frame) -> None:
        for tap in self.taps:
            try:
                tap(f)
            except Exception as e:  # noqa: BLE001 - taps are the display's and recorders' callbacks:
                # whatever a broken one raises must not stop the input.
                self.note(f"pass-through output failed: {e}")
        with self._cond:
            if self._latest is not None:
                self.counters["dropped"] += 1
            self._latest = f
            self._last_frame_time = time.monotonic()
            self._cond.notify_all()

    # -- consumer ---------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        self.start()
        while True:
            with self._cond:
                while self._latest is None and not self._done:
                    self._cond.wait(0.1)
                f, self._latest = self._latest, None
            if f is None:  # the producer finished and nothing is pending
                if self._error:
                    raise SourceError(self._error)
                return
            with self._cond:  # the outage before this frame, if any, travels with it to the log
                gap, self._pending_gap = self._pending_gap, None
            if gap is not None:
                f.meta["gap"] = gap
                self.counters["gaps"] += 1
            self.counters["frames"] += 1
            yield f

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        elif self._src is not None:
            self._src.close()
        with self._cond:
            self._done = True
            self._cond.notify_all()
