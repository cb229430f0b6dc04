"""Sources on real media: files in many containers/codecs, folders, pacing, damage, bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from stream_media import (
    FFMPEG,
    PYAV_FORMATS,
    ffmpeg_video,
    http_test_stream,
    retry_until_open,
    scope_frame,
    write_video,
)

from stream.sources import SourceError, open_source, source_kind

N, W, H = 12, 160, 128


@pytest.mark.parametrize("name,codec,pix_fmt,opts", PYAV_FORMATS, ids=[f[0] for f in PYAV_FORMATS])
def test_file_formats_decode_every_frame(tmp_path, name, codec, pix_fmt, opts):
    path = write_video(tmp_path / name, n=N, w=W, h=H, codec=codec, pix_fmt=pix_fmt, options=opts)
    with open_source(str(path)) as src:
        assert not src.info.live and src.info.pix_fmt.startswith(pix_fmt[:7].rstrip("l"))
        frames = list(src)
    assert len(frames) == N
    assert [f.index for f in frames] == list(range(N))
    assert frames[0].rgb.shape == (H, W, 3) and frames[0].rgb.dtype == np.uint8
    pts = [f.pts for f in frames]
    assert np.allclose(np.diff(pts), 1 / 30, atol=2e-3)
    # Decoded pictures match what was encoded (lossy codecs: small mean error).
    err = np.abs(frames[5].rgb.astype(int) - scope_frame(5, W, H).astype(int)).mean()
    assert err < 8, f"{name}: mean abs error {err:.1f}"


@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
def test_interlaced_file_is_deinterlaced(tmp_path):
    path = ffmpeg_video(
        tmp_path / "interlaced.mkv",
        ["-c:v", "libx264", "-flags", "+ilme+ildct", "-top", "1", "-pix_fmt", "yuv422p10le"],
        n=N,
        w=W,
        h=H,
    )
    src = open_source(str(path))
    assert src.deinterlace == "yadif"
    frames = list(src)
    assert len(frames) == N  # yadif holds one frame back; the flush at the end returns it
    assert frames[0].rgb.shape == (H, W, 3)
    # Field doubling (the zero-delay mode for live input) repeats each top-field line.
    src = open_source(str(path), deinterlace="field")
    f = next(iter(src))
    assert np.array_equal(f.rgb[0::2], f.rgb[1::2])


def test_paced_replay_follows_the_file_clock_and_drops_for_a_slow_reader(tmp_path):
    path = write_video(tmp_path / "c.mp4", n=30, w=W, h=H)
    src = open_source(str(path), live=True)
    assert src.info.live
    got = []
    for f in src:
        got.append(f)
        time.sleep(0.08)  # slower than 30 fps: the reader must skip, not queue
    # Paced: no frame left the reader before its time on the file's clock (a lower bound, which a
    # loaded machine cannot break; how much later it came is the machine's business).
    first = got[0]
    assert all(f.arrival - first.arrival >= (f.pts - first.pts) - 1e-3 for f in got)
    assert src.counters["dropped"] > 0
    idx = [f.index for f in got]
    assert idx == sorted(idx) and len(got) + src.counters["dropped"] == 30


def test_folder_source(tmp_path):
    for i in range(5):
        Image.fromarray(scope_frame(i, W, H)).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), fps=10)
    assert source_kind(str(tmp_path)) == "folder"
    frames = list(src)
    assert len(frames) == 5 and frames[4].pts == pytest.approx(0.4)
    assert np.array_equal(frames[2].rgb, scope_frame(2, W, H))


def test_truncated_file_keeps_the_frames_before_the_cut(tmp_path):
    # faststart puts the index first, so the first half stays readable after the cut.
    path = write_video(tmp_path / "t.mp4", n=60, w=W, h=H, container_options={"movflags": "faststart"})
    bad = tmp_path / "cut.mp4"
    data = path.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    src = open_source(str(bad))
    frames = list(src)
    assert 5 < len(frames) < 60
    assert any("truncated" in p for p in src.problems)


def test_corrupt_file_reports_and_continues(tmp_path):
    path = write_video(tmp_path / "c.mp4", n=60, w=W, h=H)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 2
    data[mid : mid + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    src = open_source(str(bad))
    frames = list(src)
    assert len(frames) >= 20  # everything before the damage at least
    assert src.counters["decode_errors"] >= 1 and src.problems
    assert all(len(p.splitlines()) == 1 for p in src.problems)


@pytest.mark.parametrize(
    "spec,words",
    [
        ("missing.mp4", "no such file"),
        ("empty.mp4", "empty"),
        ("text.mp4", "cannot open"),
        ("/dev/video97", "does not exist"),
        ("gopher://x", "no such file"),
    ],
)
def test_unopenable_sources_fail_with_one_line(tmp_path, monkeypatch, spec, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello, not a video\n" * 50)
    with pytest.raises(SourceError) as e:
        open_source(spec)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_source_kinds():
    assert source_kind("demo") == "file"
    assert source_kind("/dev/video0") == "capture"
    assert source_kind("rtsp://cam/1") == "network"
    assert source_kind("udp://127.0.0.1:5000") == "network"
    assert source_kind("srt://host:9000") == "network"
    assert source_kind("synthetic") == "synthetic"


def test_synthetic_generator_source_carries_truth():
    pytest.importorskip("pagkd_core.synth.video")
    src = open_source("synthetic:seconds=0.2,width=128,height=96,seed=1")
    frames = list(src)
    assert len(frames) == 6 and frames[0].rgb.shape == (96, 128, 3)
    assert frames[2].meta["truth"]["frame"] == 2 and frames[2].pts == pytest.approx(2 / 30, abs=1e-5)
    with pytest.raises(SourceError, match="unknown synthetic"):
        open_source("synthetic:no_such_option=1")


def test_size_change_mid_stream_at_source(tmp_path):
    a = write_video(tmp_path / "a.ts", n=10, w=W, h=H)
    b = write_video(tmp_path / "b.ts", n=10, w=320, h=240)
    both = tmp_path / "both.ts"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    shapes = [f.rgb.shape for f in open_source(str(both))]
    assert shapes[0] == (H, W, 3) and shapes[-1] == (240, 320, 3) and len(shapes) >= 19


@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
def test_http_network_stream(tmp_path):
    url, sender = http_test_stream(4)
    try:
        src = retry_until_open(lambda: open_source(url), SourceError)
        assert src.info.live and src.info.kind == "network"
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 20:
                break
        src.close()
    finally:
        sender.kill()
        sender.wait()
    assert frames[-1].rgb.shape == (120, 160, 3)
    assert [f.index for f in frames] == sorted(f.index for f in frames)


def test_capture_goes_through_pyav_v4l2(tmp_path):
    """No capture device in CI: a regular file opened as a v4l2 device must fail cleanly in
    FFmpeg's v4l2 input (which shows the v4l2 path is wired and its errors are one line)."""
    fake = write_video(tmp_path / "not_a_device.mp4", n=2)
    with pytest.raises(SourceError) as e:
        open_source(f"v4l2:{fake}", size="640x480", fps=30, pixel_format="mjpeg")
    assert "capture" in str(e.value) and "\n" not in str(e.value)


def test_sources_without_pyav(tmp_path, monkeypatch):
    # A GPU host without PyAV: folders and the generator work, files get a one-line hint.
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails as if not installed
    monkeypatch.delitem(sys.modules, "stream.sources.av_reader", raising=False)
    assert len(list(open_source("synthetic:seconds=0.2,width=64,height=48"))) > 0
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not decoded anyway")
    with pytest.raises(SourceError, match="need PyAV: pip install av"):
        open_source(str(path))


def test_folder_of_16_bit_grey_pngs_is_not_all_white(tmp_path):
    # Pillow clips 16-bit grey to 255 when converting to RGB: every frame was analysed as white.
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, size=(H, W), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "000.png")
    assert Image.open(tmp_path / "000.png").mode.startswith("I")
    (frame,) = list(open_source(str(tmp_path)))
    expected = np.rint(grey16 / 257.0).astype(np.uint8)
    assert np.abs(frame.rgb[..., 0].astype(int) - expected).max() <= 1
    assert frame.rgb.mean() < 200 and np.array_equal(frame.rgb[..., 0], frame.rgb[..., 2])
