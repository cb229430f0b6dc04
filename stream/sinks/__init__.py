"""Sinks: every output of the pipeline takes results (``Sink``): the annotated overlay, crash-safe
recording, the per-frame prediction log, callbacks. Latency statistics live here too."""

from stream.sinks.base import Callback, Sink, VideoSink
from stream.sinks.overlay import Annotation, Overlay, draw_overlay
from stream.sinks.predictions import PredictionLog, read_predictions
from stream.sinks.record import RawVideo, Recorder
from stream.sinks.stats import LatencyStats

__all__ = [
    "Annotation",
    "Callback",
    "LatencyStats",
    "Overlay",
    "PredictionLog",
    "RawVideo",
    "Recorder",
    "Sink",
    "VideoSink",
    "draw_overlay",
    "read_predictions",
]
