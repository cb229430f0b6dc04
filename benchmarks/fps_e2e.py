"""End to end through the real runtime (stream.pipeline.Pipeline), beside the naive baseline;
the runtime's acceptance runs (benchmarks.stream) measure through the same functions.

* replay: one file, every frame, as fast as possible -> frames/s.
* paced: files replayed at their own clock through the live path (newest frame only), one
  or N streams on one shared engine -> arrival-to-result latency percentiles and drops.

Paced figures come from a measurement window after a warm-up: frames offered in the window
are those analysed plus those the live reader dropped; latencies are those of frames that
arrived in the window. A run "keeps up" when it drops at most ``max_drop`` of the frames and
its p99 latency stays within ``max_p99_ms`` (120 ms: the GI Genius criterion for how far
annotations may lag the video).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from benchmarks.naive import NaiveClassifier, naive_paced, naive_replay
from benchmarks.timing import rate, summary_ms, wall_and_cpu


@dataclass
class KeepUp:
    max_drop: float = 0.02
    max_p99_ms: float = 120.0

    def __call__(self, row: dict) -> bool:
        offered = row.get("offered") or 0
        p99 = (row.get("latency") or {}).get("p99_ms")
        missed = row["dropped"] + row.get("never_reached", 0)
        return bool(offered and p99 is not None and missed / offered <= self.max_drop and p99 <= self.max_p99_ms)


def pipeline(engine, batch: int, live: bool, max_frames: int = 0, on_result=None):
    """The pipeline every end-to-end figure runs through: ``engine`` shared, no overlays drawn;
    ``live``: inputs read as live feeds (paced, newest frame only)."""
    from stream.pipeline import Pipeline, PipelineConfig

    cfg = PipelineConfig(batch=batch, live=live, annotate=False, max_frames=max_frames,
                         max_wait_ms=5.0)
    return Pipeline(cfg, engine=engine, on_result=on_result)


def replay(engine, clip, frames: int, batch: int) -> dict:
    """``frames`` frames of the file (looped if it is shorter) as fast as the pipeline goes."""
    pipe = pipeline(engine, batch, live=False, max_frames=frames)
    # looped only when needed: a looping reader decodes ahead into the next round
    pipe.add_stream(str(clip.path), loop=frames > clip.frames)
    summary, elapsed, cpu = wall_and_cpu(pipe.run)
    n = summary["frames"]
    return {"clip": clip.name, "batch": batch, "frames": n, "seconds": round(elapsed, 3),
            "fps": rate(n, elapsed), "cpu_ms_per_frame": round(cpu / n * 1e3, 3) if n else None,
            "mean_batch": round(summary["batches"].get("mean_batch", 0), 2),
            "latency_p50_ms": {stage: v["p50"] for stage, v in summary["latency_ms"].items()},
            "errors": pipe.errors()}


def paced(engine, clip, fps: float, streams: int, seconds: float, warmup: float = 1.0) -> dict:
    """``streams`` copies of ``clip`` replayed live at ``fps`` each, sharing ``engine``."""
    lock = threading.Lock()
    window = {"open": None, "close": None}
    lat: list[float] = []

    def on_result(res):
        t_open, t_close = window["open"], window["close"]
        if t_open is not None and res.frame.arrival >= t_open and (t_close is None or res.frame.arrival < t_close):
            with lock:
                lat.append(res.latency_ms / 1e3)

    pipe = pipeline(engine, batch=max(1, min(streams, engine.max_batch)), live=True, on_result=on_result)
    for i in range(streams):
        pipe.add_stream(str(clip.path), stream_id=f"s{i}", speed=fps / clip.fps, loop=True)
    pipe.start()
    try:
        time.sleep(warmup)
        before = pipe.summary()["streams"]
        window["open"] = time.monotonic()
        time.sleep(seconds)
        window["close"] = time.monotonic()
        after = pipe.summary()["streams"]
    finally:
        summary = pipe.stop()
    analysed = sum(after[s]["analysed"] - before[s]["analysed"] for s in after)
    dropped = sum(after[s]["dropped"] - before[s]["dropped"] for s in after)
    return {"clip": clip.name, "fps": fps, "streams": streams, "seconds": seconds, "offered": analysed + dropped,
            "processed": analysed, "dropped": dropped, "latency": summary_ms(lat),
            "mean_batch": round(summary["batches"].get("mean_batch", 0), 2), "errors": pipe.errors()}


def concurrency(run_one, keeps_up: KeepUp, max_streams: int, progress=None) -> dict:
    """N = 1, 2, 4, ... paced streams until one N no longer keeps up (or ``max_streams``)."""
    rows, best, n = [], 0, 1
    while n <= max_streams:
        row = run_one(n)
        row["keeps_up"] = keeps_up(row)
        rows.append(row)
        if progress:
            progress()
        if not row["keeps_up"]:
            break
        best, n = n, n * 2
    return {"max_streams_keeping_up": best, "tested_up_to": max_streams, "runs": rows}


def bench_e2e(engine, naive: NaiveClassifier, clip, ceiling_fps: float | None, *, replay_frames: int,
              replay_batch: int,
              paced_fps=(30, 60), seconds: float, max_streams: int, keeps_up: KeepUp, progress=None) -> dict:
    """Every end-to-end figure for one clip, each with its naive counterpart and the ratio."""
    out: dict = {"clip": clip.name, "engine": engine.describe(), "keep_up_rule": vars(keeps_up)}

    pipe_rep = replay(engine, clip, replay_frames, batch=min(replay_batch, engine.max_batch))
    naive_rep = naive_replay(naive, str(clip.path), max_frames=replay_frames,
                             loops=max(1, -(-replay_frames // clip.frames)))
    out["replay"] = {"pipeline": pipe_rep, "naive": naive_rep, "decode_ceiling_fps": ceiling_fps,
                     "speedup_vs_naive": _ratio(pipe_rep["fps"], naive_rep["fps"]),
                     "fraction_of_ceiling": _ratio(pipe_rep["fps"], ceiling_fps)}
    if progress:
        progress()

    out["paced"] = []
    for fps in paced_fps:
        frames = max(10, int(fps * seconds))
        pipe_row = paced(engine, clip, fps, 1, seconds)
        pipe_row["keeps_up"] = keeps_up(pipe_row)
        naive_row = naive_paced(naive, [str(clip.path)], fps, frames)
        naive_row["keeps_up"] = keeps_up(naive_row)
        out["paced"].append({"fps": fps, "pipeline": pipe_row, "naive": naive_row,
                             "p99_naive_over_pipeline": _ratio(naive_row["latency"]["p99_ms"],
                                                               pipe_row["latency"]["p99_ms"])})
        if progress:
            progress()

    rate30 = paced_fps[0]
    pipe_conc = concurrency(lambda n: paced(engine, clip, rate30, n, seconds), keeps_up, max_streams, progress)
    naive_conc = concurrency(lambda n: naive_paced(naive, [str(clip.path)] * n, rate30, max(10, int(rate30 * seconds))),
                             keeps_up, max_streams, progress)
    out["concurrent"] = {"fps": rate30, "pipeline": pipe_conc, "naive": naive_conc,
                         "ratio": _ratio(pipe_conc["max_streams_keeping_up"], naive_conc["max_streams_keeping_up"])}
    return out


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else None
