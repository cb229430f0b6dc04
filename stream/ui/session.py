"""Per-browser-session files and the upload gate.

An upload is only ever *decoded* by PyAV (never executed, unpickled or imported): it must
carry a video extension, stay under the size limit, and PyAV must find and decode a video
frame in it. Each browser session gets its own temporary folder, removed when the page
closes (Gradio's unload event) and, for whatever is left, when the server exits.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av

from pagkd_core.filetypes import UPLOAD_VIDEO_EXTENSIONS as VIDEO_EXTS  # an allowlist: the common containers
from stream.sources.rotation import display_rotation, quarter_turns

LABEL_EXTS = (".csv",)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


class UploadError(ValueError):
    """An upload was refused; the message is one line for the page."""


def parse_size(text: str | int) -> int:
    """'500MB' / '2 GiB' / '1024' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"bad size {text!r}: use e.g. 500MB, 2GB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@dataclass
class VideoProbe:
    path: str
    width: int
    height: int
    fps: float | None
    frames: int | None
    codec: str


def check_size(path: str | Path, max_bytes: int) -> int:
    size = os.path.getsize(path)
    if size > max_bytes:
        raise UploadError(
            f"file is {human(size)}, over the {human(max_bytes)} upload limit (see --max-upload)"
        )
    return size


def check_video(path: str | Path, max_bytes: int) -> VideoProbe:
    """Refuse anything that is not a decodable video under the limit; return its description."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTS:
        raise UploadError(f"{path.name}: not a video file; use one of {' '.join(VIDEO_EXTS)}")
    check_size(path, max_bytes)
    try:
        with av.open(str(path), mode="r") as c:
            if not c.streams.video:
                raise UploadError(f"{path.name}: no video stream in the file")
            s = c.streams.video[0]
            first = next(c.decode(s), None)
            if first is None:
                raise UploadError(f"{path.name}: the video stream holds no decodable frame")
            fps = float(s.average_rate) if s.average_rate else None
            w, h = first.width, first.height
            if (quarter_turns(display_rotation(first, s)) or 0) % 2:  # a phone clip is analysed upright
                w, h = h, w
            return VideoProbe(str(path), w, h, fps, s.frames or None, s.codec_context.name)
    except UploadError:
        raise
    except (av.FFmpegError, StopIteration, ValueError, OSError) as e:
        why = getattr(e, "strerror", None) or type(e).__name__  # not str(e): it names the server's path
        raise UploadError(f"{path.name}: not a readable video ({why})") from None


def check_labels(path: str | Path, max_bytes: int) -> Path:
    """A labels file is plain CSV text with a `frame` column; it is only ever parsed as CSV."""
    path = Path(path)
    if path.suffix.lower() not in LABEL_EXTS:
        raise UploadError(f"{path.name}: labels must be a .csv file (columns frame,lesion_visible,...)")
    check_size(path, max_bytes)
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        first_line = head.decode("utf-8").splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        raise UploadError(f"{path.name}: labels must be UTF-8 CSV text with a header row") from None
    if "frame" not in [c.strip() for c in first_line.split(",")]:
        raise UploadError(f"{path.name}: labels CSV needs a 'frame' column (got: {first_line[:80]})")
    return path


def _safe(session: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", session or "anon")[:64]


class SessionFiles:
    """One temporary folder per browser session under a root removed at exit.

    The root doubles as Gradio's file cache (GRADIO_TEMP_DIR, set by the app before the page
    is built): uploads land in it, results written into a session folder are served from
    it without a second copy, and nothing of a session outlives `drop` (page closed).
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="pagkd-ui-", dir=root)).resolve()
        self._dirs: dict[str, Path] = {}
        self._uploads: dict[str, set[Path]] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    def track(self, session: str, upload: str | Path | None) -> None:
        """Remember an upload (still in Gradio's cache) so closing the page deletes it too."""
        if upload:
            with self._lock:
                self._uploads.setdefault(_safe(session), set()).add(Path(upload).resolve())

    def dir(self, session: str) -> Path:
        safe = _safe(session)
        with self._lock:
            d = self._dirs.get(safe)
            if d is None:
                d = self._dirs[safe] = self.root / safe
                d.mkdir(parents=True, exist_ok=True)
            return d

    def adopt(self, session: str, upload: str | Path) -> Path:
        """Move an uploaded file out of Gradio's cache into the session's folder (the page keeps
        naming the cache path, so a second run of the same upload finds it here)."""
        src = Path(upload)
        dst = self.dir(session) / src.name
        if src.is_file():
            shutil.move(str(src), dst)
        elif not dst.is_file():
            raise UploadError(f"{src.name}: the upload is gone (page reloaded?); upload it again")
        return dst

    def drop(self, session: str) -> None:
        safe = _safe(session)
        with self._lock:
            d = self._dirs.pop(safe, None)
            uploads = self._uploads.pop(safe, set())
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)
        for up in uploads:
            # Gradio keeps each upload in its own <hash>/ folder under the root.
            if up.parent != self.root and self.root in up.parents:
                shutil.rmtree(up.parent, ignore_errors=True)

    def close(self) -> None:
        # A handler thread may still be writing (Gradio caches into this root): retry until gone.
        for _ in range(10):
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.root.exists():
                return
            time.sleep(0.2)
