"""The unit of data every stage passes along: one decoded picture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """One decoded picture.

    ``arrival`` is ``time.monotonic()`` when the picture left the decoder (or the
    capture thread for live sources); every latency figure is measured from it.
    ``pts`` is the presentation time in seconds from the stream's start (None when
    the container gives none). ``meta`` carries optional side data, e.g. the
    synthetic generator's ground truth.
    """

    index: int
    pts: float | None
    arrival: float
    rgb: np.ndarray  # HxWx3 uint8, RGB order
    stream_id: str = "0"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])
