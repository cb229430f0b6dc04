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

import cv2
import numpy as np

from stream.frame import Frame

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
        self._container = None
        self._stream = None
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

    __call__ = write  # usable directly as a PassThroughOverlay output

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)

    # -- encoder thread ---------------------------------------------------------------
    def _open(self, rgb: np.ndarray) -> None:
        import av  # only when recording: the pipeline imports this module also on hosts without PyAV

        opts = (
            {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
            if self.fmt in ("mp4", "mov")
            else {"flush_packets": "1"}
        )
        self._container = av.open(str(self.path), "w", format=self.fmt, options=opts)
        s = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        # yuv420p needs even sizes.
        s.width, s.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
        s.pix_fmt = "yuv420p"
        s.time_base = _TIME_BASE
        s.codec_context.time_base = _TIME_BASE  # else PyAV rescales to 1/fps and close timestamps collide
        if self.codec == "libx264":
            s.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "crf": str(self.crf),
                "g": str(self.gop),
                "keyint_min": str(self.gop),
                "sc_threshold": "0",
            }
        else:
            s.options = {"g": str(self.gop)}
        self._stream = s

    def _encode(self, frame: Frame, rgb: np.ndarray) -> None:
        import av

        if self._container is None:
            self._open(rgb)
        s = self._stream
        if rgb.shape[0] != s.height or rgb.shape[1] != s.width:
            # The encoder's size is fixed at the first frame; later sizes are scaled to it.
            rgb = cv2.resize(rgb, (s.width, s.height), interpolation=cv2.INTER_AREA)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self._t0 is None:
            self._t0 = frame.arrival
        t = frame.pts if frame.pts is not None else frame.arrival - self._t0
        if t + self._offset <= self._last_t:
            # Timestamps went back (concatenated input, a reconnected or looping source):
            # continue one frame after the last one instead of breaking the muxer.
            self._offset = self._last_t + 1.0 / self.fps - t
        self._last_t = t + self._offset
        vf.pts = round(self._last_t / _TIME_BASE)
        vf.time_base = _TIME_BASE
        for packet in s.encode(vf):
            self._container.mux(packet)
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
            if self._container is not None:
                try:
                    for packet in self._stream.encode(None):
                        self._container.mux(packet)
                finally:
                    self._container.close()
