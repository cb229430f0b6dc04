"""Preprocessing on real media: content-area detection and tracking, and the crop/resize paths
(decoded pictures through swscale, RGB arrays through OpenCV or roi_align) agreeing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stream_media import FFMPEG, PYAV_FORMATS, ffmpeg_video, scope_frame, write_video

from stream.frame import Frame
from stream.preprocess import ContentTracker, PictureCropper, Preprocessor, detect_content_area, resize_area
from stream.sources import open_source

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
GREY = 1 / (255 * 0.225)  # one grey level in normalised units (about)


@pytest.mark.parametrize(
    "field,fill", [("round", (0.74, 0.815)), ("octagon", (0.815, 0.9)), ("none", (0.97, 1.0))]
)
def test_content_area_detection(field, fill):
    rgb = scope_frame(3, 640, 480, field=field)
    rgb[440:470, 10:200] = 255  # overlay text in the border must not widen the box
    area = detect_content_area(rgb)
    if field == "none":
        assert area.box == (0, 0, 640, 480)
    else:
        r = 0.46 * 480
        exp = (320 - r, 240 - r, 320 + r, 240 + r)
        assert max(abs(a - b) for a, b in zip(area.box, exp)) <= 8, area
    assert fill[0] <= area.fill <= fill[1]


def test_content_area_is_stable_and_redetected_on_change():
    tr = ContentTracker(every=2, confirm=3)
    first = tr.update(scope_frame(0, 320, 240)).box
    for _ in range(1, 10):  # dark frames (scope in the lumen) must not move the box
        assert tr.update(np.zeros((240, 320, 3), np.uint8)).box == first
    for i in range(10, 40):  # a real change (zoomed field) is taken after it persists
        box = tr.update(scope_frame(i, 320, 240, radius=0.3)).box
    assert box != first and box[3] - box[1] < first[3] - first[1]
    assert tr.update(scope_frame(0, 640, 480)).box[2] > 320  # size change: at once


def batch(pre: Preprocessor, frames: list[Frame]) -> torch.Tensor:
    """The frames' model inputs stacked as the batcher does (the preprocessor takes one frame)."""
    return torch.stack([torch.as_tensor(pre(f)) for f in frames])


def test_preprocess_backends_agree():
    frames = [Frame(i, 0, 0, scope_frame(i, 640, 480, field="octagon")) for i in range(3)]
    a = batch(Preprocessor((96, 96), MEAN, STD, backend="cv2"), frames)
    b = batch(Preprocessor((96, 96), MEAN, STD, backend="torch"), frames)
    assert a.shape == b.shape == (3, 3, 96, 96) and a.dtype == torch.float32
    # Two resamplers (area vs roi_align sampling): within ~3 grey levels on average.
    assert (a - b).abs().mean() < 3 * GREY


def _picture_and_rgb(frame: Frame) -> tuple[Frame, Frame]:
    """The decoded picture as the pipeline gets it, and the same picture as an RGB array."""
    return frame, Frame(frame.index, frame.pts, 0.0, frame.rgb.copy())


@pytest.mark.parametrize("name,codec,pix_fmt,opts", PYAV_FORMATS, ids=[f[0] for f in PYAV_FORMATS])
def test_decoded_pictures_are_cropped_like_rgb_frames(tmp_path, name, codec, pix_fmt, opts):
    # 8/10-bit, 4:2:0/4:2:2, limited and full range (MJPEG): swscale's crop+scale from the
    # decoder's planes must give the model what converting to RGB and resizing would.
    path = write_video(tmp_path / name, n=4, w=320, h=240, codec=codec, pix_fmt=pix_fmt, options=opts,
                       field="octagon")  # fmt: skip
    picture, rgb = _picture_and_rgb(list(open_source(str(path)))[3])
    assert picture.picture is not None and rgb.picture is None
    box = detect_content_area(picture).box
    assert max(abs(p - q) for p, q in zip(box, detect_content_area(rgb).box)) <= 2
    out, ref = np.empty((96, 96, 3), np.uint8), np.empty((96, 96, 3), np.uint8)
    cropper = PictureCropper()
    assert cropper(picture, box, out), cropper.error  # really the swscale path
    resize_area(rgb.rgb, box, ref)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3  # grey levels (measured 1.1-1.6)
    # And through the Preprocessor (normalised): pictures and arrays give the model the same.
    a = batch(Preprocessor((96, 96), MEAN, STD, detect=False), [picture])
    b = batch(Preprocessor((96, 96), MEAN, STD, detect=False), [rgb])
    assert (a - b).abs().mean() < 3 * GREY


def test_colour_tags_are_honoured(tmp_path):
    # A BT.709-tagged file: the crop converts with the frame's own matrix, like Frame.rgb does.
    path = write_video(tmp_path / "709.mp4", n=4, w=320, h=240, options={"colorspace": "bt709"})
    picture, rgb = _picture_and_rgb(list(open_source(str(path)))[2])
    box = (0, 0, 320, 240)
    out, ref = np.empty((96, 96, 3), np.uint8), np.empty((96, 96, 3), np.uint8)
    assert PictureCropper()(picture, box, out)
    resize_area(rgb.rgb, box, ref)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3


@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg command line (apt-get install ffmpeg)")
def test_field_doubled_pictures_are_cropped_like_their_rgb(tmp_path):
    path = ffmpeg_video(
        tmp_path / "interlaced.mkv",
        ["-c:v", "libx264", "-flags", "+ilme+ildct", "-top", "1", "-pix_fmt", "yuv420p"],
        n=4,
        w=320,
        h=240,
    )
    frame = next(iter(open_source(str(path), deinterlace="field")))
    picture, rgb = _picture_and_rgb(frame)
    assert picture.field_only and np.array_equal(rgb.rgb[0::2], rgb.rgb[1::2])
    a = batch(Preprocessor((96, 96), MEAN, STD, detect=False), [picture])
    b = batch(Preprocessor((96, 96), MEAN, STD, detect=False), [rgb])
    assert (a - b).abs().mean() < 3 * GREY


@pytest.mark.parametrize("path", ["cv2", "torch", "picture"])
def test_transposed_input_is_the_picture_with_rows_and_columns_swapped(tmp_path, path):
    # A student trained on np.swapaxes(image, 0, -1) (transpose_hw) reads x[c, i, j] = picture[j, i, c]
    # of the picture resized to (W, H); its input keeps the model's (3, H, W). Non-square on purpose.
    if path == "picture":
        video = write_video(tmp_path / "v.mp4", n=2, w=320, h=240, field="octagon")
        frame = list(open_source(str(video)))[1]
        assert frame.picture is not None
    else:
        frame = Frame(0, 0, 0, scope_frame(2, 320, 240, field="octagon"))
    backend = "torch" if path == "torch" else "cv2"
    meta = {"input_size": [48, 64], "mean": [0.0] * 3, "std": [1.0] * 3, "transpose_hw": True}
    pre = Preprocessor.for_model(meta, backend=backend)
    x = np.asarray(pre(frame))
    plain = np.asarray(Preprocessor((64, 48), [0.0] * 3, [1.0] * 3, backend=backend)(frame))
    assert pre.transpose and x.shape == (3, 48, 64) and x.dtype == np.float32 and plain.shape == (3, 64, 48)
    np.testing.assert_array_equal(x, plain.transpose(0, 2, 1))
    assert 0.0 <= x.min() and x.max() <= 1.0  # mean 0, std 1: the picture in [0, 1]
    # A student without the key reads the picture as it is.
    assert not Preprocessor.for_model({k: meta[k] for k in ("input_size", "mean", "std")}).transpose
