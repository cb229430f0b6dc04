"""A folder of images replayed as a video (sorted by name)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from pagkd_core.filetypes import IMAGE_EXTENSIONS
from stream.frame import Frame
from stream.sources.base import Source, SourceError, SourceInfo
from stream.sources.live import LatestFrameReader


class FolderSource(Source):
    """Images as frames at ``fps`` (timestamps index/fps); live (``live``, or read by a
    LatestFrameReader, which marks the info live) it sleeps to that clock."""

    def __init__(self, folder: str, *, fps: float = 30.0, live: bool = False):
        root = Path(folder)
        self.paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise SourceError(
                f"cannot open folder {folder!r}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it"
            )
        w, h = Image.open(self.paths[0]).size
        super().__init__(
            SourceInfo(name=folder, kind="folder", width=w, height=h, fps=fps, frames=len(self.paths), live=live)
        )

    def frames(self) -> Iterator[Frame]:
        t0 = time.monotonic()
        for i, p in enumerate(self.paths):
            if self.info.live:
                time.sleep(max(0.0, t0 + i / self.info.fps - time.monotonic()))
            try:
                rgb = _read_rgb(p)
            except OSError as e:
                self.counters["decode_errors"] += 1
                self.note(f"skipped unreadable image {p.name}: {e}")
                continue
            self.counters["frames"] += 1
            yield Frame(i, i / self.info.fps, time.monotonic(), rgb, meta={"path": str(p)})


def _read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8. PIL's convert handles palette, 8-bit grey and alpha images, but clips 16-bit
    grey (mode I;16 / I) to 255: every picture all white. Those are scaled down to 8 bits here."""
    with Image.open(path) as img:
        if img.mode.startswith("I"):
            grey = np.asarray(img).astype(np.float32) / 257.0  # 0..65535 -> 0..255
            grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"))


def open_folder(folder: str, *, fps: float = 30.0, live: bool = False) -> Source:
    src = FolderSource(folder, fps=fps, live=live)
    return LatestFrameReader(src) if live else src
