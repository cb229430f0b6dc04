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
                # PIL's convert handles palette, grey, 16-bit and alpha images alike.
                rgb = np.asarray(Image.open(p).convert("RGB"))
            except OSError as e:
                self.counters["decode_errors"] += 1
                self.note(f"skipped unreadable image {p.name}: {e}")
                continue
            self.counters["frames"] += 1
            yield Frame(i, i / self.info.fps, time.monotonic(), rgb, meta={"path": str(p)})


def open_folder(folder: str, *, fps: float = 30.0, live: bool = False) -> Source:
    src = FolderSource(folder, fps=fps, live=live)
    return LatestFrameReader(src) if live else src
