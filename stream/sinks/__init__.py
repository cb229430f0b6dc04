"""Sinks: annotated overlay, crash-safe recording, per-frame prediction log, latency statistics."""

from stream.sinks.overlay import Annotation, PassThroughOverlay, draw_overlay
from stream.sinks.predictions import PredictionLog, read_predictions
from stream.sinks.record import Recorder
from stream.sinks.stats import LatencyStats

__all__ = [
    "Annotation",
    "LatencyStats",
    "PassThroughOverlay",
    "PredictionLog",
    "Recorder",
    "draw_overlay",
    "read_predictions",
]
