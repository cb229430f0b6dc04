"""Reading live input in its own thread, keeping only the newest frame."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from stream.frame import Frame
from stream.sources.base import Source, SourceError


class LatestFrameReader(Source):
    """Wrap a source whose frames arrive on their own clock.

    A thread pulls frames as fast as the input delivers them and keeps only the newest:
    a consumer that falls behind skips frames (counted in ``counters['dropped']``) instead
    of building up lag. When the input stops or fails, the reader reopens it through
    ``reopen`` with exponential back-off (``backoff`` .. ``max_backoff`` seconds) and the
    session goes on; indices stay monotonic and timestamps continue where they stopped.
    ``reopen=None`` means the input is finite (a paced file): its end ends the iteration.
    ``give_up_after``: seconds without a frame after which iteration ends with an error.
    """

    def __init__(
        self,
        first: Source,
        reopen: Callable[[], Source] | None = None,
        *,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        give_up_after: float | None = None,
    ):
        first.info.live = True
        super().__init__(first.info)
        self._src, self._reopen = first, reopen
        self.backoff, self.max_backoff, self.give_up_after = backoff, max_backoff, give_up_after
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._done = False
        self._error: str | None = None
        self._stop = threading.Event()
        self._last_frame_time = time.monotonic()
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
        index, pts_offset, last_pts, delay = 0, 0.0, None, self.backoff
        src = self._src
        while not self._stop.is_set():
            try:
                first_of_session = True
                for f in src:
                    if self._stop.is_set():
                        break
                    if first_of_session and last_pts is not None and f.pts is not None:
                        # A reconnected stream restarts its clock: continue ours instead.
                        pts_offset = last_pts + self._frame_dur() - f.pts
                    first_of_session = False
                    f.index = index
                    if f.pts is not None:
                        f.pts += pts_offset
                        last_pts = f.pts
                    index += 1
                    delay = self.backoff
                    self._publish(f)
            except Exception as e:  # noqa: BLE001 - a live session survives whatever its input raises
                # (SourceError, PyAV/FFmpeg errors, OS errors of a device or socket): reconnect.
                self.note(f"input failed after frame {index}: {' '.join(str(e).split())}")
            finally:
                self._absorb(src)
                src.close()
            if self._reopen is None or self._stop.is_set():
                break
            src = self._reconnect(delay)
            delay = min(delay * 2, self.max_backoff)
            if src is None:
                break

    def _reconnect(self, delay: float) -> Source | None:
        while not self._stop.is_set():
            if self.give_up_after and time.monotonic() - self._last_frame_time > self.give_up_after:
                self._error = (
                    f"{self.info.name!r}: no frames for {self.give_up_after:g} s, "
                    f"gave up after {self.counters['reconnects']} reconnect attempts"
                )
                return None
            self._stop.wait(delay)
            self.counters["reconnects"] += 1
            try:
                return self._reopen()
            except SourceError as e:  # opening wraps every FFmpeg/OS failure in a SourceError
                self.note(f"reconnect failed: {' '.join(str(e).split())}")
                delay = min(delay * 2, self.max_backoff)
        return None

    def _absorb(self, src: Source) -> None:
        # Errors the inner source counted belong to the session's totals.
        self.counters["decode_errors"] += src.counters.get("decode_errors", 0)
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
            self.counters["frames"] += 1
            yield f

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        else:
            self._src.close()
        with self._cond:
            self._done = True
            self._cond.notify_all()
