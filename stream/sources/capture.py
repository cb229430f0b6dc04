"""Capture devices (/dev/videoN: UVC grabbers, capture cards) through PyAV's v4l2 input."""

from __future__ import annotations

import os

from stream.sources.base import Source, SourceError
from stream.sources.lazy_av import av_source_class
from stream.sources.live import LatestFrameReader


def capture_options(
    size: str | None = None, fps: float | None = None, pixel_format: str | None = None
) -> dict[str, str]:
    """v4l2 demuxer options; ``pixel_format`` is the device's format (``mjpeg``, ``yuyv422``,
    ``nv12``...), which sets how much the device compresses and how much we decode."""
    opts = {}
    if size:
        opts["video_size"] = size
    if fps:
        opts["framerate"] = f"{fps:g}"
    if pixel_format:
        opts["input_format"] = pixel_format
    # The kernel queue is the only buffer we cannot drop from: keep it small.
    opts.setdefault("fflags", "nobuffer")
    return opts


def open_capture(
    device: str,
    *,
    size: str | None = None,
    fps: float | None = None,
    pixel_format: str | None = None,
    threading: str = "auto",
    give_up_after: float | None = None,
) -> Source:
    if not os.path.exists(device):
        raise SourceError(
            f"cannot open capture device {device!r}: it does not exist "
            "(list devices with `v4l2-ctl --list-devices`)"
        )
    opts = capture_options(size, fps, pixel_format)
    av_source = av_source_class()

    def reopen() -> Source:
        return av_source(
            device,
            kind="capture",
            format="v4l2",
            options=opts,
            timeout=(5.0, 2.0),
            live=True,
            threading=threading,
        )

    # The first open happens here so that a bad device fails at once with a clear message;
    # later failures (cable pulled, device reset) reconnect in the reader thread.
    return LatestFrameReader(reopen(), reopen, give_up_after=give_up_after)
