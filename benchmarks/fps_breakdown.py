"""Where a file replay spends CPU per frame: decode, content area and modality, crop/scale and
normalise, inference, smoothing and alerts, and the rest (threads, queues, the batcher, futures),
with the runtime's own objects, in one run.

Method: per-stage CPU accumulators over *serial phases*, beside the real threaded replay.
Each round takes the clip through

1. decode-only: the runtime's file source alone (``stream.sources.open_source``, the replay's
   decoder threading), frames dropped: the comparator of the issue's replay target;
2. the stages one after another on chunks of ``chunk`` frames: decode the chunk with the same
   source, then route and preprocess every frame with the pipeline's own router
   (``ModalityRouter.prepare``: content area, modality, crop/scale from the decoder's planes,
   normalise; the student's preprocessor is wrapped to time its crop/scale + normalise apart
   from the area and modality checks around it), then run the engine on full batches (stacked as
   the batcher stacks them), then the post stage's probabilities, smoother and alert machine;
3. the replay itself (``benchmarks.fps_e2e.replay``: ``stream.pipeline.Pipeline``, threads and all).

Each phase is timed with ``time.process_time`` (CPU of every thread of the process): while a
phase runs nothing else of ours does, so its CPU is its own, including the decoder's and the
engine's worker threads. Frame-threaded decoding still has a few pictures in flight when a
chunk's decode phase stops asking for more; the phase waits ``SETTLE_S`` before reading the CPU
clock so that their decoding is counted as decode, not as the next stage. Differences of whole
runs (decode, decode + preprocess, ...) were the alternative; with stages as small as the
smoother's (microseconds) beside a decoder of milliseconds per frame, the noise of one whole run
would swamp them. "Rest" = the replay's CPU per frame minus the stages' sum: what running the
stages in threads costs (hand-offs, queues, futures, the prefetch and batcher threads, waits that
spin) plus whatever the load on a shared machine adds; its share can come out slightly negative
when the replay happened to run more cheaply than the serial phases. Each round runs the three
parts in turn, so all see about the same load; figures are sums over the rounds.
"""
from __future__ import annotations

import time

import numpy as np

from benchmarks.fps_e2e import pipeline, replay
from benchmarks.timing import rate, wall_and_cpu

SETTLE_S = 0.05  # after a chunk's decode phase: in-flight frame-threaded decoding finishes here
# Stages in the order a frame meets them; "rest" is computed, not timed.
STAGES = ("decode", "content area + modality", "crop/scale + normalise", "inference", "smoothing + alerts")


class _TimedPreprocessor:
    """The student's preprocessor, with its calls (crop/scale + normalise) timed apart from the
    rest of ``ModalityRouter.prepare``; everything else (``area``, fields) passes through."""

    def __init__(self, pre):
        self._pre, self.cpu = pre, 0.0

    def __call__(self, *args, **kw):
        c = time.process_time()
        try:
            return self._pre(*args, **kw)
        finally:
            self.cpu += time.process_time() - c

    def __getattr__(self, name):
        return getattr(self._pre, name)


def _open(clip, frames: int):
    from stream.sources import open_source

    # looped only when needed, as in fps_e2e.replay: a looping reader decodes ahead into the next round
    return open_source(str(clip.path), loop=frames > clip.frames)


def decode_only(clip, frames: int) -> tuple[int, float, float]:
    """(frames, wall s, CPU s) of the runtime's file source alone, every frame dropped."""

    def drain() -> int:
        n = 0
        with _open(clip, frames) as src:
            for _ in src:
                n += 1
                if n == frames:
                    break
        return n

    return wall_and_cpu(drain)


def staged(engine, clip, frames: int, batch: int, chunk: int) -> tuple[int, dict[str, float]]:
    """(frames, CPU seconds per stage) of the stages run one after another on chunks of frames."""
    from stream.alerts import AlertMachine

    pipe = pipeline(engine, batch, live=False)  # its router, preprocessor and settings; never started
    router, cfg = pipe.router, pipe.cfg
    timed = router.student.pre = _TimedPreprocessor(router.student.pre)
    smoother, alerts = cfg.smoothing.build(), AlertMachine(cfg.alerts)
    cpu = dict.fromkeys(STAGES, 0.0)
    chunk = max(batch, chunk - chunk % batch)  # whole batches, as a replay's batcher forms them
    done = 0
    try:
        with _open(clip, frames) as src:
            it = iter(src)
            while done < frames:
                c = time.process_time()
                got = [f for f in (next(it, None) for _ in range(min(chunk, frames - done))) if f is not None]
                time.sleep(SETTLE_S)
                cpu["decode"] += time.process_time() - c
                if not got:
                    break
                c, timed.cpu = time.process_time(), 0.0
                # (the frames keep the source's stream id "0", the pipeline's name for its first stream)
                kept = [(f, x) for f in got for lane, x in (router.prepare(f),) if lane is not None]
                cpu["content area + modality"] += time.process_time() - c - timed.cpu
                cpu["crop/scale + normalise"] += timed.cpu
                c = time.process_time()
                logits = [router.student.infer(np.stack([x for _, x in kept[i:i + batch]]))  # its views too
                          for i in range(0, len(kept), batch)]
                cpu["inference"] += time.process_time() - c
                c = time.process_time()
                for (f, _), row in zip(kept, np.concatenate(logits) if logits else []):
                    alerts.update(smoother.update(router.student.probs(row)), f.pts)  # as stream.loops' post
                cpu["smoothing + alerts"] += time.process_time() - c
                done += len(got)
    finally:
        router.close()  # an NBI teacher loaded beside the student
    return done, cpu


def breakdown(engine, clip, frames: int, batch: int, rounds: int = 2, chunk: int = 16) -> dict:
    """CPU ms per frame and share of the replay's total for each stage, and the replay against
    decode-only from the same rounds."""
    cpu = dict.fromkeys(STAGES, 0.0)
    staged_frames = dec_frames = rep_frames = 0
    dec_wall = dec_cpu = rep_wall = rep_cpu = 0.0
    for _ in range(rounds):
        n, w, c = decode_only(clip, frames)
        dec_frames, dec_wall, dec_cpu = dec_frames + n, dec_wall + w, dec_cpu + c
        n, per_stage = staged(engine, clip, frames, batch, chunk)
        staged_frames += n
        for k, v in per_stage.items():
            cpu[k] += v
        rep = replay(engine, clip, frames, batch)
        rep_frames += rep["frames"]
        rep_wall += rep["seconds"]
        rep_cpu += rep["cpu_ms_per_frame"] * rep["frames"] / 1e3
    ms = {k: v * 1e3 / max(1, staged_frames) for k, v in cpu.items()}
    total = rep_cpu * 1e3 / max(1, rep_frames)
    ms["rest (threads, queues, batcher)"] = total - sum(ms.values())
    stages = [{"stage": k, "cpu_ms_per_frame": round(v, 3), "share": round(v / total, 3) if total else None}
              for k, v in ms.items()]
    dec_fps, rep_fps = rate(dec_frames, dec_wall), rate(rep_frames, rep_wall)
    return {"clip": clip.name, "batch": batch, "rounds": rounds, "frames_per_round": frames, "chunk": chunk,
            "stages": stages, "replay_cpu_ms_per_frame": round(total, 3),
            "replay_fps": rep_fps, "decode_only_fps": dec_fps,
            "decode_only_cpu_ms_per_frame": round(dec_cpu * 1e3 / max(1, dec_frames), 3),
            "replay_over_decode_only": round(rep_fps / dec_fps, 3) if rep_fps and dec_fps else None}
