"""Real-time runtime for live endoscopy video: sources, preprocessing, engines, smoothing, sinks.

    from stream import Pipeline, PipelineConfig, open_source
    pipe = Pipeline(PipelineConfig(model="student.json"))
    pipe.add_stream("clip.mp4")
    summary = pipe.run()

Heavy modules (torch, PyAV) load on first use, so ``import stream`` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Frame": "stream.frame",
    "open_source": "stream.sources",
    "SourceError": "stream.sources",
    "Pipeline": "stream.pipeline",
    "Result": "stream.result",
    "PipelineConfig": "stream.config",
    "SmoothingConfig": "stream.smoothing",
    "AlertConfig": "stream.alerts",
    "Preprocessor": "stream.preprocess",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stream' has no attribute {name!r}")
