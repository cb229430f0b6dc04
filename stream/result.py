"""What the pipeline produces per analysed frame, and its line in the prediction log."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.alerts import AlertState
from stream.frame import Frame


@dataclass
class Result:
    frame: Frame
    probs: np.ndarray  # raw softmax, (K,)
    smoothed: np.ndarray
    state: AlertState
    latency_ms: float  # frame arrival -> result
    batch_size: int
    annotated: np.ndarray | None = None  # set in replay mode when annotation is on

    def record(self, class_names) -> dict:
        """The prediction-log line of this frame."""
        f = self.frame
        return {
            "stream": f.stream_id,
            "frame": f.index,
            "pts": None if f.pts is None else round(f.pts, 6),
            "probs": [round(float(p), 6) for p in self.probs],
            "smoothed": [round(float(p), 6) for p in self.smoothed],
            "state": self.state.state,
            "alert": bool(self.state.alert),
            "confidence": round(float(self.state.confidence), 6),
            "classes": list(class_names),
            "latency_ms": round(self.latency_ms, 3),
            "batch": self.batch_size,
        }


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()
