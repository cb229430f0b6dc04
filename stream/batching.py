"""Dynamic batching: several streams share one engine.

Producers (one thread per stream) ``submit`` preprocessed frames and get a Future each; one
worker thread collects items until ``max_batch`` are queued or the oldest has waited
``max_wait_ms``, runs the engine once and routes each row of logits back to its Future (and
its stream's callback). Per-stream order is kept because the queue is FIFO and batches run one
at a time. The queue is bounded: a full queue blocks the producer or, with ``block=False``,
raises :class:`BatcherFull` so a live stream can drop the frame and count it.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class BatcherFull(RuntimeError):
    """The batcher's queue is full; drop the frame or slow the producer."""


class BatcherClosed(RuntimeError):
    """submit() after close()."""


@dataclass
class BatchResult:
    logits: np.ndarray         # (K,) for this item
    stream_id: Any
    meta: Any                  # whatever the producer attached (frame index, pts, ...)
    batch_size: int            # how many items shared the engine call
    wait_ms: float             # submit -> engine call start
    infer_ms: float            # duration of the engine call


@dataclass
class _Item:
    x: Any
    stream_id: Any
    meta: Any
    future: Future
    t_submit: float = field(default_factory=time.perf_counter)


_STOP = object()


class DynamicBatcher:
    def __init__(self, infer: Callable[[Any], np.ndarray], max_batch: int = 8, max_wait_ms: float = 5.0,
                 max_queue: int = 64, name: str = "batcher"):
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("need max_batch >= 1, max_queue >= 1 and max_wait_ms >= 0")
        self.infer = infer
        self.max_batch = int(max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._callbacks: dict[Any, Callable[[BatchResult], None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.batch_sizes: Counter[int] = Counter()
        self.items_done = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------------------
    def on_result(self, stream_id: Any, callback: Callable[[BatchResult], None] | None) -> None:
        """Route every result of ``stream_id`` to ``callback`` (run on the worker thread)."""
        with self._lock:
            if callback is None:
                self._callbacks.pop(stream_id, None)
            else:
                self._callbacks[stream_id] = callback

    def submit(self, x: Any, stream_id: Any = None, meta: Any = None, block: bool = True,
               timeout: float | None = None) -> Future:
        """Queue one preprocessed item (3,H,W); the Future resolves to a :class:`BatchResult`."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        item = _Item(x, stream_id, meta, Future())
        try:
            self._q.put(item, block=block, timeout=timeout)
        except queue.Full:
            raise BatcherFull(f"batcher queue full ({self._q.maxsize} items)") from None
        return item.future

    def qsize(self) -> int:
        return self._q.qsize()

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish what is queued, then stop the worker."""
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout)
        while True:  # items that raced with close() get an answer instead of hanging
            try:
                it = self._q.get_nowait()
            except queue.Empty:
                break
            if it is not _STOP:
                it.future.set_exception(BatcherClosed("the batcher closed before this item ran"))

    def __enter__(self) -> DynamicBatcher:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        n = sum(self.batch_sizes.values())
        return {"batches": n, "items": self.items_done, "errors": self.errors,
                "mean_batch": self.items_done / n if n else 0.0,
                "batch_sizes": dict(sorted(self.batch_sizes.items()))}

    # -- worker ----------------------------------------------------------------------------
    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        items, stop = [first], False
        deadline = first.t_submit + self.max_wait  # bound the oldest item's wait, not the newest's
        while len(items) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                nxt = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                stop = True
                break
            items.append(nxt)
        return items, stop

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            items, stop = self._collect(first)
            self._run_batch(items)
            if stop:
                return

    def _run_batch(self, items: list[_Item]) -> None:
        t0 = time.perf_counter()
        try:
            xs = [it.x for it in items]
            if isinstance(xs[0], np.ndarray):
                batch = np.stack(xs)
            else:  # torch tensors (GPU preprocessing) stay on their device
                import torch
                batch = torch.stack(xs)
            logits = np.asarray(self.infer(batch))
            if logits.shape[0] != len(items):
                raise RuntimeError(f"engine returned {logits.shape[0]} rows for {len(items)} items")
        except Exception as e:  # noqa: BLE001 - every waiting producer learns about the failure
            self.errors += 1
            for it in items:
                it.future.set_exception(e)
            return
        t1 = time.perf_counter()
        self.batch_sizes[len(items)] += 1
        self.items_done += len(items)
        for row, it in zip(logits, items):
            res = BatchResult(row, it.stream_id, it.meta, len(items), (t0 - it.t_submit) * 1e3, (t1 - t0) * 1e3)
            cb = self._callbacks.get(it.stream_id)
            if cb is not None:
                try:
                    cb(res)
                except Exception as e:  # noqa: BLE001 - a broken sink must not stall the other streams
                    it.future.set_exception(e)
                    continue
            it.future.set_result(res)
