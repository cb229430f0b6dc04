"""The UI's source policy and Host check, and what the live view does when analysis stops."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from stream_media import scope_frame, write_video

from stream.alerts import AlertState
from stream.frame import Frame
from stream.result import Result
from stream.sinks.overlay import Overlay, draw_overlay
from stream.sources import SourceError
from stream.sources.base import Source, SourceInfo
from stream.sources.live import LatestFrameReader
from stream.ui.app import UIConfig, host_check, parse_args
from stream.ui.live import FrameHub
from stream.ui.policy import REFUSED, SourcePolicy, SourceRefused, allowed_hosts


def refusal(policy: SourcePolicy, spec: str) -> str:
    with pytest.raises(SourceRefused) as e:
        policy.check(spec)
    return str(e.value)


def test_default_policy_allows_built_ins_and_devices_only(tmp_path):
    p = SourcePolicy()
    for spec in ("demo", "synthetic", "webcam", "/dev/video0", "/dev/video12"):
        assert p.check(spec) == spec
    (tmp_path / "clip.mp4").write_bytes(b"x")
    refused = [
        "/etc/shadow",  # exists, unreadable
        "/nonexistent/x.mp4",  # does not exist
        str(tmp_path / "clip.mp4"),  # exists, readable
        str(tmp_path),  # an image folder
        "http://127.0.0.1:8080/internal",
        "tcp://127.0.0.1:9977?listen=1",
        "synthetic:width=100000",
        "/dev/video0/../../etc/passwd",
    ]
    # One answer for all: the box tells nothing about which paths exist.
    assert {refusal(p, s) for s in refused} == {REFUSED}


def test_allow_dir_and_patterns(tmp_path):
    allowed, other = tmp_path / "videos", tmp_path / "private"
    allowed.mkdir()
    other.mkdir()
    (other / "secret.mp4").write_bytes(b"x")
    os.symlink(other / "secret.mp4", allowed / "link.mp4")
    p = SourcePolicy(["udp://127.0.0.1:*"], [str(allowed)], exact=["rtsp://scope/main"])
    assert p.allows(str(allowed / "a.mp4")) and p.allows(str(allowed / "sub" / "b.mp4"))
    assert p.allows("udp://127.0.0.1:5000") and p.allows("rtsp://scope/main")
    for spec in (str(allowed / ".." / "private" / "secret.mp4"), str(allowed / "link.mp4"),
                 str(tmp_path / "videos2" / "x.mp4"), "udp://10.0.0.1:5000", "rtsp://scope/other"):
        assert refusal(p, spec) == REFUSED, spec


def test_allow_flags_are_repeatable_and_fill_the_choices():
    cfg = parse_args(["--allow-source", "udp://127.0.0.1:*", "--allow-source", "rtsp://cam/live",
                      "--allow-dir", "/data/videos", "--allowed-host", "endo.local"])
    assert cfg.allow_source == ["udp://127.0.0.1:*", "rtsp://cam/live"]
    assert cfg.allow_dir == ["/data/videos"] and cfg.allowed_host == ["endo.local"]
    assert UIConfig().allow_source == []


def test_views_option_is_checked_at_start_up(capsys):
    assert parse_args([]).views == "auto" and parse_args(["--views", "whole"]).views == "whole"
    with pytest.raises(SystemExit):
        parse_args(["--views", "centre"])
    assert "views" in capsys.readouterr().err


def test_allowed_hosts():
    assert set(allowed_hosts("127.0.0.1", [], False)) >= {"127.0.0.1", "localhost"}
    assert "evil.example" not in allowed_hosts("0.0.0.0", [], False)
    assert allowed_hosts("10.1.2.3", ["endo.local"], False) == ["endo.local", "10.1.2.3"]


def test_foreign_host_header_is_refused():
    import gradio as gr
    import httpx

    from benchmarks.ui_driver import free_port

    with gr.Blocks() as demo:
        gr.Markdown("host test")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                app_kwargs={"middleware": [host_check(UIConfig(host="127.0.0.1"))]})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get("/").status_code == 200
            assert c.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200
            # DNS rebinding: a page under the attacker's name reaching this server
            assert c.get("/", headers={"Host": f"rebind.evil.example:{port}"}).status_code == 400
    finally:
        demo.close()


def _result(index: int, alert: bool) -> Result:
    frame = Frame(index, index / 30, time.monotonic(), scope_frame(index))
    state = AlertState("adenoma", 1, 0.95, alert, 0.0)
    return Result(frame, np.array([0.05, 0.95]), np.array([0.05, 0.95]), state, 1.0, 1)


def test_live_overlay_takes_the_label_down_when_analysis_stops():
    shown = []
    ov = Overlay(["hyperplastic", "adenoma"], None, [lambda f, rgb: shown.append((f.index, rgb))], live=True)
    ov.write(_result(0, alert=True))
    for i in range(1, ov.stale_frames + 10):  # the pass-through goes on, no result comes
        ov.tap(Frame(i, i / 30, time.monotonic(), scope_frame(i)))
    fresh, stale = shown[0], shown[-1]
    assert not np.array_equal(fresh[1], scope_frame(fresh[0]))  # label and alert border drawn
    assert np.array_equal(stale[1], draw_overlay(scope_frame(stale[0]), None))  # nothing claimed


def test_jpeg_encoder_survives_a_picture_it_cannot_encode():
    hub = FrameHub()
    try:
        hub.submit(np.zeros((48, 64), np.float64), 0, time.time())  # 2-D: cvtColor raises
        while hub.bad_frames == 0:  # the hub's own thread (a broken one would hang here)
            time.sleep(0.01)
        hub.submit(np.zeros((48, 64, 3), np.uint8), 1, time.time())
        while hub.latest is None:
            time.sleep(0.01)
        assert hub.latest.index == 1 and "cannot encode" in hub.last_error
    finally:
        hub.close()


class _DiskFails(Source):
    """A real file's frames, then the read error a failing disk gives."""

    def __init__(self, path):
        from stream.sources import open_source

        self._inner = open_source(str(path))
        super().__init__(SourceInfo(name=str(path), kind="file", fps=30.0))

    def frames(self):
        for i, f in enumerate(self._inner):
            if i == 5:
                raise OSError(5, "Input/output error")
            yield f


def test_a_paced_file_that_fails_hard_ends_on_an_error(tmp_path):
    # Before: noted as a minor problem, the stream ended quietly and the UI's picture froze.
    reader = LatestFrameReader(_DiskFails(write_video(tmp_path / "v.mp4", n=20)))
    with pytest.raises(SourceError, match="Input/output error"):
        for _ in reader:
            pass
    reader.close()


def test_live_timeline_shows_an_outage_as_a_gap():
    from stream.ui.plots import timeline_figure

    recs = [{"t": i / 30, "p_raw": 0.4, "p_smooth": 0.4, "alert": False} for i in range(30)]
    recs.append({"t": 6.0 - 1e-6, "p_raw": np.nan, "p_smooth": np.nan, "alert": False, "gap_s": 5.0})
    recs += [{"t": 6.0 + i / 30, "p_raw": 0.6, "p_smooth": 0.6, "alert": False} for i in range(30)]
    ax = timeline_figure(recs, 0.7, 0.2).axes[0]
    line = ax.lines[0].get_ydata()
    assert np.isnan(line[30])  # the line breaks at the outage
    hatched = [p for p in ax.patches if p.get_hatch() == "//"]
    assert len(hatched) == 1
