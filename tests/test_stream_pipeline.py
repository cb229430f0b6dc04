"""The pipeline end to end on real media: replay, live UDP, reconnects, damage, size changes,
several streams on one engine, preprocessing, crash-safe recording."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from stream_media import (
    FFMPEG,
    free_udp_port,
    http_test_stream,
    retry_until_open,
    scope_frame,
    udp_sender,
    write_video,
)

from stream.alerts import AlertConfig
from stream.frame import Frame
from stream.pipeline import Pipeline, PipelineConfig
from stream.preprocess import Preprocessor
from stream.sinks import read_predictions
from stream.smoothing import SmoothingConfig
from stream.sources import SourceError

W, H = 160, 128
KEYS = {"frame", "pts", "probs", "smoothed", "state", "alert", "latency_ms"}


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A small randomly initialised student exported the standard way (safetensors + JSON)."""
    from pagkd_core.export import export_student
    from pagkd_core.models import build_model

    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("model") / "tiny"
    export_student(
        build_model("resnet10t", 2, embed_dim=16),
        stem,
        class_names=["hyperplastic", "adenoma"],
        input_size=64,
        onnx=False,
    )
    return stem.with_suffix(".json")


@pytest.fixture(scope="module")
def engine(student):
    from stream.engines import build_engine

    # One intra-op thread: on a shared 2-core machine OpenMP spinning makes 2 threads ~20x slower.
    threads = torch.get_num_threads()
    yield build_engine("torch", student, device="cpu", max_batch=4, threads=1)
    torch.set_num_threads(threads)


class SlowEngine:
    """The real engine plus a fixed delay per call: a model too slow for the frame rate."""

    def __init__(self, engine, delay: float):
        self._engine, self.delay = engine, delay

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def infer(self, batch):
        time.sleep(self.delay)
        return self._engine.infer(batch)


def run(engine, tmp_path, *sources, **cfg) -> tuple[Pipeline, dict, list[dict]]:
    cfg.setdefault("predictions", str(tmp_path / "pred.jsonl"))
    pipe = Pipeline(PipelineConfig(**cfg), engine=engine)
    for s in sources:
        pipe.add_stream(str(s))
    summary = pipe.run(timeout=60)
    return pipe, summary, read_predictions(cfg["predictions"])


# -- replay ----------------------------------------------------------------------------------
def test_replay_analyses_every_frame_in_order(engine, tmp_path):
    path = write_video(tmp_path / "a.mp4", n=40, w=W, h=H)
    pipe, summary, recs = run(engine, tmp_path, path, batch=4, smoothing=SmoothingConfig("ema", {"alpha": 0.5}))
    assert summary["frames"] == 40 and not pipe.errors()
    assert [r["frame"] for r in recs] == list(range(40))
    r = recs[7]
    assert KEYS <= set(r)
    assert abs(sum(r["probs"]) - 1) < 1e-4 and abs(sum(r["smoothed"]) - 1) < 1e-4
    assert r["state"] in ("hyperplastic", "adenoma", "uncertain", "no call")
    assert r["latency_ms"] > 0 and r["pts"] == pytest.approx(7 / 30, abs=1e-3)
    # The logged probabilities are the engine's on the preprocessed frame.
    pre = Preprocessor(engine.input_size, engine.source.meta["mean"], engine.source.meta["std"])
    frames = [Frame(i, i / 30, 0.0, picture=f) for i, f in enumerate(av.open(str(path)).decode(video=0))]
    # One frame at a time through the preprocessor, like the ingest thread (same content-area timeline).
    z = engine.infer(np.stack([pre(f) for f in frames]))
    ref = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose([r["probs"] for r in recs], ref, atol=1e-4)
    # Every stage was timed.
    assert {"source", "preprocess", "queue", "infer", "post", "total"} <= set(summary["latency_ms"])
    assert summary["batches"]["mean_batch"] > 1  # replay fills batches


def test_replay_without_sinks_never_converts_whole_frames(engine, tmp_path, monkeypatch):
    import stream.frame

    full_size = []  # full-size RGB conversions (thumbnails for content-area detection are small)
    reformat = stream.frame._reformat

    def counting(picture, width, height, fmt, interpolation):
        full_size.append(width is None)
        return reformat(picture, width, height, fmt, interpolation)

    monkeypatch.setattr(stream.frame, "_reformat", counting)
    path = write_video(tmp_path / "a.mp4", n=20, w=W, h=H)
    _, summary, _ = run(engine, tmp_path, path)
    assert summary["frames"] == 20 and full_size and not any(full_size)
    _, summary, _ = run(engine, tmp_path, path, record=str(tmp_path / "rec.mp4"))
    assert sum(full_size) == 20  # a recording needs them: one conversion per frame


