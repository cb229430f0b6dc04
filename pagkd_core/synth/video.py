"""Procedure clips: a camera drifting through the colon, pausing on lesions, with ground truth.

`iter_procedure_frames(cfg)` is the live synthetic source (the runtime imports it);
`write_video(cfg, path)` writes `<path>.mp4` (H.264, PyAV) and `<path>.truth.csv`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from . import latent as L
from .config import VideoConfig
from .lumen import bake_atlas, tube_maps
from .noise import smoothstep
from .shade import field_mask, overlay_text, shade
from .surface import N_MAPS

TRUTH_COLUMNS = ("frame", "pts", "lesion_visible", "lesion_id", "class", "x0", "y0", "x1", "y1")
MIN_VISIBLE = 0.004  # a lesion counts as visible from this fraction of the field on
TAN_HALF_FOV = 1.25  # wide-angle endoscope


def _wave(t: float, p: np.ndarray) -> float:
    """Smooth pseudo-random signal in about [-1, 1]: a sum of three sines (rows: freq, phase)."""
    return float(np.sum(np.sin(p[0] * t + p[1])) / 1.8)


def _unit(v):
    return v / (np.linalg.norm(v) + 1e-12)


def _inspect_weight(dz: float) -> float:
    """How much the endoscopist attends to a lesion `dz` tube radii ahead (approach, stay, pass)."""
    return smoothstep(2.0, 0.9, dz) * smoothstep(-0.2, 0.3, dz)


class _Procedure:
    """Camera path, lesion placement and auto-exposure state for one clip."""

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.patient = L.sample_patient(self.rng)
        self.waves = [
            np.stack([self.rng.uniform(0.1, 0.6, 3), self.rng.uniform(0, 2 * np.pi, 3)]) for _ in range(7)
        ]
        self.lesions: list[tuple[L.Lesion, float, float]] = []  # (lesion, angle, z)
        self._bag: list[str] = []
        self.next_z = 3.2
        self.z = 0.0
        self.pos = np.zeros(3)
        self.fwd = np.array([0.0, 0.0, 1.0])
        self.gain = 1.0

    def _place_lesions(self):
        while self.next_z < self.z + 8.0:
            if not self._bag:  # every class once per bag: both classes show up early
                self._bag = list(self.rng.permutation(self.cfg.classes))
            cls = str(self._bag.pop())
            k = len(self.lesions)
            les = L.sample_lesion(
                self.rng, cls, self.cfg.classes, self.cfg.difficulty, f"v{self.cfg.seed}-{k:03d}"
            )
            self.lesions.append((les, float(self.rng.uniform(-np.pi, np.pi)), self.next_z))
            self.next_z += self.cfg.lesion_gap * self.rng.uniform(0.7, 1.3)

    def step(self, t: float, dt: float) -> np.ndarray:
        """Advance the camera to time t; returns cam (4, 3): position, forward, right, down."""
        self._place_lesions()
        w_best, target = 0.0, None
        for les, ang, z in self.lesions:
            w = _inspect_weight(z - self.z)
            if w > w_best:
                w_best, target = w, (ang, z)
        wv = [_wave(t, p) for p in self.waves]
        speed = self.cfg.speed * (0.8 + 0.3 * wv[0]) * (1.0 - 0.6 * w_best)
        self.z += speed * dt
        want_pos = np.array([0.25 * wv[1], 0.25 * wv[2], 0.0])
        want_fwd = _unit(np.array([0.25 * wv[3], 0.25 * wv[4], 1.0]))
        if target is not None:
            ang, z = target
            side = np.array([math.cos(ang), math.sin(ang), 0.0])
            want_pos = (1 - w_best) * want_pos + w_best * 0.45 * side
            look = _unit(np.array([side[0], side[1], z]) - np.array([want_pos[0], want_pos[1], self.z]))
            want_fwd = _unit((1 - w_best) * want_fwd + w_best * look)
        k = min(1.0, 2.5 * dt)  # the hand steers smoothly
        self.pos += (want_pos - self.pos) * k
        self.fwd = _unit(self.fwd + (want_fwd - self.fwd) * k)
        roll = 0.6 * wv[5] + 0.3 * t * self.cfg.speed
        ref = np.array([-math.sin(roll), math.cos(roll), 0.0])
        right = _unit(np.cross(self.fwd, ref))
        down = np.cross(self.fwd, right)
        return np.stack([np.array([self.pos[0], self.pos[1], self.z]), self.fwd, right, down])


def _motion_blur(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    n = int(min(math.hypot(dx, dy), 25))
    if n < 2:
        return img
    k = np.zeros((n | 1, n | 1), np.float32)
    c = (n | 1) // 2
    ex, ey = dx / math.hypot(dx, dy), dy / math.hypot(dx, dy)
    cv2.line(k, (round(c - ex * c), round(c - ey * c)), (round(c + ex * c), round(c + ey * c)), 1.0)
    return cv2.filter2D(img, -1, k / k.sum())


def iter_procedure_frames(cfg: VideoConfig) -> Iterator[tuple[np.ndarray, dict]]:
    """Yield (rgb uint8 HxWx3, truth dict with the TRUTH_COLUMNS keys) per frame; endless if seconds=0."""
    W, H = cfg.width, cfg.height
    wr, hr = max(2, int(W * cfg.render_scale) // 2 * 2), max(2, int(H * cfg.render_scale) // 2 * 2)
    proc = _Procedure(cfg)
    mips = bake_atlas(proc.patient, wr)
    noise_rng = np.random.default_rng([cfg.seed, 1])
    diff, nbi = cfg.difficulty, cfg.modality == "NBI"
    maps = np.empty((N_MAPS, hr, wr), np.float32)
    ids = np.empty((hr, wr), np.int32)
    field_lo = field_mask(hr, wr, cfg.border)[..., 0] > 0.5
    mask_hi = (field_mask(H, W, cfg.border) * 255).astype(np.uint8)
    mask_hi = np.repeat(mask_hi, 3, axis=2)
    n_frames = round(cfg.seconds * cfg.fps) if cfg.seconds > 0 else None
    dt, f, prev_fwd = 1.0 / cfg.fps, 0, None
    while n_frames is None or f < n_frames:
        t = f * dt
        cam = proc.step(t, dt)
        near = [(les, a, z) for les, a, z in proc.lesions if -1.5 < z - cam[0, 2] < 12.0]
        lp = np.stack([les.params for les, _, _ in near]) if near else np.zeros((0, L.N_LESION))
        pos = np.array([[a, z] for _, a, z in near]) if near else np.zeros((0, 2))
        tube_maps(mips[0], mips[1], mips[2], mips[3], cam, TAN_HALF_FOV, lp, pos, hr, wr, maps, ids)
        rgb = shade(
            maps,
            cfg.modality,
            proc.patient,
            diff.nbi_pattern if nbi else diff.wli_pattern,
            1.0 if nbi else diff.wli_color,
            diff.specular,
        )
        if prev_fwd is not None and cfg.motion_blur > 0:  # image shift from the camera's turn
            fpx = wr / (2 * TAN_HALF_FOV)
            d = cam[1] - prev_fwd
            rgb = _motion_blur(
                rgb, -float(d @ cam[2]) * fpx * cfg.motion_blur, -float(d @ cam[3]) * fpx * cfg.motion_blur
            )
        prev_fwd = cam[1].copy()
        # auto-exposure chasing mid-grey with a lag, plus lamp flicker: the exposure keeps moving
        luma = float(rgb[::4, ::4].mean()) + 1e-3
        proc.gain += (np.clip(0.42 / luma, 0.4, 3.0) - proc.gain) * min(1.0, 3.0 * dt)
        flick = 1.0 + cfg.exposure_jitter * (
            0.08 * _wave(3.0 * t, proc.waves[6]) + 0.03 * noise_rng.standard_normal()
        )
        rgb *= proc.gain * flick
        if diff.noise > 0:
            rgb += noise_rng.normal(0.0, diff.noise, rgb.shape[:2] + (1,)).astype(np.float32)
        blur = (diff.nbi_blur if nbi else diff.wli_blur) * hr / 448
        if blur > 0.3:
            rgb = cv2.GaussianBlur(rgb, (0, 0), blur)
        lo = (np.clip(rgb, 0, 1) ** (1 / 1.15) * 255 + 0.5).astype(np.uint8)
        out = cv2.resize(lo, (W, H), interpolation=cv2.INTER_LINEAR) if (wr, hr) != (W, H) else lo
        out = cv2.multiply(out, mask_hi, scale=1 / 255)
        truth = {
            "frame": f,
            "pts": round(t, 6),
            "lesion_visible": 0,
            "lesion_id": "",
            "class": "",
            "x0": None,
            "y0": None,
            "x1": None,
            "y1": None,
        }
        best, count = -1, int(MIN_VISIBLE * field_lo.sum())
        valid = np.where(field_lo, ids, -1)
        for k in range(len(near)):
            n = int((valid == k).sum())
            if n >= count:
                best, count = k, n
        if best >= 0:
            rows, cols = np.nonzero(valid == best)
            sx, sy = W / wr, H / hr
            truth.update(
                lesion_visible=1,
                lesion_id=near[best][0].lesion_id,
                **{"class": near[best][0].cls},
                x0=int(cols.min() * sx),
                y0=int(rows.min() * sy),
                x1=min(W - 1, math.ceil((cols.max() + 1) * sx) - 1),
                y1=min(H - 1, math.ceil((rows.max() + 1) * sy) - 1),
            )
        if cfg.text:
            s = int(t)
            overlay_text(
                out, ["SYNTHETIC", f"{cfg.modality}  {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"]
            )
        yield out, truth
        f += 1


class H264Writer:
    """Minimal PyAV H.264 writer: `write(rgb)` per frame, pts = frame index in 1/fps units."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int, crf: int = 23):
        import av

        self.box = av.open(str(path), "w")
        self.stream = self.box.add_stream("libx264", rate=Fraction(fps, 1))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, fps)
        self.stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(2 * fps)}
        self.fps, self.n = fps, 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = self.n, Fraction(1, self.fps)
        self.box.mux(self.stream.encode(frame))
        self.n += 1

    def close(self) -> None:
        self.box.mux(self.stream.encode())
        self.box.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_video(cfg: VideoConfig, path: str | Path, progress: bool = True) -> tuple[Path, Path]:
    """Write `path` (.mp4, H.264) and its `<stem>.truth.csv`; returns both paths."""
    from tqdm import tqdm

    path = Path(path)
    truth_path = path.with_suffix(".truth.csv")
    n = round(cfg.seconds * cfg.fps)
    with (
        H264Writer(path, cfg.width, cfg.height, cfg.fps, cfg.crf) as out,
        open(truth_path, "w", newline="") as fh,
    ):
        writer = csv.writer(fh)
        writer.writerow(TRUTH_COLUMNS)
        for rgb, truth in tqdm(
            iter_procedure_frames(cfg), total=n, disable=not progress, unit="frame", desc=f"video {path.name}"
        ):
            out.write(rgb)
            writer.writerow(["" if truth[c] is None else truth[c] for c in TRUTH_COLUMNS])
    return path, truth_path
