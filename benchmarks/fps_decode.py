"""Decode stage alone: PyAV in each threading mode, OpenCV, and the runtime's own file source.

Decode-only rate is the ceiling for replay: no pipeline can run a file faster than it can
be decoded (and turned into RGB arrays) on the same cores.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial

from benchmarks.media import Clip
from benchmarks.timing import rate

THREAD_TYPES = ("NONE", "SLICE", "FRAME", "AUTO")


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _passes(one_pass: Callable[[], int], seconds: float) -> dict:
    """Repeat whole-file passes until ``seconds`` are spent (at least one): frames/s."""
    frames, t0 = 0, time.perf_counter()
    while True:
        frames += one_pass()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return {"frames": frames, "seconds": round(elapsed, 3), "fps": rate(frames, elapsed)}


def pyav_pass(path: str, thread_type: str, output: str, limit: int = 0) -> int:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = thread_type
        n = 0
        for vf in container.decode(stream):
            if output == "rgb24":
                vf.to_ndarray(format="rgb24")
            n += 1
            if n == limit:
                break
        return n


def opencv_pass(path: str, output: str = "bgr24", limit: int = 0) -> int:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    n = 0
    while True:
        ok = cap.grab() if output == "none" else cap.read()[0]
        if not ok:
            break
        n += 1
        if n == limit:
            break
    cap.release()
    return n


def stream_source_pass(path: str, limit: int = 0) -> int:
    """The runtime's real file source (stream.sources), as replay uses it."""
    from stream.sources import open_source

    n = 0
    with open_source(path) as src:
        for _ in src:
            n += 1
            if n == limit:
                break
    return n


def decode_cases(quick: bool) -> list[tuple[str, str, str]]:
    """(reader, threads, output) to measure; quick keeps one output per threading mode."""
    cases: list[tuple[str, str, str]] = []
    if have_pyav():
        for t in THREAD_TYPES:
            outputs = ("none",) if quick and t != "AUTO" else ("none", "rgb24")
            cases += [("pyav", t, out) for out in outputs]
        # The runtime's source hands over decoded pictures; RGB is made only at model size.
        cases.append(("stream.sources", "AUTO", "picture"))
    cases.append(("opencv", "default", "none" if quick else "bgr24"))
    if not quick:
        cases.append(("opencv", "default", "none"))
    return cases


def bench_decode(clips: Iterable[Clip], seconds: float, quick: bool = False, progress=None,
                 limit: int = 0) -> list[dict]:
    """Frames/s of each reader on each clip; ``limit`` > 0 cuts each pass to that many frames."""
    rows = []
    cases = decode_cases(quick)
    for clip in clips:
        for reader, threads, output in cases:
            path = str(clip.path)
            if reader == "pyav":
                fn = partial(pyav_pass, path, threads, output, limit)
            elif reader == "opencv":
                fn = partial(opencv_pass, path, output, limit)
            else:
                fn = partial(stream_source_pass, path, limit)
            row = {"clip": clip.name, "codec": clip.codec, "resolution": clip.resolution,
                   "reader": reader, "threads": threads, "output": output}
            try:
                row.update(_passes(fn, seconds))
            except Exception as e:  # noqa: BLE001 - one broken reader must not hide the others' figures
                row["error"] = " ".join(str(e).split())[:200]
            rows.append(row)
            if progress:
                progress()
    if not have_pyav():
        rows.append({"note": "PyAV (av) not installed: PyAV threading modes and stream.sources skipped"})
    return rows


CEILING_OUTPUTS = ("none", "picture")  # what the runtime consumes: decoded pictures, unconverted
ARRAY_OUTPUTS = ("rgb24", "bgr24")      # what a frame-by-frame array loop (the naive baseline) needs


def decode_ceiling(rows: list[dict], clip: str, outputs=CEILING_OUTPUTS) -> dict | None:
    """The fastest decode of ``clip`` with the given outputs: by default the replay ceiling (no
    pipeline replays a file faster than it decodes); ``ARRAY_OUTPUTS``: full-frame arrays."""
    best = [r for r in rows if r.get("clip") == clip and r.get("output") in outputs and r.get("fps")]
    return max(best, key=lambda r: r["fps"], default=None)
