"""Live network input on 127.0.0.1 from separate processes: the first keyframe is kept, a feed
without a picture says so, a sender that starts late is waited for, outages become gaps."""

from __future__ import annotations

import threading

import pytest
from stream_media import FFMPEG, ffmpeg_video, free_udp_port, http_file_server, retry_until_open, udp_sender

from stream.sources import SourceError, open_source
from stream.sources.network import open_network

needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")

# Hang guards only (a broken reader would otherwise wait forever); nothing is asserted on them.
HANG_GUARD_S = 120


def _first_session_frames(src, wanted: int) -> list:
    """Frames the reader saw (every one, through a tap) before its first reconnect."""
    seen, done = [], threading.Event()

    def tap(f):
        if src.counters["reconnects"] == 0:
            seen.append(f)
        if src.counters["reconnects"] or len(seen) >= wanted:
            done.set()

    src.taps.append(tap)
    src.start()
    done.wait(HANG_GUARD_S)
    src.close()
    return seen


@needs_ffmpeg
def test_http_feed_whose_only_keyframe_is_in_its_first_second(tmp_path):
    # x264's default keyframe interval (250): frame 0 is the only keyframe of these 3 s. With
    # fflags=nobuffer the packets read while probing (frame 0 among them) were thrown away.
    ffmpeg_video(tmp_path / "good.ts", ["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"], n=90)
    base, server = http_file_server(tmp_path)
    try:
        src = retry_until_open(lambda: open_source(f"{base}/good.ts"), SourceError)
        frames = _first_session_frames(src, 90)
    finally:
        server.kill()
        server.wait()
    assert len(frames) == 90, len(frames)
    assert [f.index for f in frames] == list(range(90))
    assert not any("no picture" in p for p in src.problems)


@needs_ffmpeg
def test_feed_without_a_decodable_picture_says_so(tmp_path):
    # The same feed opened with nobuffer loses its one keyframe: the reader must say so instead
    # of reconnecting in silence at 0 fps.
    ffmpeg_video(tmp_path / "good.ts", ["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"], n=90)
    base, server = http_file_server(tmp_path)
    try:
        src = retry_until_open(
            lambda: open_network(f"{base}/good.ts", options={"fflags": "nobuffer"}), SourceError
        )
        src.start()
        for _ in range(HANG_GUARD_S * 10):
            if src.counters["reconnects"] >= 1:
                break
            src._stop.wait(0.1)
        src.close()
    finally:
        server.kill()
        server.wait()
    assert any("no picture could be decoded" in p and "keyframe" in p for p in src.problems), src.problems


@needs_ffmpeg
def test_udp_source_waits_for_a_sender_that_starts_late():
    port = free_udp_port()
    # Nothing is sending yet: before, this failed with "Immediate exit requested" and no retry.
    src = open_network(f"udp://127.0.0.1:{port}", open_timeout=1.0, give_up_after=HANG_GUARD_S)
    assert src.info.live and any("is the sender running" in p for p in src.problems)
    sender = udp_sender(port, 30)
    try:
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 10:
                break
        src.close()
    finally:
        sender.kill()
        sender.wait()
    assert len(frames) == 10 and src.info.width == 320 and src.info.height == 240
    assert src.counters["reconnects"] >= 1
