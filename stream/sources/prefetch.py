"""Decode ahead of the consumer for replay: every frame kept, in a small bounded queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from stream.frame import Frame
from stream.sources.base import Source

_END = object()


class Prefetcher(Source):
    """Run a finite source in its own thread, ``depth`` frames ahead.

    Replay then decodes the next frames while the current one is preprocessed and analysed,
    instead of one after the other. Nothing is dropped: a full queue makes the decoder wait.
    Counters and problems are the inner source's; its errors are raised to the consumer.
    """

    def __init__(self, inner: Source, depth: int = 4):
        super().__init__(inner.info)
        self.inner = inner
        self.counters = inner.counters
        self.problems = inner.problems
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"prefetch-{inner.info.name}", daemon=True)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _run(self) -> None:
        try:
            for f in self.inner:
                if not self._put(f):
                    return
            self._put(_END)
        except Exception as e:  # noqa: BLE001 - not swallowed: the consumer re-raises it in its thread
            self._put(e)

    def frames(self) -> Iterator[Frame]:
        if self._thread.ident is None:
            self._thread.start()
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        self.inner.close()  # only now: never close a decoder under its thread's feet
