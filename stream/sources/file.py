"""Recorded video files: MP4, MKV, AVI, MOV, MPEG-TS with any codec FFmpeg decodes."""

from __future__ import annotations

import os

from stream.sources.base import Source, SourceError, av_source_class
from stream.sources.live import LatestFrameReader

VIDEO_EXTENSIONS = {
    ".mp4",
    ".m4v",
    ".mkv",
    ".avi",
    ".mov",
    ".ts",
    ".m2ts",
    ".mts",
    ".mpg",
    ".mpeg",
    ".webm",
    ".mxf",
    ".nut",
    ".h264",
    ".264",
    ".hevc",
    ".265",
}


def open_file(
    path: str,
    *,
    realtime: bool = False,
    speed: float = 1.0,
    loop: bool = False,
    deinterlace: str = "auto",
    stream_id: str = "0",
) -> Source:
    """Replay a file: every frame as fast as possible (``realtime=False``, for evaluation)
    or paced at the file's own rate with newest-frame reading, i.e. as a simulated live feed."""
    if not os.path.exists(path):
        raise SourceError(f"cannot open {path!r}: no such file")
    if os.path.getsize(path) == 0:
        raise SourceError(f"cannot open {path!r}: the file is empty")
    src = av_source_class()(
        path, kind="file", pace=realtime, speed=speed, loop=loop, deinterlace=deinterlace, stream_id=stream_id
    )
    return LatestFrameReader(src) if realtime else src
