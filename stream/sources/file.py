"""Recorded video files: MP4, MKV, AVI, MOV, MPEG-TS with any codec FFmpeg decodes."""

from __future__ import annotations

import os

from stream.sources.base import Source, SourceError
from stream.sources.lazy_av import av_source_class
from stream.sources.live import LatestFrameReader


def open_file(
    path: str,
    *,
    live: bool = False,
    speed: float = 1.0,
    loop: bool = False,
    deinterlace: str = "auto",
) -> Source:
    """Replay a file: every frame as fast as possible (``live=False``, for evaluation)
    or paced at the file's own rate with newest-frame reading, i.e. as a simulated live feed."""
    if not os.path.exists(path):
        raise SourceError(f"cannot open {path!r}: no such file")
    if os.path.getsize(path) == 0:
        raise SourceError(f"cannot open {path!r}: the file is empty")
    src = av_source_class()(path, kind="file", live=live, speed=speed, loop=loop, deinterlace=deinterlace)
    return LatestFrameReader(src) if live else src
