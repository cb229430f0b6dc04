"""Dynamic batcher: several producer threads, one engine, results routed back per stream."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stream.batching import BatcherClosed, BatcherFull, DynamicBatcher


class RecordingEngine:
    """Logits that identify the item (its first pixel) so misrouting is detectable."""

    def __init__(self, delay: float = 0.002):
        self.delay, self.sizes, self.gate = delay, [], threading.Event()
        self.gate.set()

    def __call__(self, batch):
        self.gate.wait()
        self.sizes.append(len(batch))
        time.sleep(self.delay)
        v = batch[:, 0, 0, 0]
        return np.stack([v, -v], 1)


def item(value):
    return np.full((3, 4, 4), value, np.float32)


def test_many_producers_results_routed_and_ordered():
    eng = RecordingEngine()
    seen: dict[str, list] = {f"s{k}": [] for k in range(4)}
    with DynamicBatcher(eng, max_batch=6, max_wait_ms=3, max_queue=16) as b:
        for sid, got in seen.items():
            b.on_result(sid, lambda r, got=got: got.append(r.meta))
        futures: dict[str, list] = {sid: [] for sid in seen}

        def produce(k):
            sid = f"s{k}"
            for i in range(60):
                futures[sid].append((i, b.submit(item(k * 1000 + i), sid, meta=i)))
                if i % 7 == 0:
                    time.sleep(0.001)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, (sid, fl) in enumerate(futures.items()):
            for i, fut in fl:
                r = fut.result(timeout=30)
                assert r.stream_id == sid and r.meta == i
                assert r.logits.tolist() == [k * 1000 + i, -(k * 1000 + i)]
                assert 1 <= r.batch_size <= 6 and r.wait_ms >= 0 and r.infer_ms > 0
    for got in seen.values():  # per-stream callbacks saw every item, in submit order
        assert got == list(range(60))
    assert max(eng.sizes) <= 6 and sum(eng.sizes) == 240
    assert max(eng.sizes) > 1, "concurrent streams should share engine calls"
    st = b.stats()
    assert st["items"] == 240 and st["errors"] == 0 and st["mean_batch"] > 1


def test_full_batches_form_while_engine_busy():
    eng = RecordingEngine(delay=0)
    eng.gate.clear()
    b = DynamicBatcher(eng, max_batch=4, max_wait_ms=1000, max_queue=32)
    futs = [b.submit(item(i)) for i in range(4)]  # a full batch goes at once, then blocks in the engine
    time.sleep(0.05)
    futs += [b.submit(item(i)) for i in range(4, 12)]
    eng.gate.set()
    t0 = time.perf_counter()
    assert [f.result(timeout=10).logits[0] for f in futs] == list(range(12))
    # full batches never wait for max_wait (1 s here)
    assert time.perf_counter() - t0 < 0.9
    assert eng.sizes == [4, 4, 4]
    b.close()


def test_partial_batch_waits_for_the_oldest_items_deadline():
    eng = RecordingEngine(delay=0)
    with DynamicBatcher(eng, max_batch=8, max_wait_ms=100) as b:
        first = b.submit(item(0))
        time.sleep(0.06)
        second = b.submit(item(1))
        r1, r2 = first.result(timeout=10), second.result(timeout=10)
    assert eng.sizes == [2]
    assert r1.wait_ms >= 90 and r2.wait_ms < r1.wait_ms  # the deadline is the oldest item's


def test_lone_item_waits_at_most_max_wait():
    eng = RecordingEngine(delay=0)
    with DynamicBatcher(eng, max_batch=8, max_wait_ms=40) as b:
        r = b.submit(item(5)).result(timeout=10)
    # It waited for company (a lower bound: a loaded machine only makes waits longer), then went
    # alone: the deadline, not a second item, released it. Its result arrived at all (the
    # result(timeout=10) above is a hang guard): no upper bound on wall time, which a machine
    # shared with other jobs cannot keep.
    assert r.batch_size == 1 and eng.sizes == [1]
    assert r.wait_ms >= 40 * 0.9


def test_bounded_queue_rejects_without_blocking():
    eng = RecordingEngine(delay=0)
    eng.gate.clear()
    b = DynamicBatcher(eng, max_batch=1, max_wait_ms=0, max_queue=2)
    b.submit(item(0))
    time.sleep(0.05)  # taken by the worker, now blocked in the engine
    b.submit(item(1), block=False)
    b.submit(item(2), block=False)
    with pytest.raises(BatcherFull, match="full"):
        b.submit(item(3), block=False)
    with pytest.raises(BatcherFull):
        b.submit(item(3), timeout=0.01)
    eng.gate.set()
    b.close()
    assert b.stats()["items"] == 3


def test_engine_error_reaches_every_waiter_and_batcher_survives():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("engine exploded")
        return np.zeros((len(batch), 2), np.float32)

    with DynamicBatcher(flaky, max_batch=4, max_wait_ms=50) as b:
        bad = [b.submit(item(i)) for i in range(3)]
        for f in bad:
            with pytest.raises(RuntimeError, match="exploded"):
                f.result(timeout=10)
        assert b.submit(item(9)).result(timeout=10).logits.shape == (2,)
        assert b.stats()["errors"] == 1


def test_close_drains_then_refuses():
    eng = RecordingEngine(delay=0.001)
    b = DynamicBatcher(eng, max_batch=3, max_wait_ms=1)
    futs = [b.submit(item(i)) for i in range(10)]
    b.close()
    assert all(f.done() and f.exception() is None for f in futs)
    with pytest.raises(BatcherClosed):
        b.submit(item(0))


def test_with_a_real_engine_matches_unbatched():
    import torch

    from pagkd_core.models import build_model
    from stream.engines import ModelSource, build_engine
    torch.manual_seed(0)
    model = build_model("test_resnet", 2, embed_dim=8)
    src = ModelSource.from_module(model, {"class_names": ["a", "b"], "input_size": [32, 32],
                                          "mean": [0.5] * 3, "std": [0.25] * 3})
    eng = build_engine("torch", src, device="cpu", max_batch=4)
    xs = np.random.default_rng(0).standard_normal((12, 3, 32, 32)).astype(np.float32)
    want = eng.infer(xs)
    with DynamicBatcher(eng.infer, max_batch=4, max_wait_ms=5) as b:
        out = {}

        def produce(sid, idx):
            for i in idx:
                out[i] = b.submit(xs[i], sid, meta=i)

        ts = [threading.Thread(target=produce, args=(s, range(s, 12, 3))) for s in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        got = np.stack([out[i].result(timeout=30).logits for i in range(12)])
    assert np.allclose(got, want, atol=1e-5)
