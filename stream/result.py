"""What the pipeline produces per analysed frame, and its line in the prediction log."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.alerts import AlertState
from stream.frame import Frame


@dataclass
class Result:
    frame: Frame
    probs: np.ndarray | None  # raw softmax over the student's classes, (K,); None: no model read the frame
    smoothed: np.ndarray | None
    state: AlertState
    latency_ms: float  # frame arrival -> result
    batch_size: int
    annotated: np.ndarray | None = None  # set in replay mode when annotation is on
    modality: str = "WLI"  # as detected (stream.modality)
    model: str | None = "student"  # which model read it: student | nbi_teacher | None (stream.lanes)
    view_probs: dict[str, np.ndarray] | None = None  # a student reading several views: each view's softmax

    def record(self, class_names) -> dict:
        """The prediction-log line of this frame (``probs``/``smoothed`` null when no model read it)."""
        f = self.frame
        return {
            "stream": f.stream_id,
            "frame": f.index,
            "pts": None if f.pts is None else round(f.pts, 6),
            "probs": _rounded(self.probs),
            "smoothed": _rounded(self.smoothed),
            "state": self.state.state,
            "alert": bool(self.state.alert),
            "confidence": round(float(self.state.confidence), 6),
            "classes": list(class_names),
            "latency_ms": round(self.latency_ms, 3),
            "batch": self.batch_size,
            "modality": self.modality,
            "model": self.model,
            **({"view_probs": {v: _rounded(p) for v, p in self.view_probs.items()}} if self.view_probs else {}),
        }


def _rounded(p) -> list[float] | None:
    return None if p is None else [round(float(v), 6) for v in p]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()
