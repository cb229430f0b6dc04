"""What every source shares: the error type, its description and its counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from stream.frame import Frame


class SourceError(RuntimeError):
    """A source could not be opened or read. The message is one line meant for the user."""


class SourceTimeout(SourceError):
    """Nothing arrived within the open time-out: a live sender that has not started (yet).
    Live readers keep waiting for it instead of failing the session (stream.sources.network)."""


@dataclass
class SourceInfo:
    name: str  # what the user passed (path, URL, device)
    kind: str  # file | capture | network | folder | synthetic
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None  # when the container knows it
    codec: str | None = None
    pix_fmt: str | None = None
    live: bool = False  # frames arrive on their own clock; the reader keeps only the newest


class Source:
    """An iterable of Frames with counters.

    ``counters`` keys: ``frames`` (yielded), ``dropped`` (overwritten before anyone read
    them), ``decode_errors``, ``reconnects``. ``problems`` collects one-line descriptions of
    non-fatal trouble (corrupt packets, a truncated file) for the run's report.
    """

    info: SourceInfo

    def __init__(self, info: SourceInfo):
        self.info = info
        self.counters: Counter = Counter()
        self.problems: list[str] = []

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def note(self, problem: str) -> None:
        # Keep the report short: a flood of identical decoder complaints says nothing new.
        if len(self.problems) < 20 and problem not in self.problems[-1:]:
            self.problems.append(problem)

    def __repr__(self) -> str:
        i = self.info
        return f"{type(self).__name__}({i.name!r}, {i.width}x{i.height}@{i.fps}, live={i.live})"
