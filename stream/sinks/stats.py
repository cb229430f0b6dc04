"""Per-stage latency statistics (p50/p90/p99/max) and frame counters for a run."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class LatencyStats:
    """Thread-safe timing samples per stage name, in milliseconds.

    Percentiles come from the most recent ``window`` samples of each stage (a long soak run
    reports its current behaviour, not an average over hours); ``n`` and ``max`` cover the
    whole run. Counters (analysed frames, failures) live alongside; per-stream drops are the
    sources' own counters (``Pipeline.summary()`` reports both).
    """

    def __init__(self, window: int = 100_000):
        self._lock = threading.Lock()
        self._samples: dict[str, deque] = {}
        self._n: Counter = Counter()
        self._max: dict[str, float] = {}
        self.counters: Counter = Counter()
        self.window = window

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            q = self._samples.get(stage)
            if q is None:
                q = self._samples[stage] = deque(maxlen=self.window)
            q.append(ms)
            self._n[stage] += 1
            if ms > self._max.get(stage, -1.0):
                self._max[stage] = ms

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def samples(self, stage: str) -> np.ndarray:
        with self._lock:
            return np.array(self._samples.get(stage, ()), dtype=np.float64)

    def summary(self) -> dict:
        """{"stages": {stage: {n, mean, p50, p90, p99, max}}, "counters": {...}} in ms."""
        with self._lock:
            stages = {
                k: (np.array(q, dtype=np.float64), self._n[k], self._max[k]) for k, q in self._samples.items()
            }
            counters = dict(self.counters)
        out = {}
        for name, (x, n, mx) in stages.items():
            if len(x) == 0:
                continue
            p50, p90, p99 = np.percentile(x, [50, 90, 99])
            out[name] = {
                "n": int(n),
                "mean": round(float(x.mean()), 3),
                "p50": round(float(p50), 3),
                "p90": round(float(p90), 3),
                "p99": round(float(p99), 3),
                "max": round(float(mx), 3),
            }
        return {"stages": out, "counters": counters}

    def table(self) -> str:
        s = self.summary()
        lines = [f"{'stage (ms)':<14}{'n':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"]
        for name, v in s["stages"].items():
            lines.append(
                f"{name:<14}{v['n']:>8}{v['p50']:>9.2f}{v['p90']:>9.2f}{v['p99']:>9.2f}{v['max']:>9.2f}"
            )
        if s["counters"]:
            lines.append("  ".join(f"{k}={v}" for k, v in sorted(s["counters"].items())))
        return "\n".join(lines)