def test_stream_id_reaches_the_frames_of_a_wrapped_source(engine, tmp_path):
    from stream.sources import LatestFrameReader, Source, SourceInfo

    class Pushed(Source):
        """Frames made before the pipeline named the stream (like pictures pushed from a browser)."""

        def __init__(self):
            super().__init__(SourceInfo("pushed", "browser", fps=30.0))
            self._frames = [Frame(i, i / 30, time.monotonic(), scope_frame(i, W, H)) for i in range(6)]

        def frames(self):
            yield from self._frames

    seen = []
    pipe = Pipeline(PipelineConfig(batch=2, predictions=str(tmp_path / "p.jsonl")), engine=engine,
                    on_result=lambda r: seen.append(r.frame.stream_id))  # fmt: skip
    pipe.add_stream(Pushed(), stream_id="scope")
    pipe.add_stream(LatestFrameReader(Pushed()), stream_id="live")
    pipe.run(timeout=60)
    assert seen and set(seen) == {"scope", "live"} and not pipe.errors()
    assert set(pipe.pre.trackers) == {"scope", "live"}
    assert {r["stream"] for r in read_predictions(str(tmp_path / "p.jsonl"))} == {"scope", "live"}


def test_two_streams_share_one_engine(engine, tmp_path):
    a = write_video(tmp_path / "a.mp4", n=30, w=W, h=H)
    b = write_video(tmp_path / "b.mkv", n=20, w=200, h=150, field="octagon")
    _, summary, recs = run(engine, tmp_path, a, b, batch=4)
    per = {s: [r["frame"] for r in recs if r["stream"] == s] for s in ("0", "1")}
    assert per == {"0": list(range(30)), "1": list(range(20))}
    assert summary["streams"]["1"]["analysed"] == 20
    assert max(summary["batches"]["batch_sizes"]) > 1


def test_frame_size_change_mid_stream(engine, tmp_path):
    # Two MPEG-TS segments of different sizes, concatenated as a broadcast would switch.
    a = write_video(tmp_path / "a.ts", n=15, w=W, h=H)
    b = write_video(tmp_path / "b.ts", n=15, w=320, h=240, field="octagon")
    both = tmp_path / "both.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    pipe, _, recs = run(engine, tmp_path, both, record=str(tmp_path / "rec.mp4"))
    assert len(recs) >= 28 and not any("Error" in (e or "") for e in pipe.errors())
    tracker = pipe.pre.trackers["0"]
    assert tracker.changes >= 2 and tracker.area.box[2] > W  # re-detected on the larger frames
    with av.open(str(tmp_path / "rec.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(recs)


def test_corrupt_file_logs_frames_before_the_damage(engine, tmp_path):
    path = write_video(tmp_path / "c.mp4", n=60, w=W, h=H)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    pipe, _, recs = run(engine, tmp_path, bad)
    assert len(recs) >= 20 and [r["frame"] for r in recs] == list(range(len(recs)))
    # The decoder stepped over the damage and went on: a warning (exit 0), not an error (exit 3).
    warnings = pipe.warnings()
    assert pipe.errors() == [] and warnings and "bad.mp4" in warnings[0] and "\n" not in warnings[0]


def test_pause_and_change_parameters_while_running(engine, tmp_path):
    path = write_video(tmp_path / "a.mp4", n=60, w=W, h=H)
    seen = []
    pipe = Pipeline(
        PipelineConfig(batch=2, smoothing=SmoothingConfig("ema", {"alpha": 0.5})), engine=engine,
        on_result=lambda r: seen.append(r),
    )
    pipe.add_stream(str(path))
    pipe.pause()
    pipe.start()
    time.sleep(0.5)
    assert len(seen) <= 4  # frames already taken may finish; nothing new starts
    pipe.configure(smoothing=SmoothingConfig("hmm", {"stay": 0.95}), alerts=AlertConfig(threshold=0.9, min_frames=2))
    pipe.resume()
    assert pipe.wait(30)
    summary = pipe.stop()
    assert summary["frames"] == 60 and len(seen) == 60
    st = pipe.streams["0"]
    assert type(st.smoother).__name__ == "HMMFilter" and st.alerts.cfg.threshold == 0.9


# -- live ------------------------------------------------------------------------------------
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)"
)


