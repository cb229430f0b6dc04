"""Video recording that survives a kill: fragmented MP4 or MPEG-TS, encoded off the pipeline.

A plain MP4 writes its index (moov) at the end, so a crash leaves an unplayable file. Here
``.mp4``/``.mov`` are written fragmented (an empty moov up front, then self-describing
fragments started at every keyframe, one keyframe per ``keyframe_s``), and ``.ts`` as
MPEG-TS, which needs no index at all; ``.mkv`` is Matroska, readable without its cues.
After a SIGKILL the file decodes up to the last complete fragment (<= ``keyframe_s`` lost).

Encoding runs in its own thread behind a small queue. For a live feed (``lossless=False``) a
frame that finds the queue full is dropped and counted, so the caller never blocks; for a
replay (``lossless=True``) the caller waits for room instead, so every frame is recorded.
"""

from __future__ import annotations

import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pagkd_core.video_writer import VideoWriter  # imports PyAV only when a recording starts
from stream.frame import Frame

if TYPE_CHECKING:
    from stream.result import Result

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".ts": "mpegts", ".mkv": "matroska"}
_TIME_BASE = Fraction(1, 90000)


class Recorder:
    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 30.0,
        codec: str = "libx264",
        keyframe_s: float = 1.0,
        crf: int = 23,
        queue_size: int = 8,
        lossless: bool = False,
    ):
        self.path = Path(path)
        fmt = _FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot record to {self.path.name!r}: use one of {', '.join(_FORMATS)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fmt, self.fps, self.codec = fmt, float(fps or 30.0), codec
        self.gop = max(1, round(self.fps * keyframe_s))
        self.crf = crf
        self.lossless = lossless
        self.frames_written = 0
        self.dropped = 0
        self.error: str | None = None
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._writer = None  # opened at the first frame, at its size
        self._last_t = -1.0
        self._offset = 0.0
        self._t0: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"record-{self.path.name}", daemon=True)
        self._thread.start()

    # -- caller side ------------------------------------------------------------------
    def write(self, frame: Frame, rgb: np.ndarray | None = None) -> None:
        """Queue ``rgb`` (default: the frame's own picture) for encoding. Live: never blocks
        (a full queue drops the frame and counts it). Lossless: waits for room."""
        item = (frame, frame.rgb if rgb is None else rgb)
        if self.lossless:
            self._q.put(item)
            return
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)

    # -- encoder thread ---------------------------------------------------------------
    def _open(self, rgb: np.ndarray) -> None:
        opts = (
            {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
            if self.fmt in ("mp4", "mov")
            else {"flush_packets": "1"}
        )
        if self.codec == "libx264":
            codec_opts = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "crf": str(self.crf),
                "g": str(self.gop),
                "keyint_min": str(self.gop),
                "sc_threshold": "0",
            }
        else:
            codec_opts = {"g": str(self.gop)}
        # yuv420p needs even sizes.
        w, h = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
        self._writer = VideoWriter(self.path, w, h, self.fps, self.codec, options=codec_opts,
                                   time_base=_TIME_BASE, format=self.fmt, container_options=opts)

    def _encode(self, frame: Frame, rgb: np.ndarray) -> None:
        if self._writer is None:
            self._open(rgb)
        w, h = self._writer.size
        if rgb.shape[0] != h or rgb.shape[1] != w:
            # The encoder's size is fixed at the first frame; later sizes are scaled to it.
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        if self._t0 is None:
            self._t0 = frame.arrival
        t = frame.pts if frame.pts is not None else frame.arrival - self._t0
        if t + self._offset <= self._last_t:
            # Timestamps went back (concatenated input, a reconnected or looping source):
            # continue one frame after the last one instead of breaking the muxer.
            self._offset = self._last_t + 1.0 / self.fps - t
        self._last_t = t + self._offset
        self._writer.write(rgb, self._last_t)
        self.frames_written += 1

    def _run(self) -> None:
        try:
            while True:
                item = self._q.get()
                if item is None:
                    break
                if self.error is None:
                    self._encode(*item)
        except Exception as e:  # noqa: BLE001 - a failing recorder must not take the analysis down with it
            self.error = f"recording to {self.path} failed: {' '.join(str(e).split())}"
            while self._q.get() is not None:
                pass
        finally:
            if self._writer is not None:
                self._writer.close()


class RawVideo:
    """Sink: one stream's pictures as they came. Live: every frame as it arrives (``tap``, the
    reader thread); replay: each analysed frame, in order."""

    def __init__(self, recorder: Recorder, live: bool):
        self.recorder, self.live = recorder, live

    def write(self, result: Result) -> None:
        if not self.live:
            self.recorder.write(result.frame)

    def tap(self, frame: Frame) -> None:
        self.recorder.write(frame)

    def close(self) -> None:
        self.recorder.close()
