"""Synthetic test videos for the throughput benchmarks (720p/1080p, H.264/HEVC).

The frames are synthetic (no patient data): a pinkish tissue texture that drifts like a
moving scope, a darker "lesion" blob, specular highlights and sensor noise. The noise and
motion matter: a flat or static picture would make the decoder look far faster than on
real endoscope video.

Writers, first that works: PyAV (libx264 / libx265), the ffmpeg command line, OpenCV's
VideoWriter. A GPU host may have neither PyAV nor ffmpeg; OpenCV's pip wheel then writes
MPEG-4 part 2 instead, and the returned `Clip.codec` says which codec really came out.
Files are cached by their parameters so repeated runs reuse them.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
# Fixed bit rates in the range of endoscopy recorders: a quality target (crf) would let the
# encoder smooth the noise away and make decoding unrealistically cheap.
BITRATES = {"720p": 4_000_000, "1080p": 8_000_000}
CODECS = {"h264": "libx264", "hevc": "libx265"}


@dataclass(frozen=True)
class Clip:
    path: Path
    resolution: str      # "720p" / "1080p"
    requested: str       # "h264" / "hevc"
    codec: str           # the codec actually in the file: "h264", "hevc", "mpeg4", ...
    fps: int
    frames: int
    writer: str          # "pyav", "ffmpeg" or "opencv"

    @property
    def name(self) -> str:
        return f"{self.resolution}-{self.requested}"


class TissueFrames:
    """Deterministic generator of synthetic endoscopy-like RGB frames of one size."""

    def __init__(self, width: int, height: int, seed: int = 0):
        import cv2

        self.w, self.h = width, height
        rng = np.random.default_rng(seed)
        # A texture 1.3x the frame: the camera "moves" by cropping windows from it.
        tw, th = int(width * 1.3), int(height * 1.3)
        low = cv2.resize(rng.random((9, 16)).astype(np.float32), (tw, th), interpolation=cv2.INTER_CUBIC)
        mid = cv2.resize(rng.random((72, 128)).astype(np.float32), (tw, th), interpolation=cv2.INTER_CUBIC)
        fine = cv2.GaussianBlur(rng.random((th, tw)).astype(np.float32), (0, 0), 1.5)
        shade = 0.55 * low + 0.3 * mid + 0.15 * fine
        base = np.array([200.0, 95.0, 90.0], np.float32)  # mucosa pink, RGB
        self.texture = np.clip(shade[..., None] * base * 1.2, 0, 255).astype(np.float32)
        # A small bank of noise frames, cycled: fresh noise per frame costs more than encoding.
        self.noise = [rng.normal(0, 4, (height, width)).astype(np.float32) for _ in range(4)]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cx, cy, r = width * 0.6, height * 0.55, min(width, height) * 0.12
        lesion = np.exp(-(((xx - cx) / r) ** 2 + ((yy - cy) / (0.8 * r)) ** 2))
        vignette = 1.0 - 1.1 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2)
        # gain(i) = vignette * (1 - a_i * lesion), split so a frame costs one multiply-add.
        self.vignette, self.lesion = vignette, 0.35 * lesion * vignette

    def frame(self, i: int) -> np.ndarray:
        import cv2

        tw, th = self.texture.shape[1], self.texture.shape[0]
        ox = int((tw - self.w) * (0.5 + 0.45 * np.sin(i / 37.0)))
        oy = int((th - self.h) * (0.5 + 0.45 * np.cos(i / 53.0)))
        crop = self.texture[oy:oy + self.h, ox:ox + self.w]
        gain = cv2.scaleAdd(self.lesion, -(0.5 + 0.5 * np.sin(i / 20.0)), self.vignette)
        gain = cv2.merge([gain, gain, gain])
        noise = self.noise[i % len(self.noise)]
        img = cv2.add(cv2.multiply(crop, gain), cv2.merge([noise, noise, noise]))
        return cv2.convertScaleAbs(img)  # saturating cast to uint8


def _resolution(gen: TissueFrames) -> str:
    return next(k for k, v in RESOLUTIONS.items() if v == (gen.w, gen.h))


def _write_pyav(path: Path, gen: TissueFrames, encoder: str, fps: int, frames: int) -> None:
    from pagkd_core.video_writer import VideoWriter

    options = {"preset": "ultrafast", "x265-params": "log-level=error"} if encoder == "libx265" \
        else {"preset": "veryfast"}
    with VideoWriter(path, gen.w, gen.h, fps, encoder, options=options,
                     bit_rate=BITRATES[_resolution(gen)]) as out:
        for i in range(frames):
            out.write(gen.frame(i))


def _write_ffmpeg(path: Path, gen: TissueFrames, encoder: str, fps: int, frames: int) -> None:
    preset = ["-preset", "ultrafast", "-x265-params", "log-level=error"] if encoder == "libx265" \
        else ["-preset", "veryfast"]
    cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{gen.w}x{gen.h}", "-r", str(fps), "-i", "-", "-c:v", encoder, *preset, "-b:v", str(BITRATES[_resolution(gen)]),
           "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for i in range(frames):
        proc.stdin.write(gen.frame(i).tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}")


def _write_opencv(path: Path, gen: TissueFrames, encoder: str, fps: int, frames: int) -> None:
    import cv2

    # pip OpenCV has no H.264/HEVC encoder; try the real codec, then MPEG-4 part 2.
    for fourcc in (("avc1", "hvc1")[encoder == "libx265"], "mp4v"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (gen.w, gen.h))
        if writer.isOpened():
            break
    else:
        raise RuntimeError(f"OpenCV cannot write {path}")
    for i in range(frames):
        writer.write(gen.frame(i)[..., ::-1])
    writer.release()


def probe_codec(path: Path) -> str:
    """The codec name stored in the file (PyAV if present, else OpenCV's FourCC)."""
    try:
        import av

        with av.open(str(path)) as c:
            return c.streams.video[0].codec_context.name
    except ImportError:
        import cv2

        cap = cv2.VideoCapture(str(path))
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        cap.release()
        four = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4)).lower()
        return {"avc1": "h264", "h264": "h264", "hvc1": "hevc", "hev1": "hevc", "mp4v": "mpeg4",
                "fmp4": "mpeg4"}.get(four, four)