@needs_ffmpeg
def test_live_udp_slow_engine_drops_frames_and_keeps_latency_bounded(engine, tmp_path):
    port = free_udp_port()
    sender = udp_sender(port, 5)
    try:
        pipe = Pipeline(
            PipelineConfig(
                batch=1,
                predictions=str(tmp_path / "p.jsonl"),
                record=str(tmp_path / "annotated.ts"),
                # testsrc2's grey-balanced colour bars read as NBI (stream.modality) and would
                # never reach the slow engine this test is about
                detect_modality=False,
            ),
            engine=SlowEngine(engine, 0.07),
        )  # ~12 fps capacity for a 30 fps feed
        pipe.add_stream(f"udp://127.0.0.1:{port}")
        pipe.start()
        time.sleep(4.0)
        summary = pipe.stop()
    finally:
        sender.kill()
        sender.wait()
    recs = read_predictions(tmp_path / "p.jsonl")
    s = summary["streams"]["0"]
    assert s["live"] and len(recs) >= 15
    assert s["dropped"] > 10  # the reader skipped what the engine could not take
    # Bounded queue: at no moment were more logged frames between arrival and result than the
    # stream's in-flight slots (2 for a live stream) plus the newest one waiting in the reader,
    # whatever the machine's speed. Latency cannot trend upward without a queue that grows, and
    # this one cannot grow.
    depth = queue_depths(recs)
    assert depth.max() <= 3, depth.max()
    # The annotated video passed through every arriving frame, not only the analysed ones,
    # and drawing on it costs milliseconds, not an inference.
    with av.open(str(tmp_path / "annotated.ts")) as c:
        recorded = sum(1 for _ in c.decode(video=0))
    assert recorded >= s["analysed"] + s["dropped"] - s["record_dropped"] - 3


def queue_depths(recs: list[dict]) -> np.ndarray:
    """Per logged frame: how many logged frames (itself included) were between arrival and result
    when it arrived, from each record's arrival (``wall``) and ``latency_ms``. Counts, not times."""
    start = np.array([r["wall"] for r in recs])
    end = start + np.array([r["latency_ms"] for r in recs]) / 1e3
    return np.array([int(((start <= t) & (end > t)).sum()) for t in start])


@needs_ffmpeg
def test_live_stream_killed_and_restarted_reconnects(engine, tmp_path):
    port = free_udp_port()
    sender = udp_sender(port, 2)
    pipe = Pipeline(PipelineConfig(batch=2, predictions=str(tmp_path / "p.jsonl")), engine=engine)
    pipe.add_stream(f"udp://127.0.0.1:{port}")
    pipe.start()
    try:
        time.sleep(1.5)
        sender.kill()  # the sender dies mid-stream
        sender.wait()
        before = pipe.summary()["frames"]
        time.sleep(3.0)  # silent longer than the read timeout: the reader must reconnect
        sender = udp_sender(port, 2)
        time.sleep(3.5)
        summary = pipe.stop()
    finally:
        sender.kill()
        sender.wait()
    s = summary["streams"]["0"]
    assert before > 5 and summary["frames"] > before + 10, (before, summary["frames"])
    assert s["reconnects"] >= 1 and s["error"] is None and s["gaps"] >= 1
    assert pipe.errors() == [] and any("outage" in w for w in pipe.warnings())
    recs = read_predictions(tmp_path / "p.jsonl")
    assert all(b["frame"] > a["frame"] and b["pts"] > a["pts"] for a, b in itertools.pairwise(recs))
    assert all(b["wall"] > a["wall"] for a, b in itertools.pairwise(recs))
    # The outage is in the log as a gap record, and in pts as the time it lasted, not as one frame.
    lines = read_predictions(tmp_path / "p.jsonl", gaps=True)
    gaps = [(i, r) for i, r in enumerate(lines) if r.get("gap")]
    assert gaps and gaps[0][1]["reason"] == "reconnect" and gaps[0][1]["reconnects"] >= 1
    i, gap = gaps[0]
    prev, nxt = lines[i - 1], lines[i + 1]
    assert prev["frame"] <= gap["after_frame"] < gap["next_frame"] <= nxt["frame"]
    # The sender was silent for 3 s (a lower bound: a loaded machine only makes it longer).
    assert gap["seconds"] >= 2.0 and gap["to_wall"] - gap["from_wall"] == pytest.approx(gap["seconds"], abs=0.01)
    assert nxt["pts"] - prev["pts"] >= gap["seconds"] - 1e-3 and nxt["wall"] >= gap["to_wall"] - 1e-3


