"""A paused live view skips frames, never the record of an outage (issue 16, item 9).

The live input here is fed frame by frame by the test and reconnects once, so the outage falls
exactly while the UI is paused; waits are for events, with a generous deadline, never timed.
"""

from __future__ import annotations

import queue
import time

import pytest
import torch
from stream_media import scope_frame

from stream.config import PipelineConfig, bundled_model
from stream.frame import Frame
from stream.sinks import read_predictions
from stream.sources import LatestFrameReader, Source, SourceError, SourceInfo
from stream.ui import runner as runner_mod
from stream.ui.controls import Controls
from stream.ui.live import FrameHub


class Fed(Source):
    """One connection to a live sender: the frames the test puts in; None ends it (sender gone)."""

    def __init__(self):
        super().__init__(SourceInfo("fed://cam", "network", width=96, height=80, fps=30.0, live=True))
        self.q: queue.Queue = queue.Queue()
        self.sent = 0

    def send(self, n: int = 1) -> None:
        for _ in range(n):
            self.q.put(Frame(self.sent, self.sent / 30, time.monotonic(), scope_frame(self.sent, 96, 80)))
            self.sent += 1

    def frames(self):
        while (f := self.q.get()) is not None:
            yield f


def wait_for(cond, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def engine():
    from stream.engines import build_engine

    threads = torch.get_num_threads()
    yield build_engine("torch", bundled_model(), device="cpu", max_batch=1, threads=1)
    torch.set_num_threads(threads)


def test_outage_while_paused_reaches_the_log_and_the_timeline(engine, tmp_path, monkeypatch):
    torch.manual_seed(0)
    first, second = Fed(), Fed()
    later = [second]

    def reopen() -> Source:
        if later:
            return later.pop()
        raise SourceError("fed://cam: sender gone")

    reader = LatestFrameReader(first, reopen, backoff=0.01)
    monkeypatch.setattr(runner_mod, "PushSource", lambda: reader)  # "webcam" opens the fed input
    log = tmp_path / "p.jsonl"
    base = PipelineConfig(batch=1, max_wait_ms=0.0, live=True, nbi_teacher="none", predictions=str(log))
    ui = runner_mod.LiveRunner(FrameHub(), engine, base, Controls())
    try:
        ui.switch("webcam")
        for n in (1, 2, 3):  # analysed one by one: frames 0-2
            first.send()
            wait_for(lambda n=n: ui.processed == n, f"result {n}")
        ui.set_paused(True)
        first.q.put(None)  # the sender goes away; the reader reconnects ...
        second.send()  # ... and the first frame after the outage arrives while paused
        wait_for(lambda: reader.counters["gaps"] == 1, "the frame after the outage taken (and skipped)")
        # Before the fix the skipped frame took its outage with it: no gap in the log or timeline.
        wait_for(lambda: any(r.get("gap") for r in read_predictions(log, gaps=True)), "the gap record")
        gap = next(r for r in read_predictions(log, gaps=True) if r.get("gap"))
        assert (gap["after_frame"], gap["next_frame"], gap["reason"]) == (2, 3, "reconnect")
        assert gap["reconnects"] == 1 and gap["to_wall"] >= gap["from_wall"]
        # the log and the timeline are told in turn: wait for the second too, not for the first alone
        wait_for(lambda: any(r.get("gap_s") is not None for r in ui.timeline()), "the gap on the timeline")
        marks = [r for r in ui.timeline() if r.get("gap_s") is not None]
        assert len(marks) == 1 and marks[0]["frame"] == 3 and marks[0]["gap_s"] == gap["seconds"]
        assert ui.processed == 3  # paused: the frame itself was not analysed

        ui.set_paused(False)
        second.send()
        wait_for(lambda: ui.processed == 4, "a result after resume")
        lines = read_predictions(log, gaps=True)
        assert [r.get("frame", "gap") for r in lines] == [0, 1, 2, "gap", 4]
        assert len([r for r in ui.timeline() if r.get("gap_s") is not None]) == 1  # recorded once
    finally:
        second.q.put(None)
        ui.close()
