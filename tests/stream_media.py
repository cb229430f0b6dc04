"""Small synthetic test videos for the stream tests (all content is synthetic)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pagkd_core.video_writer import VideoWriter

FFMPEG = shutil.which("ffmpeg")

# (file name, codec, pixel format, extra encoder options): what PyAV itself writes.
PYAV_FORMATS = [
    ("h264.mp4", "libx264", "yuv420p", {}),
    ("h264_422_10.mkv", "libx264", "yuv422p10le", {}),
    ("hevc_10.mkv", "libx265", "yuv420p10le", {"x265-params": "log-level=error"}),
    ("mjpeg.avi", "mjpeg", "yuvj422p", {}),
    ("prores.mov", "prores_ks", "yuv422p10le", {}),
    ("ffv1.mkv", "ffv1", "yuv422p10le", {}),
    ("h264.ts", "libx264", "yuv420p", {}),
]


def scope_frame(
    i: int, w: int = 160, h: int = 128, field: str = "round", radius: float = 0.46, lesion: bool = False
) -> np.ndarray:
    """A moving texture inside a round/octagonal field on black, like an endoscope picture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = 128 + 60 * np.sin((xx + 3 * i) / 7.0) * np.cos((yy - 2 * i) / 9.0)
    rgb = np.stack([tex + 60, tex * 0.7 + 20, tex * 0.6 + 10], -1)
    if lesion:
        rgb[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 6) ** 2] *= 0.5
    cx, cy, r = w / 2, h / 2, radius * min(w, h)
    if field == "round":
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    elif field == "octagon":
        dx, dy = np.abs(xx - cx), np.abs(yy - cy)
        inside = (dx <= r) & (dy <= r) & (dx + dy <= 1.4142 * r)
    else:
        inside = np.ones_like(xx, bool)
    rgb[~inside] = 0
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_video(
    path: Path,
    n: int = 30,
    w: int = 160,
    h: int = 128,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    sizes=None,
    container_options: dict | None = None,
    **frame_kw,
) -> Path:
    """Write with PyAV. ``sizes``: optional list of (w, h) per frame (size changes mid-stream)."""
    with VideoWriter(path, w, h, fps, codec, pix_fmt=pix_fmt, options={"g": str(fps // 2), **(options or {})},
                     container_options=container_options) as out:
        for i in range(n):
            fw, fh = sizes[i] if sizes else (w, h)
            out.write(scope_frame(i, fw, fh, **frame_kw))
    return path


def ffmpeg_video(path: Path, args: list[str], n: int = 30, w: int = 160, h: int = 128, fps: int = 30) -> Path:
    """Write with the ffmpeg command line (interlaced, 10-bit...), from a synthetic test pattern."""
    if FFMPEG is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={w}x{h}:rate={fps}",
        "-frames:v",
        str(n),
        *args,
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def http_test_stream(seconds: float) -> tuple[str, subprocess.Popen]:
    """A separate ffmpeg process serving a 160x120 test pattern as MPEG-TS over HTTP on
    127.0.0.1 at real-time pace for ``seconds``. Returns (url, process); kill it when done."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    sender = subprocess.Popen(
        [FFMPEG, "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "15",
         "-f", "mpegts", "-listen", "1", url]
    )  # fmt: skip
    return url, sender


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_sender(port: int, seconds: float, size: str = "320x240", keyint: int = 15) -> subprocess.Popen:
    """A separate ffmpeg process sending live MPEG-TS to 127.0.0.1:``port`` at real-time pace,
    a keyframe every ``keyint`` frames."""
    return subprocess.Popen(
        [FFMPEG, "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
         "-g", str(keyint), "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    )  # fmt: skip


def http_file_server(folder: Path) -> tuple[str, subprocess.Popen]:
    """``python -m http.server`` serving ``folder`` on 127.0.0.1 in a separate process.
    Returns (base URL, process); kill it when done."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"http://127.0.0.1:{port}", server


def retry_until_open(open_fn, error: type[Exception], timeout: float = 10.0):
    """Call ``open_fn`` until it stops raising ``error``: a test server needs a moment to listen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_fn()
        except error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