# -- recording -------------------------------------------------------------------------------
# Run with the tests folder on PYTHONPATH (as pytest puts it on sys.path) for stream_media.
_WRITER = """
import time
from stream_media import scope_frame
from stream.frame import Frame
from stream.sinks import Recorder
rec = Recorder({path!r}, fps=30, keyframe_s=0.5)
for i in range(100000):
    rec.write(Frame(i, i / 30, time.monotonic(), scope_frame(i, 320, 240)))
    print(i, flush=True)
    time.sleep(1 / 60)
"""


def _with_tests_on_path() -> str:
    return os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_recording_survives_sigkill(tmp_path, suffix):
    path = tmp_path / f"rec{suffix}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER.format(path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": _with_tests_on_path()},
    )
    written = -1
    t0 = time.monotonic()
    for line in proc.stdout:
        written = int(line)
        if written >= 90 or time.monotonic() - t0 > 60:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with av.open(str(path)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    # Lost: at most the last fragment (0.5 s = 15 frames) plus the encoder queue (8).
    assert written - 15 - 8 - 2 <= decoded <= written + 1, (written, decoded)


def test_replay_recording_is_lossless_and_live_recording_never_blocks(tmp_path):
    from stream.sinks import Recorder

    frames = [Frame(i, i / 30, 0.0, scope_frame(i, 320, 240)) for i in range(40)]
    counts = {}
    for lossless in (True, False):
        path = tmp_path / f"rec_{lossless}.mp4"
        rec = Recorder(path, fps=30, queue_size=1, lossless=lossless)  # a queue that fills at once
        for f in frames:
            rec.write(f)
        rec.close()
        with av.open(str(path)) as c:
            counts[lossless] = (sum(1 for _ in c.decode(video=0)), rec.dropped)
    assert counts[True] == (40, 0)
    decoded, dropped = counts[False]
    assert dropped > 0 and decoded + dropped == 40


@needs_ffmpeg
def test_live_input_gone_for_good_ends_with_a_clear_error(engine, tmp_path):
    url, sender = http_test_stream(1.5)
    try:
        pipe = Pipeline(PipelineConfig(batch=1), engine=engine)
        retry_until_open(lambda: pipe.add_stream(url, give_up_after=1.0), SourceError)
        pipe.start()
        ended = pipe.wait(120)  # ends by itself: the sender is gone and reconnects fail (a hang guard)
        summary = pipe.stop()
    finally:
        sender.kill()
        sender.wait()
    assert ended and summary["frames"] > 5
    errors = pipe.errors()
    assert errors and "no frames for 1 s" in errors[0] and summary["streams"]["0"]["reconnects"] >= 1


def test_replay_display_callback_gets_each_frame_annotated(engine, tmp_path):
    path = write_video(tmp_path / "a.mp4", n=12, w=W, h=H)
    shown = []
    pipe = Pipeline(
        PipelineConfig(batch=4, record=str(tmp_path / "rec.mp4")),
        engine=engine,
        on_display=lambda f, rgb: shown.append((f.index, rgb, f.rgb)),
    )
    pipe.add_stream(str(path))
    pipe.add_stream(str(path))  # a second stream records next to the first
    pipe.run(timeout=60)
    assert sorted(i for i, _, _ in shown) == sorted(list(range(12)) * 2)
    _, annotated, raw = shown[0]
    assert annotated.shape == raw.shape and not np.array_equal(annotated, raw)  # overlay drawn on a copy
    assert (tmp_path / "rec.mp4").is_file() and (tmp_path / "rec.1.mp4").is_file()


def test_in_order_releases_in_submission_order_and_keeps_no_frame_alive():
    """Frames finished out of order are released in order; once released, nothing of InOrder's
    holds them (no reference cycle: they go with their last reference, no garbage collection)."""
    import gc
    import weakref
    from concurrent.futures import Future

    from stream.routing import InOrder

    class Payload:  # stands in for a frame and its picture
        pass

    released, payloads = [], []
    order = InOrder(lambda fut: released.append(fut.result()))
    futures = [Future() for _ in range(4)]
    for f in futures:
        order.add(f)
    del f
    gc.disable()
    try:
        for i in (2, 0, 3, 1):  # finishing order
            p = Payload()
            payloads.append(weakref.ref(p))
            futures[i].set_result((i, p))
            del p
        assert [i for i, _ in released] == [0, 1, 2, 3]
        released.clear()
        futures.clear()
        assert all(ref() is None for ref in payloads), "a released frame is still referenced"
    finally:
        gc.enable()
