"""Video sources behind one interface: ``open_source(spec)`` -> an iterable of Frames.

with open_source("clip.mp4") as src:           # every frame, as fast as possible
    for frame in src: ...
open_source("clip.mp4", live=True)              # paced at the file's rate, newest frame only
open_source("/dev/video0", size="1920x1080", fps=60, pixel_format="mjpeg")
open_source("udp://127.0.0.1:5000")             # rtsp:// srt:// http:// ... reconnect on loss
open_source("frames/")                          # a folder of images
open_source("synthetic")                        # the synthetic procedure generator
open_source("demo")                             # the bundled synthetic demo video
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from stream.sources.base import Source, SourceError, SourceInfo
from stream.sources.capture import open_capture
from stream.sources.file import open_file
from stream.sources.folder import open_folder
from stream.sources.live import LatestFrameReader
from stream.sources.network import SCHEMES, open_network
from stream.sources.synthetic import open_synthetic

__all__ = [
    "LatestFrameReader",
    "Source",
    "SourceError",
    "SourceInfo",
    "demo_video",
    "open_source",
    "source_kind",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def demo_video() -> Path:
    path = ASSETS / "demo.mp4"
    if not path.is_file():
        raise SourceError(
            f"the bundled demo video {path} is missing; reinstall the package or "
            "pass a video file, device, URL or folder instead of 'demo'"
        )
    return path


def source_kind(spec: str) -> str:
    """file | capture | network | folder | synthetic, from the spec's form alone."""
    if spec in ("synthetic", "synth") or spec.startswith("synthetic:"):
        return "synthetic"
    if spec == "demo":
        return "file"
    if spec.startswith(("/dev/video", "v4l2:")):
        return "capture"
    if urlparse(spec).scheme in SCHEMES:
        return "network"
    if os.path.isdir(spec):
        return "folder"
    return "file"


def open_source(
    spec: str,
    *,
    live: bool | None = None,
    speed: float = 1.0,
    loop: bool = False,
    deinterlace: str = "auto",
    size: str | None = None,
    fps: float | None = None,
    pixel_format: str | None = None,
    options: dict | None = None,
    give_up_after: float | None = None,
    synthetic: dict | None = None,
    threading: str = "auto",
) -> Source:
    """Open whatever ``spec`` names. ``live``: pace recorded input at its own rate and read
    it like a live feed (default: on for devices and network streams, off for files and
    folders, which then yield every frame). Frames carry the default ``stream_id``: the pipeline
    names its streams. Raises :class:`SourceError` with a one-line message."""
    spec = str(spec)
    kind = source_kind(spec)
    if kind == "capture":
        return open_capture(
            spec.removeprefix("v4l2:"),
            size=size,
            fps=fps,
            pixel_format=pixel_format,
            give_up_after=give_up_after,
            threading=threading,
        )
    if kind == "network":
        return open_network(spec, options=options, give_up_after=give_up_after, threading=threading)
    if kind == "synthetic":
        # "synthetic:seconds=10,seed=3,width=640,height=480" sets generator options inline.
        from stream.smoothing import parse_spec

        _, inline = parse_spec(spec)
        return open_synthetic(live=bool(live), **{**inline, **(synthetic or {})})
    if kind == "folder":
        return open_folder(spec, fps=fps or 30.0, live=bool(live))
    path = str(demo_video()) if spec == "demo" else spec
    return open_file(path, live=bool(live), speed=speed, loop=loop, deinterlace=deinterlace)
