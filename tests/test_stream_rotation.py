"""Phone clips stored sideways: the display matrix is applied the way ffmpeg applies it (issue 16,
item 6). Each clip is made from a picture whose only bright patch is its top-left corner; the
expected picture is what ffmpeg's own autorotate makes of the same file."""

from __future__ import annotations

import logging
import subprocess

import av
import numpy as np
import pytest
from PIL import Image
from stream_media import FFMPEG, http_file_server, retry_until_open

from stream.sources import SourceError, open_source
from stream.sources import rotation as rotation_mod

pytestmark = pytest.mark.skipif(
    FFMPEG is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)"
)

W, H, N = 64, 48, 6


def ffmpeg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=False, capture_output=True, text=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """An unrotated H.264 clip of a dark picture with a bright top-left corner."""
    d = tmp_path_factory.mktemp("rotation")
    rgb = np.full((H, W, 3), 40, np.uint8)
    rgb[: H // 4, : W // 4] = 230
    Image.fromarray(rgb).save(d / "corner.png")
    out = d / "plain.mp4"
    ffmpeg("-loop", "1", "-i", str(d / "corner.png"), "-frames:v", str(N), "-r", "10",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)).check_returncode()  # fmt: skip
    return out


def tagged(plain, degrees: int):
    """``plain`` remuxed with a display rotation: ``-display_rotation`` (ffmpeg >= 7) or the older
    ``rotate`` tag (ffmpeg 5/6); skipped where this ffmpeg writes neither into the file."""
    if degrees == 0:
        return plain
    out = plain.with_name(f"rot{degrees}.mp4")
    faststart = ["-movflags", "+faststart"]  # index first: readable over plain HTTP
    done = ffmpeg("-display_rotation", str(degrees), "-i", str(plain), "-c", "copy", *faststart, str(out))
    if done.returncode != 0:
        ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", *faststart, str(out))
    with av.open(str(out)) as c:
        if not rotation_mod.display_rotation(next(c.decode(video=0)), c.streams.video[0]):
            pytest.skip("this ffmpeg/PyAV writes or reads no display matrix")
    return out


def autorotated(path) -> np.ndarray:
    """The first picture as ffmpeg shows it (it applies the display matrix by default)."""
    png = path.with_suffix(".ffmpeg.png")
    ffmpeg("-i", str(path), "-frames:v", "1", str(png)).check_returncode()
    return np.asarray(Image.open(png).convert("RGB"))


def bright_corner(rgb: np.ndarray) -> tuple[str, str]:
    rows, cols = np.nonzero(rgb.mean(-1) > 150)
    h, w = rgb.shape[:2]
    return ("top" if rows.mean() < h / 2 else "bottom", "left" if cols.mean() < w / 2 else "right")


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_file_is_turned_upright_as_ffmpeg_shows_it(plain, degrees, caplog):
    path = tagged(plain, degrees)
    want = autorotated(path)
    caplog.set_level(logging.INFO, logger="stream.sources.rotation")
    with open_source(str(path)) as src:
        frames = list(src)
        info = src.info
    assert len(frames) == N
    size = (W, H) if degrees in (90, 270) else (H, W)
    assert want.shape[:2] == size and (info.height, info.width) == size
    for f in frames:
        assert f.size == size and f.rgb.shape == (*size, 3)
        # Still the decoder's picture (turned by FFmpeg filters): the model crops from its planes.
        assert f.picture is not None
        assert bright_corner(f.rgb) == bright_corner(want)
        assert np.abs(f.rgb.astype(int) - want.astype(int)).mean() < 1.0
    if degrees:
        assert bright_corner(want) != ("top", "left")
    said = [r.getMessage() for r in caplog.records if r.name == "stream.sources.rotation"]
    assert len(said) == (1 if degrees else 0)  # once per source, not per frame
    if degrees:
        assert "turned" in said[0] and f"{size[1]}x{size[0]}" in said[0]


def test_rgb_fallback_turns_the_same_way(plain, monkeypatch, caplog):
    """A picture FFmpeg's filters cannot take (or a field-doubled one) is turned as RGB."""
    path = tagged(plain, 90)
    want = autorotated(path)

    def no_graph(*_):
        raise ValueError("no filters here")

    monkeypatch.setattr(rotation_mod.Rotator, "_build", staticmethod(no_graph))
    with caplog.at_level(logging.WARNING, logger="stream.sources.rotation"):
        frames = list(open_source(str(path)))
    assert len(frames) == N and all(f.picture is None for f in frames)
    assert frames[0].rgb.shape == (W, H, 3) and frames[0].rgb.flags.c_contiguous
    assert np.abs(frames[0].rgb.astype(int) - want.astype(int)).mean() < 2.0
    assert sum("turning them as RGB" in r.getMessage() for r in caplog.records) == 1


def test_field_doubled_picture_is_doubled_before_it_is_turned(plain):
    from stream.frame import Frame
    from stream.sources.base import SourceInfo

    with av.open(str(tagged(plain, 90))) as c:
        vf = next(c.decode(video=0))
    f = rotation_mod.Rotator(SourceInfo("x", "file"))(Frame(0, 0.0, 0.0, picture=vf, field_only=True))
    assert f.picture is None and f.rgb.shape == (W, H, 3)
    assert np.array_equal(f.rgb[:, 0::2], f.rgb[:, 1::2])  # the repeated lines run across, upright


def test_quarter_turns():
    assert [rotation_mod.quarter_turns(d) for d in (0, 90, -90, 180, -180, 270, 89.99, 360)] == [
        0,
        1,
        3,
        2,
        2,
        3,
        1,
        0,
    ]
    assert rotation_mod.quarter_turns(45) is None


def test_network_source_turns_upright(plain):
    path = tagged(plain, 270)
    want = autorotated(path)
    base, server = http_file_server(path.parent)
    try:
        src = retry_until_open(lambda: open_source(f"{base}/{path.name}"), SourceError)
        assert src.info.kind == "network"
        frames = []
        for f in src:
            frames.append(f)
            if len(frames) == 3:
                break
        src.close()
    finally:
        server.kill()
        server.wait()
    for f in frames:
        assert f.rgb.shape == (W, H, 3) and bright_corner(f.rgb) == bright_corner(want)


def test_recording_and_upload_probe_are_upright(plain, tmp_path):
    from stream.pipeline import Pipeline, PipelineConfig
    from stream.ui.session import check_video

    path = tagged(plain, 90)
    want = autorotated(path)
    cfg = PipelineConfig(engine="torch", device="cpu", threads=1, batch=1, nbi_teacher="none",
                         record_raw=str(tmp_path / "raw.mkv"), predictions=str(tmp_path / "p.jsonl"))  # fmt: skip
    pipe = Pipeline(cfg)
    pipe.add_stream(str(path))
    summary = pipe.run(timeout=120)
    assert summary["frames"] == N and pipe.errors() == []
    with av.open(str(tmp_path / "raw.mkv")) as c:
        rec = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(rec) == N and rec[0].shape == (W, H, 3) and bright_corner(rec[0]) == bright_corner(want)
    probe = check_video(path, 10**7)
    assert (probe.width, probe.height) == (H, W)
