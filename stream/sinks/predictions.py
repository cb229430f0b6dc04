"""Per-frame prediction log: one JSON object per line, flushed per line (survives a kill).

Each frame's line carries ``wall``: the wall-clock time (Unix seconds) its picture arrived, so
alerts can be matched to procedure time and to other systems' logs. Before the first frame after
an outage (a live input that reconnected or stalled) comes a gap record:

    {"stream": "0", "gap": true, "after_frame": 505, "next_frame": 506, "seconds": 6.2,
     "reason": "reconnect", "reconnects": 3, "from_wall": ..., "to_wall": ...}

Readers of the log tell the two apart by ``"gap"`` (stream.video_eval, the UI's timeline).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.result import Result


class PredictionLog:
    """Sink: each result as its log line (``Result.record``), for every stream of a pipeline."""

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str]):
        self.path = Path(path)
        self.class_names = list(class_names)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Line buffering writes each record as soon as its newline is written.
        self._f = open(self.path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the sink's lifetime, closed by close()
        self._lock = threading.Lock()
        self.lines = 0  # frame records
        self.gaps = 0  # gap records

    def write(self, result: Result) -> None:
        rec = result.record(self.class_names)
        rec["wall"] = round(wall_time(result.frame.arrival), 6)
        if self._line(rec):
            self.lines += 1

    def gap(self, stream_id: str, gap: dict) -> None:
        """An outage: the pipeline calls this before the next frame's line (stream.sinks.base.Sink)."""
        if self._line(gap_record(stream_id, gap)):
            self.gaps += 1

    def _line(self, rec: dict) -> bool:
        with self._lock:
            if self._f.closed:
                return False
            self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            return True

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


def wall_time(monotonic_t: float) -> float:
    """Unix time of a ``time.monotonic()`` reading (frames are stamped on the monotonic clock)."""
    return time.time() - (time.monotonic() - monotonic_t)


def gap_record(stream_id: str, gap: dict) -> dict:
    """The log line of an outage (``gap``: stream.sources.live's ``meta['gap']``)."""
    return {
        "stream": stream_id,
        "gap": True,
        "after_frame": gap["after_frame"],
        "next_frame": gap["next_frame"],
        "seconds": gap["seconds"],
        "reason": gap["reason"],
        "reconnects": gap["reconnects"],
        "from_wall": round(wall_time(gap["since"]), 6),
        "to_wall": round(wall_time(gap["until"]), 6),
    }


def is_gap(rec: dict) -> bool:
    return bool(rec.get("gap"))


def read_predictions(path: str | os.PathLike, gaps: bool = False) -> list[dict]:
    """Frame records of a log (and gap records too with ``gaps``); a last line cut by a kill is
    skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            if gaps or not is_gap(rec):
                out.append(rec)
    return out
