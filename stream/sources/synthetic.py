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
    """The generator's own VideoConfig with ``params`` applied (unknown keys are an error)."""
    cls = _video_module().VideoConfig
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise SourceError(f"unknown synthetic video option(s) {unknown}; valid: {sorted(names)}")
    return cls(**params)


class SyntheticSource(Source):
    """Frames from ``pagkd_core.synth.video.iter_procedure_frames``; ``meta['truth']`` holds
    the generator's per-frame ground truth, so evaluation can use it directly."""

    def __init__(self, *, live: bool = False, **params):
        self.cfg = make_video_config(**params)
        fps, seconds = float(self.cfg.fps), float(self.cfg.seconds)
        super().__init__(
            SourceInfo(
                name="synthetic",
                kind="synthetic",
                width=self.cfg.width,
                height=self.cfg.height,
                fps=fps,
                frames=round(seconds * fps) or None,
                live=live,
            )
        )

    def frames(self) -> Iterator[Frame]:
        gen = _video_module().iter_procedure_frames(self.cfg)
        t0, fps = time.monotonic(), self.info.fps
        for i, (rgb, truth) in enumerate(gen):
            if self.info.live:  # paced to the generator's clock (also when a LatestFrameReader reads it)
                time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
            self.counters["frames"] += 1
            yield Frame(i, float(truth["pts"]), time.monotonic(), rgb, meta={"truth": truth})


def open_synthetic(*, live: bool = False, **params) -> Source:
    src = SyntheticSource(live=live, **params)
    return LatestFrameReader(src) if live else src
