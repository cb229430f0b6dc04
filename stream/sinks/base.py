"""What every output of the pipeline is: a sink that takes results, and, for the video outputs
of a live stream, every incoming frame as well."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stream.frame import Frame
    from stream.result import Result
    from stream.sinks.record import Recorder


class Sink(Protocol):
    """Gets every result of the streams it serves, each stream's in frame order, on the
    pipeline's post thread; it must not block for long (an encoder runs in its own thread).

    A sink that keeps a record of a live input's outages also has ``gap(stream_id, gap)``
    (``gap``: stream.sources.live's ``meta['gap']``), called in the same order just before the
    result of the first frame after the outage, or on its own when that frame was skipped
    (paused): an outage is never lost with a frame that was not analysed."""

    def write(self, result: Result) -> None: ...

    def close(self) -> None: ...


class VideoSink(Sink, Protocol):
    """A sink of one stream's pictures. For a live stream ``tap`` gets every frame the moment
    it arrives, in the source's reader thread, also the frames analysis skips; ``write`` then
    only learns the newest result. For a replay ``write`` does the work, frame by frame."""

    recorder: Recorder | None  # the video file it writes, if any (its drops and errors are reported)

    def tap(self, frame: Frame) -> None: ...


class Callback:
    """A function of one result as a sink (progress bars, the UI's timeline, tests);
    ``on_gap(stream_id, gap)``, if given, is told of each outage (see ``Sink``)."""

    def __init__(self, fn: Callable[[Result], None], on_gap: Callable[[str, dict], None] | None = None):
        self.fn, self.on_gap = fn, on_gap

    def write(self, result: Result) -> None:
        self.fn(result)

    def gap(self, stream_id: str, gap: dict) -> None:
        if self.on_gap is not None:
            self.on_gap(stream_id, gap)

    def close(self) -> None:
        pass
