"""The synthetic procedure generator as a source (all its data is synthetic)."""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Iterator

from stream.frame import Frame
from stream.sources.base import Source, SourceError, SourceInfo
from stream.sources.live import LatestFrameReader


def _video_module():
    try:
        return importlib.import_module("pagkd_core.synth.video")
    except ImportError as e:
        raise SourceError(f"synthetic source unavailable: {e}") from None


def make_video_config(**params):
    """The generator's own config dataclass with ``params`` applied (unknown keys are an error)."""
    mod = _video_module()
    cls = next((getattr(mod, n) for n in ("VideoConfig", "ProcedureConfig") if hasattr(mod, n)), None)
    if cls is None:
        return dict(params)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise SourceError(f"unknown synthetic video option(s) {unknown}; valid: {sorted(names)}")
    return cls(**params)


class SyntheticSource(Source):
    """Frames from ``pagkd_core.synth.video.iter_procedure_frames``; ``meta['truth']`` holds
    the generator's per-frame ground truth, so evaluation can use it directly."""

    def __init__(self, *, pace: bool = False, stream_id: str = "0", **params):
        self.cfg = make_video_config(**params)
        get = self.cfg.get if isinstance(self.cfg, dict) else (lambda k, d=None: getattr(self.cfg, k, d))
        fps, seconds = float(get("fps", 30.0) or 30.0), float(get("seconds", 0) or 0)
        super().__init__(
            SourceInfo(
                name="synthetic",
                kind="synthetic",
                width=get("width"),
                height=get("height"),
                fps=fps,
                frames=round(seconds * fps) or None,
            ),
            stream_id,
        )
        self.pace = pace

    def frames(self) -> Iterator[Frame]:
        gen = _video_module().iter_procedure_frames(self.cfg)
        t0, fps = time.monotonic(), self.info.fps
        for i, (rgb, truth) in enumerate(gen):
            if self.pace:
                time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            self.counters["frames"] += 1
            pts = float(truth.get("pts", i / fps)) if isinstance(truth, dict) else i / fps
            yield Frame(i, pts, time.monotonic(), rgb, self.stream_id, {"truth": truth})


def open_synthetic(*, realtime: bool = False, stream_id: str = "0", **params) -> Source:
    src = SyntheticSource(pace=realtime, stream_id=stream_id, **params)
    return LatestFrameReader(src) if realtime else src
