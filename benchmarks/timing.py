"""The benchmarks' one set of timing helpers: warm-up, repeat, summarise as percentiles; wall
and CPU time of one call.

On CUDA every timed call is bracketed by a device synchronize, so the wall clock measures
the work and not just the kernel launches (engines return host numpy, which synchronises
anyway; the explicit call keeps custom callables honest).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def cycle(items):
    """An endless round-robin over ``items``: feeds timed loops different inputs each call."""
    import itertools

    return itertools.cycle(items).__next__


def summary_ms(seconds) -> dict:
    """n, mean and p50/p90/p99/max of a list of durations, in milliseconds."""
    s = np.asarray(list(seconds), dtype=np.float64) * 1e3
    if s.size == 0:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    p50, p90, p99 = np.percentile(s, [50, 90, 99])
    return {"n": int(s.size), "mean_ms": round(float(s.mean()), 3), "p50_ms": round(float(p50), 3),
            "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3), "max_ms": round(float(s.max()), 3)}


def device_sync(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def repeat(fn: Callable[[], object], *, seconds: float = 1.0, warmup: int = 3, min_iters: int = 5,
           max_iters: int = 100_000, device: str = "cpu") -> list[float]:
    """Call ``fn`` ``warmup`` times, then time each call until ``seconds`` have passed
    (at least ``min_iters`` calls). Returns per-call seconds."""
    sync = device_sync(device)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iters or (time.perf_counter() < deadline and len(times) < max_iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def wall_and_cpu(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``fn()``'s result, its wall-clock seconds and this process's CPU seconds (all threads).
    On a machine shared with other work the wall clock includes waiting for a core; CPU seconds
    per item are what a dedicated core costs, the steadier figure there."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None
