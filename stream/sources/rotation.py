"""Clips stored sideways (phones): the display matrix's quarter turns applied to decoded pictures.

A phone records its sensor's landscape picture and tags the stream with a display matrix (what
older tools wrote as a ``rotate`` tag) saying how to turn it for viewing. Players and ffmpeg
apply it; so must we, or the model reads the scene sideways and the recording comes out
sideways. The turn is made on the decoder's picture by FFmpeg's own filters (``transpose``,
``hflip,vflip``: what ffmpeg's autorotate inserts), so the model path still crops and scales
from the picture's planes (stream.preprocess) and nothing is converted to RGB that was not
before. A field-doubled picture (its rows are the top field, which a turn would make columns)
or one the filters cannot take is turned as RGB with ``np.rot90`` instead.
"""

from __future__ import annotations

import logging

import numpy as np

from stream.frame import Frame
from stream.picture_graph import picture_graph
from stream.sources.base import SourceInfo

log = logging.getLogger(__name__)

# Counter-clockwise quarter turns -> the FFmpeg filters that make them.
_FILTERS = {
    1: [("transpose", "dir=cclock")],
    2: [("hflip", None), ("vflip", None)],
    3: [("transpose", "dir=clock")],
}


def display_rotation(picture, stream=None) -> float:
    """Degrees counter-clockwise the display matrix turns the picture (0 without one).

    PyAV >= 14 reads it from the frame (FFmpeg >= 6.1 decoders attach the stream's matrix to
    every frame, and an H.264/HEVC display-orientation message too); older PyAV only from the
    stream's side data."""
    deg = getattr(picture, "rotation", None)
    if not deg and stream is not None:
        deg = (getattr(stream, "side_data", None) or {}).get("DISPLAYMATRIX")
    return float(deg) if isinstance(deg, (int, float)) else 0.0  # anything else: no angle we can read


def quarter_turns(degrees: float) -> int | None:
    """0-3 counter-clockwise quarter turns for ``degrees``; None for an angle that is no multiple
    of 90 (ffmpeg leaves those as stored too)."""
    turns = round(degrees / 90.0)
    if abs(degrees - 90.0 * turns) > 2.0:  # ffmpeg's own tolerance for an "odd rotation angle"
        return None
    return turns % 4


class Rotator:
    """Turn one source's frames upright. Called with every frame the source makes (one thread).

    Logs the turn once, when it is first applied (and again should a spliced stream change it),
    and updates ``info`` to the upright picture's size.
    """

    def __init__(self, info: SourceInfo, stream=None):
        self.info, self._stream = info, stream
        self._graph, self._key = None, None
        self._turns = 0  # what was last applied: a change is logged
        self._odd: float | None = None  # an angle we cannot apply, logged once

    def __call__(self, frame: Frame) -> Frame:
        deg = display_rotation(frame.picture, self._stream)
        turns = quarter_turns(deg)
        if turns is None:
            if self._odd != deg:
                self._odd = deg
                log.warning(
                    "%s: display rotation %g degrees is not a quarter turn; analysed as stored",
                    self.info.name,
                    deg,
                )
            turns = 0
        if turns != self._turns:
            self._turns = turns
            self._announce(frame, turns, deg)
        if turns == 0:
            return frame
        picture = None if frame.field_only else self._filter(frame.picture, turns)
        if picture is not None:
            frame.picture = picture
        else:
            frame.rgb = np.ascontiguousarray(np.rot90(frame.rgb, turns))  # also drops the picture
        return frame

    def _announce(self, frame: Frame, turns: int, deg: float) -> None:
        h, w = frame.size
        if turns % 2:
            w, h = h, w
        self.info.width, self.info.height = w, h
        how = {0: "none", 1: "90 degrees counter-clockwise", 2: "180 degrees", 3: "90 degrees clockwise"}
        log.info(
            "%s: display matrix %g degrees: pictures turned %s to %dx%d before analysis",
            self.info.name,
            deg,
            how[turns],
            w,
            h,
        )

    def _filter(self, pic, turns: int):
        """The turned picture, or None when FFmpeg cannot build the filters for this one."""
        import av  # only decoded pictures come here

        key = (turns, pic.width, pic.height, pic.format.name, pic.colorspace, pic.color_range)
        if key != self._key:
            self._key = key
            try:
                self._graph = self._build(pic, turns)
            except (av.error.FFmpegError, ValueError) as e:
                self._graph = None
                log.warning(
                    "%s: cannot turn %s pictures with FFmpeg filters (%s); turning them as RGB",
                    self.info.name,
                    pic.format.name,
                    e,
                )
        if self._graph is None:
            return None
        try:
            self._graph.push(pic)
            return self._graph.pull()
        except (av.error.FFmpegError, ValueError):  # a picture the graph did not expect: rebuild next time
            self._key = self._graph = None
            return None

    @staticmethod
    def _build(pic, turns: int):
        # The colour tags ride along (picture_graph), so Frame.rgb and the model's crops convert
        # as unturned.
        return picture_graph(pic, _FILTERS[turns])
