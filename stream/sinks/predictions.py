"""Per-frame prediction log: one JSON object per line, flushed per line (survives a kill)."""

from __future__ import annotations

import json
import os
import threading
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
        self.lines = 0

    def write(self, result: Result) -> None:
        line = json.dumps(result.record(self.class_names), separators=(",", ":"))
        with self._lock:
            if self._f.closed:
                return
            self._f.write(line + "\n")
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Records of a log; a last line cut by a kill is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out
