"""The unit of data every stage passes along: one decoded picture."""

from __future__ import annotations

from typing import Any

import numpy as np


class Frame:
    """One decoded picture.

    ``arrival`` is ``time.monotonic()`` when the picture left the decoder (or the
    capture thread for live sources); every latency figure is measured from it.
    ``pts`` is the presentation time in seconds from the stream's start (None when
    the container gives none). ``meta`` carries optional side data, e.g. the
    synthetic generator's ground truth. ``stream_id`` is the pipeline's name for the stream,
    stamped as the frame enters it (stream.loops); sources leave the default.

    A frame holds either an RGB array (folders, the synthetic generator, pictures pushed
    from a browser) or the decoder's own picture (``picture``: a PyAV ``VideoFrame``, any
    pixel format). A decoded picture is converted to full-size RGB only when something asks
    for ``rgb`` (overlay, recording, display): the model path crops and scales it straight
    from the decoder's planes (stream.preprocess), so replays without sinks never pay for the
    full-frame conversion. ``field_only``: an interlaced picture shown by field doubling (its
    top field, each line twice), the no-delay deinterlacing of live input.
    """

    __slots__ = ("_rgb", "arrival", "field_only", "index", "meta", "picture", "pts", "stream_id")

    def __init__(
        self,
        index: int,
        pts: float | None,
        arrival: float,
        rgb: np.ndarray | None = None,
        stream_id: str = "0",
        meta: dict[str, Any] | None = None,
        *,
        picture: Any = None,
        field_only: bool = False,
    ):
        if (rgb is None) == (picture is None):
            raise ValueError("a Frame needs exactly one of rgb (HxWx3 uint8) or picture (av.VideoFrame)")
        self.index = index
        self.pts = pts
        self.arrival = arrival
        self._rgb = rgb
        self.stream_id = stream_id
        self.meta = {} if meta is None else meta
        self.picture = picture
        self.field_only = field_only

    @property
    def rgb(self) -> np.ndarray:
        """HxWx3 uint8 in RGB order (converted from the decoder's picture on first use)."""
        if self._rgb is None:
            rgb = _reformat(self.picture, None, None, "rgb24", "BILINEAR").to_ndarray()
            if self.field_only:
                rgb = np.ascontiguousarray(rgb[0::2].repeat(2, axis=0)[: rgb.shape[0]])
            self._rgb = rgb  # a race converts twice and stores equal arrays: harmless
        return self._rgb

    @rgb.setter
    def rgb(self, value: np.ndarray) -> None:
        self._rgb, self.picture, self.field_only = value, None, False

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        if self.picture is not None:
            return int(self.picture.height), int(self.picture.width)
        return int(self._rgb.shape[0]), int(self._rgb.shape[1])

    def thumbnail(self, step: int) -> np.ndarray:
        """Every ``step``-th pixel in both directions as RGB (for content-area detection)."""
        if self.picture is None:
            return self.rgb[::step, ::step]
        h, w = self.size
        # Nearest-neighbour from the decoder's planes (about the samples striding the RGB frame
        # would take), whether or not a sink has converted the full frame: the same detection
        # with and without --record.
        return _reformat(self.picture, -(-w // step), -(-h // step), "rgb24", "POINT").to_ndarray()

    def __repr__(self) -> str:
        h, w = self.size
        kind = "rgb" if self._rgb is not None else f"picture {self.picture.format.name}"
        return f"Frame(stream={self.stream_id!r}, index={self.index}, pts={self.pts}, {w}x{h} {kind})"


def _reformat(picture: Any, width: int | None, height: int | None, fmt: str, interpolation: str) -> Any:
    """``picture.reformat`` with one scaler thread. PyAV >= 17 otherwise slices the work over
    all cores, which costs more CPU in total (720p to RGB: ~0.6 against ~0.45 ms on the 2-core
    dev machine) while the decoder and the engine need those cores."""
    try:
        return picture.reformat(width, height, fmt, interpolation=interpolation, threads=1)
    except TypeError:  # PyAV < 17: no threads argument, and a single-threaded scaler anyway
        return picture.reformat(width, height, fmt, interpolation=interpolation)