def writers() -> list[str]:
    found = []
    try:
        import av  # noqa: F401

        found.append("pyav")
    except ImportError:
        pass
    if shutil.which("ffmpeg"):
        found.append("ffmpeg")
    return found + ["opencv"]


def make_clip(directory: str | Path, resolution: str, codec: str, fps: int = 30, frames: int = 150,
              seed: int = 0) -> Clip:
    """Write (or reuse) one synthetic clip; returns what was actually written."""
    if resolution not in RESOLUTIONS or codec not in CODECS:
        raise ValueError(f"unknown clip {resolution}/{codec}: use one of {list(RESOLUTIONS)} x {list(CODECS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"synthetic-{resolution}-{codec}-{fps}fps-{frames}f-s{seed}.mp4"
    done = path.with_suffix(".writer")
    if path.exists() and done.exists():
        return Clip(path, resolution, codec, probe_codec(path), fps, frames, done.read_text().strip())
    gen = TissueFrames(*RESOLUTIONS[resolution], seed=seed)
    errors = []
    for writer in writers():
        try:
            {"pyav": _write_pyav, "ffmpeg": _write_ffmpeg, "opencv": _write_opencv}[writer](
                path, gen, CODECS[codec], fps, frames)
            done.write_text(writer)
            return Clip(path, resolution, codec, probe_codec(path), fps, frames, writer)
        except Exception as e:  # noqa: BLE001 - try the next writer; all failures are reported together
            errors.append(f"{writer}: {e}")
    raise RuntimeError(f"could not write {path}: " + "; ".join(errors))


def make_clips(directory: str | Path, resolutions=("720p", "1080p"), codecs=("h264", "hevc"),
               fps: int = 30, frames: int = 150) -> list[Clip]:
    return [make_clip(directory, r, c, fps, frames) for r in resolutions for c in codecs]
