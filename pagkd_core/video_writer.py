"""The project's one PyAV video encoder: RGB frames in, a playable file out.

Everything that writes video goes through it: the synthetic procedure clips
(pagkd_core.synth.video), the runtime's crash-safe recorder (stream.sinks.record), the
benchmark clips (benchmarks.media) and the tests' media. It lives in the training core
because that is the lowest layer that writes video; PyAV is imported only when a writer is
opened, so importing a module that merely may write never requires it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


class VideoWriter:
    """``write(rgb)`` per frame; ``close()`` (or leaving the with-block) flushes the encoder.

    ``time_base`` set: every frame gets an explicit timestamp in those units, ``write(rgb, t)``
    at ``t`` seconds, or without ``t`` at its index (``time_base`` 1/fps: a constant rate).
    None: the encoder numbers the frames itself. Frames of another size than the stream's are
    scaled to it by PyAV."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        codec: str = "libx264",
        *,
        pix_fmt: str = "yuv420p",
        options: dict | None = None,
        bit_rate: int | None = None,
        time_base: Fraction | None = None,
        format: str | None = None,
        container_options: dict | None = None,
    ):
        import av

        self._frame = av.VideoFrame.from_ndarray
        self.container = av.open(str(path), "w", format=format, options=container_options or {})
        s = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        if bit_rate:
            s.bit_rate = bit_rate
        if time_base is not None:
            # both: otherwise PyAV rescales the encoder's clock to 1/fps and close timestamps collide
            s.time_base = s.codec_context.time_base = time_base
        s.options = dict(options or {})
        self.stream, self.time_base, self.frames = s, time_base, 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the encoded pictures."""
        return self.stream.width, self.stream.height

    def write(self, rgb: np.ndarray, t: float | None = None) -> None:
        frame = self._frame(np.ascontiguousarray(rgb), format="rgb24")
        if self.time_base is not None:
            frame.pts = self.frames if t is None else round(t / self.time_base)
            frame.time_base = self.time_base
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            self.container.mux(self.stream.encode(None))  # the frames the encoder still holds
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.close()
